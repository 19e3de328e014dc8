"""Connect links and connections: minting and checking links, reading and deleting connections.

1. A service asks for a link: :func:`create_link` (a signed token plus a link record).
2. The person opens it: :func:`check_link` (no side effect, so link previews change nothing).
3. Continue and Jira's callback are :mod:`signin`'s.

Example::

    link = create_link("acme", "alice", {"expires_in": 3600})
    link["url"]          # "https://broker.example.com/connect/eyJr...."
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import clock, observability
from .config import Settings, load_settings
from .errors import BrokerError, Gone, InvalidRequest, NotFound
from .links import CONNECT, LinkClaims, new_link_id
from .logs import logger
from .pages import Who
from .resources import link_signer, require_integration, store_for
from .store import COMPLETED
from .urls import check_return_to, host_label

DEFAULT_LINK_LIFETIME = 3600
MIN_LINK_LIFETIME = 60
MAX_LINK_LIFETIME = 86400
# Link records outlive their expiry by a day, so "already used" can still be told apart.
LINK_RECORD_GRACE = 86400


@dataclass(frozen=True)
class LinkContext:
    """A checked link: its claims, its record and the team's integration."""

    claims: LinkClaims
    link: dict[str, Any]
    integration: dict[str, Any]

    @property
    def host(self) -> str:
        return host_label(self.integration["base_url"])


def link_lifetime(raw: object) -> int:
    """A link's ``expires_in``: 60 to 86400 seconds, 3600 when not given; else 400 ``invalid_expires_in``."""
    if raw is None:
        return DEFAULT_LINK_LIFETIME
    if isinstance(raw, bool) or not isinstance(raw, int) or not MIN_LINK_LIFETIME <= raw <= MAX_LINK_LIFETIME:
        raise InvalidRequest(
            f"expires_in must be a whole number of seconds from {MIN_LINK_LIFETIME} to {MAX_LINK_LIFETIME}.",
            code="invalid_expires_in",
        )
    return raw


