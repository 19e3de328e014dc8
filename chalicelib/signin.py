"""Signing a user in to Jira: the Continue click and Jira's callback.

1. The person clicks Continue on their connect link: :func:`start` begins the team's
   sign-in (:mod:`acting`'s scheme: an OAuth 1.0a request token from Jira *now*, or an
   OAuth 2.0 ``state`` and PKCE verifier), binds the pending sign-in to this browser (see
   :mod:`browser`) and returns Jira's authorize URL.
2. Jira sends the browser back: :func:`finish` completes only in the browser that
   started, consumes the pending sign-in (request token or ``state``) exactly once,
   exchanges what Jira sent at once, asks Jira who approved, and stores the connection
   (its tokens sealed) in one transaction that also completes the link and checks the
   integration is still the revision the sign-in began under.

What a failure at each step of :func:`finish` leaves: another browser, an unknown or
used token: nothing changed (the sign-in can still be finished where it started). After
the token is consumed: the link stays open, so the person can start again. The final
transaction: all of it or nothing.

A ``state`` is a pending sign-in's handle exactly as a request token is: random, single-use,
stored only as a hash, bound to the link and the browser.

Example::

    started = start(token, browser_id=None)
    started.authorize_url, started.browser_id     # redirect there; set the cookie
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import browser, clock, observability
from .acting import Finished, Scheme, auth_of, scheme_class, scheme_for
from .config import Settings, load_settings
from .connect import check_link, integration_gone
from .connection_tokens import ConnectionTokens
from .dynamo import ConditionFailed
from .errors import BrokerError, Conflict, Forbidden, Gone, InvalidRequest, NotFound
from .logs import logger
from .resources import store_for
from .sealing import sealer_for
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
    """Check the link again, begin the team's sign-in with Jira, remember it bound to this browser."""
    settings = settings or load_settings()
    context = check_link(token, settings)
    claims, integration = context.claims, context.integration
    check_jira_destination(integration["base_url"], settings)  # the host's addresses may have changed
    scheme = scheme_for(integration, settings)
    begun = scheme.begin(claims.team, claims.user)
    browser_id = browser_id or browser.new_browser_id()
    now = clock.now()
    store_for(settings).put_pending(
        begun.handle,
        {
            **begun.pending,
            "auth": scheme.name,
            "team": claims.team,
            "user": claims.user,
            "link_id": claims.link_id,
            "revision": integration["revision"],
            "browser": browser.binding(browser_id),
            "return_to": context.link.get("return_to"),
            "created_at": now,
            "expires_at": now + begun.lifetime,
            "ttl": now + begun.lifetime + 3600,
        },
    )
    host = host_label(integration["base_url"])
    logger.info("authorization started", extra={"team": claims.team, "user": claims.user, "jira_host": host})
    return Started(begun.authorize_url, browser_id)


def finish(
    auth: str,
    answer: dict[str, str | None],
    browser_id: str | None,
    settings: Settings | None = None,
) -> Outcome:
    """Handle Jira's redirect back (its query parameters, ``answer``) in the browser that started the sign-in.

    ``auth`` is the callback's OAuth version: the sign-in is named by its ``callback_handle``
    (``oauth_token`` or ``state``). Raises a :class:`BrokerError` when that is missing, unknown,
    was started in another browser (403 ``signin_other_browser``, nothing consumed), replayed or
    expired; every later failure is an :class:`Outcome` with ``result="error"`` so it can go
    back to ``return_to``.
    """
    settings = settings or load_settings()
    handle = answer.get(scheme_class(auth).callback_handle)
    if not handle:
        raise _missing_handle(auth)
    store = store_for(settings)
    pending = store.get_pending(handle)
    if str(pending.get("auth") or "oauth1") != auth:  # a handle of the other OAuth version's callback
        raise NotFound(
            "This answer from Jira does not match any sign-in the broker started.", code="request_token_unknown"
        )
    _check_same_browser(pending, browser_id)
    pending = store.consume_pending(handle, clock.now())
    team, user = pending["team"], pending["user"]
    integration = store.get_integration(team)
    host = host_label(integration["base_url"]) if integration else "Jira"
    outcome = Outcome("error", team, user, host, return_to=pending.get("return_to"))
    scheme = scheme_for(integration, settings) if integration and auth_of(integration) == auth else None
    if scheme is not None and scheme.denied(answer):
        logger.info("authorization denied by the user", extra={"team": team, "user": user})
        outcome.result = "denied"
        return outcome
    try:
        outcome.jira_user = _connect(pending, integration, scheme, answer, settings)
    except BrokerError as error:
        logger.info("authorization failed", extra={"team": team, "user": user, "code": error.code})
        outcome.error = error
        if error.code == "access_denied":
            outcome.result = "denied"
        return outcome
    outcome.result = "connected"
    return outcome


def _missing_handle(auth: str) -> InvalidRequest:
    name = scheme_class(auth).callback_handle
    return InvalidRequest(
        f"Jira's answer is missing {name}. Open your connect link again and click Continue.",
        code=f"missing_{name}",
    )


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
    scheme: Scheme | None,
    answer: dict[str, str | None],
    settings: Settings,
) -> dict[str, Any]:
    """Exchange what Jira sent back and store the connection; returns who approved in Jira."""
    team, user = pending["team"], pending["user"]
    if integration is None:
        raise integration_gone(team)
    if scheme is None or integration["revision"] != pending.get("revision"):
        raise _integration_changed(team)
    link = store_for(settings).get_link(pending["link_id"])
    if link is None or link.get("status") == COMPLETED:  # no exchange for a link another sign-in used
        raise _link_used(user, team)
    finished = scheme.finish(pending, answer)
    _store_connection(pending, finished, scheme.name, settings)
    logger.info("user connected", extra={"team": team, "user": user, "jira_user": finished.jira_user.get("name")})
    return finished.jira_user


def _store_connection(pending: dict[str, Any], finished: Finished, auth: str, settings: Settings) -> None:
    """One transaction: complete the link, check the integration's revision, put the connection."""
    team, user, now = pending["team"], pending["user"], clock.now()
    sealed = ConnectionTokens(store_for(settings), sealer_for(settings)).seal(team, user, finished.tokens)
    connection = {
        **finished.fields,
        "auth": auth,
        "sealed": sealed,
        "jira_user": {k: v for k, v in finished.jira_user.items() if v is not None},
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
