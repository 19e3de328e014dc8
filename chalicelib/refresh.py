"""OAuth 2.0 access tokens kept fresh, with one refresh per connection at a time across every container.

Jira rotates the refresh token on every refresh, and a refresh token sent twice is reuse
(RFC 9700: the provider may revoke the whole grant). Many Lambda containers serve one user
at once, so a per-process lock is not enough: the right to refresh is a short **lease** in
the connection item, taken with a DynamoDB conditional write that also requires the token
version the caller saw. Exactly one caller wins; it refreshes and stores the new tokens with
``token_version + 1``. The others poll the item until the version moves on and use the new
access token, so a refresh token is sent once, by the lease holder.

A lease outlives any refresh call (:data:`LEASE_SECONDS` > the Jira call deadline), and one
left by a crashed container ends on its own. What each failure leaves:

- ``invalid_grant`` (expired, revoked, link deleted): the connection is deleted and the caller
  gets 401 ``reauthorization_required`` with a fresh connect link.
- Jira unreachable (nothing was sent): the lease is released, the tokens stay, the caller gets the 502.
- The answer was lost after sending (timeout, cut-off body): Jira may have rotated. The holder sends
  the same refresh token once more, at once: if Jira had not rotated, that recovers; if it had,
  the token is dead anyway, Jira answers ``invalid_grant`` and the user reconnects. A second loss
  releases the lease and answers the error. Never a loop: one request sends at most two refreshes.

Example::

    fresh = FreshTokens(tokens, jira, "acme", "alice", settings)
    current = fresh.current(connection)          # refreshed first when within a minute of expiry
"""

from __future__ import annotations

import random
import secrets
import time
from dataclasses import dataclass
from typing import Any

from . import clock, observability
from .config import Settings
from .connection_tokens import ConnectionTokens
from .deadline import budget_left
from .errors import BrokerError, JiraBadResponse, JiraTimeout
from .logs import logger
from .oauth2 import JiraOAuth2Client, OAuth2Error, Tokens

EARLY_SECONDS = 60  # a token this close to expiry is refreshed before use
LEASE_SECONDS = 15  # longer than one call to Jira may take (10 s by default)
_POLL = (0.05, 0.15)  # seconds between reads while another container refreshes


@dataclass(frozen=True)
class Current:
    """The access token to use now, and which version of the connection's tokens it is."""

    access_token: str
    version: int
    expires_at: int


class RefreshBusy(BrokerError):
    """Another container's refresh of this connection did not finish in time for this request."""

    code = "token_refresh_busy"
    status = 503
    retry_after = 2


