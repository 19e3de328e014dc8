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
from chalice.app import CaseInsensitiveMapping, Request, handle_extra_types

from .errors import BrokerError, JiraBadResponse

JSON = "application/json"
JIRA_JSON = "application/json;charset=UTF-8"
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
        # Jira's own Content-Type: atlassian-python-api reads a 401's body only under exactly this one.
        headers["Content-Type"] = JIRA_JSON
    return Response(body=json.dumps(body), status_code=error.status, headers=headers)


def redirect(location: str, status: int = 303, headers: dict[str, str] | None = None) -> Response:
    sent: dict[str, str | list[str]] = {"Location": location, "Referrer-Policy": "no-referrer", **NO_STORE}
    sent.update(headers or {})
    return Response(body="", status_code=status, headers=sent)


# Lambda's limit on a synchronous answer: 6 MB of JSON (the error names 6291556 bytes). Every answer's body
# goes base64 (4 bytes for 3), beside its status and headers; 64 KiB of those leave this much body.
LAMBDA_ANSWER_LIMIT = 6_291_556
MAX_ANSWER_BYTES = (LAMBDA_ANSWER_LIMIT - 64 * 1024) // 4 * 3


def default_accept(request: Request) -> None:
    """Give a request without ``Accept`` the ``Accept: */*`` that its absence means (RFC 9110, 12.5.1).

    With ``*/*`` among the binary types, Chalice answers 400 ("Request did not specify an Accept header")
    to a request without one, after its view ran. Clients that send none (Go's net/http) get the answer.
    """
    if "accept" not in request.headers:
        request.headers = CaseInsensitiveMapping({**request.headers, "accept": "*/*"})


def as_bytes(response: Response) -> Response:
    """``response`` with a bytes body: API Gateway's binary media types are ``*/*`` (app.py), so Chalice
    base64-encodes every answer, and it takes only bytes for a Content-Type other than JSON.

    Text becomes UTF-8; bytes stay; any other body (Chalice's own ``{"Code", "Message"}`` errors)
    becomes the JSON Chalice would write for it.
    """
    body = response.body
    if isinstance(body, str):
        response.body = body.encode("utf-8")
    elif not isinstance(body, bytes):
        response.body = json.dumps(body, separators=(",", ":"), default=handle_extra_types).encode("utf-8")
    return response


def passthrough_response(status: int, headers: dict[str, str], body: bytes) -> Response:
    """Jira's own answer, unwrapped: its status, allowed headers and exactly its body bytes, whatever they are.

    API Gateway's binary media types are ``*/*``: Chalice sends every answer base64-encoded and API
    Gateway decodes it for any ``Accept`` (``*/*``, ``application/json, */*``, none), so attachments,
    avatars, spreadsheets and text in any charset all arrive as Jira sent them.

    Raises ``response_too_large`` (502) for a body whose base64 would not fit Lambda's 6 MB answer:
    a Jira answer within the proxy's read limit fits, but one grown by link rewriting may not.
    """
    if len(body) > MAX_ANSWER_BYTES:
        raise JiraBadResponse(
            f"Jira's answer is {len(body)} bytes, more than the {MAX_ANSWER_BYTES} bytes the broker can return "
            "through AWS Lambda. Ask for less (pagination), or use the sign endpoint and fetch it yourself.",
            code="response_too_large",
        )
    return Response(body=body, status_code=status, headers=dict(headers))
