"""OAuth 2.0 behind the acting seam: Jira DC's incoming links (8.22+), PKCE S256, Bearer tokens.

Signing in sends the browser to Jira's authorize page with a single-use ``state`` (the pending
sign-in's handle, bound to the link and the browser like a request token) and a PKCE challenge;
the callback exchanges the code at once (codes live 10 s). Acting as the user sends
``Authorization: Bearer``; :mod:`chalicelib.refresh` keeps the token fresh, one refresh per
connection at a time. A 401 from Jira is answered by one refresh and one retry.

Example::

    scheme = OAuth2Scheme(integration, settings)
    begun = scheme.begin("acme", "alice")        # begun.authorize_url: Jira's consent page
"""

from __future__ import annotations

import re
import secrets
from typing import Any, ClassVar

import requests

from . import clock
from .acting import Begun, Finished, Proposal
from .config import Settings
from .connection_tokens import ConnectionTokens
from .errors import BrokerError, Forbidden, InvalidRequest, JiraRejected
from .jirasite import UserRequest, jira_user_of
from .oauth2 import (
    ACCESS_DENIED,
    DEFAULT_SCOPES,
    SCOPES,
    JiraOAuth2Client,
    OAuth2Error,
    code_challenge,
    new_code_verifier,
)
from .oauth2 import shown_text as _shown
from .problems import explain_client_refusal, explain_code_refusal, oauth2_not_available
from .refresh import Current, FreshTokens
from .resources import store_for, vault_for
from .sealing import sealer_for
from .urls import check_jira_destination

SIGNIN_LIFETIME = 600  # seconds from Continue to Jira's redirect back (login and consent), as for OAuth 1.0a
_CLIENT_ID = re.compile(r"^[\x21-\x7e]{1,255}$")
_CLIENT_SECRET = re.compile(r"^[\x21-\x7e]{1,1024}$")


class OAuth2Scheme:
    """A team's OAuth 2.0 incoming link: client id, client secret (in Secrets Manager), scopes."""

    name: ClassVar[str] = "oauth2"
    callback_handle: ClassVar[str] = "state"

    def __init__(self, integration: dict[str, Any], settings: Settings) -> None:
        self.integration = integration
        self.settings = settings

    def jira(self, team: str) -> JiraOAuth2Client:
        secret = vault_for(self.settings).client_secret(str(self.integration.get("key_secret") or ""))
        if secret is None:
            raise BrokerError(
                f"Team {team}'s OAuth 2.0 client secret is missing from Secrets Manager. Set the integration up "
                f"again with PUT /v1/teams/{team}/jira.",
                code="client_secret_missing",
            )
        return JiraOAuth2Client(
            self.integration["base_url"],
            self.integration["client_id"],
            secret,
            self.settings.oauth2_redirect_uri,
            timeout=self.settings.jira_timeout,
            deadline=self.settings.jira_call_seconds,
        )

    # -- setting up ------------------------------------------------------------------------
    @classmethod
    def propose(
        cls, team: str, base_url: str, body: dict[str, Any], existing: dict[str, Any] | None, settings: Settings
    ) -> Proposal:
        """Client id, client secret (sent, or the existing one for the same client id) and scopes, proved
        against Jira's token endpoint before anything is stored."""
        client_id = _client_id(body.get("client_id"))
        scopes = _scopes(body.get("scopes"))
        vault = vault_for(settings)
        secret = _client_secret(body.get("client_secret"), client_id, existing, vault)
        check_jira_destination(base_url, settings)
        jira = JiraOAuth2Client(
            base_url,
            client_id,
            secret,
            settings.oauth2_redirect_uri,
            timeout=settings.jira_timeout,
            deadline=settings.jira_call_seconds,
        )
        _prove(jira)
        return Proposal(
            fields={"client_id": client_id, "scopes": scopes},
            link=(cls.name, base_url, client_id),  # Jira binds tokens to the link (client id), not its secret
            site=jira,
            store_credential=lambda: vault.put_client_secret(team, client_id, secret),
        )

    @classmethod
    def describe(cls, integration: dict[str, Any], settings: Settings) -> dict[str, Any]:
        return {
            "client_id": integration["client_id"],
            "scopes": list(integration.get("scopes") or DEFAULT_SCOPES),
            "redirect_uri": settings.oauth2_redirect_uri,
        }

    @classmethod
    def link_of(cls, integration: dict[str, Any]) -> tuple[str, ...]:
        return (cls.name, integration["base_url"], integration.get("client_id") or "")

    # -- signing in ------------------------------------------------------------------------
    def begin(self, team: str, user: str) -> Begun:
        state, verifier = secrets.token_urlsafe(32), new_code_verifier()
        scopes = self.integration.get("scopes") or list(DEFAULT_SCOPES)
        return Begun(
            handle=state,
            authorize_url=self.jira(team).authorize_url(state, code_challenge(verifier), scopes),
            pending={"code_verifier": verifier},
            lifetime=SIGNIN_LIFETIME,
        )

    def denied(self, answer: dict[str, str | None]) -> bool:
        return answer.get("error") == ACCESS_DENIED

    def finish(self, pending: dict[str, Any], answer: dict[str, str | None]) -> Finished:
        error, code = answer.get("error"), answer.get("code")
        if error:
            described = _shown(answer.get("error_description"))
            raise Forbidden(
                f"Jira did not authorize the broker: error={_shown(error)}"
                + (f" ({described})" if described else "")
                + ". Open your connect link again; if it happens again, ask your Jira admin to check the "
                "incoming link's redirect URL and scopes.",
                code="jira_authorization_error",
                details={"jira_error": _shown(error)},
            )
        if not code:
            raise InvalidRequest(
                "Jira's answer is missing the authorization code. Open your connect link again.", code="missing_code"
            )
        jira = self.jira(pending["team"])
        try:
            tokens = jira.exchange_code(code, str(pending.get("code_verifier") or ""))
        except OAuth2Error as refused:
            raise explain_code_refusal(refused, jira) from None
        me = jira.myself(tokens.access_token)
        return Finished(
            tokens={"access_token": tokens.access_token, "refresh_token": tokens.refresh_token},
            fields={
                "access_expires_at": clock.now() + tokens.expires_in,
                "token_version": 1,
                "scope": tokens.scope,
                "expires_at": None,  # Jira does not say when the refresh token ends (90 days unused by default)
            },
            jira_user=jira_user_of(me),
        )

    # -- acting as the user --------------------------------------------------------------------
    def act_as(self, team: str, user: str, connection: dict[str, Any]) -> OAuth2User:
        tokens = ConnectionTokens(store_for(self.settings), sealer_for(self.settings))
        tokens.open(team, user, connection)  # unreadable tokens fail here, as OAuth 1.0a's do (see acting_as)
        return OAuth2User(FreshTokens(tokens, self.jira(team), team, user, self.settings), connection)


