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

from dataclasses import dataclass
from typing import Any

import requests

from . import clock, connect, observability
from .config import Settings, load_settings
from .errors import BrokerError
from .logs import logger
from .oauth1 import TIMESTAMP_WINDOW, JiraClient, OAuthProblem, UserRequest
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
from .resources import integration_not_found, jira_for, store_for, team_key, vault_for
from .urls import check_jira_destination_cached

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
TOKEN_PROBLEMS = {"token_rejected", "token_expired", "token_revoked"}


@dataclass(frozen=True)
class Upstream:
    """Jira's answer as the caller gets it: status, allowed headers, body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes


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
    integration, stored = store_for(settings).get_integration_and_connection(team, user)
    if integration is None:
        raise integration_not_found(team)
    if stored is None:
        raise connect.not_connected(team, user)
    connection = connect.current_connection(integration, stored)
    if connection is None:  # made for another Jira site or Application Link: its token never goes anywhere
        store_for(settings).delete_connection(team, user, revision=stored.get("revision") or "")
        raise reconnect_error(
            team,
            user,
            f"{user}'s connection was made before team {team}'s Jira integration moved to another Jira site or "
            "Application Link, so it is no longer used.",
            settings,
        )
    check_jira_destination_cached(integration["base_url"], settings)  # DNS may have changed since setup
    key = team_key(vault_for(settings), team, integration)
    return Acting(team, user, integration, connection, jira_for(integration, key, settings))


def reconnect_error(team: str, user: str, reason: str, settings: Settings, **details: str) -> BrokerError:
    """401 ``reauthorization_required`` with a fresh connect link for the user to connect again."""
    observability.count("Reauthorizations")  # Jira dropped the token, or the integration moved on
    link = connect.create_link(team, user, {}, settings)
    return BrokerError(
        f"{reason} Send {user} connect_url to connect again.",
        code="reauthorization_required",
        status=401,
        details={"connect_url": link["url"], "connect_url_expires_at": link["expires_at"], **details},
    )


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
    return Upstream(
        response.status_code, _returned_headers(response), acting.jira.read_body(response, MAX_RESPONSE_BYTES)
    )


def _returned_headers(response: requests.Response) -> dict[str, str]:
    return {name: response.headers[name] for name in RETURNED_RESPONSE_HEADERS if name in response.headers}


def _problem_error(problem: OAuthProblem, acting: Acting, settings: Settings) -> BrokerError:
    """Map Jira's oauth_problem on a REST call to what the caller can do about it."""
    name, host = problem.problem, acting.jira.host
    if name in TOKEN_PROBLEMS:
        store_for(settings).delete_connection(acting.team, acting.user, revision=acting.connection["revision"])
        logger.info("connection dropped by jira", extra={"team": acting.team, "user": acting.user, "problem": name})
        reason = f"Jira at {host} no longer accepts {acting.user}'s authorization ({name})."
        return reconnect_error(acting.team, acting.user, reason, settings, oauth_problem=name)
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
def sign(team: str, user: str, request: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """An Authorization header for a request the caller sends to Jira itself (large attachments)."""
    settings = settings or load_settings()
    method = _method(request.get("method"))
    form = sign_form(request.get("form"))
    acting = acting_as(team, user, settings)
    url = _url_under_base(request.get("url"), acting.integration["base_url"])
    header, timestamp = acting.jira.authorization(*acting.credentials, method, url, form)
    _touch(acting, settings)
    return {"authorization": header, "expires_at": clock.iso(timestamp + TIMESTAMP_WINDOW)}
