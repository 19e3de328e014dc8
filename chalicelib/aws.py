"""Lazily created, cached boto3 clients.

A client is made on first use, not at import, so moto (tests) or
``AWS_ENDPOINT_URL`` (the local runner) is in place by then. Warm Lambda
containers reuse it.

It also says which AWS failures are *storage trouble* (throttling, a 5xx, no
connection, a timeout): the broker answers those with 503 ``storage_unavailable``
and ``Retry-After``, not 500, because trying again shortly may well work.

Example::

    dynamodb = aws.client("dynamodb")
    try:
        dynamodb.get_item(...)
    except ClientError as error:
        if aws.storage_trouble(error):
            raise StorageUnavailable() from error
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from .errors import BrokerError, Conflict, StorageUnavailable

_clients: dict[tuple[str, str, str], Any] = {}
_session: list[boto3.session.Session] = []  # one per process: a second would load botocore's data again
_lock = threading.Lock()

# Short timeouts and bounded retries: every route must answer inside API Gateway's 29 seconds,
# most of that budget belongs to Jira, and the authorizer has 5 s in all. total_max_attempts
# counts the first try (``max_attempts`` would not: 3 meant 4 tries, up to ~20 s on a hung table).
_CONFIG = Config(connect_timeout=2, read_timeout=3, retries={"total_max_attempts": 3, "mode": "standard"})


def client(service: str) -> Any:
    """Return the cached boto3 client for ``service`` in the current region/endpoint."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    key = (service, region, endpoint)
    with _lock:
        if key not in _clients:
            # One shared Session (used only under the lock: Sessions are not thread-safe): each new one
            # parses botocore's endpoint and config data again, ~40 ms of a cold start per client.
            if not _session:
                _session.append(boto3.session.Session())
            _clients[key] = _session[0].client(
                service, region_name=region, endpoint_url=endpoint or None, config=_CONFIG
            )
        return _clients[key]


def reset_clients() -> None:
    """Forget every cached client (tests start a fresh moto per test)."""
    with _lock:
        _clients.clear()
        _session.clear()  # credentials and region are read again, from the environment of the next test


# Error codes that mean "AWS could not serve this just now", not "this request is wrong".
# DynamoDB and Secrets Manager spell their 5xx and throttling codes differently.
_TROUBLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "InternalFailure",
        "InternalServiceError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
# A cancelled TransactWriteItems names a reason per item; these are throttling, not a failed condition.
_TROUBLE_REASONS = frozenset({"ThrottlingError", "ProvisionedThroughputExceeded"})
# Another transaction was writing the same item at that moment: the table answered, so this is
# not an outage (no 503) but a race the caller can simply run again (409).
_CONFLICT_CODES = frozenset({"TransactionConflictException"})


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _cancellation_reasons(error: ClientError) -> set[str]:
    reasons = error.response.get("CancellationReasons") or []
    return {str(r.get("Code")) for r in reasons if r.get("Code") not in (None, "None")}


def storage_trouble(error: BaseException) -> bool:
    """True for AWS failures a retry in a few seconds may cure: throttling, 5xx, no connection, timeouts.

    Example::

        storage_trouble(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))   # True
    """
    if isinstance(error, BotoConnectionError | HTTPClientError):
        # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError, ...
        return True
    if not isinstance(error, ClientError):
        return False
    code = _code(error)
    if code in _TROUBLE_CODES or _status(error) >= 500:
        return True
    reasons = _cancellation_reasons(error)
    return code == "TransactionCanceledException" and bool(reasons) and reasons <= _TROUBLE_REASONS


def _write_conflict(error: BaseException) -> bool:
    if not isinstance(error, ClientError):
        return False
    if _code(error) in _CONFLICT_CODES:
        return True
    reasons = _cancellation_reasons(error)
    return _code(error) == "TransactionCanceledException" and reasons == {"TransactionConflict"}


def as_broker_error(error: BaseException) -> BrokerError | None:
    """The broker error an AWS failure stands for (503 storage trouble, 409 write conflict), or None."""
    if storage_trouble(error):
        return StorageUnavailable()
    if _write_conflict(error):
        return Conflict(
            "Another request was changing the same record at the same moment. Try again.", code="write_conflict"
        )
    return None


def trouble_details(error: BaseException) -> dict[str, str | int]:
    """What to log about an AWS failure: its type, AWS error code, operation and HTTP status; never request data."""
    details: dict[str, str | int] = {"error_type": type(error).__name__}
    if isinstance(error, ClientError):
        details.update(aws_error=_code(error), aws_operation=error.operation_name or "", aws_status=_status(error))
    return details
