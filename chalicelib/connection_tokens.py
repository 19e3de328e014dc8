"""A connection's tokens at rest: sealed in the item, and the writes an OAuth 2.0 refresh needs.

Access, refresh and OAuth 1.0a token secrets live in the connection item only as one value
sealed by :mod:`chalicelib.sealing` (AES-GCM under a KMS data key), bound to the team and
user, so a table export alone reveals no token. Items written before sealing hold the
tokens in plain attributes: they are read as they are and sealed in place on first use.

An OAuth 2.0 connection also has ``token_version`` (1 at connect, +1 per refresh) and, while
a refresh runs, a lease (``lease_id``, ``lease_until``): see :mod:`chalicelib.refresh`.

Example::

    tokens = ConnectionTokens(store_for(settings), sealer_for(settings))
    tokens.open("acme", "alice", connection)     # {"access_token": ..., ...}
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from .dynamo import failed_condition, from_item, key
from .logs import logger
from .sealing import Sealer
from .store import Store

SEALED = "sealed"
# What an item written before sealing holds in plain attributes.
PLAIN_SECRETS = ("access_token", "token_secret", "refresh_token", "session_handle")


def bound_to(team: str, user: str) -> str:
    """What a sealed value is bound to: copied into another team's or user's item, it does not open."""
    return f"{team}/{user}"


class ConnectionTokens:
    """Sealing, opening and rotating the tokens in ``TEAM#<team>`` / ``USER#<user>`` items."""

    def __init__(self, store: Store, sealer: Sealer) -> None:
        self.store = store
        self.sealer = sealer
        self._opened: dict[tuple[str, str, str], dict[str, str]] = {}  # one request opens a value once

    def seal(self, team: str, user: str, tokens: dict[str, str]) -> str:
        return self.sealer.seal({k: v for k, v in tokens.items() if v}, bound_to=bound_to(team, user))

    def open(self, team: str, user: str, connection: dict[str, Any]) -> dict[str, str]:
        """The connection's tokens; an old plain item is sealed in place (once, conditionally).

        Opened values are remembered by this instance (one per request), so acting as a user and
        refreshing read the same item without decrypting or sealing it in place again.
        """
        sealed = str(connection.get(SEALED) or "")
        remembered = (team, user, sealed or str(connection.get("access_token") or ""))
        if remembered in self._opened:
            return self._opened[remembered]
        if sealed:
            opened = self.sealer.open(sealed, bound_to=bound_to(team, user))
        else:
            opened = {name: str(connection[name]) for name in PLAIN_SECRETS if connection.get(name)}
            if opened.get("access_token"):
                self._seal_in_place(team, user, opened)
        self._opened[remembered] = opened
        return opened

    def _seal_in_place(self, team: str, user: str, plain: dict[str, str]) -> None:
        """Replace the plain attributes with the sealed value, only if the item still holds that token."""
        remove = ", ".join(name for name in PLAIN_SECRETS)
        try:
            self.store.client.update_item(
                TableName=self.store.table_name,
                Key=key(f"TEAM#{team}", f"USER#{user}"),
                UpdateExpression=f"SET {SEALED} = :sealed REMOVE {remove}",
                ConditionExpression="access_token = :token",
                ExpressionAttributeValues={
                    ":sealed": {"S": self.seal(team, user, plain)},
                    ":token": {"S": plain["access_token"]},
                },
            )
            logger.info("connection tokens sealed in place", extra={"team": team, "user": user})
        except ClientError as error:
            if not failed_condition(error):  # changed meanwhile: the new item is sealed already
                logger.warning("could not seal an old connection's tokens", extra={"team": team, "user": user})
        except Exception:  # noqa: BLE001 - the call goes on with the tokens read; the next one tries again
            logger.exception("could not seal an old connection's tokens", extra={"team": team, "user": user})

    # -- the OAuth 2.0 refresh lease -------------------------------------------------------
    def take_lease(
        self, team: str, user: str, *, revision: str, token_version: int, lease_id: str, now: int, until: int
    ) -> bool:
        """Take the right to refresh: only for the tokens of ``token_version``, and only if no lease is live."""
        return self._update(
            team,
            user,
            "SET lease_id = :lease, lease_until = :until",
            "revision = :revision AND token_version = :version AND "
            "(attribute_not_exists(lease_until) OR lease_until <= :now)",
            {
                ":lease": {"S": lease_id},
                ":until": {"N": str(until)},
                ":revision": {"S": revision},
                ":version": {"N": str(token_version)},
                ":now": {"N": str(now)},
            },
        )

    def save_refreshed(
        self, team: str, user: str, *, lease_id: str, sealed: str, token_version: int, access_expires_at: int, now: int
    ) -> bool:
        """Store rotated tokens and end the lease, only while this lease still holds."""
        return self._update(
            team,
            user,
            "SET sealed = :sealed, token_version = :version, access_expires_at = :expires, refreshed_at = :now "
            "REMOVE lease_id, lease_until",
            "lease_id = :lease",
            {
                ":sealed": {"S": sealed},
                ":version": {"N": str(token_version)},
                ":expires": {"N": str(access_expires_at)},
                ":now": {"N": str(now)},
                ":lease": {"S": lease_id},
            },
        )

    def release_lease(self, team: str, user: str, lease_id: str) -> bool:
        """End a lease without new tokens (the refresh failed in a way that keeps the connection)."""
        return self._update(
            team, user, "REMOVE lease_id, lease_until", "lease_id = :lease", {":lease": {"S": lease_id}}
        )

    def drop(self, team: str, user: str, *, revision: str, token_version: int) -> bool:
        """Delete the connection Jira no longer honours, unless it changed meanwhile (a new connect)."""
        try:
            self.store.client.delete_item(
                TableName=self.store.table_name,
                Key=key(f"TEAM#{team}", f"USER#{user}"),
                ConditionExpression="revision = :revision AND token_version = :version",
                ExpressionAttributeValues={
                    ":revision": {"S": revision},
                    ":version": {"N": str(token_version)},
                },
            )
        except ClientError as error:
            if failed_condition(error):
                return False
            raise
        return True

    def read(self, team: str, user: str) -> dict[str, Any] | None:
        """The connection item as stored now (a consistent read)."""
        response = self.store.client.get_item(
            TableName=self.store.table_name, Key=key(f"TEAM#{team}", f"USER#{user}"), ConsistentRead=True
        )
        return from_item(response.get("Item"))

    def _update(self, team: str, user: str, update: str, condition: str, values: dict[str, Any]) -> bool:
        try:
            self.store.client.update_item(
                TableName=self.store.table_name,
                Key=key(f"TEAM#{team}", f"USER#{user}"),
                UpdateExpression=update,
                ConditionExpression=f"attribute_exists(pk) AND ({condition})",
                ExpressionAttributeValues=values,
            )
        except ClientError as error:
            if failed_condition(error):
                return False
            raise
        return True
