"""OAuth 1.0a behind the acting seam: Application Links, RSA-SHA1 with the team's private key.

Signing in is Jira's three-legged dance (request token, the user's Allow, access token);
acting as the user signs every request (:class:`chalicelib.oauth1.JiraClient`). A token
problem Jira reports (``token_rejected``, ``token_revoked``, ``token_expired``) ends the
connection and asks the user to reconnect; any other ``oauth_problem`` is the integration's.

Example::

    scheme = OAuth1Scheme(integration, settings)
    begun = scheme.begin("acme", "alice")       # begun.authorize_url: Jira's Allow page
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from . import clock, connect
from .acting import Begun, Finished, Proposal
from .config import Settings
from .connection_tokens import ConnectionTokens
from .errors import BrokerError, InvalidRequest
from .jirasite import UserRequest, jira_user_of
from .keys import KeyVault, parse_private_key, public_pem
from .keys import fingerprint as key_fingerprint
from .logs import logger
from .oauth1 import DENIED, REQUEST_TOKEN_LIFETIME, TIMESTAMP_WINDOW, JiraClient, JiraOAuthError, OAuthProblem
from .problems import explain_exchange_problem, explain_setup_problem
from .resources import jira_for, store_for, team_key, vault_for
from .sealing import sealer_for
from .urls import check_jira_destination

TOKEN_PROBLEMS = {"token_rejected", "token_expired", "token_revoked"}
_CONSUMER_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


class OAuth1Scheme:
    """A team's Application Link: its consumer key and private key."""

    name: ClassVar[str] = "oauth1"
    callback_handle: ClassVar[str] = "oauth_token"

    def __init__(self, integration: dict[str, Any], settings: Settings) -> None:
        self.integration = integration
        self.settings = settings

    def jira(self, team: str) -> JiraClient:
        return jira_for(self.integration, team_key(vault_for(self.settings), team, self.integration), self.settings)

    # -- setting up ------------------------------------------------------------------------
    @classmethod
    def propose(
        cls, team: str, base_url: str, body: dict[str, Any], existing: dict[str, Any] | None, settings: Settings
    ) -> Proposal:
        """The consumer key and private key (sent, the pending generated one, or the existing one),
        proved by asking Jira for a request token."""
        consumer_key = _consumer_key(_required(body, "consumer_key"))
        vault = vault_for(settings)
        key, from_pending = _choose_key(body, team, vault, existing)
        check_jira_destination(base_url, settings)
        jira = JiraClient(
            base_url, consumer_key, key, timeout=settings.jira_timeout, deadline=settings.jira_call_seconds
        )
        try:
            jira.request_token(settings.callback_url)
        except JiraOAuthError as error:
            raise explain_setup_problem(error, jira) from None
        return Proposal(
            fields={
                "consumer_key": consumer_key,
                "public_key": public_pem(key),
                "public_key_fingerprint": key_fingerprint(key),
            },
            # Jira binds access tokens to the Application Link, not to its key: a new key for the same
            # site and consumer keeps connections.
            link=(cls.name, base_url, consumer_key),
            site=jira,
            store_credential=lambda: vault.put_team_key(team, key),
            after_save=[("pending key", lambda: vault.delete_pending_key(team))] if from_pending else [],
        )

    @classmethod
    def describe(cls, integration: dict[str, Any], settings: Settings) -> dict[str, Any]:
        return {
            "consumer_key": integration["consumer_key"],
            "public_key": integration["public_key"],
            "public_key_fingerprint": integration["public_key_fingerprint"],
        }

    @classmethod
    def link_of(cls, integration: dict[str, Any]) -> tuple[str, ...]:
        return (cls.name, integration["base_url"], integration.get("consumer_key") or "")

    # -- signing in ------------------------------------------------------------------------
    def begin(self, team: str, user: str) -> Begun:
        """A request token from Jira *now* (its 10 minutes start at the click)."""
        jira = self.jira(team)
        try:
            request_token = jira.request_token(self.settings.callback_url)
        except JiraOAuthError as error:
            raise explain_setup_problem(error, jira) from None
        return Begun(
            handle=request_token.token,
            authorize_url=jira.authorize_url(request_token.token),
            pending={"token_secret": request_token.secret},
            lifetime=REQUEST_TOKEN_LIFETIME,
        )

    def denied(self, answer: dict[str, str | None]) -> bool:
        return answer.get("oauth_verifier") == DENIED

    def finish(self, pending: dict[str, Any], answer: dict[str, str | None]) -> Finished:
        verifier = answer.get("oauth_verifier")
        if not verifier:
            raise InvalidRequest(
                "Jira's answer is missing oauth_verifier. Open your connect link again.", code="missing_oauth_verifier"
            )
        jira = self.jira(pending["team"])
        try:
            access = jira.access_token(str(answer.get("oauth_token")), pending.get("token_secret", ""), verifier)
            me = jira.myself(access.token, access.secret)
        except JiraOAuthError as error:
            raise explain_exchange_problem(error, jira) from None
        now = clock.now()
        return Finished(
            tokens={
                "access_token": access.token,
                "token_secret": access.secret,
                "session_handle": access.session_handle or "",
            },
            fields={
                "expires_at": now + access.expires_in if access.expires_in else None,
                "authorization_expires_at": now + access.authorization_expires_in
                if access.authorization_expires_in
                else None,
            },
            jira_user=jira_user_of(me),
        )

    # -- acting as the user --------------------------------------------------------------------
    def act_as(self, team: str, user: str, connection: dict[str, Any]) -> OAuth1User:
        tokens = ConnectionTokens(store_for(self.settings), sealer_for(self.settings))
        opened = tokens.open(team, user, connection)
        return OAuth1User(self.jira(team), team, user, connection, opened, self.settings)