class FreshTokens:
    """One connection's access token, refreshed single-flight (see the module docstring)."""

    def __init__(
        self, tokens: ConnectionTokens, jira: JiraOAuth2Client, team: str, user: str, settings: Settings
    ) -> None:
        self.tokens = tokens
        self.jira = jira
        self.team = team
        self.user = user
        self.settings = settings

    def current(self, connection: dict[str, Any], *, rejected_version: int | None = None) -> Current:
        """The access token to send. Refreshed first when it expires within a minute, or when Jira
        rejected version ``rejected_version`` of it and nobody has refreshed since."""
        while True:
            seen = self._current_of(connection)
            stale = rejected_version is not None and seen.version <= rejected_version
            if not stale and seen.expires_at - clock.now() > EARLY_SECONDS:
                return seen
            refreshed = self._refresh_once(connection, seen)
            if refreshed is not None:
                return refreshed
            connection = self._wait_for_another(seen.version)

    def _current_of(self, connection: dict[str, Any]) -> Current:
        opened = self.tokens.open(self.team, self.user, connection)
        return Current(
            opened.get("access_token", ""),
            int(connection.get("token_version") or 1),
            int(connection.get("access_expires_at") or 0),
        )

    def _refresh_once(self, connection: dict[str, Any], seen: Current) -> Current | None:
        """Refresh if this caller gets the lease; None when another one holds it."""
        lease_id, now = secrets.token_hex(8), clock.now()
        revision = str(connection.get("revision") or "")
        if not self.tokens.take_lease(
            self.team,
            self.user,
            revision=revision,
            token_version=seen.version,
            lease_id=lease_id,
            now=now,
            until=now + LEASE_SECONDS,
        ):
            return None
        refresh_token = self.tokens.open(self.team, self.user, connection).get("refresh_token", "")
        try:
            new = self._call_refresh(refresh_token)
        except OAuth2Error as error:
            self.tokens.release_lease(self.team, self.user, lease_id)
            raise self._refused(error, revision, seen.version) from None
        except BrokerError:
            self.tokens.release_lease(self.team, self.user, lease_id)
            raise
        return self._store(new, lease_id, seen.version + 1)

    def _call_refresh(self, refresh_token: str) -> Tokens:
        """One refresh, sent a second time only when the first one's answer was lost (see the module)."""
        try:
            return self.jira.refresh(refresh_token)
        except (JiraTimeout, JiraBadResponse) as lost:
            left = budget_left()
            if left is not None and left < 1:
                raise
            logger.warning(
                "refresh answer lost; sending the refresh once more",
                extra={"team": self.team, "user": self.user, "code": lost.code},
            )
            return self.jira.refresh(refresh_token)

    def _store(self, new: Tokens, lease_id: str, version: int) -> Current:
        now = clock.now()
        sealed = self.tokens.seal(
            self.team, self.user, {"access_token": new.access_token, "refresh_token": new.refresh_token}
        )
        expires_at = now + new.expires_in
        saved = self.tokens.save_refreshed(
            self.team,
            self.user,
            lease_id=lease_id,
            sealed=sealed,
            token_version=version,
            access_expires_at=expires_at,
            now=now,
        )
        if not saved:  # deleted (disconnected) meanwhile: use the token for this call, keep nothing
            logger.warning("refreshed tokens not stored: the lease was lost", extra={"team": self.team})
        observability.count("TokenRefreshes")
        return Current(new.access_token, version, expires_at)

    def _refused(self, error: OAuth2Error, revision: str, version: int) -> BrokerError:
        from .connect import reconnect_error  # connect imports the pages; only a refused refresh needs them

        if error.error == "invalid_grant":
            self.tokens.drop(self.team, self.user, revision=revision, token_version=version)
            logger.info(
                "connection dropped by jira", extra={"team": self.team, "user": self.user, "problem": "invalid_grant"}
            )
            reason = (
                f"Jira at {self.jira.host} no longer accepts {self.user}'s authorization (invalid_grant on refresh)."
            )
            return reconnect_error(self.team, self.user, reason, self.settings, oauth2_error=error.error)
        return BrokerError(
            f"Jira at {self.jira.host} refused to refresh {self.user}'s token with error={error.error}. An admin "
            f"must fix the integration (PUT /v1/teams/{self.team}/jira); {self.user}'s connection is kept.",
            code="integration_broken",
            status=502,
            details={"oauth2_error": error.error},
        )

    def _wait_for_another(self, version: int) -> dict[str, Any]:
        """Poll the item until another container's refresh lands (or its lease ends); the item then."""
        give_up = time.monotonic() + min(LEASE_SECONDS + 1.0, budget_left() or LEASE_SECONDS + 1.0)
        while time.monotonic() < give_up:
            time.sleep(random.uniform(*_POLL))  # noqa: S311 - jitter, not a secret  # nosec B311
            connection = self.tokens.read(self.team, self.user)
            if connection is None:
                from .connect import not_connected

                raise not_connected(self.team, self.user)
            moved_on = int(connection.get("token_version") or 1) > version
            if moved_on or int(connection.get("lease_until") or 0) <= clock.now():
                return connection
        raise RefreshBusy(
            f"Another request is refreshing {self.user}'s Jira token and has not finished. Try again in a few seconds."
        )
