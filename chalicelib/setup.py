"""The admin's setup page: from a setup link to a verified integration and their own connected account.

1. A service asks for a setup link for the team's admin: :func:`create_link`
   (``POST /v1/teams/{team}/jira/setup-link``). It works before any integration exists.
2. The admin opens it: :func:`show` renders the page (no side effect besides the CSRF cookie).
3. "Generate a key pair here": :func:`submit` with ``action=generate`` stores a pending key
   pair (as ``POST .../key-pair`` does) and shows the page again with the public key.
4. "Verify and connect": :func:`submit` with ``action=verify`` runs the very same
   validation and proof against Jira as ``PUT /v1/teams/{team}/jira``, for the way the
   admin chose: ``auth=oauth2`` (``base_url``, ``client_id``, ``client_secret``, one
   ``scopes`` value per ticked box) or ``auth=oauth1``, also when ``auth`` is missing
   (``base_url``, ``consumer_key``, ``private_key`` or ``private_key_file``). On failure the
   page comes back with the cause, keeping what was typed except a private key or client
   secret. On success the link is used up and the admin goes on to Jira's authorize page
   through a fresh connect link of their own.

CSRF: a double-submit token (a random value in an ``HttpOnly; SameSite=Strict`` cookie
scoped to ``/setup`` and the same value in each form) plus the same-origin check the
connect button uses.

Example::

    link = create_link("acme", {"user": "alice"})
    link["url"]          # "https://broker.example.com/setup/eyJr...."
"""

from __future__ import annotations

import hmac
import re
import secrets
from email import policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from chalice import Response
from chalice.app import Request

from . import browser, clock, connect, integrations, signin
from .acting import auth_of
from .config import Settings, load_settings
from .errors import BrokerError, Forbidden, InvalidRequest
from .keys import fingerprint, public_pem
from .links import SETUP, LinkClaims
from .logs import logger
from .oauth2 import DEFAULT_SCOPES
from .resources import store_for, vault_for
from .responses import redirect
from .setup_page import OAUTH1, OAUTH2, SetupView, setup_page
from .setup_page_oauth2 import OAuth2View
from .urls import host_label, validate_id
from .web import check_same_origin

DEFAULT_CONSUMER_KEY = "jira-oauth-broker"
CSRF_COOKIE = "broker_setup_csrf"
CSRF_FIELD = "csrf_token"
MAX_FORM_BYTES = 64 * 1024  # a 4096-bit PEM key is about 3.3 KB
_MAX_FIELDS = 16
_REPEATED = frozenset({"scopes"})  # checkboxes: every value is kept (in order), not only the first
_CSRF_VALUE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)