class OAuth1User:
    """Requests signed RSA-SHA1 as one user (see :class:`chalicelib.acting.UserAuth`)."""

    def __init__(
        self,
        jira: JiraClient,
        team: str,
        user: str,
        connection: dict[str, Any],
        tokens: dict[str, str],
        settings: Settings,
    ) -> None:
        self.jira = jira
        self.team = team
        self.user = user
        self.connection = connection
        self._token = tokens.get("access_token", "")
        self._secret = tokens.get("token_secret", "")
        self.settings = settings

    @property
    def host(self) -> str:
        return self.jira.host

    def send(self, request: UserRequest) -> requests.Response:
        response, problem = self.jira.call_as(self._token, self._secret, request)
        if problem is not None:
            response.close()
            raise self._problem_error(problem)
        return response

    def read_body(self, response: requests.Response, limit: int) -> bytes:
        return self.jira.read_body(response, limit)

    def authorization(self, method: str, url: str, form: str | None) -> dict[str, Any]:
        header, timestamp = self.jira.authorization(self._token, self._secret, method, url, form)
        return {"authorization": header, "expires_at": clock.iso(timestamp + TIMESTAMP_WINDOW)}

    def _problem_error(self, problem: OAuthProblem) -> BrokerError:
        """Map Jira's oauth_problem on a REST call to what the caller can do about it."""
        name, host = problem.problem, self.jira.host
        if name in TOKEN_PROBLEMS:
            store_for(self.settings).delete_connection(self.team, self.user, revision=self.connection["revision"])
            logger.info("connection dropped by jira", extra={"team": self.team, "user": self.user, "problem": name})
            reason = f"Jira at {host} no longer accepts {self.user}'s authorization ({name})."
            return connect.reconnect_error(self.team, self.user, reason, self.settings, oauth_problem=name)
        causes = {
            "signature_invalid": "Jira rejected the broker's signature: the Application Link's public key no longer "
            "matches the team's key, or Jira's base URL changed",
            "consumer_key_unknown": "Jira no longer has the Application Link with the team's consumer key",
            "consumer_key_rejected": "Jira rejected the team's consumer key",
            "timestamp_refused": "Jira refused the timestamp even after correcting for its clock",
        }
        cause = causes.get(name, f"Jira refused the OAuth signature with oauth_problem={name}")
        return BrokerError(
            f"{cause}. An admin must fix the integration (PUT /v1/teams/{self.team}/jira); "
            f"{self.user}'s connection is kept.",
            code="integration_broken",
            status=502,
            details={"oauth_problem": name},
        )


def _required(body: dict[str, Any], name: str) -> Any:
    if name not in body or body[name] in (None, ""):
        raise InvalidRequest(f"The field '{name}' is required.", code="missing_field", details={"field": name})
    return body[name]


def _consumer_key(raw: object) -> str:
    if not isinstance(raw, str) or not _CONSUMER_KEY.match(raw):
        raise InvalidRequest(
            "consumer_key must be the Application Link's consumer key: 1 to 255 printable characters, no spaces.",
            code="invalid_consumer_key",
        )
    return raw


def _choose_key(
    body: dict[str, Any], team: str, vault: KeyVault, existing: dict[str, Any] | None
) -> tuple[rsa.RSAPrivateKey, bool]:
    """The key to use, and whether it is the team's pending generated key."""
    if body.get("private_key") not in (None, ""):
        return parse_private_key(body["private_key"]), False
    pending = vault.pending_key(team)
    if pending is not None:
        return pending, True
    if existing is not None:
        return team_key(vault, team, existing), False
    raise InvalidRequest(
        f"Send private_key, or first let the broker make a key pair with POST /v1/teams/{team}/jira/key-pair "
        "and paste its public key into Jira's Application Link.",
        code="private_key_required",
    )
