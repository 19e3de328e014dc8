"""Everything but private keys, in one DynamoDB table.

Items (``pk`` / ``sk``):

=====================  ===============  =====================================
``TEAM#<team>``        ``INTEGRATION``  the team's Jira config (no key); ``version``, ``revision``
``TEAM#<team>``        ``USER#<user>``  a user's connection (access token); ``revision``
``LINK#<id>``          ``LINK``         a connect or setup link; ``ttl``
``RT#<sha256(token)>`` ``RT``           a pending sign-in (request token); ``ttl``
``APIKEY#<sha256>``    ``APIKEY``       a service API key, stored only as a hash
=====================  ===============  =====================================

``ttl`` (epoch seconds) lets DynamoDB expire items; since it deletes them
lazily, reads check ``expires_at`` too. Writes that must happen once
(consuming a request token, completing a link) are conditional writes.

Two numbers keep connections honest. ``version`` goes up on every write of
the integration, and each write is conditional on the version it read, so two
setups racing cannot both win. ``revision`` names what Jira tokens are valid
for (the Jira site and its Application Link); it changes when the integration
moves to another site or consumer key. A connection records the revision it
was made under, is stored only while the integration still has it (one
transaction with completing its link), and is never used under another one.

Example::

    store = Store("jira-oauth-broker-local")
    store.get_integration("acme")
"""

from __future__ import annotations

import hashlib
from typing import Any

from botocore.exceptions import ClientError

from . import aws
from .dynamo import (
    ConditionFailed,
    failed_condition,
    from_item,
    key,
    merged,
    to_item,
    transaction_failure,
    version_condition,
)
from .errors import Gone, NotFound

PENDING = "pending"
CONSUMED = "consumed"
OPEN = "open"
COMPLETED = "completed"
DELETING = "deleting"  # an integration being deleted: invisible to every reader but delete and put


def token_hash(token: str) -> str:
    """Tokens are looked up by hash, so the table never holds a request token or API key."""
    return hashlib.sha256(token.encode()).hexdigest()