# -- the API: a setup link ------------------------------------------------------------------
def create_link(team: str, body: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Mint a setup link for ``body["user"]``, the admin who sets team ``team`` up.

    No integration is needed. Raises 400 ``missing_field``, ``invalid_user`` or ``invalid_expires_in``.
    """
    settings = settings or load_settings()
    raw_user = body.get("user")
    if raw_user in (None, ""):
        raise InvalidRequest("The field 'user' is required.", code="missing_field", details={"field": "user"})
    if not isinstance(raw_user, str):
        raise InvalidRequest("The user id must be a string.", code="invalid_user")
    user = validate_id("user", raw_user)
    lifetime = connect.link_lifetime(body.get("expires_in"))
    token, expires_at = connect.mint_link(SETUP, team, user, lifetime, settings, {})
    return {
        "url": f"{settings.public_url}/setup/{token}",
        "expires_at": clock.iso(expires_at),
        "expires_in": lifetime,
    }


def check_link(token: str, settings: Settings) -> LinkClaims:
    """A usable setup link's claims, or raise ``link_invalid`` (404), ``link_expired`` or ``link_used`` (410)."""
    claims, _ = connect.open_link(
        token,
        SETUP,
        settings,
        lambda c: f"This setup link was already used: team {c.team}'s Jira was set up through it.",
    )
    return claims


# -- the page ---------------------------------------------------------------------------------
def show(token: str, request: Request | None) -> Response:
    """``GET /setup/{token}``: the setup page. Changes nothing but the CSRF cookie."""
    settings = load_settings()
    claims = check_link(token, settings)
    return _page(claims, token, _csrf_cookie(request) or secrets.token_urlsafe(32), settings)


def submit(token: str, request: Request | None) -> Response:
    """``POST /setup/{token}``: generate a key pair, or verify and connect.

    Raises (for the error page): the link's errors, 403 ``cross_site_request`` or
    ``csrf_token_invalid``, 413 ``body_too_large``, 400 ``invalid_body``.
    """
    settings = load_settings()
    claims = check_link(token, settings)
    request = _required(request)
    try:
        check_same_origin(request)
    except Forbidden:
        raise Forbidden(
            "This form was sent from another site, so the broker changed nothing.", code="cross_site_request"
        ) from None
    form = read_form(request)
    csrf = _check_csrf(request, form)
    if form.get("action") == "generate":
        integrations.create_key_pair(claims.team, {}, settings)
        logger.info("setup page: key pair generated", extra={"team": claims.team, "user": claims.user})
        return redirect(f"{_page_url(token, settings)}#key")
    return _verify(claims, token, form, csrf, settings, request.headers.get("cookie"))


def _verify(
    claims: LinkClaims, token: str, form: Form, csrf: str, settings: Settings, request_cookies: str | None
) -> Response:
    body, secret_field = _body(form)
    try:
        # Saving the integration completes the setup link in the same write: a link used meanwhile
        # (the form sent twice) changes nothing and answers link_used.
        integrations.put_integration(claims.team, body, settings, complete_link=claims.link_id)
    except BrokerError as error:
        if error.code == "link_used":
            raise
        logger.info(
            "setup page: verification failed", extra={"team": claims.team, "code": error.code, "auth": body["auth"]}
        )
        typed = {name: value for name, value in body.items() if name != secret_field}  # never a secret back
        return _page(claims, token, csrf, settings, typed=typed, error=_for_page(error), dropped=secret_field in body)
    logger.info("setup page: integration verified and saved", extra={"team": claims.team, "user": claims.user})

    # Go on to Jira as the admin, through a connect link of their own. Its page is the fallback, also
    # when verifying used up the request's time budget (signin.start then fails at once, jira_timeout).
    connect_token, _ = connect.new_link(claims.team, claims.user, settings)
    connect_url = f"{settings.public_url}/connect/{connect_token}"
    try:
        started_signin = signin.start(connect_token, browser.read(request_cookies, settings), settings)
    except BrokerError as error:
        logger.info("setup page: could not start connecting", extra={"team": claims.team, "code": error.code})
        return redirect(connect_url)
    cookie = browser.set_cookie(started_signin.browser_id, settings)
    return redirect(started_signin.authorize_url, headers={"Set-Cookie": cookie})


def _body(form: Form) -> tuple[dict[str, Any], str]:
    """The ``PUT /v1/teams/{team}/jira`` body for the form's way, and the name of its secret field."""
    auth = form.get("auth") or OAUTH1  # forms from before OAuth 2.0 send no auth
    body: dict[str, Any] = {"auth": auth, "base_url": form.get("base_url", "").strip()}
    if auth == OAUTH2:
        body["client_id"] = form.get("client_id", "").strip()
        body["scopes"] = form.every("scopes")  # none ticked: [], which the API refuses (invalid_scopes)
        secret = form.get("client_secret", "").strip()
        if secret:
            body["client_secret"] = secret
        return body, "client_secret"
    body["consumer_key"] = form.get("consumer_key", "").strip()
    private_key = (form.get("private_key_file") or "").strip() or (form.get("private_key") or "").strip()
    if private_key:
        body["private_key"] = private_key
    return body, "private_key"


_FIELD_LABELS = {"base_url": "Jira base URL", "client_id": "Client ID", "client_secret": "Client secret"}


def _for_page(error: BrokerError) -> BrokerError:
    """The API's wording, where the page offers a different way or names a field differently."""
    if error.code == "private_key_required":
        return InvalidRequest(
            "There is no key yet. Generate a key pair in step 1 (and give Jira its public key), or paste your own "
            "private key under 'I have a private key'.",
            code="private_key_required",
        )
    field = error.details.get("field")
    if error.code == "missing_field" and field in _FIELD_LABELS:
        where = "" if field == "base_url" else " Jira shows the client ID and secret when you save the incoming link."
        return InvalidRequest(
            f"{_FIELD_LABELS[field]} is empty: fill it in, then verify again.{where}",
            code="missing_field",
            details={"field": field},
        )
    if error.code == "invalid_scopes":
        return InvalidRequest(
            "Tick at least one scope. The broker asks each user for the scopes ticked here, so tick the same ones "
            "as on Jira's incoming link.",
            code="invalid_scopes",
        )
    return error


def _page(
    claims: LinkClaims,
    token: str,
    csrf: str,
    settings: Settings,
    *,
    typed: dict[str, Any] | None = None,
    error: BrokerError | None = None,
    dropped: bool = False,
) -> Response:
    """The page; after a failed verification ``typed`` is what was sent (no secret), ``dropped`` whether a
    secret was sent (and not shown again)."""
    team = claims.team
    pending = vault_for(settings).pending_key(team)
    current = store_for(settings).get_integration(team)
    current_auth = auth_of(current) if current else None
    oauth1 = current if current_auth == OAUTH1 else None
    oauth2 = current if current_auth == OAUTH2 else None
    typed = typed or {}
    sent_auth = typed.get("auth") if typed.get("auth") in (OAUTH1, OAUTH2) else None
    current_scopes = tuple((oauth2 or {}).get("scopes") or DEFAULT_SCOPES)
    view = SetupView(
        team=team,
        user=claims.user,
        action=_page_url(token, settings),
        csrf_token=csrf,
        expires_at=claims.expires_at,
        broker_url=settings.public_url,
        consumer_key=typed.get("consumer_key") or (oauth1 or {}).get("consumer_key") or DEFAULT_CONSUMER_KEY,
        oauth2=OAuth2View(
            redirect_uri=settings.oauth2_redirect_uri,
            client_id=typed.get("client_id") or (oauth2 or {}).get("client_id") or "",
            # The boxes as just sent (none ticked included), else the current setup's, else the default.
            scopes=tuple(typed.get("scopes") or ()) if sent_auth == OAUTH2 else current_scopes,
            current_client_id=oauth2["client_id"] if oauth2 else None,
            current_scopes=current_scopes if oauth2 else (),
            secret_dropped=dropped and sent_auth == OAUTH2,
        ),
        base_url=typed.get("base_url") or (current or {}).get("base_url") or "",
        # Open the way just tried, else the one a generated key or the current setup is for; else none.
        chosen=sent_auth or (OAUTH1 if pending else current_auth),
        current_auth=current_auth,
        public_key=public_pem(pending) if pending else None,
        fingerprint=fingerprint(pending) if pending else None,
        current_host=host_label(current["base_url"]) if current else None,
        current_consumer_key=oauth1["consumer_key"] if oauth1 else None,
        error=error,
        key_dropped=dropped and sent_auth != OAUTH2,
        # Verify and connect ends in a redirect to Jira, whose address is typed on this very page.
        form_targets=("https:", "http:") if settings.allow_http_jira else ("https:",),
    )
    return setup_page(view, headers={"Set-Cookie": _cookie(csrf, settings)})


def _page_url(token: str, settings: Settings) -> str:
    return f"{settings.public_url}/setup/{token}"


# -- CSRF ---------------------------------------------------------------------------------
def _cookie(value: str, settings: Settings) -> str:
    public = urlsplit(settings.public_url)
    secure = "; Secure" if public.scheme == "https" else ""
    return f"{CSRF_COOKIE}={value}; Path={public.path}/setup; HttpOnly; SameSite=Strict{secure}"


def _csrf_cookie(request: Request | None) -> str | None:
    return browser.read_cookie(request.headers.get("cookie") if request is not None else None, CSRF_COOKIE, _CSRF_VALUE)


def _check_csrf(request: Request, form: Form) -> str:
    expected = _csrf_cookie(request)
    sent = form.get(CSRF_FIELD, "")
    if expected is None or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise Forbidden(
            "This form did not come from the setup page this browser opened (its security token is missing or "
            "does not match), so the broker changed nothing.",
            code="csrf_token_invalid",
        )
    return expected


# -- reading the form --------------------------------------------------------------------------
class Form(dict[str, str]):
    """A form's fields, the first value of each; :meth:`every` gives all values of a repeatable one (``scopes``)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__()
        self._repeated: dict[str, list[str]] = {}
        for name, value in pairs:
            self.setdefault(name, value)
            if name in _REPEATED:
                self._repeated.setdefault(name, []).append(value)

    def every(self, name: str) -> list[str]:
        """Every value sent for ``name``, in order (checkboxes: the ticked ones); [] when none."""
        return list(self._repeated.get(name, []))


def read_form(request: Request) -> Form:
    """The fields of an urlencoded or multipart form (an uploaded file's content as text); first value wins,
    except for repeatable fields (see :class:`Form`). At most 16 fields in all, repeated ones included."""
    raw = request.raw_body or b""
    body = raw.encode() if isinstance(raw, str) else raw
    if len(body) > MAX_FORM_BYTES:
        raise BrokerError(
            f"The form is larger than {MAX_FORM_BYTES // 1024} KiB, so the broker did not read it.",
            code="body_too_large",
            status=413,
        )
    content_type = request.headers.get("content-type") or ""
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=_MAX_FIELDS)
        except ValueError:
            raise _bad_form() from None
    elif mime == "multipart/form-data":
        pairs = _multipart(content_type, body)
    else:
        raise _bad_form()
    return Form(pairs)


def _multipart(content_type: str, body: bytes) -> list[tuple[str, str]]:
    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise _bad_form()
    pairs: list[tuple[str, str]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        pairs.append((name, payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""))
        if len(pairs) > _MAX_FIELDS:
            raise _bad_form()
    return pairs


def _bad_form() -> InvalidRequest:
    return InvalidRequest(
        "The broker could not read this form. Send it from the setup page.",
        code="invalid_body",
    )


def _required(request: Request | None) -> Request:
    if request is None:  # Chalice sets current_request for every HTTP invocation
        raise BrokerError("No HTTP request is in progress.")
    return request
