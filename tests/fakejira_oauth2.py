"""Jira Data Center's OAuth 2.0 provider (8.22+) for the fake Jira: the authorization code grant, PKCE optional.

See "Jira DC's OAuth 2.0 provider" in /work/shared/FIELD-NOTES.md. Paths are under the context path:
``GET /rest/oauth2/latest/authorize`` (the consent page: real Jira shows its login first, the fake a user name
field), ``POST …/authorize`` (its Allow and Deny buttons), ``POST …/token`` (form; ``authorization_code`` and
``refresh_token`` grants). ``Authorization: Bearer <access token>`` on ``/rest/...`` then acts as the user.

Lifetimes are Jira's defaults: code 10 s, access token 3600 s, refresh token 90 days from its own issue. Each
refresh returns a new refresh token and the old one stops working; access tokens issued before keep working
until they expire, as Jira's do. Where Jira's behaviour is not documented the fake takes the strict reading of
RFC 6749 and RFC 9700: the fake insists on ``scope``; a code is spent by any exchange attempt that passed client
authentication; a code used twice revokes the tokens it minted; a rotated-away refresh token presented again
revokes its whole grant. Scopes are not enforced on REST calls.

``OAuth2Provider`` is a mixin of ``FakeJira``. It imports nothing from ``tests.fakejira`` at run time (so
``python -m tests.fakejira`` loads that file only once), which is why ``Response`` lives here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import json
import re
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

if TYPE_CHECKING:
    from tests.fakejira import _Request

OAUTH2 = "/rest/oauth2/latest"
FAKE_REVOKE = "/_fake/revoke"
SCOPES = ("READ", "WRITE", "ADMIN", "SYSTEM_ADMIN")  # Jira's, in its order (10.3 adds more)
CODE_TTL, ACCESS_TTL, REFRESH_TTL = 10.0, 3600.0, 90 * 86400.0
NOT_AUTHENTICATED = "You are not authenticated. Authentication required to perform this operation."
_TEXT_PLAIN, _TEXT_HTML = "text/plain;charset=UTF-8", "text/html;charset=UTF-8"
_AUTHORIZE_PARAMS = "client_id redirect_uri response_type scope state code_challenge code_challenge_method".split()
_PKCE = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636's code_verifier, and an S256 challenge fits it too


@dataclass
class Response:
    """What a route answers; the handler turns it into bytes on the wire."""

    status: int
    body: bytes = b""
    content_type: str = _TEXT_PLAIN
    headers: dict[str, str] = field(default_factory=dict)


class Answered(Exception):
    """Raised from inside a route that has its answer already (a Bearer call's 401)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class InvalidAuthorizeRequest(ValueError):
    """An authorize request Jira refuses: a 400 page (``error`` None) or a redirect with ``error=``."""

    def __init__(self, message: str, error: str | None = None, redirect_uri: str = "", state: str | None = None):
        super().__init__(message)
        self.error, self.redirect_uri, self.state = error, redirect_uri, state

    def response(self) -> Response:
        if self.error is None:
            return _page(400, "Invalid OAuth 2.0 request", f"<p>{html.escape(str(self))}</p>")
        url = _redirect(self.redirect_uri, error=self.error, error_description=str(self), state=self.state)
        return Response(302, headers={"Location": url}, content_type=_TEXT_HTML)


class UnknownOAuth2Client(InvalidAuthorizeRequest, KeyError):
    """No incoming link with that client id (a KeyError too, as the OAuth 1.0a ``approve``'s unknown token)."""

    __str__ = ValueError.__str__  # not KeyError's quoting


class _TokenError(Exception):
    def __init__(self, status: int, error: str, description: str, headers: dict[str, str] | None = None):
        super().__init__(error)
        self.status, self.error, self.description, self.headers = status, error, description, headers or {}


@dataclass
class _Client:
    """An incoming link. Deleting it and making one with the same id gives a new object: grants check identity."""

    client_id: str
    secret: str
    redirect_uri: str
    scopes: frozenset[str]


@dataclass
class _Code:
    """An authorize request Jira accepted; once the user clicks Allow, what its code stands for."""

    client: _Client
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    challenge: str | None
    username: str = ""
    created: float = 0.0
    used: bool = False
    grant_id: str | None = None  # the grant its exchange made


@dataclass
class _Grant:
    """One authorization (one code exchange) and its chain of refresh tokens; ``refresh_token`` is the live one."""

    id: str
    client: _Client
    username: str
    scopes: tuple[str, ...]
    refresh_token: str
    refresh_created: float
    revoked: bool = False


class OAuth2Provider:
    """Jira DC's OAuth 2.0 provider, mixed into ``FakeJira``; all state is behind ``FakeJira``'s lock."""

    _lock: threading.Lock
    _users: dict[str, dict[str, Any]]
    if TYPE_CHECKING:  # FakeJira's

        @property
        def base_url(self) -> str: ...
        def now(self) -> float: ...
        def _user_or_new(self, name: str) -> bool: ...

    def _init_oauth2(self) -> None:
        self.oauth2_enabled = True  # False: a Jira older than 8.22, where every /rest/oauth2/latest path is a 404
        self._oauth2_clients: dict[str, _Client] = {}
        self._oauth2_codes: dict[str, _Code] = {}
        self._oauth2_grants: dict[str, _Grant] = {}
        self._oauth2_refresh: dict[str, str] = {}  # every refresh token ever issued -> its grant id
        self._oauth2_access: dict[str, tuple[str, float]] = {}  # access token -> (grant id, issued)
        self._oauth2_calls: list[dict[str, str]] = []
        self._oauth2_ttl = {"code": CODE_TTL, "access": ACCESS_TTL, "refresh": REFRESH_TTL}

    # ---- admin and user API (what people do in Jira's pages)

    def add_oauth2_client(
        self, client_id: str, client_secret: str, redirect_uri: str, scopes: Iterable[str] = ("READ", "WRITE")
    ) -> None:
        """An admin creates an External application → Incoming link, or edits it (its grants stay)."""
        wanted = frozenset(scopes)
        if not wanted or not wanted <= set(SCOPES) or urlsplit(redirect_uri).scheme not in ("http", "https"):
            raise ValueError(f"scopes must be some of {SCOPES} and the redirect URL absolute http(s)")
        with self._lock:
            client = self._oauth2_clients.setdefault(client_id, _Client(client_id, "", "", wanted))
            client.secret, client.redirect_uri, client.scopes = client_secret, redirect_uri, wanted

    def remove_oauth2_client(self, client_id: str) -> None:
        """An admin deletes the link: the token endpoint answers invalid_client for its id, and its tokens get 401.
        Its codes and refresh tokens stay dead (invalid_grant) if a link with the same id is made again."""
        with self._lock:
            self._oauth2_clients.pop(client_id, None)

    def oauth2_lifetimes(
        self, *, code: float = CODE_TTL, access: float = ACCESS_TTL, refresh: float = REFRESH_TTL
    ) -> None:
        """Set the lifetimes in seconds, as Jira's system properties do (a name left out gets Jira's default)."""
        with self._lock:
            self._oauth2_ttl = {"code": code, "access": access, "refresh": refresh}

    def oauth2_approve(self, authorize_url: str, username: str) -> str:
        """Click Allow as ``username`` on the page of ``authorize_url``; return ``redirect_uri?code=…&state=…``.

        An unknown but well-formed user name becomes a user (as on the page). Raises ValueError
        (:class:`InvalidAuthorizeRequest`; for an unknown client also a KeyError) for a request Jira refuses.
        """
        return self._decide(self._authorize_params(authorize_url), "approve", username)

    def oauth2_deny(self, authorize_url: str) -> str:
        """Click Deny; return ``redirect_uri?error=access_denied&state=…``."""
        return self._decide(self._authorize_params(authorize_url), "deny", "")

    def revoke_oauth2_grant(self, username: str, client_id: str | None = None) -> int:
        """The user revokes under Profile → Authorized applications (one client's grants, or every client's):
        their access and refresh tokens stop working, and their unused codes too. Returns how many grants went."""
        with self._lock:
            for value, code in list(self._oauth2_codes.items()):
                if code.username == username and client_id in (None, code.client.client_id):
                    del self._oauth2_codes[value]
            return self._revoke_grants(
                lambda grant: grant.username == username and client_id in (None, grant.client.client_id)
            )

    def oauth2_token_calls(self, grant_type: str | None = None) -> list[dict[str, str]]:
        """The form fields of each token-endpoint request received, in order (of one grant type, or all)."""
        with self._lock:
            return [dict(call) for call in self._oauth2_calls if grant_type in (None, call.get("grant_type"))]

    def oauth2_access_tokens_for(self, username: str) -> list[str]:
        """The user's access tokens that would work now."""
        with self._lock:
            return [token for token, access in self._oauth2_access.items() if self._bearer_owner(access) == username]

    # ---- state changes (call with the lock held)

    def _revoke_grants(self, which: Callable[[_Grant], bool]) -> int:
        gone = [grant for grant in self._oauth2_grants.values() if self._live_grant(grant) and which(grant)]
        for grant in gone:
            grant.revoked = True
        return len(gone)

    def _live_grant(self, grant: _Grant | None) -> bool:
        """Not revoked, and its link not deleted (nor deleted and made again)."""
        if grant is None or grant.revoked:
            return False
        return self._oauth2_clients.get(grant.client.client_id) is grant.client

    def _issue_tokens(self, grant: _Grant) -> dict[str, Any]:
        """A new access token and a new refresh token (the grant's live one), as the token endpoint answers them."""
        access = secrets.token_urlsafe(32)
        grant.refresh_token, grant.refresh_created = secrets.token_urlsafe(32), self.now()
        self._oauth2_access[access] = (grant.id, self.now())
        self._oauth2_refresh[grant.refresh_token] = grant.id  # the one before stays known: reuse detection
        return {
            "access_token": access,
            "refresh_token": grant.refresh_token,
            "token_type": "bearer",
            "expires_in": int(self._oauth2_ttl["access"]),
            "scope": " ".join(grant.scopes),
        }

    def _bearer_owner(self, access: tuple[str, float] | None) -> str | None:
        """Whose access token this is, if it works now: not expired, its grant live."""
        grant = self._oauth2_grants.get(access[0]) if access else None
        if access is None or grant is None or not self._live_grant(grant):
            return None
        return grant.username if self.now() - access[1] <= self._oauth2_ttl["access"] else None

    # ---- authorize

    def _authorize_params(self, authorize_url: str) -> dict[str, str]:
        parts = urlsplit(authorize_url)
        if not parts.path.endswith(f"{OAUTH2}/authorize"):
            raise ValueError(f"not Jira's OAuth 2.0 authorize URL: {authorize_url!r}")
        if not self.oauth2_enabled:
            raise ValueError("this Jira has no OAuth 2.0 provider (oauth2_enabled is False)")
        return dict(parse_qsl(parts.query, keep_blank_values=True))

    def _check_authorize(self, params: dict[str, str]) -> _Code:
        """Validate an authorize request in Jira's order: client and redirect first (never redirect to an
        unchecked URL), then response_type, PKCE and scope (redirected errors)."""
        with self._lock:
            client = self._oauth2_clients.get(params.get("client_id", ""))
        if client is None:
            raise UnknownOAuth2Client(f"No OAuth 2.0 client with id {params.get('client_id', '')!r}")
        redirect_uri, state = params.get("redirect_uri", ""), params.get("state")
        if redirect_uri != client.redirect_uri:
            raise InvalidAuthorizeRequest(f"redirect_uri {redirect_uri!r} is not the one registered for this client")

        def refuse(error: str, message: str) -> InvalidAuthorizeRequest:
            return InvalidAuthorizeRequest(message, error, redirect_uri, state)

        response_type = params.get("response_type")
        if not response_type:
            raise refuse("invalid_request", "response_type is missing")
        if response_type != "code":
            raise refuse("unsupported_response_type", f"response_type {response_type!r} is not supported")
        challenge, method = params.get("code_challenge"), params.get("code_challenge_method")
        if challenge is not None and (method != "S256" or not _PKCE.fullmatch(challenge)):
            raise refuse("invalid_request", "code_challenge needs code_challenge_method=S256")
        if challenge is None and method is not None:
            raise refuse("invalid_request", "code_challenge_method without code_challenge")
        scopes = params.get("scope", "").split()
        if not scopes or not set(scopes) <= client.scopes:
            raise refuse("invalid_scope", f"scope must be some of {' '.join(sorted(client.scopes))}")
        ordered = tuple(name for name in SCOPES if name in scopes)
        return _Code(client, redirect_uri, ordered, state, challenge)

    def _oauth2_authorize_page(self, req: _Request) -> Response:
        """GET /rest/oauth2/latest/authorize: the consent page, naming the client and the scopes."""
        params = dict(parse_qsl(req.query, keep_blank_values=True))
        try:
            request = self._check_authorize(params)
        except InvalidAuthorizeRequest as refused:
            return refused.response()
        with self._lock:
            users = list(self._users)
        return _page(200, "Welcome to Jira", _consent_form(params, request, users))

    def _oauth2_authorize_decision(self, req: _Request) -> Response:
        """POST /rest/oauth2/latest/authorize: what the page's Allow and Deny buttons submit."""
        params = dict(req.form)
        decision, username = params.pop("decision", ""), params.pop("username", "").strip()
        try:
            url = self._decide(params, decision, username)
        except InvalidAuthorizeRequest as refused:
            return refused.response()
        except ValueError as error:
            return _page(400, "Bad request", f"<p>{html.escape(str(error))}. Go back and try again.</p>")
        return Response(302, headers={"Location": url}, content_type=_TEXT_HTML)

    def _decide(self, params: dict[str, str], decision: str, username: str) -> str:
        """Allow or Deny on the page of this authorize request: the redirect URL. ValueError if Jira refuses."""
        request = self._check_authorize(params)
        if decision == "deny":
            return _redirect(request.redirect_uri, error="access_denied", state=request.state)
        if decision != "approve":
            raise ValueError("decision must be approve or deny")
        if not self._user_or_new(username):
            raise ValueError(f"{username!r} is not a user name (letters, digits and ._@+-)")
        value = secrets.token_urlsafe(24)
        with self._lock:
            self._oauth2_codes[value] = replace(request, username=username, created=self.now())
        return _redirect(request.redirect_uri, code=value, state=request.state)

    # ---- token

    def _oauth2_token(self, req: _Request) -> Response:
        """POST /rest/oauth2/latest/token. The whole exchange holds the lock: concurrent refreshes of one
        refresh token are served one after the other, so exactly one of them rotates it."""
        pairs = req.form
        fields = dict(pairs)
        with self._lock:
            self._oauth2_calls.append(fields)
            try:
                if len(fields) != len(pairs):
                    raise _TokenError(400, "invalid_request", "a parameter was sent more than once")
                client = self._token_client(req, fields)
                grant_type = fields.get("grant_type")
                if grant_type == "authorization_code":
                    answer = self._exchange_code(client, fields)
                elif grant_type == "refresh_token":
                    answer = self._refresh(client, fields)
                elif not grant_type:
                    raise _TokenError(400, "invalid_request", "grant_type is missing")
                else:
                    raise _TokenError(400, "unsupported_grant_type", f"grant_type {grant_type!r} is not supported")
            except _TokenError as error:
                payload = {"error": error.error, "error_description": error.description}
                return _json(error.status, payload, error.headers)
        return _json(200, answer, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _token_client(self, req: _Request, fields: dict[str, str]) -> _Client:
        """Client authentication: form fields or HTTP Basic (both at once must agree); a bad one is a 401."""
        client_id, secret = fields.get("client_id", ""), fields.get("client_secret", "")
        headers: dict[str, str] = {}
        scheme, _, credentials = req.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() == "basic":
            headers = {"WWW-Authenticate": 'Basic realm="OAuth2 Client"'}
            try:
                basic_id, _, basic_secret = base64.b64decode(credentials, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise _TokenError(401, "invalid_client", "malformed Basic credentials", headers) from None
            basic_id, basic_secret = unquote_plus(basic_id), unquote_plus(basic_secret)  # RFC 6749 §2.3.1
            if client_id not in ("", basic_id) or secret not in ("", basic_secret):
                raise _TokenError(400, "invalid_request", "the form and Basic credentials differ")
            client_id, secret = basic_id, basic_secret
        client = self._oauth2_clients.get(client_id)
        if client is None or not secrets.compare_digest(secret.encode(), client.secret.encode()):
            raise _TokenError(401, "invalid_client", "client authentication failed", headers)
        return client

    def _exchange_code(self, client: _Client, fields: dict[str, str]) -> dict[str, Any]:
        """grant_type=authorization_code: code, redirect_uri, and code_verifier if the request had a challenge."""
        if not fields.get("code") or "redirect_uri" not in fields:
            raise _TokenError(400, "invalid_request", "code and redirect_uri are required")
        code = self._oauth2_codes.get(fields["code"])
        if code is None or code.client is not client:
            raise _TokenError(400, "invalid_grant", "unknown authorization code")
        if code.used:  # RFC 6749 §4.1.2: revoke what the code minted
            self._revoke_grants(lambda grant: grant.id == code.grant_id)
            raise _TokenError(400, "invalid_grant", "authorization code already used")
        code.used = True
        if self.now() - code.created > self._oauth2_ttl["code"]:
            raise _TokenError(400, "invalid_grant", "authorization code expired")
        if fields["redirect_uri"] != code.redirect_uri:
            raise _TokenError(400, "invalid_grant", "redirect_uri differs from the authorize request's")
        if not _pkce_ok(code.challenge, fields.get("code_verifier")):
            raise _TokenError(400, "invalid_grant", "PKCE verification failed")
        grant = _Grant(secrets.token_hex(8), client, code.username, code.scopes, "", 0.0)
        self._oauth2_grants[grant.id], code.grant_id = grant, grant.id
        return self._issue_tokens(grant)

    def _refresh(self, client: _Client, fields: dict[str, str]) -> dict[str, Any]:
        """grant_type=refresh_token: rotates the refresh token; presenting a rotated-away one revokes the grant."""
        token = fields.get("refresh_token")
        if not token:
            raise _TokenError(400, "invalid_request", "refresh_token is required")
        if fields.get("redirect_uri") != client.redirect_uri:  # Jira checks it here too, missing or not
            raise _TokenError(400, "invalid_grant", "redirect_uri is not the registered one")
        grant = self._oauth2_grants.get(self._oauth2_refresh.get(token, ""))
        if grant is None or grant.client is not client or not self._live_grant(grant):  # revoked, link deleted
            raise _TokenError(400, "invalid_grant", "unknown or revoked refresh token")
        if token != grant.refresh_token:  # RFC 9700 §4.14.2: reuse detection
            grant.revoked = True
            raise _TokenError(400, "invalid_grant", "refresh token already used; the grant is revoked")
        if self.now() - grant.refresh_created > self._oauth2_ttl["refresh"]:
            raise _TokenError(400, "invalid_grant", "refresh token expired")
        return self._issue_tokens(grant)

    # ---- REST with a Bearer token, routing, the fake's own revoke

    def _oauth2_rest_user(self, token: str) -> dict[str, Any]:
        """The user an ``Authorization: Bearer`` REST call acts as; else Jira's JSON 401."""
        with self._lock:
            owner = self._bearer_owner(self._oauth2_access.get(token))
            if owner is not None:
                return dict(self._users[owner])
        # Real Jira's exact WWW-Authenticate for a bad Bearer token is not documented; this is RFC 6750's shape.
        challenge = f'Bearer realm="{self.base_url}"' + (', error="invalid_token"' if token else "")
        body = {"errorMessages": [NOT_AUTHENTICATED], "errors": {}}
        raise Answered(_json(401, body, {"WWW-Authenticate": challenge}))

    def _oauth2_route(self, req: _Request) -> Callable[[_Request], Response] | None:
        """The handler for the provider's paths and ``/_fake/revoke``; None for any other path."""
        if req.path == FAKE_REVOKE:
            return self._fake_revoke if req.method == "POST" else _not_allowed
        if not req.path.startswith(f"{OAUTH2}/"):
            return None
        routes: dict[str, dict[str, Callable[[_Request], Response]]] = {
            f"{OAUTH2}/authorize": {"GET": self._oauth2_authorize_page, "POST": self._oauth2_authorize_decision},
            f"{OAUTH2}/token": {"POST": self._oauth2_token},
        }
        if not self.oauth2_enabled or req.path not in routes:
            return _not_found  # Jira before 8.22 has no such REST module
        return routes[req.path].get(req.method, _not_allowed)

    def _fake_revoke(self, req: _Request) -> Response:
        """POST /_fake/revoke (form ``user``, optional ``client_id``): :meth:`revoke_oauth2_grant` over HTTP."""
        form = dict(req.form)
        if not form.get("user"):
            return Response(400, b"user is required")
        self.revoke_oauth2_grant(form["user"], form.get("client_id") or None)
        return Response(204)


# ---------------------------------------------------------------- helpers


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization: Bearer …`` header ("" if none follows); None for other schemes."""
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _pkce_ok(challenge: str | None, verifier: str | None) -> bool:
    """RFC 7636 S256; a verifier sent for a request without a challenge fails too (RFC 9700 §2.1.1)."""
    if challenge is None or verifier is None:
        return challenge is None and verifier is None
    digest = hashlib.sha256(verifier.encode("ascii", errors="replace")).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return bool(_PKCE.fullmatch(verifier)) and secrets.compare_digest(expected, challenge)


def _redirect(uri: str, **params: str | None) -> str:
    """``uri`` with ``params`` (None left out) added to its query."""
    query = urlencode({name: value for name, value in params.items() if value is not None})
    return f"{uri}{'&' if '?' in uri else '?'}{query}"


def _json(status: int, payload: Any, headers: dict[str, str]) -> Response:
    return Response(status, json.dumps(payload).encode(), "application/json;charset=UTF-8", headers)


def _page(status: int, title: str, body_html: str) -> Response:
    page = (
        f"<!DOCTYPE html><html><head><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body_html}</body></html>"
    )
    return Response(status, page.encode(), _TEXT_HTML)


def _not_found(_req: _Request) -> Response:
    return _page(404, "Oops, you've found a dead link.", "")


def _not_allowed(_req: _Request) -> Response:
    return Response(405, b"Method Not Allowed")


def _consent_form(params: dict[str, str], request: _Code, users: list[str]) -> str:
    """The consent page: one form per button, each carrying the authorize request in hidden fields.

    The user name field stands for Jira's login; any other well-formed name becomes a new user."""
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
        for name, value in params.items()
        if name in _AUTHORIZE_PARAMS
    )
    username = html.escape(users[0] if users else "")

    def form(decision: str, label: str) -> str:
        return (
            f'<form method="post" action="authorize">{hidden}'
            f'<input type="text" name="username" value="{username}">'
            f'<button type="submit" name="decision" value="{decision}">{label}</button></form>'
        )

    return (
        f"<p>{html.escape(request.client.client_id)} would like to access your Jira account with the permissions "
        f"{html.escape(', '.join(request.scopes))}, then send you to {html.escape(request.redirect_uri)}</p>"
        + form("approve", "Allow")
        + form("deny", "Deny")
        + f"<p>Users: {html.escape(', '.join(users) or 'none yet')}. Any other name you type becomes a new user.</p>"
    )
