"""Jira's OAuth 1.0a dance and requests as a user, signed RSA-SHA1 with oauthlib, and Jira's error reports.

Jira Server / Data Center endpoints, relative to the base URL (context path included):

- ``POST /plugins/servlet/oauth/request-token`` (with ``oauth_callback``)
- ``GET  /plugins/servlet/oauth/authorize?oauth_token=...`` (the user's browser)
- ``POST /plugins/servlet/oauth/access-token`` (with ``oauth_verifier``)

Errors come as OAuth Problem Reporting: ``oauth_problem=...`` in a
form-encoded body and in the ``WWW-Authenticate`` header.

Example::

    jira = JiraClient(base_url, consumer_key, private_key, timeout=(4, 8), deadline=10)
    rt = jira.request_token("https://broker.example.com/oauth/callback")
    jira.authorize_url(rt.token)
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.oauth1 import SIGNATURE_RSA, SIGNATURE_TYPE_AUTH_HEADER, Client

from . import observability
from .deadline import deadline_of
from .errors import BrokerError, InvalidRequest, JiraBadResponse
from .jirahttp import translating
from .jirasite import FORM_CONTENT_TYPE, MYSELF_PATH, JiraSite, UserRequest, unexpected_status
from .logs import logger, redact

REQUEST_TOKEN_PATH = "/plugins/servlet/oauth/request-token"  # noqa: S105 - a path, not a secret
AUTHORIZE_PATH = "/plugins/servlet/oauth/authorize"
ACCESS_TOKEN_PATH = "/plugins/servlet/oauth/access-token"  # noqa: S105 - a path, not a secret
REQUEST_TOKEN_LIFETIME = 600  # Jira's request tokens live 10 minutes
DENIED = "denied"  # the oauth_verifier Jira sends when the user clicks Deny
__all__ = ["FORM_CONTENT_TYPE", "UserRequest"]  # re-exported: their home is jirasite


@dataclass(frozen=True)
class RequestToken:
    token: str
    secret: str
    callback_confirmed: bool


@dataclass(frozen=True)
class AccessToken:
    token: str
    secret: str
    expires_in: int | None
    session_handle: str | None
    authorization_expires_in: int | None


@dataclass(frozen=True)
class OAuthProblem:
    """Jira's OAuth Problem Report: the problem name and any extra ``oauth_*`` fields."""

    problem: str
    status: int
    fields: dict[str, str]


