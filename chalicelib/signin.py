"""Signing a user in to Jira: the Continue click and Jira's callback.

1. The person clicks Continue on their connect link: :func:`start` gets a request token
   from Jira *now* (Jira's 10-minute lifetime starts at the click), binds the pending
   sign-in to this browser (see :mod:`browser`) and returns Jira's authorize URL.
2. Jira sends the browser back: :func:`finish` completes only in the browser that
   started, consumes the request token exactly once, exchanges it, asks Jira who
   approved, and stores the connection in one transaction that also completes the link
   and checks the integration is still the revision the sign-in began under.

What a failure at each step of :func:`finish` leaves: another browser, an unknown or
used token: nothing changed (the sign-in can still be finished where it started). After
the token is consumed: the link stays open, so the person can start again. The final
transaction: all of it or nothing.

Example::

    started = start(token, browser_id=None)
    started.authorize_url, started.browser_id     # redirect there; set the cookie
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import browser, clock, observability
from .config import Settings, load_settings
from .connect import check_link, integration_gone
from .dynamo import ConditionFailed
from .errors import BrokerError, Conflict, Forbidden, Gone, InvalidRequest
from .logs import logger
from .oauth1 import DENIED, REQUEST_TOKEN_LIFETIME, AccessToken, JiraOAuthError
from .problems import explain_exchange_problem, explain_setup_problem
from .resources import jira_for, store_for, team_key, vault_for
from .store import COMPLETED
from .urls import check_jira_destination, host_label


@dataclass(frozen=True)
class Started:
    """Where to send the browser, and the browser id its cookie must hold."""

    authorize_url: str
    browser_id: str


@dataclass
class Outcome:
    """How a callback ended, for a page or a redirect to ``return_to``."""

    result: str  # "connected" | "denied" | "error"
    team: str
    user: str
    host: str
    return_to: str | None = None
    error: BrokerError | None = None
    jira_user: dict[str, Any] = field(default_factory=dict)


def start(token: str, browser_id: str | None, settings: Settings | None = None) -> Started:
    """Check the link again, get a request token from Jira, remember it bound to this browser."""
    settings = settings or load_settings()
    context = check_link(token, settings)
    claims, integration = context.claims, context.integration
    check_jira_destination(integration["base_url"], settings)  # the host's addresses may have changed
    jira = jira_for(integration, team_key(vault_for(settings), claims.team, integration), settings)
    try:
        request_token = jira.request_token(settings.callback_url)
    except JiraOAuthError as error:
        raise explain_setup_problem(error, jira) from None
    browser_id = browser_id or browser.new_browser_id()
    now = clock.now()
    store_for(settings).put_pending(
        request_token.token,
        {
            "team": claims.team,
            "user": claims.user,
            "link_id": claims.link_id,
            "revision": integration["revision"],
            "browser": browser.binding(browser_id),
            "token_secret": request_token.secret,
            "return_to": context.link.get("return_to"),
            "created_at": now,
            "expires_at": now + REQUEST_TOKEN_LIFETIME,
            "ttl": now + REQUEST_TOKEN_LIFETIME + 3600,
        },
    )
    logger.info("authorization started", extra={"team": claims.team, "user": claims.user, "jira_host": jira.host})
    return Started(jira.authorize_url(request_token.token), browser_id)


def finish(
    oauth_token: str | None, oauth_verifier: str | None, browser_id: str | None, settings: Settings | None = None
) -> Outcome:
    """Handle Jira's redirect back in the browser that started the sign-in.

    Raises a :class:`BrokerError` when the request token is missing, unknown, was
    started in another browser (403 ``signin_other_browser``, nothing consumed),
    replayed or expired; every later failure is an :class:`Outcome` with
    ``result="error"`` so it can go back to ``return_to``.
    """
    settings = settings or load_settings()
    if not oauth_token:
        raise InvalidRequest(
            "Jira's answer is missing oauth_token. Open your connect link again and click Continue.",
            code="missing_oauth_token",
        )
    store = store_for(settings)
    _check_same_browser(store.get_pending(oauth_token), browser_id)
    pending = store.consume_pending(oauth_token, clock.now())
    team, user = pending["team"], pending["user"]
    integration = store.get_integration(team)
    host = host_label(integration["base_url"]) if integration else "Jira"
    outcome = Outcome("error", team, user, host, return_to=pending.get("return_to"))
    if oauth_verifier == DENIED:
        logger.info("authorization denied by the user", extra={"team": team, "user": user})
        outcome.result = "denied"
        return outcome
    try:
        outcome.jira_user = _connect(pending, integration, oauth_token, oauth_verifier, settings)
    except BrokerError as error:
        logger.info("authorization failed", extra={"team": team, "user": user, "code": error.code})
        outcome.error = error
        if error.code == "access_denied":
            outcome.result = "denied"
        return outcome
    outcome.result = "connected"
    return outcome


def _check_same_browser(pending: dict[str, Any], browser_id: str | None) -> None:
    if browser.matches(browser_id, pending.get("browser")):
        return
    team, user = pending.get("team", ""), pending.get("user", "")
    logger.warning("callback from another browser refused", extra={"team": team, "user": user})
    raise Forbidden(
        f"This Jira approval belongs to a sign-in for {user} in team {team} that was started in another browser. "
        "The broker finishes a sign-in only in the browser that opened the connect link and clicked Continue, so "
        "it stored nothing and left that sign-in as it was.",
        code="signin_other_browser",
    )


def _connect(
    pending: dict[str, Any],
    integration: dict[str, Any] | None,
    oauth_token: str,
    oauth_verifier: str | None,
    settings: Settings,
) -> dict[str, Any]:
    """Exchange the approved request token and store the connection; returns who approved in Jira."""
    team, user = pending["team"], pending["user"]
    if not oauth_verifier:
        raise InvalidRequest(
            "Jira's answer is missing oauth_verifier. Open your connect link again.", code="missing_oauth_verifier"
        )
    if integration is None:
        raise integration_gone(team)
    if integration["revision"] != pending.get("revision"):
        raise _integration_changed(team)
    link = store_for(settings).get_link(pending["link_id"])
    if link is None or link.get("status") == COMPLETED:  # no exchange for a link another sign-in used
        raise _link_used(user, team)
    jira = jira_for(integration, team_key(vault_for(settings), team, integration), settings)
    try:
        access = jira.access_token(oauth_token, pending.get("token_secret", ""), oauth_verifier)
        me = jira.myself(access.token, access.secret)
    except JiraOAuthError as error:
        raise explain_exchange_problem(error, jira) from None
    jira_user = {
        "name": me.get("name"),
        "key": me.get("key"),
        "display_name": me.get("displayName"),
        "email": me.get("emailAddress"),
    }
    _store_connection(pending, access, jira_user, settings)
    logger.info("user connected", extra={"team": team, "user": user, "jira_user": jira_user["name"]})
    return jira_user


def _store_connection(
    pending: dict[str, Any], access: AccessToken, jira_user: dict[str, Any], settings: Settings
) -> None:
    """One transaction: complete the link, check the integration's revision, put the connection."""
    team, user, now = pending["team"], pending["user"], clock.now()
    connection = {
        "access_token": access.token,
        "token_secret": access.secret,
        "session_handle": access.session_handle,
        "expires_at": now + access.expires_in if access.expires_in else None,
        "authorization_expires_at": now + access.authorization_expires_in if access.authorization_expires_in else None,
        "jira_user": {k: v for k, v in jira_user.items() if v is not None},
        "revision": pending["revision"],
        "link_id": pending["link_id"],
        "connected_at": now,
    }
    try:
        store_for(settings).commit_connection(team, user, connection, link_id=pending["link_id"], now=now)
    except ConditionFailed as failed:
        logger.info("connection not stored", extra={"team": team, "user": user, "changed": failed.step})
        raise _link_used(user, team) if failed.step == "link" else _integration_changed(team) from None
    observability.count("ConnectionsMade")


def _link_used(user: str, team: str) -> Gone:
    return Gone(
        f"This link was already used: {user} in team {team} was connected through another sign-in with it, "
        "so the broker stored nothing from this one.",
        code="link_used",
    )


def _integration_changed(team: str) -> Conflict:
    return Conflict(
        f"Team {team}'s Jira integration changed while you were signing in, so the broker stored nothing. "
        "Ask for a new link.",
        code="integration_changed",
    )
