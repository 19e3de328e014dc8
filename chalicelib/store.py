"""Everything but private keys, in one DynamoDB table.

Items (``pk`` / ``sk``):

=====================  ===============  =====================================
``TEAM#<team>``        ``INTEGRATION``  the team's Jira config (no key)
``TEAM#<team>``        ``USER#<user>``  a user's connection (access token)
``LINK#<id>``          ``LINK``         a connect link; ``ttl``
``RT#<sha256(token)>`` ``RT``           a pending request token; ``ttl``
``APIKEY#<sha256>``    ``APIKEY``       a service API key, stored only as a hash
=====================  ===============  =====================================

``ttl`` (epoch seconds) lets DynamoDB expire items; since it deletes them
lazily, reads check ``expires_at`` too. Writes that must happen once
(consuming a request token, completing a link) are conditional writes.

Example::

    store = Store("jira-oauth-broker-local")
    store.get_integration("acme")
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from . import aws
from .errors import Gone, NotFound

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

PENDING = "pending"
CONSUMED = "consumed"
OPEN = "open"
COMPLETED = "completed"


def token_hash(token: str) -> str:
    """Tokens are looked up by hash, so the table never holds a request token or API key."""
    return hashlib.sha256(token.encode()).hexdigest()


def _to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def _from_item(item: dict[str, Any] | None) -> dict[str, Any] | None:
    if not item:
        return None
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; the broker only stores whole numbers."""
    if isinstance(value, Decimal):
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class StatusChanged(Exception):
    """A conditional status change lost: ``old`` is the item as it was (None when missing)."""

    def __init__(self, old: dict[str, Any] | None) -> None:
        super().__init__("the item's status changed")
        self.old = old


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _failed_condition(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


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
        response = self.client.get_item(TableName=self.table_name, Key=_key(pk, sk), ConsistentRead=True)
        return _from_item(response.get("Item"))

    def _put(self, pk: str, sk: str, values: dict[str, Any]) -> dict[str, Any] | None:
        item = _to_item({**values, "pk": pk, "sk": sk})
        response = self.client.put_item(TableName=self.table_name, Item=item, ReturnValues="ALL_OLD")
        return _from_item(response.get("Attributes"))

    def _delete(self, pk: str, sk: str) -> dict[str, Any] | None:
        response = self.client.delete_item(TableName=self.table_name, Key=_key(pk, sk), ReturnValues="ALL_OLD")
        return _from_item(response.get("Attributes"))

    def _query_keys(self, pk: str, sk_prefix: str = "") -> list[dict[str, Any]]:
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
            "ProjectionExpression": "pk, sk",
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
            requests = [{"DeleteRequest": {"Key": key}} for key in keys[start : start + 25]]
            pending: dict[str, Any] = {self.table_name: requests}
            while pending:
                response = self.client.batch_write_item(RequestItems=pending)
                pending = response.get("UnprocessedItems") or {}
        return len(keys)

    # -- integrations ----------------------------------------------------------
    def get_integration(self, team: str) -> dict[str, Any] | None:
        return self._get(f"TEAM#{team}", "INTEGRATION")

    def put_integration(self, team: str, values: dict[str, Any]) -> None:
        self._put(f"TEAM#{team}", "INTEGRATION", values)

    def delete_team(self, team: str) -> int:
        """Delete the integration and every connection of the team; returns how many items went."""
        return self._delete_keys(self._query_keys(f"TEAM#{team}"))

    # -- connections -----------------------------------------------------------
    def get_connection(self, team: str, user: str) -> dict[str, Any] | None:
        return self._get(f"TEAM#{team}", f"USER#{user}")

    def put_connection(self, team: str, user: str, values: dict[str, Any]) -> None:
        self._put(f"TEAM#{team}", f"USER#{user}", values)

    def get_integration_and_connection(
        self, team: str, user: str
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Both items in one BatchGetItem: a proxied call costs one DynamoDB read."""
        keys = [_key(f"TEAM#{team}", "INTEGRATION"), _key(f"TEAM#{team}", f"USER#{user}")]
        request: dict[str, Any] = {self.table_name: {"Keys": keys, "ConsistentRead": True}}
        found: dict[str, dict[str, Any]] = {}
        while request:
            response = self.client.batch_get_item(RequestItems=request)
            for raw in response.get("Responses", {}).get(self.table_name, []):
                item = _from_item(raw)
                assert item is not None
                found[item["sk"]] = item
            request = response.get("UnprocessedKeys") or {}
        return found.get("INTEGRATION"), found.get(f"USER#{user}")

    def touch_connection(self, team: str, user: str, now: int, every: int) -> bool:
        """Record ``last_used_at``, at most once per ``every`` seconds (a conditional write)."""
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=_key(f"TEAM#{team}", f"USER#{user}"),
                UpdateExpression="SET last_used_at = :now",
                ConditionExpression="attribute_exists(pk) AND "
                "(attribute_not_exists(last_used_at) OR last_used_at <= :cutoff)",
                ExpressionAttributeValues={":now": {"N": str(now)}, ":cutoff": {"N": str(now - every)}},
            )
        except ClientError as error:
            if _failed_condition(error):
                return False
            raise
        return True

    def delete_connection(self, team: str, user: str) -> bool:
        return self._delete(f"TEAM#{team}", f"USER#{user}") is not None

    def delete_team_connections(self, team: str) -> int:
        return self._delete_keys(self._query_keys(f"TEAM#{team}", "USER#"))

    # -- connect links ---------------------------------------------------------
    def put_link(self, link_id: str, values: dict[str, Any]) -> None:
        self._put(f"LINK#{link_id}", "LINK", {**values, "status": OPEN})

    def get_link(self, link_id: str) -> dict[str, Any] | None:
        return self._get(f"LINK#{link_id}", "LINK")

    def complete_link(self, link_id: str, now: int) -> bool:
        """Mark a link completed, once. False when it was already completed (or is gone)."""
        try:
            self._flip_status(f"LINK#{link_id}", "LINK", OPEN, COMPLETED, now, field="completed_at")
        except StatusChanged:
            return False
        return True

    # -- pending request tokens ----------------------------------------------
    def put_pending(self, request_token: str, values: dict[str, Any]) -> None:
        self._put(f"RT#{token_hash(request_token)}", "RT", {**values, "status": PENDING})

    def consume_pending(self, request_token: str, now: int) -> dict[str, Any]:
        """Take a pending request token exactly once.

        A single conditional update flips ``pending`` to ``consumed``; of two
        callbacks racing for one token, DynamoDB lets exactly one through.

        Raises:
            NotFound: ``request_token_unknown``.
            Gone: ``request_token_used`` (a replay) or ``request_token_expired``.
        """
        key = f"RT#{token_hash(request_token)}"
        try:
            return self._flip_status(key, "RT", PENDING, CONSUMED, now, field="consumed_at", unexpired=True)
        except StatusChanged as changed:
            raise _why_not_pending(changed.old) from None

    def _flip_status(
        self, pk: str, sk: str, old: str, new: str, now: int, *, field: str, unexpired: bool = False
    ) -> dict[str, Any]:
        """Move an item's status from ``old`` to ``new`` in one conditional write; returns the new item.

        Raises:
            StatusChanged: the item is missing, not in ``old``, or (with ``unexpired``) past ``expires_at``.
        """
        condition = "#status = :old" + (" AND expires_at > :now" if unexpired else "")
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=_key(pk, sk),
                UpdateExpression=f"SET #status = :new, {field} = :now",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":new": {"S": new}, ":old": {"S": old}, ":now": {"N": str(now)}},
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if _failed_condition(error):
                raise StatusChanged(_from_item(error.response.get("Item"))) from None
            raise
        item = _from_item(response.get("Attributes"))
        assert item is not None
        return item

    # -- API keys --------------------------------------------------------------
    def put_api_key(self, key_hash: str, values: dict[str, Any]) -> None:
        self._put(f"APIKEY#{key_hash}", "APIKEY", values)

    def get_api_key(self, key_hash: str) -> dict[str, Any] | None:
        return self._get(f"APIKEY#{key_hash}", "APIKEY")


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
