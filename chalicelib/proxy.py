"""Acting as a connected user: the signing proxy and the sign endpoint.

The caller never holds the team's private key. The broker signs as the
user (RSA-SHA1, in the Authorization header), sends the request to the
team's own Jira only, and hands back Jira's answer as it is.

One proxied call costs one DynamoDB read (integration and connection in one
BatchGetItem), no Secrets Manager call once the container is warm (the
loaded key is cached by fingerprint), one RSA signature and one pooled HTTP
request to Jira.

Example::

    status, headers, body = proxy_call("acme", "alice", {"method": "GET", "path": "/rest/api/2/myself"})
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests

from . import clock, connect
from .config import Settings, load_settings
from .errors import BrokerError, InvalidRequest, JiraBadResponse, NotFound
from .logs import logger
from .oauth1 import FORM_CONTENT_TYPE, TIMESTAMP_WINDOW, JiraClient, OAuthProblem, UserRequest
from .resources import integration_not_found, jira_for, store_for, team_key, vault_for
from .urls import check_jira_destination_cached

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# What a caller may send on to Jira; Authorization, Cookie and Host never go.
FORWARDED_REQUEST_HEADERS = {
    "content-type": "Content-Type",
    "accept": "Accept",
    "accept-language": "Accept-Language",
    "x-atlassian-token": "X-Atlassian-Token",
}
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
# Lambda takes at most 6 MB in and out (base64 for binary answers): 4 MiB each way fits.
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
LAST_USED_EVERY = 60  # seconds: a connection's last_used_at is written at most this often
TOKEN_PROBLEMS = {"token_rejected", "token_expired", "token_revoked"}
# RFC 3986 characters that may stand unencoded in a path; '%' keeps the caller's own escapes.
# ';' is encoded: servlet containers and urlparse treat it as a path-parameter separator, and
# oauthlib drops an empty one from the base string ("/a;" signs as "/a").
_PATH_SAFE = "/:@!$&'()*+,=-._~%"
_DOT_SEGMENT = re.compile(r"^(\.|\.\.)$")
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class Upstream:
    """Jira's answer as the caller gets it: status, allowed headers, body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes


def _invalid_path(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_path")


def check_path(path: object) -> str:
    """A Jira path relative to base_url, percent-encoded; raises 400 ``invalid_path``.

    It must start with a single ``/``, hold no scheme or host, no ``.`` or
    ``..`` segment (also percent-encoded), no backslash or control character,
    and no query or fragment (send those as ``query``).
    """
    if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
        raise _invalid_path("path must start with a single '/', relative to the team's Jira, e.g. /rest/api/2/myself.")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path) or "\\" in path:
        raise _invalid_path("path must not contain backslashes or control characters.")
    if "?" in path or "#" in path:
        raise _invalid_path("path must not carry a query or fragment; send query parameters as 'query'.")
    if _ESCAPE.search(path):
        raise _invalid_path("path has a '%' that does not start a %XX escape.")
    decoded = unquote(path)
    if "\\" in decoded or any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
        raise _invalid_path("path must not contain backslashes or control characters, also percent-encoded.")
    if any(_DOT_SEGMENT.match(segment) for segment in decoded.split("/")):
        raise _invalid_path("path must not contain '.' or '..' segments, also percent-encoded.")
    if decoded.lower().startswith("/plugins/servlet/oauth/"):
        raise _invalid_path("The OAuth endpoints are the broker's own business; call Jira's REST API instead.")
    return quote(path, safe=_PATH_SAFE)


def encode_query(query: object) -> list[tuple[str, str]]:
    """``{"name": "v" | ["v1", "v2"]}`` as ordered pairs; numbers and booleans become text."""
    if query is None:
        return []
    if not isinstance(query, dict):
        raise InvalidRequest("query must be an object of names to a value or a list of values.", code="invalid_query")
    pairs: list[tuple[str, str]] = []
    for name, value in query.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((str(name), _query_value(name, item)))
    return pairs


