"""DynamoDB plumbing shared by the store: items to and from DynamoDB's typed JSON, keys, and
what a failed condition or a cancelled transaction says.

Example::

    item = to_item({"pk": "TEAM#acme", "sk": "INTEGRATION", "version": 3})
    from_item(item)["version"]          # 3 (an int, not a Decimal)
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    """A plain dict as a DynamoDB item; None values are left out (DynamoDB has no use for them)."""
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def from_item(item: dict[str, Any] | None) -> dict[str, Any] | None:
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


def key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def failed_condition(error: ClientError) -> bool:
    return error_code(error) == "ConditionalCheckFailedException"


class ConditionFailed(Exception):
    """A conditional write (or one step of a transaction) found the item not as expected.

    ``step`` names which condition failed (``"link"``, ``"integration"``, ...), so the
    caller can say what changed; ``old`` is the item as it was, when DynamoDB returned it.
    """

    def __init__(self, step: str, old: dict[str, Any] | None = None) -> None:
        super().__init__(f"the {step} changed")
        self.step = step
        self.old = old


def transaction_failure(error: ClientError, steps: list[str]) -> ConditionFailed | None:
    """Which named step's condition cancelled a TransactWriteItems; None if it failed another way.

    DynamoDB lists one reason per item, in order: ``ConditionalCheckFailed`` marks the
    item whose condition did not hold (``None`` for the others).
    """
    if error_code(error) != "TransactionCanceledException":
        return None
    reasons = error.response.get("CancellationReasons") or []
    for step, reason in zip(steps, reasons, strict=False):
        if reason.get("Code") == "ConditionalCheckFailed":
            return ConditionFailed(step, from_item(reason.get("Item")))
    return None


def version_condition(expected: int | None) -> dict[str, Any]:
    """The condition that an item is still as it was read: absent, or at ``expected``.

    Items written before they had a ``version`` count as version 0.
    """
    if expected is None:
        return {"ConditionExpression": "attribute_not_exists(pk)"}
    if expected == 0:
        return {"ConditionExpression": "attribute_exists(pk) AND attribute_not_exists(version)"}
    return {
        "ConditionExpression": "version = :expected_version",
        "ExpressionAttributeValues": {":expected_version": {"N": str(expected)}},
    }


def merged(request: dict[str, Any], condition: dict[str, Any]) -> dict[str, Any]:
    """``request`` with ``condition`` added, their expression names and values combined."""
    merged = {**request, **condition}
    for part in ("ExpressionAttributeNames", "ExpressionAttributeValues"):
        combined = {**request.get(part, {}), **condition.get(part, {})}
        if combined:
            merged[part] = combined
    return merged