def create_link(team: str, user: str, body: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Mint a connect link for (team, user). 404 when the team has no integration."""
    settings = settings or load_settings()
    lifetime = link_lifetime(body.get("expires_in"))
    return_to = check_return_to(body["return_to"], settings) if body.get("return_to") is not None else None
    token, expires_at = new_link(team, user, settings, lifetime, return_to)
    return {
        "url": f"{settings.public_url}/connect/{token}",
        "expires_at": clock.iso(expires_at),
        "expires_in": lifetime,
    }


def new_link(
    team: str, user: str, settings: Settings, lifetime: int = DEFAULT_LINK_LIFETIME, return_to: str | None = None
) -> tuple[str, int]:
    """Store and sign a connect link for (team, user); returns its token and expiry. 404 without an integration."""
    integration = require_integration(store_for(settings), team)
    record = {"revision": integration["revision"], "return_to": return_to}
    return mint_link(CONNECT, team, user, lifetime, settings, record)


def mint_link(
    kind: str, team: str, user: str, lifetime: int, settings: Settings, record: dict[str, Any]
) -> tuple[str, int]:
    """Store a link record (with its TTL) and sign its token; returns the token and its expiry."""
    now = clock.now()
    claims = LinkClaims(kind, new_link_id(), team, user, now + lifetime)
    ttl = claims.expires_at + LINK_RECORD_GRACE
    store_for(settings).put_link(
        claims.link_id,
        {**record, "team": team, "user": user, "created_at": now, "expires_at": claims.expires_at, "ttl": ttl},
    )
    logger.info("link created", extra={"kind": kind, "team": team, "user": user, "expires_in": lifetime})
    return link_signer(settings).mint(claims), claims.expires_at


def open_link(
    token: str, kind: str, settings: Settings, used: Callable[[LinkClaims], str]
) -> tuple[LinkClaims, dict[str, Any]]:
    """A link's claims and record when it is authentic, unexpired and not used yet.

    Raises:
        NotFound: ``link_invalid`` (forged, altered, or its record is gone).
        Gone: ``link_expired``, or ``link_used`` with the message ``used(claims)``.
    """
    claims = link_signer(settings).verify(token, now=clock.now(), kind=kind)
    link = store_for(settings).get_link(claims.link_id)
    if link is None:
        raise NotFound("This link is no longer known to the broker.", code="link_invalid")
    if link.get("status") == COMPLETED:
        raise Gone(used(claims), code="link_used")
    return claims, link


def integration_gone(team: str) -> NotFound:
    return NotFound(f"Team {team} no longer has a Jira integration.", code="integration_not_found")


def describe_link(token: str, kind: str = CONNECT, settings: Settings | None = None) -> Who | None:
    """Whose link this is, for its error page: the team, the user and the team's Jira host.

    Only an authentic token (one this broker made, expired or not) is described; a
    forged one is not, so an error page never repeats what an attacker wrote. Never raises.
    """
    try:
        settings = settings or load_settings()
        claims = link_signer(settings).authentic_claims(token)
        if claims is None or claims.kind != kind:
            return None
        integration = store_for(settings).get_integration(claims.team)
        host = host_label(integration["base_url"]) if integration else None
        return Who(team=claims.team, user=claims.user, host=host)
    except Exception:  # noqa: BLE001 - an error page must render even when this lookup fails
        logger.exception("could not describe a link for its error page")
        return None


def check_link(token: str, settings: Settings | None = None) -> LinkContext:
    """Check a connect link without changing anything.

    Raises:
        NotFound: ``link_invalid`` (forged or altered), ``integration_not_found``.
        Gone: ``link_expired``, ``link_used`` (already completed), ``link_outdated``.
    """
    settings = settings or load_settings()
    claims, link = open_link(
        token,
        CONNECT,
        settings,
        lambda c: f"This link was already used: {c.user} in team {c.team} is connected through it.",
    )
    integration = store_for(settings).get_integration(claims.team)
    if integration is None:
        raise integration_gone(claims.team)
    if integration["revision"] != link.get("revision"):
        raise Gone(
            f"This link was made before team {claims.team}'s Jira integration was changed, so it no longer applies.",
            code="link_outdated",
        )
    return LinkContext(claims, link, integration)


def not_connected(team: str, user: str) -> NotFound:
    return NotFound(f"{user} in team {team} has not connected Jira. Send them a connect link.", code="not_connected")


def reconnect_error(team: str, user: str, reason: str, settings: Settings, **details: str) -> BrokerError:
    """401 ``reauthorization_required`` with a fresh connect link for the user to connect again."""
    observability.count("Reauthorizations")  # Jira dropped the token, or the integration moved on
    link = create_link(team, user, {}, settings)
    return BrokerError(
        f"{reason} Send {user} connect_url to connect again.",
        code="reauthorization_required",
        status=401,
        details={"connect_url": link["url"], "connect_url_expires_at": link["expires_at"], **details},
    )


def current_connection(integration: dict[str, Any] | None, connection: dict[str, Any] | None) -> dict[str, Any] | None:
    """The connection if it was made under the integration's current revision; else None.

    A connection from another revision holds a token for another Jira site or
    Application Link: it is never shown as connected and never used.
    """
    if integration is None or connection is None or connection.get("revision") != integration.get("revision"):
        return None
    return connection


def get_connection(team: str, user: str, settings: Settings | None = None) -> dict[str, Any]:
    """A user's connection as callers see it: who in Jira, since when. Never a token."""
    settings = settings or load_settings()
    connection = current_connection(*store_for(settings).get_integration_and_connection(team, user))
    if connection is None:
        raise not_connected(team, user)
    jira_user = connection.get("jira_user", {})
    return {
        "connected": True,
        "jira_user": {k: jira_user.get(k) for k in ("name", "key", "display_name", "email")},
        "connected_at": clock.iso(connection.get("connected_at")),
        "expires_at": clock.iso(connection.get("expires_at")),
    }


def delete_connection(team: str, user: str, settings: Settings | None = None) -> None:
    settings = settings or load_settings()
    removed = store_for(settings).delete_connection(team, user)
    logger.info("connection deleted", extra={"team": team, "user": user, "existed": removed})
