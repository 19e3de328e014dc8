"""Acting as a connected user: the signing proxy and the sign endpoint.

The caller never holds the team's credentials or the user's tokens. The broker
acts as the user through :mod:`chalicelib.acting` (an RSA-SHA1 signature for OAuth 1.0a,
a Bearer token for OAuth 2.0), sends the request to the team's own Jira only, and hands
back Jira's answer as it is.

One proxied call costs one DynamoDB read (integration and connection in one
BatchGetItem), no Secrets Manager or KMS call once the container is warm (the loaded
key, the client secret and the token data key are cached), and one pooled HTTP request
to Jira.

Example::

    status, headers, body = proxy_call("acme", "alice", {"method": "GET", "path": "/rest/api/2/myself"})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

from . import clock
from .acting import Acting, acting_as
from .config import Settings, load_settings
from .jirasite import UserRequest
from .proxy_input import (  # noqa: F401 - re-exported: proxy.py's names for the input checks
    MAX_BODY_BYTES,
    METHODS,
    _body,
    _headers,
    _method,
    _url_under_base,
    check_path,
    encode_query,
    query_string,
    sign_form,
)
from .resources import store_for

# What comes back from Jira besides status and body; never Set-Cookie.
RETURNED_RESPONSE_HEADERS = (
    "Content-Type",
    "Content-Disposition",
    "Content-Language",
    "Location",
    "ETag",
    "Last-Modified",
    "Retry-After",
    "X-AREQUESTID",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-Seraph-LoginReason",
)
MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # with MAX_BODY_BYTES (proxy_input): Lambda's 6 MB, base64 included
LAST_USED_EVERY = 60  # seconds: a connection's last_used_at is written at most this often


@dataclass(frozen=True)
class Upstream:
    """Jira's answer as the caller gets it: status, allowed headers, body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes


def touch(acting: Acting, settings: Settings) -> None:
    """Record use at most once a minute per connection, not on every call."""
    now = clock.now()
    if now - int(acting.connection.get("last_used_at") or 0) >= LAST_USED_EVERY:
        store_for(settings).touch_connection(acting.team, acting.user, now, every=LAST_USED_EVERY)


def proxy_call(team: str, user: str, request: dict[str, Any], settings: Settings | None = None) -> Upstream:
    """Send a request to the team's Jira as the user and return Jira's answer unchanged."""
    settings = settings or load_settings()
    method = _method(request.get("method"))
    path = check_path(request.get("path"))
    query = query_string(encode_query(request.get("query")))
    headers = _headers(request.get("headers"))
    body = _body(request, headers)
    acting = acting_as(team, user, settings)
    target = f"{path}?{query}" if query else path
    response = acting.auth.send(UserRequest(method, target, body, headers))
    touch(acting, settings)
    return Upstream(
        response.status_code, returned_headers(response), acting.auth.read_body(response, MAX_RESPONSE_BYTES)
    )


def returned_headers(response: requests.Response) -> dict[str, str]:
    return {name: response.headers[name] for name in RETURNED_RESPONSE_HEADERS if name in response.headers}


# -- the sign endpoint ---------------------------------------------------------------------
def sign(team: str, user: str, request: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """An Authorization header for a request the caller sends to Jira itself (large attachments).

    OAuth 1.0a: a signature for exactly this request, valid about 5 minutes. OAuth 2.0: the user's
    current access token (a short-lived credential that works for any request until ``expires_at``).
    """
    settings = settings or load_settings()
    method = _method(request.get("method"))
    form = sign_form(request.get("form"))
    acting = acting_as(team, user, settings)
    url = _url_under_base(request.get("url"), acting.integration["base_url"])
    signed = acting.auth.authorization(method, url, form)
    touch(acting, settings)
    return signed
