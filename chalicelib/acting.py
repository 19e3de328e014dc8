"""Acting as a connected user: the one seam every route that calls Jira as someone shares.

A team's integration names its **scheme** (``"auth"``: ``oauth1``, the default, or ``oauth2``).
A :class:`Scheme` signs a person in (:meth:`Scheme.begin`, :meth:`Scheme.finish`) and gives a
:class:`UserAuth` for a connection: the proxy, the sign endpoint and the transparent route talk
only to that, so no route branches on the OAuth version.

- :mod:`chalicelib.auth_oauth1`: RSA-SHA1 signatures with the team's private key (Application Links).
- :mod:`chalicelib.auth_oauth2`: Bearer access tokens, refreshed single-flight (incoming links, Jira 8.22+).

Example::

    acting = acting_as("acme", "alice", settings)
    response = acting.auth.send(UserRequest("GET", "/rest/api/2/myself"))
    body = acting.auth.read_body(response, 4 * 1024 * 1024)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import requests

from . import connect
from .config import Settings
from .errors import InvalidRequest, SealedValueUnreadable
from .jirasite import JiraSite, UserRequest
from .resources import integration_not_found, store_for
from .urls import check_jira_destination_cached

DEFAULT_AUTH = "oauth1"
# Imported on first use: a route that acts as an OAuth 2.0 user never loads oauthlib.
_SCHEMES = {"oauth1": "chalicelib.auth_oauth1:OAuth1Scheme", "oauth2": "chalicelib.auth_oauth2:OAuth2Scheme"}


class UserAuth(Protocol):
    """Calls to the team's Jira as one connected user."""

    @property
    def host(self) -> str: ...

    def send(self, request: UserRequest) -> requests.Response:
        """Send ``request`` as the user; the body is streamed (read it with :meth:`read_body`).

        Raises 401 ``reauthorization_required`` (with a fresh ``connect_url``) when Jira no longer
        honours the user's authorization, 502 ``integration_broken`` when the integration itself
        is refused, and the Jira call's own errors (unreachable, timeout).
        """
        ...

    def read_body(self, response: requests.Response, limit: int) -> bytes: ...

    def authorization(self, method: str, url: str, form: str | None) -> dict[str, Any]:
        """``{"authorization": <Authorization header value>, "expires_at": <ISO time>}`` for a request
        the caller sends to ``url`` itself."""
        ...


@dataclass(frozen=True)
class Begun:
    """A sign-in started: the handle Jira sends back (request token or ``state``), where to send the
    browser, what the pending sign-in must remember, and for how long."""

    handle: str
    authorize_url: str
    pending: dict[str, Any]
    lifetime: int


@dataclass(frozen=True)
class Finished:
    """A sign-in Jira approved: the tokens (sealed before storing), the connection's other fields, who."""

    tokens: dict[str, str]
    fields: dict[str, Any] = field(default_factory=dict)
    jira_user: dict[str, Any] = field(default_factory=dict)


@dataclass
class Proposal:
    """A setup that Jira accepted, not stored yet (see :func:`chalicelib.integrations.put_integration`).

    ``fields`` are the integration's OAuth fields (never a secret); ``link`` is what Jira binds
    tokens to (same link: connections stay); ``store_credential`` keeps the private key or client
    secret under its own Secrets Manager name and returns it; ``after_save`` are clean-ups.
    """

    fields: dict[str, Any]
    link: tuple[str, ...]
    site: JiraSite
    store_credential: Callable[[], str]
    after_save: list[tuple[str, Callable[[], object]]] = field(default_factory=list)