class OAuth2User:
    """Requests with the user's Bearer token (see :class:`chalicelib.acting.UserAuth`)."""

    def __init__(self, fresh: FreshTokens, connection: dict[str, Any]) -> None:
        self.fresh = fresh
        self.jira = fresh.jira
        self.connection = connection

    @property
    def host(self) -> str:
        return self.jira.host

    def send(self, request: UserRequest) -> requests.Response:
        current = self.fresh.current(self.connection)
        response = self.jira.call_as(current.access_token, request)
        if response.status_code != 401:
            return response
        # Revoked, or expired early: one refresh (unless another caller did one already), one retry.
        response.close()
        latest = self.fresh.tokens.read(self.fresh.team, self.fresh.user) or self.connection
        current = self.fresh.current(latest, rejected_version=current.version)
        return self.jira.call_as(current.access_token, request)

    def read_body(self, response: requests.Response, limit: int) -> bytes:
        return self.jira.read_body(response, limit)

    def authorization(self, method: str, url: str, form: str | None) -> dict[str, Any]:
        """A short-lived credential: the current access token (refreshed first if within a minute of expiry)."""
        current: Current = self.fresh.current(self.connection)
        return {"authorization": f"Bearer {current.access_token}", "expires_at": clock.iso(current.expires_at)}


# -- reading a setup request -----------------------------------------------------------------
def _client_id(raw: object) -> str:
    if raw in (None, ""):
        raise InvalidRequest("The field 'client_id' is required.", code="missing_field", details={"field": "client_id"})
    if not isinstance(raw, str) or not _CLIENT_ID.match(raw):
        raise InvalidRequest(
            "client_id must be the incoming link's client ID as Jira shows it: 1 to 255 printable characters, "
            "no spaces.",
            code="invalid_client_id",
        )
    return raw


def _client_secret(raw: object, client_id: str, existing: dict[str, Any] | None, vault: Any) -> str:
    """The secret sent, or the one kept for this same client id (so changing only scopes needs no secret)."""
    if raw in (None, ""):
        if existing is not None and existing.get("client_id") == client_id:
            kept = vault.client_secret(str(existing.get("key_secret") or ""))
            if kept is not None:
                return str(kept)
        raise InvalidRequest(
            "The field 'client_secret' is required: copy it from Jira's incoming link (Administration > "
            "Applications > Application links).",
            code="missing_field",
            details={"field": "client_secret"},
        )
    if not isinstance(raw, str) or not _CLIENT_SECRET.match(raw):
        raise InvalidRequest(
            "client_secret must be the incoming link's client secret as Jira shows it: printable characters, "
            "no spaces.",
            code="invalid_client_secret",
        )
    return raw


def _scopes(raw: object) -> list[str]:
    if raw is None:
        return list(DEFAULT_SCOPES)
    chosen = [s for s in raw if isinstance(s, str) and s in SCOPES] if isinstance(raw, list) else []
    if not chosen or not isinstance(raw, list) or len(chosen) != len(raw) or len(set(chosen)) != len(chosen):
        raise InvalidRequest(
            f"scopes must be a non-empty list of distinct Jira scopes: {', '.join(SCOPES)} (the last two need "
            "Jira 10.3). Tick the same ones on Jira's incoming link.",
            code="invalid_scopes",
        )
    return chosen


def _prove(jira: JiraOAuth2Client) -> None:
    try:
        jira.prove_client()
    except OAuth2Error as error:
        raise explain_client_refusal(error, jira) from None
    except JiraRejected as error:
        if error.code != "jira_oauth_not_found":
            raise
        version = None
        try:
            version = str(jira.server_info().get("version") or "") or None
        except BrokerError:
            pass
        raise oauth2_not_available(jira, version) from None
