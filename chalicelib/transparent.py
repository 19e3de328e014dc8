"""A Jira-shaped endpoint per user: ``/v1/teams/{team}/users/{user}/jira/site/{path...}``.

Point an unmodified Jira client library at the user's *site base* with the service API key as
its personal access token (``Authorization: Bearer <key>``), and every call it makes goes to the
team's Jira as that user: the method, path, query string and body bytes pass as sent; the broker
acts as the user through :mod:`chalicelib.acting` (an RSA-SHA1 signature, or a Bearer token), with
the envelope proxy's path rules, header allowlist, size limits, deadlines and revocation handling.
Jira's answer comes back with its status, allowed headers and body, links under Jira's base URL
pointed back through the broker (:mod:`chalicelib.rewrite`).

Example::

    site_base(settings, "acme", "alice")
    # 'https://broker.example.com/v1/teams/acme/users/alice/jira/site'
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from chalice.app import Request

from .acting import acting_as
from .config import Settings, load_settings
from .errors import InvalidRequest
from .jirasite import FORM_CONTENT_TYPE, UserRequest
from .proxy import MAX_RESPONSE_BYTES, Upstream, returned_headers, touch
from .proxy_input import (
    _check_size,
    _headers,
    _refuse_oauth_form_parameters,
    check_path,
    encode_query,
    query_string,
)
from .rewrite import LinkRewriter

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
SITE = "/jira/site"
_JSON_TYPES = ("application/json", "+json")


def site_base(settings: Settings, team: str, user: str) -> str:
    """The base URL a client library is given for this user (ids are URL-safe: letters, digits, ``._:@-``)."""
    return f"{settings.public_url}/v1/teams/{team}/users/{user}{SITE}"


def site_call(team: str, user: str, path: str, request: Request, settings: Settings | None = None) -> Upstream:
    """Send the client's request to the team's Jira as the user; Jira's answer with its links moved to the site.

    ``path`` is what follows ``.../jira/site/`` (API Gateway's ``{proxy+}``, decoded).
    """
    settings = settings or load_settings()
    if request.method not in METHODS:
        raise InvalidRequest(f"method must be one of {', '.join(METHODS)}.", code="invalid_method")
    target = check_path("/" + quote(path, safe="/;:@!$&'()*+,=-._~"))
    query = query_string(_query_pairs(request))
    headers = _headers(dict(request.headers.items()))
    body = _body(request, headers)
    acting = acting_as(team, user, settings)
    sent = UserRequest(request.method, f"{target}?{query}" if query else target, body, headers)
    response = acting.auth.send(sent)
    touch(acting, settings)
    data = b"" if request.method == "HEAD" else acting.auth.read_body(response, MAX_RESPONSE_BYTES)
    rewriter = _rewriter(acting.integration, settings, team, user)
    headers_back = returned_headers(response)
    if "Location" in headers_back:
        headers_back["Location"] = rewriter.url(headers_back["Location"])
    content_type = headers_back.get("Content-Type", "").split(";")[0].strip().lower()
    if data and content_type.endswith(_JSON_TYPES):
        data = rewriter.json_body(data)
    return Upstream(response.status_code, headers_back, data)


def _rewriter(integration: dict[str, Any], settings: Settings, team: str, user: str) -> LinkRewriter:
    """Links under the configured base URL and under the one Jira reports (they differ behind some proxies)."""
    reported = str((integration.get("server") or {}).get("base_url") or "")
    return LinkRewriter([integration["base_url"], reported], site_base(settings, team, user))


def _query_pairs(request: Request) -> list[tuple[str, str]]:
    """The query string's parameters in order, repeated names kept (API Gateway's multi-value parameters)."""
    params = request.query_params
    if not params:
        return []
    return encode_query({name: list(params.getlist(name)) for name in params})


def _body(request: Request, headers: dict[str, str]) -> bytes | str | None:
    """The body bytes as sent; a form body as text, since OAuth 1.0a signs its parameters."""
    raw = request.raw_body
    data = raw.encode() if isinstance(raw, str) else (raw or b"")
    if not data:
        return None
    _check_size(len(data))
    if FORM_CONTENT_TYPE not in headers.get("Content-Type", ""):
        return data
    try:
        form = data.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidRequest(
            "A form body must be URL-encoded (name=value&name2=value2), with non-ASCII characters as %XX escapes.",
            code="invalid_body",
        ) from None
    _refuse_oauth_form_parameters(form)
    return form