class JiraOAuthError(BrokerError):
    """Jira refused an OAuth request with an ``oauth_problem``; ``problem`` says which."""

    code = "jira_oauth_error"
    status = 422

    def __init__(self, problem: OAuthProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


# -- clock offsets: seconds to add to our clock for each Jira ------------------------
_clock_offsets: dict[str, int] = {}
TIMESTAMP_WINDOW = 300  # Jira accepts timestamps within +/- 5 minutes


def timestamp_for(base_url: str) -> str:
    """Now, on this Jira's clock as far as we have learned it (``timestamp_refused`` teaches it)."""
    return str(int(time.time()) + _clock_offsets.get(base_url, 0))


def learn_clock_offset(base_url: str, problem: OAuthProblem) -> bool:
    """Remember Jira's clock from ``oauth_acceptable_timestamps``; False when the answer has none."""
    skew = clock_skew(problem)
    if skew is None:
        return False
    _clock_offsets[base_url] = skew
    return True


# -- parsing Jira's answers --------------------------------------------------------
_HEADER_FIELD = re.compile(r'(\w+)="([^"]*)"')


def parse_problem(response: requests.Response) -> OAuthProblem | None:
    """Read ``oauth_problem`` from the body (form-encoded) or the ``WWW-Authenticate`` header."""
    fields: dict[str, str] = {}
    header = response.headers.get("WWW-Authenticate", "")
    if header.lower().startswith("oauth"):
        fields.update({k: unquote(v) for k, v in _HEADER_FIELD.findall(header)})
    body = response.text if len(response.content) < 65536 else ""
    if "oauth_problem=" in body:
        fields.update(dict(parse_qsl(body.strip(), keep_blank_values=True)))
    problem = fields.get("oauth_problem")
    if not problem:
        return None
    return observability.jira_problem(OAuthProblem(problem=problem, status=response.status_code, fields=fields))


def parse_form(response: requests.Response) -> dict[str, str]:
    """Jira's success bodies may come as text/plain: parse them whatever the Content-Type says."""
    return dict(parse_qsl(response.text.strip(), keep_blank_values=True))


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class JiraClient(JiraSite):
    """Talks OAuth 1.0a (RSA-SHA1) to one Jira as one Application Link (HTTP and deadlines: :class:`JiraSite`)."""

    def __init__(
        self,
        base_url: str,
        consumer_key: str,
        private_key: rsa.RSAPrivateKey,
        *,
        timeout: tuple[float, float],
        deadline: float | None = None,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(base_url, timeout=timeout, deadline=deadline, session=session)
        self.consumer_key = consumer_key
        self._private_key = private_key

    def _header(
        self, method: str, url: str, *, form: str | None = None, timestamp: str | None = None, **oauth: str
    ) -> str:
        """The ``Authorization: OAuth ...`` value for one request, signed RSA-SHA1 by oauthlib.

        ``oauth`` holds the request's own OAuth parameters (``callback_uri``,
        ``resource_owner_key``/``_secret``, ``verifier``); ``form`` is an
        ``application/x-www-form-urlencoded`` body, whose parameters are signed too.
        RSA-SHA1 always: jira-python's HMAC default gets ``signature_method_rejected``.
        A loaded key object, not PEM text: oauthlib re-parses PEM on every signature
        (~45 ms); with the object a signature costs about 1.5 raw RSA signatures.
        """
        client = Client(
            self.consumer_key,
            signature_method=SIGNATURE_RSA,
            signature_type=SIGNATURE_TYPE_AUTH_HEADER,
            rsa_key=self._private_key,
            timestamp=timestamp,
            **oauth,
        )
        try:
            if form is None:
                _, signed, _ = client.sign(url, http_method=method)
            else:
                _, signed, _ = client.sign(
                    url, http_method=method, body=form, headers={"Content-Type": FORM_CONTENT_TYPE}
                )
        except ValueError:  # oauthlib: "body was not decodable"
            raise InvalidRequest(
                "A form body must be URL-encoded (name=value&name2=value2), with spaces and non-ASCII "
                "characters as %XX escapes.",
                code="invalid_body",
            ) from None
        return str(signed["Authorization"])

    def prepare(
        self,
        method: str,
        path: str,
        *,
        oauth: dict[str, str] | None = None,
        timestamp: str | None = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.PreparedRequest:
        """The request exactly as it goes on the wire: ``path`` may carry an encoded query.

        With ``oauth``, it is signed over its final URL (and a form body), so what
        is sent is exactly what was signed. JSON and other bodies are never part of
        an OAuth 1.0a signature (RFC 5849).
        """
        prepared = self.prepare_plain(method, path, data=data, headers=headers)
        if oauth is not None:
            is_form = FORM_CONTENT_TYPE in (headers or {}).get("Content-Type", "")
            form = data if isinstance(data, str) and is_form else None
            url = str(prepared.url)
            prepared.headers["Authorization"] = self._header(method, url, form=form, timestamp=timestamp, **oauth)
        return prepared

    def prepare_as(self, token: str, token_secret: str, request: UserRequest) -> requests.PreparedRequest:
        """A request signed as the user, on Jira's clock as far as the broker knows it."""
        return self.prepare(
            request.method,
            request.path,
            oauth={"resource_owner_key": token, "resource_owner_secret": token_secret},
            timestamp=timestamp_for(self.base_url),
            data=request.body,
            headers=request.headers,
        )

    def send(
        self, method: str, path: str, *, oauth: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> requests.Response:
        """Prepare, sign (with ``oauth``) and send one bodiless request to Jira (the dance's calls)."""
        return self.send_prepared(self.prepare(method, path, oauth=oauth, headers=headers))

    # -- the dance -----------------------------------------------------------
    def request_token(self, callback_url: str) -> RequestToken:
        """``POST .../request-token``; raises :class:`JiraOAuthError` or another broker error."""
        response = self.send("POST", REQUEST_TOKEN_PATH, oauth={"callback_uri": callback_url})
        self._raise_for_oauth(response, REQUEST_TOKEN_PATH)
        form = parse_form(response)
        if not form.get("oauth_token") or not form.get("oauth_token_secret"):
            raise JiraBadResponse(
                f"{self.host} answered the request-token call without a token. Check that base_url "
                "points at Jira (including any context path such as /jira).",
                code="jira_bad_response",
            )
        return RequestToken(
            form["oauth_token"], form["oauth_token_secret"], form.get("oauth_callback_confirmed") == "true"
        )

    def authorize_url(self, request_token: str) -> str:
        return f"{self.base_url}{AUTHORIZE_PATH}?{urlencode({'oauth_token': request_token})}"

    def access_token(self, request_token: str, request_secret: str, verifier: str) -> AccessToken:
        """``POST .../access-token`` with the verifier; raises :class:`JiraOAuthError` on a problem."""
        oauth = {"resource_owner_key": request_token, "resource_owner_secret": request_secret, "verifier": verifier}
        response = self.send("POST", ACCESS_TOKEN_PATH, oauth=oauth)
        self._raise_for_oauth(response, ACCESS_TOKEN_PATH)
        form = parse_form(response)
        if not form.get("oauth_token"):
            raise JiraBadResponse(f"{self.host} answered the access-token call without a token.")
        return AccessToken(
            token=form["oauth_token"],
            secret=form.get("oauth_token_secret", ""),
            expires_in=_int_or_none(form.get("oauth_expires_in")),
            session_handle=form.get("oauth_session_handle"),
            authorization_expires_in=_int_or_none(form.get("oauth_authorization_expires_in")),
        )

    def myself(self, access_token: str, token_secret: str) -> dict[str, Any]:
        """``GET /rest/api/2/myself`` as the user: who the token belongs to."""
        oauth = {"resource_owner_key": access_token, "resource_owner_secret": token_secret}
        response = self.send("GET", MYSELF_PATH, oauth=oauth, headers={"Accept": "application/json"})
        self._raise_for_oauth(response, MYSELF_PATH)
        return self.json_object(response, MYSELF_PATH)

    # -- acting as a user -------------------------------------------------------
    def call_as(
        self, token: str, token_secret: str, request: UserRequest
    ) -> tuple[requests.Response, OAuthProblem | None]:
        """Send a request signed as the user; returns Jira's response and its oauth_problem, if any.

        ``timestamp_refused`` is re-signed with Jira's clock and ``nonce_used``
        re-signed with a new nonce, once each. Redirects are returned, not
        followed. The body is streamed, so the caller can cap what it reads: read it with
        :meth:`read_body` (or close the response), which ends the call's deadline.
        """
        for attempt in (1, 2):
            prepared = self.prepare_as(token, token_secret, request)
            response = self.send_prepared(prepared, stream=True)
            problem = self._problem(response) if response.status_code in (400, 401) else None
            if problem is None or attempt == 2:
                return response, problem
            retry = problem.problem == "nonce_used" or (
                problem.problem == "timestamp_refused" and learn_clock_offset(self.base_url, problem)
            )
            if not retry:
                return response, problem
            response.close()  # hands its connection back, which ends its deadline
        raise AssertionError("unreachable")

    def _problem(self, response: requests.Response) -> OAuthProblem | None:
        """parse_problem on a streamed response: its body is read within the call's deadline."""
        call = deadline_of(response)
        try:
            with translating(self.host, call, self.timeout, reading=True):
                return parse_problem(response)
        except BrokerError:
            response.close()
            raise

    def authorization(
        self, token: str, token_secret: str, method: str, url: str, form: str | None = None
    ) -> tuple[str, int]:
        """The Authorization header for a request the caller sends itself as the user, and its timestamp."""
        timestamp = timestamp_for(self.base_url)
        oauth = {"resource_owner_key": token, "resource_owner_secret": token_secret}
        return self._header(method, url, form=form, timestamp=timestamp, **oauth), int(timestamp)

    # -- answers ---------------------------------------------------------------
    def _raise_for_oauth(self, response: requests.Response, path: str) -> None:
        if response.status_code == 200:
            return
        problem = parse_problem(response)
        if problem is not None:
            base_string = problem.fields.get("oauth_signature_base_string")
            if base_string:
                # Jira's own base string is the best clue for a signature mismatch: log it, never return it.
                logger.warning(
                    "jira rejected the signature",
                    extra={"jira_host": self.host, "path": path, "jira_base_string": redact(base_string)},
                )
            raise JiraOAuthError(problem, f"Jira refused the call to {path} with oauth_problem={problem.problem}.")
        raise unexpected_status(self.host, path, response)


def clock_skew(problem: OAuthProblem, now: float | None = None) -> int | None:
    """Seconds Jira's clock is ahead of ours, from ``oauth_acceptable_timestamps=min-max``."""
    window = problem.fields.get("oauth_acceptable_timestamps", "")
    low, _, high = window.partition("-")
    try:
        middle = (int(low) + int(high)) / 2
    except ValueError:
        return None
    return int(middle - (now if now is not None else time.time()))