def _query_value(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise InvalidRequest(f"query value for '{name}' must be text, a number or a boolean.", code="invalid_query")


def query_string(pairs: list[tuple[str, str]]) -> str:
    """RFC 3986 encoding (``%20``, not ``+``), so what is sent is exactly what is signed."""
    return "&".join(f"{quote(name, safe='-._~')}={quote(value, safe='-._~')}" for name, value in pairs)


def _method(raw: object) -> str:
    method = raw.upper() if isinstance(raw, str) else ""
    if method not in METHODS:
        raise InvalidRequest(f"method must be one of {', '.join(METHODS)}.", code="invalid_method")
    return method


def _headers(raw: object) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequest("headers must be an object of header names to text.", code="invalid_headers")
    headers: dict[str, str] = {}
    for name, value in raw.items():
        canonical = FORWARDED_REQUEST_HEADERS.get(str(name).lower())
        if canonical is None:
            continue  # not on the allowlist: dropped, never forwarded
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise InvalidRequest(f"header {name} must be text on one line.", code="invalid_headers")
        headers[canonical] = value
    return headers


def _body(request: dict[str, Any], headers: dict[str, str]) -> bytes | str | None:
    if "json" in request and "body" in request:
        raise InvalidRequest("Send either 'json' or 'body', not both.", code="invalid_body")
    if "json" in request:
        headers.setdefault("Content-Type", "application/json")
        data: bytes | str = json.dumps(request["json"]).encode()
    elif "body" in request:
        if not isinstance(request["body"], str):
            raise InvalidRequest("body must be a string; send JSON values as 'json'.", code="invalid_body")
        data = request["body"]
    else:
        return None
    size = len(data.encode() if isinstance(data, str) else data)
    if size > MAX_BODY_BYTES:
        raise BrokerError(
            f"The request body is {size} bytes; the proxy takes at most {MAX_BODY_BYTES} bytes. For large uploads "
            "such as attachments, get a signature from the sign endpoint and send the request yourself.",
            code="body_too_large",
            status=413,
        )
    # Form bodies are signed, as text; JSON and other bodies are never part of the signature.
    if isinstance(data, str) and FORM_CONTENT_TYPE not in headers.get("Content-Type", ""):
        return data.encode()
    return data


# -- acting as the user ------------------------------------------------------------------
@dataclass(frozen=True)
class Acting:
    """What acting as a user needs: the integration, the connection and a signing Jira client."""

    team: str
    user: str
    integration: dict[str, Any]
    connection: dict[str, Any]
    jira: JiraClient

    @property
    def credentials(self) -> tuple[str, str]:
        """The user's access token and its secret."""
        return self.connection["access_token"], self.connection.get("token_secret", "")


def acting_as(team: str, user: str, settings: Settings) -> Acting:
    """One DynamoDB read, and the key from the warm cache. 404s when not set up or not connected."""
    integration, connection = store_for(settings).get_integration_and_connection(team, user)
    if integration is None:
        raise integration_not_found(team)
    if connection is None:
        raise NotFound(f"{user} in team {team} has not connected Jira. Send them a connect link.", code="not_connected")
    check_jira_destination_cached(integration["base_url"], settings)  # DNS may have changed since setup
    key = team_key(vault_for(settings), team, integration)
    return Acting(team, user, integration, connection, jira_for(integration, key, settings))


def _touch(acting: Acting, settings: Settings) -> None:
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
    response, problem = acting.jira.call_as(*acting.credentials, UserRequest(method, target, body, headers))
    if problem is not None:
        response.close()
        raise _problem_error(problem, acting, settings)
    _touch(acting, settings)
    return Upstream(response.status_code, _returned_headers(response), _read_capped(response, acting.jira.host))


def _returned_headers(response: requests.Response) -> dict[str, str]:
    return {name: response.headers[name] for name in RETURNED_RESPONSE_HEADERS if name in response.headers}


def _read_capped(response: requests.Response, host: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=65536):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            response.close()
            raise JiraBadResponse(
                f"Jira at {host} answered with more than {MAX_RESPONSE_BYTES} bytes, more than the proxy can return. "
                "Ask for less (pagination), or use the sign endpoint and fetch it yourself.",
                code="response_too_large",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _problem_error(problem: OAuthProblem, acting: Acting, settings: Settings) -> BrokerError:
    """Map Jira's oauth_problem on a REST call to what the caller can do about it."""
    name, host = problem.problem, acting.jira.host
    if name in TOKEN_PROBLEMS:
        store_for(settings).delete_connection(acting.team, acting.user)
        link = connect.create_link(acting.team, acting.user, {}, settings)
        logger.info("connection dropped by jira", extra={"team": acting.team, "user": acting.user, "problem": name})
        return BrokerError(
            f"Jira at {host} no longer accepts {acting.user}'s authorization ({name}). Send them connect_url to "
            "connect again.",
            code="reauthorization_required",
            status=401,
            details={"connect_url": link["url"], "connect_url_expires_at": link["expires_at"], "oauth_problem": name},
        )
    causes = {
        "signature_invalid": "Jira rejected the broker's signature: the Application Link's public key no longer "
        "matches the team's key, or Jira's base URL changed",
        "consumer_key_unknown": "Jira no longer has the Application Link with the team's consumer key",
        "consumer_key_rejected": "Jira rejected the team's consumer key",
        "timestamp_refused": "Jira refused the timestamp even after correcting for its clock",
    }
    cause = causes.get(name, f"Jira refused the OAuth signature with oauth_problem={name}")
    return BrokerError(
        f"{cause}. An admin must fix the integration (PUT /v1/teams/{acting.team}/jira); "
        f"{acting.user}'s connection is kept.",
        code="integration_broken",
        status=502,
        details={"oauth_problem": name},
    )


# -- the sign endpoint ---------------------------------------------------------------------
def _url_under_base(url: object, base_url: str) -> str:
    """The URL, if it lies under the team's base_url (same scheme, host, port, context path)."""
    if not isinstance(url, str):
        raise InvalidRequest("url must be an absolute URL under the team's Jira base URL.", code="url_not_allowed")
    parts, base = urlsplit(url), urlsplit(base_url)
    same_origin = (parts.scheme.lower(), parts.netloc.lower()) == (base.scheme.lower(), base.netloc.lower())
    path = parts.path or "/"
    under = path == base.path or path.startswith(base.path.rstrip("/") + "/")
    if not same_origin or not under or parts.fragment:
        raise InvalidRequest(f"url must lie under the team's Jira base URL {base_url}.", code="url_not_allowed")
    check_path("/" + path[len(base.path) :].lstrip("/") if base.path else path)
    return url


def sign(team: str, user: str, request: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """An Authorization header for a request the caller sends to Jira itself (large attachments)."""
    settings = settings or load_settings()
    method = _method(request.get("method"))
    form = query_string(encode_query(request["form"])) if request.get("form") is not None else None
    acting = acting_as(team, user, settings)
    url = _url_under_base(request.get("url"), acting.integration["base_url"])
    header, timestamp = acting.jira.authorization(*acting.credentials, method, url, form)
    _touch(acting, settings)
    return {"authorization": header, "expires_at": clock.iso(timestamp + TIMESTAMP_WINDOW)}
