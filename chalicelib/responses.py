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


def error_response(error: BrokerError) -> Response:
    headers: dict[str, str | list[str]] = {"Content-Type": JSON, "X-Broker-Error": error.code, **NO_STORE}
    return Response(body=json.dumps(error.to_dict()), status_code=error.status, headers=headers)


def redirect(location: str, status: int = 303, headers: dict[str, str] | None = None) -> Response:
    sent: dict[str, str | list[str]] = {"Location": location, "Referrer-Policy": "no-referrer", **NO_STORE}
    sent.update(headers or {})
    return Response(body="", status_code=status, headers=sent)