class Scheme(Protocol):
    """One OAuth version, bound to a team's integration."""

    name: ClassVar[str]
    callback_handle: ClassVar[str]  # the query parameter that names the sign-in on Jira's redirect back

    @classmethod
    def propose(
        cls, team: str, base_url: str, body: dict[str, Any], existing: dict[str, Any] | None, settings: Settings
    ) -> Proposal:
        """Validate a setup request and prove it against Jira (``existing``: the team's integration of
        this same OAuth version, whose credential may be kept). Raises 400s and Jira's refusals."""
        ...

    @classmethod
    def describe(cls, integration: dict[str, Any], settings: Settings) -> dict[str, Any]:
        """The integration's OAuth fields as callers see them: never a secret."""
        ...

    @classmethod
    def link_of(cls, integration: dict[str, Any]) -> tuple[str, ...]:
        """What Jira binds this integration's tokens to, as :attr:`Proposal.link` says it."""
        ...

    def begin(self, team: str, user: str) -> Begun: ...

    def denied(self, answer: dict[str, str | None]) -> bool:
        """Whether Jira's redirect back says the user clicked Deny."""
        ...

    def finish(self, pending: dict[str, Any], answer: dict[str, str | None]) -> Finished:
        """Exchange what Jira sent back for tokens at once and ask Jira who approved."""
        ...

    def act_as(self, team: str, user: str, connection: dict[str, Any]) -> UserAuth: ...


def auth_of(integration: dict[str, Any]) -> str:
    """The integration's OAuth version: records from before OAuth 2.0 have none and are OAuth 1.0a."""
    return str(integration.get("auth") or DEFAULT_AUTH)


def scheme_class(auth: str) -> type[Scheme]:
    module, _, name = _SCHEMES[auth].partition(":")
    scheme: type[Scheme] = getattr(importlib.import_module(module), name)
    return scheme


def scheme_for(integration: dict[str, Any], settings: Settings) -> Scheme:
    """The integration's scheme, ready to sign people in and act as them."""
    scheme = scheme_class(auth_of(integration))
    return scheme(integration, settings)  # type: ignore[call-arg]


def check_auth(raw: object) -> str:
    """``auth`` as a setup request sends it: ``oauth1`` (the default) or ``oauth2``; else 400 ``invalid_auth``."""
    if raw in (None, ""):
        return DEFAULT_AUTH
    if not isinstance(raw, str) or raw not in _SCHEMES:
        raise InvalidRequest(
            "auth must be 'oauth1' (an Application Link with an RSA key, any Jira Server or Data Center) or "
            "'oauth2' (an incoming OAuth 2.0 link with a client id and secret, Jira Data Center 8.22 or later).",
            code="invalid_auth",
        )
    return raw


# -- acting as the user ------------------------------------------------------------------
@dataclass(frozen=True)
class Acting:
    """What acting as a user needs: the integration, the connection and the user's :class:`UserAuth`."""

    team: str
    user: str
    integration: dict[str, Any]
    connection: dict[str, Any]
    auth: UserAuth


def acting_as(team: str, user: str, settings: Settings) -> Acting:
    """One DynamoDB read, and the team's credential from the warm cache. 404s when not set up or not connected."""
    integration, stored = store_for(settings).get_integration_and_connection(team, user)
    if integration is None:
        raise integration_not_found(team)
    if stored is None:
        raise connect.not_connected(team, user)
    connection = connect.current_connection(integration, stored)
    if connection is None:  # made for another Jira site or link: its token never goes anywhere
        store_for(settings).delete_connection(team, user, revision=stored.get("revision") or "")
        raise connect.reconnect_error(
            team,
            user,
            f"{user}'s connection was made before team {team}'s Jira integration moved to another Jira site, "
            "link or OAuth version, so it is no longer used.",
            settings,
        )
    check_jira_destination_cached(integration["base_url"], settings)  # DNS may have changed since setup
    try:
        auth = scheme_for(integration, settings).act_as(team, user, connection)
    except SealedValueUnreadable:  # altered, or copied from another user's item: never usable again
        store_for(settings).delete_connection(team, user, revision=connection.get("revision") or "")
        raise connect.reconnect_error(
            team, user, f"{user}'s stored Jira credential could not be decrypted, so it was removed.", settings
        ) from None
    return Acting(team, user, integration, connection, auth)