class Store:
    """The broker's DynamoDB table. Pass ``client`` to use a specific boto3 client."""

    def __init__(self, table_name: str, client: Any | None = None) -> None:
        self.table_name = table_name
        self._client = client

    @property
    def client(self) -> Any:
        return self._client or aws.client("dynamodb")

    # -- generic -------------------------------------------------------------
    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        response = self.client.get_item(TableName=self.table_name, Key=key(pk, sk), ConsistentRead=True)
        return from_item(response.get("Item"))

    def _put(self, pk: str, sk: str, values: dict[str, Any]) -> None:
        self.client.put_item(TableName=self.table_name, Item=to_item({**values, "pk": pk, "sk": sk}))

    def _delete(self, pk: str, sk: str, **condition: Any) -> dict[str, Any] | None:
        response = self.client.delete_item(
            TableName=self.table_name, Key=key(pk, sk), ReturnValues="ALL_OLD", **condition
        )
        return from_item(response.get("Attributes"))

    def _query_keys(self, pk: str, sk_prefix: str = "", also: str = "") -> list[dict[str, Any]]:
        """The keys (plus the attribute ``also``, if named) of every item under ``pk``."""
        keys: list[dict[str, Any]] = []
        values: dict[str, Any] = {":pk": {"S": pk}}
        condition = "pk = :pk"
        if sk_prefix:  # DynamoDB refuses an empty string in a key condition
            condition += " AND begins_with(sk, :prefix)"
            values[":prefix"] = {"S": sk_prefix}
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ProjectionExpression": "pk, sk" + (f", {also}" if also else ""),
            "ConsistentRead": True,
        }
        while True:
            page = self.client.query(**kwargs)
            keys.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return keys
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _delete_keys(self, keys: list[dict[str, Any]]) -> int:
        for start in range(0, len(keys), 25):
            requests = [{"DeleteRequest": {"Key": k}} for k in keys[start : start + 25]]
            pending: dict[str, Any] = {self.table_name: requests}
            while pending:
                response = self.client.batch_write_item(RequestItems=pending)
                pending = response.get("UnprocessedItems") or {}
        return len(keys)

    def _transact(self, steps: list[tuple[str, dict[str, Any]]]) -> None:
        """All of ``steps`` (name, TransactItem) or none; a failed condition raises :class:`ConditionFailed`."""
        items = [{kind: {"TableName": self.table_name, **spec}} for _, item in steps for kind, spec in item.items()]
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as error:
            failed = transaction_failure(error, [name for name, _ in steps])
            if failed is not None:
                raise failed from None
            raise

    # -- integrations ----------------------------------------------------------
    def get_integration(self, team: str) -> dict[str, Any] | None:
        """The team's live integration; None when there is none or it is being deleted."""
        return live_integration(self.get_integration_record(team))

    def get_integration_record(self, team: str) -> dict[str, Any] | None:
        """The integration item as stored, including one marked ``deleting`` (for put and delete)."""
        return self._get(f"TEAM#{team}", "INTEGRATION")

    def save_integration(
        self, team: str, values: dict[str, Any], *, expected_version: int | None, complete_link: str | None = None
    ) -> None:
        """Write the integration if nobody changed it since it was read (optimistic concurrency).

        ``expected_version`` is the version read before (None: there was no item).
        With ``complete_link``, that setup link is completed in the same transaction,
        so a used link never writes and a write never leaves its link open.

        Raises:
            ConditionFailed: ``"integration"`` (another write won) or ``"link"`` (the link was used).
        """
        put = {
            "Item": to_item({**values, "pk": f"TEAM#{team}", "sk": "INTEGRATION"}),
            **version_condition(expected_version),
        }
        if complete_link is None:
            try:
                self.client.put_item(TableName=self.table_name, **put)
            except ClientError as error:
                if failed_condition(error):
                    raise ConditionFailed("integration") from None
                raise
            return
        self._transact(
            [("link", {"Update": _completing_link(complete_link, values["updated_at"])}), ("integration", {"Put": put})]
        )

    def mark_integration_deleting(self, team: str, version: int) -> None:
        """Hide the integration from every reader before its parts are deleted (step 1 of a delete)."""
        try:
            update = {
                "TableName": self.table_name,
                "Key": key(f"TEAM#{team}", "INTEGRATION"),
                "UpdateExpression": "SET #status = :deleting",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {":deleting": {"S": DELETING}},
            }
            self.client.update_item(**merged(update, version_condition(version)))
        except ClientError as error:
            if failed_condition(error):
                raise ConditionFailed("integration") from None
            raise

    def delete_deleting_integration(self, team: str, version: int) -> None:
        """The last step of a delete: remove the marked item, unless a new setup replaced it meanwhile."""
        version_is = version_condition(version)
        condition = {
            **version_is,
            "ConditionExpression": f"#status = :deleting AND ({version_is['ConditionExpression']})",
            "ExpressionAttributeNames": {"#status": "status"},
        }
        condition = merged(condition, {"ExpressionAttributeValues": {":deleting": {"S": DELETING}}})
        try:
            self._delete(f"TEAM#{team}", "INTEGRATION", **condition)
        except ClientError as error:
            if not failed_condition(error):
                raise

    # -- connections -----------------------------------------------------------
    def get_connection(self, team: str, user: str) -> dict[str, Any] | None:
        return self._get(f"TEAM#{team}", f"USER#{user}")

    def get_integration_and_connection(
        self, team: str, user: str
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Both items in one BatchGetItem: a proxied call costs one DynamoDB read."""
        keys = [key(f"TEAM#{team}", "INTEGRATION"), key(f"TEAM#{team}", f"USER#{user}")]
        request: dict[str, Any] = {self.table_name: {"Keys": keys, "ConsistentRead": True}}
        found: dict[str, dict[str, Any]] = {}
        while request:
            response = self.client.batch_get_item(RequestItems=request)
            for raw in response.get("Responses", {}).get(self.table_name, []):
                item = from_item(raw)
                assert item is not None
                found[item["sk"]] = item
            request = response.get("UnprocessedKeys") or {}
        return live_integration(found.get("INTEGRATION")), found.get(f"USER#{user}")

    def commit_connection(self, team: str, user: str, values: dict[str, Any], *, link_id: str, now: int) -> None:
        """Store a connection, complete its link, and check the integration is still the revision it
        was made under: all three in one transaction, or nothing.

        Raises:
            ConditionFailed: ``"link"`` (already used: another sign-in of the same link won) or
                ``"integration"`` (changed, moved to another Jira, or deleted meanwhile).
        """
        live_revision = {
            "Key": key(f"TEAM#{team}", "INTEGRATION"),
            "ConditionExpression": "revision = :revision AND (attribute_not_exists(#status) OR #status <> :deleting)",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {":revision": {"S": values["revision"]}, ":deleting": {"S": DELETING}},
        }
        connection = {"Item": to_item({**values, "pk": f"TEAM#{team}", "sk": f"USER#{user}"})}
        self._transact(
            [
                ("link", {"Update": _completing_link(link_id, now)}),
                ("integration", {"ConditionCheck": live_revision}),
                ("connection", {"Put": connection}),
            ]
        )

    def touch_connection(self, team: str, user: str, now: int, every: int) -> bool:
        """Record ``last_used_at``, at most once per ``every`` seconds (a conditional write)."""
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=key(f"TEAM#{team}", f"USER#{user}"),
                UpdateExpression="SET last_used_at = :now",
                ConditionExpression="attribute_exists(pk) AND "
                "(attribute_not_exists(last_used_at) OR last_used_at <= :cutoff)",
                ExpressionAttributeValues={":now": {"N": str(now)}, ":cutoff": {"N": str(now - every)}},
            )
        except ClientError as error:
            if failed_condition(error):
                return False
            raise
        return True

    def delete_connection(self, team: str, user: str, *, revision: str | None = None) -> bool:
        """Delete a connection; with ``revision``, only if it is still the one made under that revision."""
        condition: dict[str, Any] = {}
        if revision is not None:
            condition = {
                "ConditionExpression": "revision = :revision",
                "ExpressionAttributeValues": {":revision": {"S": revision}},
            }
        try:
            return self._delete(f"TEAM#{team}", f"USER#{user}", **condition) is not None
        except ClientError as error:
            if failed_condition(error):
                return False
            raise

    def delete_team_connections(self, team: str) -> int:
        return self._delete_keys(self._query_keys(f"TEAM#{team}", "USER#"))

    def delete_connections_not_of(self, team: str, revision: str) -> int:
        """Delete the team's connections made under any other revision; returns how many went.

        Each delete is conditional, so a connection made under ``revision`` in the meantime
        (a sign-in that began after the integration changed) is never swept away.
        """
        dropped = 0
        for item in self._query_keys(f"TEAM#{team}", "USER#", also="revision"):
            if item.get("revision", {}).get("S") == revision:
                continue
            try:
                self.client.delete_item(
                    TableName=self.table_name,
                    Key={"pk": item["pk"], "sk": item["sk"]},
                    ConditionExpression="attribute_not_exists(revision) OR revision <> :revision",
                    ExpressionAttributeValues={":revision": {"S": revision}},
                )
                dropped += 1
            except ClientError as error:
                if not failed_condition(error):
                    raise
        return dropped

    # -- connect and setup links ------------------------------------------------
    def put_link(self, link_id: str, values: dict[str, Any]) -> None:
        self._put(f"LINK#{link_id}", "LINK", {**values, "status": OPEN})

    def get_link(self, link_id: str) -> dict[str, Any] | None:
        return self._get(f"LINK#{link_id}", "LINK")

    # -- pending request tokens ----------------------------------------------
    def put_pending(self, request_token: str, values: dict[str, Any]) -> None:
        self._put(f"RT#{token_hash(request_token)}", "RT", {**values, "status": PENDING})

    def get_pending(self, request_token: str) -> dict[str, Any]:
        """A pending sign-in, read without consuming it.

        Raises:
            NotFound: ``request_token_unknown``.
        """
        pending = self._get(f"RT#{token_hash(request_token)}", "RT")
        if pending is None:
            raise _why_not_pending(None)
        return pending

    def consume_pending(self, request_token: str, now: int) -> dict[str, Any]:
        """Take a pending request token exactly once.

        A single conditional update flips ``pending`` to ``consumed``; of two
        callbacks racing for one token, DynamoDB lets exactly one through.

        Raises:
            NotFound: ``request_token_unknown``.
            Gone: ``request_token_used`` (a replay) or ``request_token_expired``.
        """
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=key(f"RT#{token_hash(request_token)}", "RT"),
                UpdateExpression="SET #status = :consumed, consumed_at = :now",
                ConditionExpression="#status = :pending AND expires_at > :now",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":consumed": {"S": CONSUMED},
                    ":pending": {"S": PENDING},
                    ":now": {"N": str(now)},
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if failed_condition(error):
                raise _why_not_pending(from_item(error.response.get("Item"))) from None
            raise
        item = from_item(response.get("Attributes"))
        assert item is not None
        return item

    # -- API keys --------------------------------------------------------------
    def put_api_key(self, key_hash: str, values: dict[str, Any]) -> None:
        self._put(f"APIKEY#{key_hash}", "APIKEY", values)

    def get_api_key(self, key_hash: str) -> dict[str, Any] | None:
        return self._get(f"APIKEY#{key_hash}", "APIKEY")


def live_integration(integration: dict[str, Any] | None) -> dict[str, Any] | None:
    """The integration record, unless it is missing or being deleted (then None)."""
    if integration is None or integration.get("status") == DELETING:
        return None
    return integration


def _completing_link(link_id: str, now: int) -> dict[str, Any]:
    """A transaction step: the link goes from open to completed, once."""
    return {
        "Key": key(f"LINK#{link_id}", "LINK"),
        "UpdateExpression": "SET #status = :completed, completed_at = :now",
        "ConditionExpression": "#status = :open",
        "ExpressionAttributeNames": {"#status": "status"},
        "ExpressionAttributeValues": {
            ":completed": {"S": COMPLETED},
            ":open": {"S": OPEN},
            ":now": {"N": str(now)},
        },
    }


def _why_not_pending(old: dict[str, Any] | None) -> Exception:
    if old is None:
        # A conditional update on a missing item creates nothing: the condition
        # on #status fails, and there is no old item to return.
        return NotFound(
            "This answer from Jira does not match any sign-in the broker started.",
            code="request_token_unknown",
        )
    if old.get("status") == CONSUMED:
        return Gone(
            "This answer from Jira was already used.",
            code="request_token_used",
        )
    return Gone(
        "The sign-in took longer than the 10 minutes Jira allows.",
        code="request_token_expired",
    )
