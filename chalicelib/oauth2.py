"""Jira Data Center's OAuth 2.0 provider (8.22+): authorize URLs with PKCE, the token endpoint, Bearer calls.

Endpoints, relative to the base URL (context path included), as FIELD-NOTES records them:

- ``GET  /rest/oauth2/latest/authorize`` (the user's browser) with ``client_id``, ``redirect_uri``,
  ``response_type=code``, ``scope``, ``state``, ``code_challenge``, ``code_challenge_method=S256``
- ``POST /rest/oauth2/latest/token`` (form): ``grant_type=authorization_code`` (``code``,
  ``redirect_uri``, ``code_verifier``) or ``grant_type=refresh_token`` (``refresh_token`` and
  ``redirect_uri`` too: Jira answers ``invalid_grant`` without it), client id and secret in the form.

Authorization codes live 10 s by default: exchange them at once. Every refresh rotates the
refresh token; the old one stops working (see :mod:`chalicelib.refresh` for doing it once).
Errors are RFC 6749 JSON, ``{"error", "error_description"}``: :class:`OAuth2Error`.

Example::

    jira = JiraOAuth2Client(base_url, client_id, secret, redirect_uri, timeout=(4, 8))
    verifier = new_code_verifier()
    jira.authorize_url(state, code_challenge(verifier), ["WRITE"])
    tokens = jira.exchange_code(code, verifier)
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests

from .errors import BrokerError, JiraBadResponse, JiraRejected
from .jirasite import FORM_CONTENT_TYPE, MYSELF_PATH, JiraSite, UserRequest, unexpected_status

AUTHORIZE_PATH = "/rest/oauth2/latest/authorize"
TOKEN_PATH = "/rest/oauth2/latest/token"  # noqa: S105 - a path, not a secret
SCOPES = ("READ", "WRITE", "ADMIN", "SYSTEM_ADMIN", "READ_ALL", "MANAGE_SUBSCRIPTIONS")  # the last two: Jira 10.3+
DEFAULT_SCOPES = ("WRITE",)
ACCESS_DENIED = "access_denied"  # the error Jira's authorize page sends back when the user clicks Deny
_MAX_ERROR_TEXT = 200


@dataclass(frozen=True)
class Tokens:
    """What the token endpoint answered: ``expires_in`` is the access token's lifetime in seconds."""

    access_token: str
    refresh_token: str
    expires_in: int
    scope: str


class OAuth2Error(BrokerError):
    """Jira's token endpoint refused a grant; ``error`` is its RFC 6749 error code (``invalid_grant``, ...)."""

    code = "jira_oauth2_error"
    status = 422

    def __init__(self, error: str, description: str, http_status: int) -> None:
        super().__init__(f"Jira refused the token request with error={error}.")
        self.error = error
        self.description = description
        self.http_status = http_status


def new_code_verifier() -> str:
    """A PKCE code verifier: 86 URL-safe characters (RFC 7636 allows 43 to 128)."""
    return secrets.token_urlsafe(64)


def code_challenge(verifier: str) -> str:
    """The S256 challenge of a verifier: base64url of its SHA-256, without padding (RFC 7636 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def shown_text(value: object) -> str:
    """Text Jira sent, fit to repeat in a message: printable, and short."""
    text = "".join(ch for ch in str(value or "") if ch.isprintable())
    return text[:_MAX_ERROR_TEXT]


class JiraOAuth2Client(JiraSite):
    """One Jira OAuth 2.0 incoming link (client id and secret) and its exact redirect URI."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        *,
        timeout: tuple[float, float],
        deadline: float | None = None,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(base_url, timeout=timeout, deadline=deadline, session=session)
        self.client_id = client_id
        self._client_secret = client_secret
        self.redirect_uri = redirect_uri

    # -- signing in -----------------------------------------------------------------
    def authorize_url(self, state: str, challenge: str, scopes: list[str] | tuple[str, ...]) -> str:
        query = {
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "response_type": "code",
            "scope": " ".join(scopes),
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        return f"{self.base_url}{AUTHORIZE_PATH}?{urlencode(query)}"

    def exchange_code(self, code: str, verifier: str) -> Tokens:
        """``grant_type=authorization_code`` with the PKCE verifier; raises :class:`OAuth2Error` on a refusal."""
        return self._tokens({"grant_type": "authorization_code", "code": code, "code_verifier": verifier})

    def refresh(self, refresh_token: str) -> Tokens:
        """``grant_type=refresh_token``; Jira rotates the refresh token. Raises :class:`OAuth2Error`."""
        return self._tokens({"grant_type": "refresh_token", "refresh_token": refresh_token})

    def prove_client(self) -> None:
        """Show the client id and secret to the token endpoint with a code that cannot exist.

        Jira authenticates the client before it looks at the code (RFC 6749 3.2.1): ``invalid_grant``
        means the credentials are right, ``invalid_client`` that they are not. A 404 means no OAuth 2.0
        provider (Jira before 8.22). Raises :class:`OAuth2Error` or another broker error.
        """
        try:
            self.exchange_code(f"broker-setup-check-{secrets.token_hex(8)}", new_code_verifier())
        except OAuth2Error as error:
            if error.error in {"invalid_grant", "invalid_request"}:
                return
            raise

    def _tokens(self, grant: dict[str, str]) -> Tokens:
        form = {**grant, "redirect_uri": self.redirect_uri, "client_id": self.client_id}
        form["client_secret"] = self._client_secret
        headers = {"Content-Type": FORM_CONTENT_TYPE, "Accept": "application/json"}
        prepared = self.prepare_plain("POST", TOKEN_PATH, data=urlencode(form), headers=headers)
        response = self.send_prepared(prepared)
        if response.status_code != 200:
            raise self._refusal(response)
        body = self.json_object(response, TOKEN_PATH)
        access, refresh = body.get("access_token"), body.get("refresh_token")
        if not isinstance(access, str) or not access or not isinstance(refresh, str) or not refresh:
            raise JiraBadResponse(f"{self.host} answered the token request without an access and a refresh token.")
        expires_in = body.get("expires_in")
        return Tokens(
            access_token=access,
            refresh_token=refresh,
            expires_in=expires_in if isinstance(expires_in, int) and expires_in > 0 else 3600,
            scope=shown_text(body.get("scope")),
        )

    def _refusal(self, response: requests.Response) -> BrokerError:
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return OAuth2Error(
                shown_text(body["error"]), shown_text(body.get("error_description")), response.status_code
            )
        return unexpected_status(self.host, TOKEN_PATH, response)

    # -- acting as a user ---------------------------------------------------------------
    def prepare_as(self, access_token: str, request: UserRequest) -> requests.PreparedRequest:
        prepared = self.prepare_plain(request.method, request.path, data=request.body, headers=request.headers)
        prepared.headers["Authorization"] = f"Bearer {access_token}"
        return prepared

    def call_as(self, access_token: str, request: UserRequest) -> requests.Response:
        """Send a request as the user (streamed: read it with :meth:`read_body`). Redirects are returned."""
        return self.send_prepared(self.prepare_as(access_token, request), stream=True)

    def myself(self, access_token: str) -> dict[str, Any]:
        """``GET /rest/api/2/myself`` with the token: who approved."""
        request = UserRequest("GET", MYSELF_PATH, headers={"Accept": "application/json"})
        response = self.send_prepared(self.prepare_as(access_token, request))
        if response.status_code != 200:
            raise JiraRejected(
                f"{self.host} answered HTTP {response.status_code} for {MYSELF_PATH} with the new token.",
                code="jira_bad_response",
                status=502,
            )
        return self.json_object(response, MYSELF_PATH)
