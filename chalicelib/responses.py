"""Building responses: JSON, the error envelope, HTML pages and redirects.

Every broker error is ``{"error": {"code", "message"}}`` with its HTTP status
and an ``X-Broker-Error: <code>`` header.

Example::

    return error_response(NotFound("No Jira integration for team acme.", code="integration_not_found"))
"""

from __future__ import annotations

import json
from typing import Any

from chalice import Response

from .errors import BrokerError

JSON = "application/json"
NO_STORE = {"Cache-Control": "no-store"}


def json_response(body: Any, status: int = 200) -> Response:
    headers: dict[str, str | list[str]] = {"Content-Type": JSON, **NO_STORE}
    return Response(body=json.dumps(body), status_code=status, headers=headers)


def empty_response(status: int = 204) -> Response:
    headers: dict[str, str | list[str]] = {**NO_STORE}
    return Response(body="", status_code=status, headers=headers)


def retry_headers(error: BrokerError) -> dict[str, str]:
    """``Retry-After`` for an error that advises waiting (storage trouble); otherwise nothing."""
    return {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}


def error_response(error: BrokerError, *, jira_shaped: bool = False) -> Response:
    """The broker's envelope; ``jira_shaped`` adds Jira's own error shape beside it (``errorMessages``,
    ``errors``), which Jira client libraries build their exception text from."""
    headers: dict[str, str | list[str]] = {"Content-Type": JSON, "X-Broker-Error": error.code, **NO_STORE}
    headers.update(retry_headers(error))
    body = error.to_dict()
    if jira_shaped:
        body.update({"errorMessages": [f"{error.code}: {error.message}"], "errors": {}})
    return Response(body=json.dumps(body), status_code=error.status, headers=headers)


def redirect(location: str, status: int = 303, headers: dict[str, str] | None = None) -> Response:
    sent: dict[str, str | list[str]] = {"Location": location, "Referrer-Policy": "no-referrer", **NO_STORE}
    sent.update(headers or {})
    return Response(body="", status_code=status, headers=sent)


_TEXT_TYPES = ("text/", "json", "xml", "javascript", "x-www-form-urlencoded")


def first_accept(accept: str | None) -> str:
    """The first media range of an ``Accept`` header, lower case, without parameters ("" when none)."""
    return (accept or "").split(",")[0].split(";")[0].strip().lower()


def passthrough_response(
    status: int, headers: dict[str, str], body: bytes, binary_types: list[str], accept: str | None
) -> Response:
    """Jira's own answer, unwrapped: its status, allowed headers and body bytes.

    A binary answer (its Content-Type one of ``binary_types``) goes back as bytes only when the
    caller's FIRST ``Accept`` value is one of ``binary_types`` too: that is the only case in which
    API Gateway decodes the base64 body Chalice sends it (Chalice encodes when any value matches,
    ``*/*`` included). Otherwise the caller would get base64 text labelled as the binary type, so
    the answer is 406 ``binary_accept_required``, naming the Accept to send. Text goes back as text.
    """
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    sent: dict[str, str | list[str]] = dict(headers)
    if content_type in binary_types:
        if first_accept(accept) in binary_types:
            return Response(body=body, status_code=status, headers=sent)
        return error_response(
            BrokerError(
                f"Jira answered with binary content ({content_type}). API Gateway returns bytes only when the "
                f"first Accept value is a binary media type: send 'Accept: {content_type}' (first, if you "
                "send several). '*/*' is not enough.",
                code="binary_accept_required",
                status=406,
            )
        )
    if not body:
        return Response(body="", status_code=status, headers=sent)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        if any(marker in content_type for marker in _TEXT_TYPES):
            text = body.decode("latin-1")
        else:
            return error_response(
                BrokerError(
                    f"Jira answered with binary content of type {content_type or 'unknown'}, which the proxy does "
                    "not pass through. Use the sign endpoint and fetch it yourself.",
                    code="unsupported_binary_response",
                    status=502,
                )
            )
    return Response(body=text, status_code=status, headers=sent)
