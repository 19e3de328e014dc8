"""A fake Jira Server OAuth 1.0a (RSA-SHA1) provider serving real HTTP on loopback.

It mimics what the broker depends on (see /work/shared/FIELD-NOTES.md): the three
OAuth servlets under the context path, Jira's OAuth Problem Reporting format,
``/rest/api/2/serverInfo`` and ``/rest/api/2/myself``. A little of Jira's REST API
answers as Jira does, on a project ``ABC`` with two issues: ``GET``/``POST``
``/rest/api/2/search``, ``GET /rest/api/2/issue/{key}``, ``POST /rest/api/2/issue``
(201 ``{"id", "key", "self"}``) and ``POST /rest/api/2/issue/{key}/attachments``; what client
libraries need besides (editing an issue, downloading attachments, the field list) is in
``tests/fakejira_rest.py``.
Any other signed ``/rest/...`` call gets a JSON echo of the request (``method``,
``path``, ``query``, ``user``, ``body``); with ``echo=True`` (the default, for the
tests written against the echo) the modelled JSON objects carry those fields too.

Its Allow page accepts any user name: an unknown one becomes a new user.

It is also Jira Data Center's OAuth 2.0 provider (8.22+; see ``tests/fakejira_oauth2.py``):
``add_oauth2_client`` makes an incoming link, ``/rest/oauth2/latest/authorize`` and ``/token`` give
codes and tokens, and ``Authorization: Bearer <access token>`` REST calls act as the user as a signed
call does. ``oauth2_approve(authorize_url, user)`` clicks Allow; ``POST /_fake/revoke`` (form
``user``) revokes a user's grants over HTTP. ``oauth2_enabled = False`` plays a Jira older than 8.22
(404 on those paths).

The signature check is written from RFC 5849 on purpose, without oauthlib: the
broker signs with oauthlib, so checking with oauthlib would only prove that
oauthlib agrees with itself.

Typical use::

    with FakeJira() as jira:
        jira.add_consumer("broker", public_pem)
        jira.add_oauth2_client("client-id", "secret", "https://broker.example.com/oauth2/callback")
        jira.add_user("alice", display_name="Alice")
        ...  # point the code under test at jira.base_url

Test hooks (see each method): ``before(path_suffix, fn)`` runs ``fn`` in the
handler thread before a matching request is answered (to change the world
"while Jira is answering"); ``trickle_body(path)`` sends a path's body one byte
at a time; ``cut_body(path)`` promises more body than it sends, then closes.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
import secrets
import socket
import string
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlencode, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# Response lives in the OAuth 2.0 module, which imports nothing from this one at run time.
from tests.fakejira_oauth2 import Answered, OAuth2Provider, Response, bearer_token
from tests.fakejira_rest import JiraRestModel

REQUEST_TOKEN_TTL = 600  # Jira's request tokens live 10 minutes
ACCESS_TOKEN_TTL = 157_680_000  # 5 years, as Jira's oauth_expires_in says
SESSION_TTL = 160_272_000  # 5 years + 30 days (oauth_authorization_expires_in)
TIMESTAMP_WINDOW = 300  # net.oauth's default: +/- 5 minutes
DENIED = "denied"  # the verifier Jira puts on the callback when the user clicks Deny

SERVLET = "/plugins/servlet/oauth"
# Bytes that are not UTF-8, as an attachment would be: the PNG signature and a little more.
FAKE_PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
TEXT_PLAIN = "text/plain;charset=UTF-8"
TEXT_HTML = "text/html;charset=UTF-8"
APPLICATION_JSON = "application/json;charset=UTF-8"
FORM = "application/x-www-form-urlencoded"

_ALPHANUMERIC = string.ascii_letters + string.digits
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")  # what the Allow page accepts as a new user
_ISSUE_PATH = re.compile(r"/rest/api/2/issue/([^/]+)")
_ATTACHMENTS_PATH = re.compile(r"/rest/api/2/issue/([^/]+)/attachments")
_JQL_PROJECT = re.compile(r'\bproject\s*=\s*"?([A-Za-z][A-Za-z0-9_]*)"?', re.IGNORECASE)
_JQL_KEY = re.compile(r'\b(?:key|issuekey)\s*=\s*"?([A-Za-z][A-Za-z0-9_]*-\d+)"?', re.IGNORECASE)
_JQL_ORDER = re.compile(r"\border\s+by\s+(\w+)(?:\s+(asc|desc))?", re.IGNORECASE)
# Jira 9's default workflow statuses: name -> (id, status category key).
_STATUSES = {"To Do": ("10000", "new"), "In Progress": ("3", "indeterminate"), "Done": ("10001", "done")}
_STATUS_CATEGORIES = {
    "new": (2, "blue-gray", "To Do"),
    "indeterminate": (4, "yellow", "In Progress"),
    "done": (3, "green", "Done"),
}
# name -> (id, description, avatar id)
_ISSUE_TYPES = {
    "Task": ("10002", "A small, distinct piece of work.", 10318),
    "Bug": ("10004", "A problem or error.", 10303),
    "Story": ("10001", "Functionality or a feature expressed as a user goal.", 10315),
}
ISSUE_EXPAND = "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations"
SEARCH_ISSUE_EXPAND = "operations,versionedRepresentations,editmeta,changelog,renderedFields"
_AUTH_PARAM = re.compile(r'([A-Za-z0-9_.\-]+)\s*=\s*"([^"]*)"')
_REQUIRED_OAUTH = (
    "oauth_consumer_key",
    "oauth_signature_method",
    "oauth_signature",
    "oauth_timestamp",
    "oauth_nonce",
)


# ---------------------------------------------------------------- helpers


def percent_encode(value: str) -> str:
    """RFC 5849 §3.6 encoding: UTF-8, keep only ALPHA DIGIT - . _ ~, upper-case hex."""
    # quote() always keeps letters, digits and "_.-~"; safe="" stops it keeping "/".
    return quote(value, safe="")


def random_token(length: int = 32) -> str:
    """A random alphanumeric string, the shape of Jira's tokens."""
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def parse_authorization(header: str) -> dict[str, str] | None:
    """Parse ``OAuth k="v", ...`` into decoded params; None if not an OAuth header."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "oauth":
        return None
    # Values are percent-encoded (RFC 5849 §3.5.1), so they hold no quotes or commas.
    return {name: unquote(value) for name, value in _AUTH_PARAM.findall(rest)}


def base_string_uri(base_url: str, path: str) -> str:
    """RFC 5849 §3.4.1.2: lower-case scheme and host, no default port, no query."""
    parts = urlsplit(base_url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != {"http": 80, "https": 443}.get(scheme):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path.rstrip('/') + path or '/'}"


def signature_base_string(method: str, uri: str, params: Iterable[tuple[str, str]]) -> str:
    """RFC 5849 §3.4.1: METHOD&enc(uri)&enc(sorted, encoded name=value pairs)."""
    pairs = sorted((percent_encode(k), percent_encode(v)) for k, v in params)
    normalized = "&".join(f"{k}={v}" for k, v in pairs)
    return "&".join((method.upper(), percent_encode(uri), percent_encode(normalized)))


def load_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    """Load an Application Link's RSA public key (or a certificate's)."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"BEGIN CERTIFICATE" in data:
        key: Any = x509.load_pem_x509_certificate(data).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise TypeError("an Application Link needs an RSA public key")
    return key


# ---------------------------------------------------------------- data


@dataclass
class RecordedRequest:
    """One request as the fake received it (path without query, body raw)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class _Request:
    """A parsed incoming request as the routes see it."""

    method: str
    path: str  # relative to the context path, raw (still percent-encoded)
    query: str  # raw query string
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def form(self) -> list[tuple[str, str]]:
        """Form body params: only a form-urlencoded body is signed (§3.4.1.3.1)."""
        if not self.headers.get("content-type", "").lower().startswith(FORM):
            return []
        try:
            return parse_qsl(self.body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            return []


@dataclass
class _RequestToken:
    token: str
    secret: str
    consumer_key: str
    callback: str
    created: float
    status: str = "pending"  # pending | approved | denied
    verifier: str = ""
    username: str = ""


@dataclass
class _Issue:
    """An issue of the fake's one project. ``reporter``/``assignee`` None: the user who asks."""

    id: int
    key: str
    project: str
    summary: str
    issuetype: str = "Task"
    status: str = "To Do"
    created: float = 0.0
    description: str | None = None
    reporter: str | None = None
    assignee: str | None = None
    labels: list[str] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    updated: float = 0.0  # 0: never edited (the creation time)


class _JiraError(Exception):
    """A Jira REST error: ``{"errorMessages": [...], "errors": {...}}`` with a status."""

    def __init__(self, status: int, *messages: str, **errors: str) -> None:
        super().__init__(status, messages, errors)
        self.status = status
        self.payload = {"errorMessages": list(messages), "errors": errors}


@dataclass
class _AccessToken:
    token: str
    secret: str
    consumer_key: str
    username: str
    session_handle: str
    created: float
    revoked: bool = False


class OAuthProblem(Exception):
    """An OAuth Problem Reporting answer (status, oauth_problem, extra fields)."""

    def __init__(self, status: int, problem: str, **extra: str) -> None:
        super().__init__(problem)
        self.status = status
        self.problem = problem
        self.extra = extra


class _Unauthenticated(Exception):
    """A /rest call without OAuth: Jira answers with JSON, not an OAuth problem."""


# ---------------------------------------------------------------- the fake


class FakeJira(OAuth2Provider, JiraRestModel):
    """A Jira Server OAuth 1.0a (and Data Center OAuth 2.0) provider on loopback. See the module docstring."""

    def __init__(
        self, context_path: str = "/jira", *, host: str = "127.0.0.1", port: int = 0, echo: bool = True
    ) -> None:
        self.echo = echo
        self.context_path = "/" + context_path.strip("/") if context_path.strip("/") else ""
        self.host = host
        self.port = port
        self.reported_base_url: str | None = None
        self.signing_base_url: str | None = None
        self.clock_offset: float = 0.0
        self.delay: float = 0.0
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._consumers: dict[str, rsa.RSAPublicKey] = {}
        self._users: dict[str, dict[str, Any]] = {}
        self._key_files: dict[str, tuple[str, bytes]] = {}  # consumer key -> (path, the bytes last loaded)
        self._projects: dict[str, dict[str, str]] = {}
        self._issues: dict[str, _Issue] = {}
        self._next_ids = {"issue": 10000, "attachment": 10100}
        self.add_project("ABC", "Project ABC")
        self.add_issue("ABC", "Set up the Application Link", status="Done")
        self.add_issue("ABC", "Connect the chat bot", status="In Progress", issuetype="Story")
        self._request_tokens: dict[str, _RequestToken] = {}
        self._access_tokens: dict[str, _AccessToken] = {}
        self._nonces: set[tuple[str, str, str]] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._fail_next: OAuthProblem | None = None
        self._before: dict[str, Callable[[RecordedRequest], object]] = {}
        self._body_faults: dict[str, tuple[str, float]] = {}
        self.hook_errors: list[BaseException] = []
        self._init_oauth2()
        self._init_rest_model()

    # ---- lifecycle

    def start(self) -> Self:
        """Listen on host:port (0: a free port) and serve from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("FakeJira already started")
        self._server = _Server((self.host, self.port), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},  # stop() waits up to one interval
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop kept-alive connections so no handler thread lingers."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://host:port<context_path>``, no trailing slash."""
        if self._server is None:
            raise RuntimeError("FakeJira not started")
        port = self._server.server_address[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}{self.context_path}"

    def now(self) -> float:
        """The fake's clock: real time plus clock_offset."""
        return time.time() + self.clock_offset

    # ---- admin API (what a Jira admin or user would do in the browser)

    def add_consumer(self, consumer_key: str, public_key_pem: str | bytes) -> None:
        """Create (or replace the key of) an Application Link."""
        key = load_public_key(public_key_pem)
        with self._lock:
            self._consumers[consumer_key] = key

    def watch_public_key_file(self, consumer_key: str, path: str) -> None:
        """Create the Application Link with the public key in ``path``, and read the file again
        whenever it changes (checked on each signed request), as if the admin pasted the new key
        into Jira. A file that does not hold a key (half written) leaves the last key in place."""
        with open(path, "rb") as key_file:
            data = key_file.read()
        self.add_consumer(consumer_key, data)
        with self._lock:
            self._key_files[consumer_key] = (path, data)

    def _reload_key_files(self) -> None:
        with self._lock:
            watched = dict(self._key_files)
        for consumer_key, (path, loaded) in watched.items():
            try:
                with open(path, "rb") as key_file:
                    data = key_file.read()
                if data == loaded:
                    continue
                key = load_public_key(data)
            except (OSError, ValueError, TypeError):
                continue
            with self._lock:
                self._consumers[consumer_key] = key
                self._key_files[consumer_key] = (path, data)
            print(f"Fake Jira: Application Link '{consumer_key}' now has the public key in {path}", file=sys.stderr)

    def remove_consumer(self, consumer_key: str) -> None:
        """Delete an Application Link; its tokens then get consumer_key_unknown."""
        with self._lock:
            self._consumers.pop(consumer_key, None)

    def add_user(
        self,
        name: str,
        *,
        key: str | None = None,
        display_name: str = "",
        email: str = "",
    ) -> None:
        """Add a Jira user who can approve tokens."""
        user = {
            "name": name,
            "key": key or name,
            "displayName": display_name or name,
            "emailAddress": email,
            "active": True,
        }
        with self._lock:
            self._users[name] = user

    def add_project(self, key: str, name: str) -> None:
        """Add a project (``ABC`` exists from the start)."""
        with self._lock:
            self._projects[key] = {"id": str(10000 + len(self._projects)), "key": key, "name": name}

    def add_issue(
        self,
        project: str,
        summary: str,
        *,
        issuetype: str = "Task",
        status: str = "To Do",
        reporter: str | None = None,
        assignee: str | None = None,
        description: str | None = None,
    ) -> str:
        """Add an issue; returns its key. Reporter and assignee None: whoever asks."""
        with self._lock:
            issue_id = self._next_id("issue")
            number = 1 + sum(issue.project == project for issue in self._issues.values())
            key = f"{project}-{number}"
            self._issues[key] = _Issue(
                issue_id, key, project, summary, issuetype, status, self.now(), description, reporter, assignee
            )
            return key

    def approve(self, request_token: str, username: str) -> str:
        """Click Allow as ``username``; return the callback URL with token and verifier.

        Raises KeyError for an unknown token or user, ValueError for an expired token.
        For an "oob" callback it returns ``oob?oauth_token=..&oauth_verifier=..``.
        """
        with self._lock:
            if username not in self._users:
                raise KeyError(f"unknown user {username!r}")
            rt = self._live_request_token(request_token)
            rt.status, rt.username = "approved", username
            rt.verifier = _new_verifier()
            return _with_query(rt.callback, rt.token, rt.verifier)

    def deny(self, request_token: str) -> str:
        """Click Deny; return the callback URL with ``oauth_verifier=denied``."""
        with self._lock:
            rt = self._live_request_token(request_token)
            rt.status, rt.username, rt.verifier = "denied", "", DENIED
            return _with_query(rt.callback, rt.token, DENIED)

    def revoke_access_token(self, access_token: str) -> None:
        """Revoke as a user would in their profile; later calls get token_revoked."""
        with self._lock:
            self._access_tokens[access_token].revoked = True

    # ---- test hooks (fault injection on the wire; the routes' behaviour is unchanged)

    def before(self, path_suffix: str, hook: Callable[[RecordedRequest], object] | None) -> None:
        """Call ``hook(request)`` before answering each request whose path ends with ``path_suffix``.

        The path is the raw one, context path included, without the query (``"/access-token"``
        matches the access-token servlet). The hook runs in the handler thread after the request
        is recorded and before the route runs, so the client waits for it: a test can change the
        world while Jira is answering. ``hook=None`` removes it. An exception in a hook is kept
        in ``hook_errors`` and the request is then answered as usual.
        """
        with self._lock:
            if hook is None:
                self._before.pop(path_suffix, None)
            else:
                self._before[path_suffix] = hook

    def trickle_body(self, path: str, interval: float = 0.5) -> None:
        """Answer ``path`` (relative to the context path, e.g. ``/rest/api/2/myself``) with its
        status line and headers at once, then its body one byte every ``interval`` seconds.

        The route still decides the answer; only its delivery is slow. The trickle stops when
        the client hangs up or the fake stops. :meth:`heal_bodies` undoes it.
        """
        with self._lock:
            self._body_faults[path] = ("trickle", interval)

    def cut_body(self, path: str) -> None:
        """Answer ``path`` with a ``Content-Length`` larger than the body, send part of the body,
        then close the connection (an answer cut off mid-way). :meth:`heal_bodies` undoes it."""
        with self._lock:
            self._body_faults[path] = ("cut", 0.0)

    def heal_bodies(self) -> None:
        """Forget every :meth:`trickle_body` and :meth:`cut_body`."""
        with self._lock:
            self._body_faults.clear()

    def _run_before_hooks(self, recorded: RecordedRequest) -> None:
        with self._lock:
            hooks = [hook for suffix, hook in self._before.items() if recorded.path.endswith(suffix)]
        for hook in hooks:
            try:
                hook(recorded)
            except Exception as exc:  # the test reads hook_errors
                with self._lock:
                    self.hook_errors.append(exc)

    def _body_fault(self, path: str) -> tuple[str, float] | None:
        with self._lock:
            return self._body_faults.get(path)

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self.requests.clear()

    # ---- internals shared by the admin API and the routes (call with the lock held)

    def _next_id(self, kind: str) -> int:
        self._next_ids[kind] += 1
        return self._next_ids[kind] - 1

    def _live_request_token(self, token: str) -> _RequestToken:
        rt = self._request_tokens.get(token)
        if rt is None:
            raise KeyError(f"unknown request token {token!r}")
        if self.now() - rt.created > REQUEST_TOKEN_TTL:
            raise ValueError(f"request token {token!r} has expired")
        return rt

    def _record(self, recorded: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(recorded)

    def _realm(self) -> str:
        return percent_encode(self.base_url)

    # ---- signature verification (independent of oauthlib on purpose)

    def _verify(self, req: _Request) -> dict[str, str]:
        """Check a signed request like net.oauth does; return its oauth params."""
        header = req.headers.get("authorization")
        params = parse_authorization(header) if header else None
        if params is None:
            absent = "&".join(_REQUIRED_OAUTH)
            raise OAuthProblem(401, "parameter_absent", oauth_parameters_absent=absent)
        _require(params, *_REQUIRED_OAUTH)
        if params["oauth_signature_method"] != "RSA-SHA1":
            raise OAuthProblem(
                400,
                "signature_method_rejected",
                oauth_acceptable_signature_methods="RSA-SHA1",
            )
        if params.get("oauth_version", "1.0") != "1.0":
            raise OAuthProblem(400, "version_rejected", oauth_acceptable_versions="1.0-1.0")
        self._reload_key_files()
        with self._lock:
            key = self._consumers.get(params["oauth_consumer_key"])
        if key is None:
            raise OAuthProblem(401, "consumer_key_unknown")
        self._check_timestamp_and_nonce(params)
        self._check_signature(req, params, key)
        return params

    def _check_timestamp_and_nonce(self, params: dict[str, str]) -> None:
        """Refuse skewed timestamps and replayed nonces, before the signature check.

        Like net.oauth, the nonce is spent even if the signature then fails.
        """
        try:
            timestamp = int(params["oauth_timestamp"])
        except ValueError:
            raise OAuthProblem(400, "parameter_rejected", oauth_parameters_rejected="oauth_timestamp") from None
        now = int(self.now())
        low, high = now - TIMESTAMP_WINDOW, now + TIMESTAMP_WINDOW
        if not low <= timestamp <= high:
            raise OAuthProblem(400, "timestamp_refused", oauth_acceptable_timestamps=f"{low}-{high}")
        seen = (
            params["oauth_consumer_key"],
            params["oauth_timestamp"],
            params["oauth_nonce"],
        )
        with self._lock:
            if seen in self._nonces:
                raise OAuthProblem(401, "nonce_used")
            self._nonces.add(seen)

    def _check_signature(self, req: _Request, params: dict[str, str], key: rsa.RSAPublicKey) -> None:
        """Rebuild the base string from the URL Jira believes it has, and verify it."""
        uri = base_string_uri(self.signing_base_url or self.base_url, req.path)
        signed = [(k, v) for k, v in params.items() if k not in ("oauth_signature", "realm")]
        signed += parse_qsl(req.query, keep_blank_values=True) + req.form
        base_string = signature_base_string(req.method, uri, signed)
        try:
            signature = base64.b64decode(params["oauth_signature"], validate=True)
            # RSA-SHA1 is what Jira speaks; SHA-1 here is the protocol, not a choice.
            key.verify(signature, base_string.encode(), padding.PKCS1v15(), hashes.SHA1())
        except (InvalidSignature, binascii.Error, ValueError):
            raise OAuthProblem(401, "signature_invalid", oauth_signature_base_string=base_string) from None

    # ---- OAuth servlets

    def request_token(self, req: _Request) -> Response:
        """POST /plugins/servlet/oauth/request-token."""
        params = self._verify(req)
        _require(params, "oauth_callback")
        callback = params["oauth_callback"]
        if callback != "oob" and not _is_absolute_http_url(callback):
            raise OAuthProblem(400, "parameter_rejected", oauth_parameters_rejected="oauth_callback")
        rt = _RequestToken(
            random_token(),
            random_token(),
            params["oauth_consumer_key"],
            callback,
            self.now(),
        )
        with self._lock:
            self._request_tokens[rt.token] = rt
        return _form_response(
            oauth_token=rt.token,
            oauth_token_secret=rt.secret,
            oauth_callback_confirmed="true",
        )

    def access_token(self, req: _Request) -> Response:
        """POST /plugins/servlet/oauth/access-token: trade an approved request token."""
        params = self._verify(req)
        _require(params, "oauth_token", "oauth_verifier")
        with self._lock:
            rt = self._request_tokens.get(params["oauth_token"])
            _check_exchange(rt, params, self.now())
            assert rt is not None  # _check_exchange raised otherwise
            # Single use: exchanging it again gets token_rejected.
            del self._request_tokens[rt.token]
            at = _AccessToken(
                token=random_token(),
                secret=random_token(),
                consumer_key=rt.consumer_key,
                username=rt.username,
                session_handle=random_token(),
                created=self.now(),
            )
            self._access_tokens[at.token] = at
        return _form_response(
            oauth_token=at.token,
            oauth_token_secret=at.secret,
            oauth_expires_in=str(ACCESS_TOKEN_TTL),
            oauth_session_handle=at.session_handle,
            oauth_authorization_expires_in=str(SESSION_TTL),
        )

    def authorize_page(self, req: _Request) -> Response:
        """GET /plugins/servlet/oauth/authorize: the Allow/Deny page."""
        token = parse_qs(req.query).get("oauth_token", [""])[0]
        with self._lock:
            try:
                rt = self._live_request_token(token)
            except (KeyError, ValueError) as exc:
                return _html(400, "Invalid OAuth token", str(exc.args[0]))
            users = list(self._users)
        return _html(200, "Welcome to Jira", _consent_form(rt, users))

    def authorize_decision(self, req: _Request) -> Response:
        """POST /plugins/servlet/oauth/authorize: what the Allow/Deny buttons submit."""
        form = dict(req.form)
        token, decision = form.get("oauth_token", ""), form.get("decision", "")
        username = form.get("username", "").strip()
        try:
            if decision == "approve":
                if not self._user_or_new(username):
                    with self._lock:
                        known = ", ".join(self._users) or "none yet"
                    return _html(
                        400,
                        "Unknown user",
                        f"<p>{html.escape(repr(username))} is not a user name (letters, digits and ._@+-). "
                        f"Users: {html.escape(known)}. Go back and type a name.</p>",
                    )
                url = self.approve(token, username)
            elif decision == "deny":
                url = self.deny(token)
            else:
                return _html(400, "Bad request", "decision must be approve or deny")
        except (KeyError, ValueError) as exc:
            return _html(400, "Invalid OAuth request", str(exc.args[0]))
        if url.startswith("oob?"):
            verifier = parse_qs(url[4:])["oauth_verifier"][0]
            return _html(
                200,
                "Access approved" if verifier != DENIED else "Access denied",
                f"Your verification code is <code>{html.escape(verifier)}</code>",
            )
        return Response(302, headers={"Location": url}, content_type=TEXT_HTML)

    def _user_or_new(self, name: str) -> bool:
        """Whether ``name`` is a user now: an unknown but well-formed name becomes one (the Allow page)."""
        with self._lock:
            if name in self._users:
                return True
        if not _USER_NAME.fullmatch(name):
            return False
        self.add_user(name, **demo_user(name))
        return True

    # ---- REST

    def server_info(self, req: _Request) -> Response:
        """GET /rest/api/2/serverInfo: anonymous, reports the configured base URL."""
        return _json(
            200,
            {
                "baseUrl": self.reported_base_url or self.base_url,
                "version": "9.12.2",
                "versionNumbers": [9, 12, 2],
                "deploymentType": "Server",
                "buildNumber": 912002,
                "serverTitle": "Fake Jira",
            },
        )

    def fail_next(self, problem: str, status: int = 401, **extra: str) -> None:
        """Answer the next signed /rest call with this oauth_problem (fault injection)."""
        with self._lock:
            self._fail_next = OAuthProblem(status, problem, **extra)

    def rest(self, req: _Request) -> Response:
        """Any other /rest call: needs a valid access token; myself, a test route or a JSON echo.

        Test routes: ``/rest/fake/status/<code>`` answers that status (3xx with a
        Location), ``/rest/fake/binary`` answers PNG bytes. Like Jira, every
        answer sets a session cookie and an ``X-AREQUESTID``.
        """
        with self._lock:
            injected, self._fail_next = self._fail_next, None
        if injected is not None:
            raise injected
        user = self._rest_user(req)
        response = self._rest_answer(req, user)
        response.headers.update(
            {"Set-Cookie": f"JSESSIONID={random_token(16)}; Path=/; HttpOnly", "X-AREQUESTID": random_token(8)}
        )
        return response

    def _rest_answer(self, req: _Request, user: dict[str, Any]) -> Response:
        if req.path == "/rest/api/2/myself":
            return _json(200, user)  # the fields the broker reads; tests compare it whole
        status = re.fullmatch(r"/rest/fake/status/(\d{3})", req.path)
        if status:
            code = int(status.group(1))
            location = {"Location": self.base_url + "/rest/api/2/myself"} if 300 <= code < 400 else {}
            return Response(code, b"", headers=location)
        if req.path == "/rest/fake/binary":
            return Response(200, FAKE_PNG, content_type="image/png")
        echo = {
            "method": req.method,
            "path": req.path,
            "query": parse_qs(req.query, keep_blank_values=True),
            "user": user["name"],
            "body": req.body.decode("utf-8", errors="replace"),
        }
        route = self._jira_route(req)
        if route is None:
            return _json(200, echo)
        try:
            answer = route(req, user)
        except _JiraError as error:
            answer = error.status, error.payload
        if isinstance(answer, Response):  # not JSON: a download, a 204
            return answer
        status_code, payload = answer
        if self.echo and isinstance(payload, dict):
            payload = {**payload, **{k: v for k, v in echo.items() if k not in payload}}
        return _json(status_code, payload)

    # ---- the REST API Jira's way (a project, its issues, attachments)

    def _jira_route(self, req: _Request) -> Callable[[_Request, dict[str, Any]], Any] | None:
        """The modelled REST route for this request, or None (the echo answers).

        JSON routes model only JSON bodies: a form or text body gets the echo (Jira would answer 415).
        Client libraries' routes (editing, downloads, fields) are in ``tests/fakejira_rest.py``.
        """
        more = self._rest_model_route(req)
        if more is not None:
            return more
        is_json = req.headers.get("content-type", "").lower().startswith("application/json")
        if req.path == "/rest/api/2/search":
            if req.method == "GET":
                return self._search_get
            if req.method == "POST" and is_json:
                return self._search_post
        if req.path == "/rest/api/2/issue" and req.method == "POST" and is_json:
            return self._create_issue
        if req.method == "GET" and _ISSUE_PATH.fullmatch(req.path):
            return self._get_issue
        if req.method == "POST" and _ATTACHMENTS_PATH.fullmatch(req.path):
            return self._add_attachments
        return None

    def _site(self) -> str:
        """Jira's idea of its own base URL, which its ``self`` links use (context path included)."""
        return (self.reported_base_url or self.base_url).rstrip("/")

    def _user_json(self, name: str | None) -> dict[str, Any] | None:
        with self._lock:
            user = self._users.get(name or "")
        if user is None:
            return None
        site = self._site()
        avatar = f"{site}/secure/useravatar?avatarId=10122"
        return {
            "self": f"{site}/rest/api/2/user?username={quote(user['name'], safe='')}",
            "name": user["name"],
            "key": user["key"],
            "emailAddress": user["emailAddress"],
            "avatarUrls": {size: f"{avatar}&size={word}" for size, word in _AVATAR_SIZES.items()},
            "displayName": user["displayName"],
            "active": user["active"],
            "timeZone": "UTC",
        }

    def _project_json(self, key: str) -> dict[str, Any]:
        site = self._site()
        with self._lock:
            project = self._projects[key]
        avatar = f"{site}/secure/projectavatar?avatarId=10324"
        return {
            "self": f"{site}/rest/api/2/project/{project['id']}",
            "id": project["id"],
            "key": project["key"],
            "name": project["name"],
            "projectTypeKey": "software",
            "avatarUrls": {size: f"{avatar}&size={word}" for size, word in _AVATAR_SIZES.items()},
        }

    def _fields_json(self, issue: _Issue, acting: str) -> dict[str, Any]:
        """Every field of an issue, shaped as Jira's REST API v2 shows them."""
        site = self._site()
        status_id, category = _STATUSES[issue.status]
        category_id, color, category_name = _STATUS_CATEGORIES[category]
        type_id, type_description, type_avatar = _ISSUE_TYPES[issue.issuetype]
        reporter = self._user_json(issue.reporter or acting)
        created = _jira_time(issue.created)
        return {
            "summary": issue.summary,
            "description": issue.description,
            "status": {
                "self": f"{site}/rest/api/2/status/{status_id}",
                "description": "",
                "iconUrl": f"{site}/images/icons/statuses/generic.png",
                "name": issue.status,
                "id": status_id,
                "statusCategory": {
                    "self": f"{site}/rest/api/2/statuscategory/{category_id}",
                    "id": category_id,
                    "key": category,
                    "colorName": color,
                    "name": category_name,
                },
            },
            "issuetype": {
                "self": f"{site}/rest/api/2/issuetype/{type_id}",
                "id": type_id,
                "description": type_description,
                "iconUrl": f"{site}/secure/viewavatar?size=xsmall&avatarId={type_avatar}&avatarType=issuetype",
                "name": issue.issuetype,
                "subtask": False,
                "avatarId": type_avatar,
            },
            "project": self._project_json(issue.project),
            "priority": {
                "self": f"{site}/rest/api/2/priority/3",
                "iconUrl": f"{site}/images/icons/priorities/medium.svg",
                "name": "Medium",
                "id": "3",
            },
            "assignee": self._user_json(issue.assignee or acting),
            "reporter": reporter,
            "creator": reporter,
            "labels": list(issue.labels),
            "attachment": [dict(attachment) for attachment in issue.attachments],
            "created": created,
            "updated": _jira_time(issue.updated) if issue.updated else created,
        }

    def _issue_json(self, issue: _Issue, acting: str, fields: set[str] | None, expand: str) -> dict[str, Any]:
        values = self._fields_json(issue, acting)
        return {
            "expand": expand,
            "id": str(issue.id),
            "self": f"{self._site()}/rest/api/2/issue/{issue.id}",
            "key": issue.key,
            "fields": {name: value for name, value in values.items() if fields is None or name in fields},
        }

    def _find_issue(self, id_or_key: str) -> _Issue:
        with self._lock:
            for issue in self._issues.values():
                if id_or_key.upper() == issue.key or id_or_key == str(issue.id):
                    return issue
        raise _JiraError(404, "Issue Does Not Exist")

    def _get_issue(self, req: _Request, user: dict[str, Any]) -> tuple[int, Any]:
        """GET /rest/api/2/issue/{idOrKey}[?fields=...]."""
        match = _ISSUE_PATH.fullmatch(req.path)
        assert match is not None
        issue = self._find_issue(unquote(match.group(1)))
        fields = _wanted_fields(parse_qs(req.query).get("fields", []))
        return 200, self._issue_json(issue, user["name"], fields, ISSUE_EXPAND)

    def _search_get(self, req: _Request, user: dict[str, Any]) -> tuple[int, Any]:
        """GET /rest/api/2/search?jql=...&startAt=...&maxResults=...&fields=..."""
        query = parse_qs(req.query, keep_blank_values=True)
        first = {name: values[0] for name, values in query.items()}
        return self._search(
            user, first.get("jql", ""), first.get("startAt"), first.get("maxResults"), query.get("fields", [])
        )

    def _search_post(self, req: _Request, user: dict[str, Any]) -> tuple[int, Any]:
        """POST /rest/api/2/search with ``{"jql", "startAt", "maxResults", "fields": [...]}``."""
        body = _json_object(req.body)
        fields = body.get("fields") or []
        if not isinstance(fields, list) or not all(isinstance(name, str) for name in fields):
            raise _JiraError(400, "fields: a list of field names is expected")
        jql = body.get("jql") or ""
        if not isinstance(jql, str):
            raise _JiraError(400, "jql: a string is expected")
        return self._search(user, jql, body.get("startAt"), body.get("maxResults"), fields)

    def _search(
        self, user: dict[str, Any], jql: str, start_at: object, max_results: object, fields: list[str]
    ) -> tuple[int, Any]:
        """Jira's search answer. JQL: ``project = X``, ``key = X-1`` and ``ORDER BY key|created [ASC|DESC]``
        are understood; other clauses are ignored (they match every issue)."""
        start = _int_param("startAt", start_at, 0)
        limit = min(_int_param("maxResults", max_results, 50), 1000)
        with self._lock:
            issues = list(self._issues.values())
            projects = set(self._projects)
        for project in _JQL_PROJECT.findall(jql):
            if project.upper() not in projects:
                raise _JiraError(400, f"The value '{project}' does not exist for the field 'project'.")
            issues = [issue for issue in issues if issue.project == project.upper()]
        for key in _JQL_KEY.findall(jql):
            issues = [issue for issue in issues if issue.key == key.upper()]
        order = _JQL_ORDER.search(jql)
        if order:
            by_created = order.group(1).lower() == "created"
            issues.sort(key=lambda issue: (issue.created, issue.id) if by_created else (issue.id,))
            if (order.group(2) or "asc").lower() == "desc":
                issues.reverse()
        wanted = _wanted_fields(fields)
        page = issues[start : start + limit] if limit > 0 else []
        return 200, {
            "expand": "schema,names",
            "startAt": start,
            "maxResults": limit,
            "total": len(issues),
            "issues": [self._issue_json(issue, user["name"], wanted, SEARCH_ISSUE_EXPAND) for issue in page],
        }

    def _create_issue(self, req: _Request, user: dict[str, Any]) -> tuple[int, Any]:
        """POST /rest/api/2/issue: 201 ``{"id", "key", "self"}``, or Jira's 400 naming each bad field."""
        fields = _json_object(req.body).get("fields")
        if not isinstance(fields, dict):
            raise _JiraError(400, "Can not create an issue without fields")
        errors: dict[str, str] = {}
        project = _ref(fields.get("project"), "key")
        with self._lock:
            by_id = {p["id"]: key for key, p in self._projects.items()}
            project_key = project.upper() if project.upper() in self._projects else by_id.get(project, "")
        if not project_key:
            errors["project"] = "project is required"
        type_name = _ref(fields.get("issuetype"), "name")
        type_by_id = {type_id: name for name, (type_id, _, _) in _ISSUE_TYPES.items()}
        issuetype = type_name if type_name in _ISSUE_TYPES else type_by_id.get(_ref(fields.get("issuetype"), "id"), "")
        if not issuetype:
            errors["issuetype"] = "valid issue type is required"
        summary = fields.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            errors["summary"] = "You must specify a summary of the issue."
        assignee = _ref(fields.get("assignee"), "name") or None
        if assignee is not None and self._user_json(assignee) is None:
            errors["assignee"] = f"User '{assignee}' does not exist."
        description = fields.get("description")
        if errors:
            raise _JiraError(400, **errors)
        assert isinstance(summary, str)
        key = self.add_issue(
            project_key,
            summary,
            issuetype=issuetype,
            reporter=user["name"],
            assignee=assignee or user["name"],
            description=description if isinstance(description, str) else None,
        )
        issue = self._find_issue(key)
        return 201, {"id": str(issue.id), "key": issue.key, "self": f"{self._site()}/rest/api/2/issue/{issue.id}"}

    def _add_attachments(self, req: _Request, user: dict[str, Any]) -> tuple[int, Any]:
        """POST /rest/api/2/issue/{idOrKey}/attachments: multipart ``file`` parts, XSRF header required."""
        if req.headers.get("x-atlassian-token", "").lower() != "no-check":
            raise _JiraError(403, "XSRF check failed")
        match = _ATTACHMENTS_PATH.fullmatch(req.path)
        assert match is not None
        issue = self._find_issue(unquote(match.group(1)))
        files = _multipart_files(req.headers.get("content-type", ""), req.body)
        if not files:
            raise _JiraError(400, "Send the files as multipart/form-data parts named 'file'")
        author = self._user_json(user["name"])
        with self._lock:
            added = [
                self._new_attachment(filename, mime_type, content, author, _jira_time(self.now()))
                for filename, mime_type, content in files
            ]
            issue.attachments.extend(added)
        return 200, added

    def _rest_user(self, req: _Request) -> dict[str, Any]:
        """Authenticate a REST call by its access token (OAuth 1.0a or 2.0); return the user's JSON."""
        header = req.headers.get("authorization")
        bearer = bearer_token(header or "")
        if bearer is not None:
            return self._oauth2_rest_user(bearer)
        if not header or parse_authorization(header) is None:
            raise _Unauthenticated()
        params = self._verify(req)
        _require(params, "oauth_token")
        with self._lock:
            at = self._access_tokens.get(params["oauth_token"])
            if at is None or at.consumer_key != params["oauth_consumer_key"]:
                raise OAuthProblem(401, "token_rejected")
            if at.revoked:
                raise OAuthProblem(401, "token_revoked")
            if self.now() - at.created > ACCESS_TOKEN_TTL:
                raise OAuthProblem(401, "token_expired")
            return dict(self._users[at.username])

    # ---- routing

    def dispatch(self, req: _Request) -> Response:
        """Route a request (path already relative to the context path)."""
        route = self._route(req)
        if route is None:
            return Response(404, b"Not Found")
        try:
            return route(req)
        except OAuthProblem as problem:
            return self._problem_response(problem)
        except Answered as answered:
            return answered.response
        except _Unauthenticated:
            return _json(
                401,
                {
                    "errorMessages": [
                        ("You are not authenticated. Authentication required to perform this operation.")
                    ],
                    "errors": {},
                },
            )

    def _route(self, req: _Request) -> Callable[[_Request], Response] | None:
        """Find the handler for method + path; a wrong method on a servlet gets 405."""
        oauth2 = self._oauth2_route(req)
        if oauth2 is not None:
            return oauth2
        servlets: dict[tuple[str, str], Callable[[_Request], Response]] = {
            ("POST", f"{SERVLET}/request-token"): self.request_token,
            ("POST", f"{SERVLET}/access-token"): self.access_token,
            ("GET", f"{SERVLET}/authorize"): self.authorize_page,
            ("POST", f"{SERVLET}/authorize"): self.authorize_decision,
            ("GET", "/rest/api/2/serverInfo"): self.server_info,
        }
        if (req.method, req.path) in servlets:
            return servlets[(req.method, req.path)]
        if any(path == req.path for _, path in servlets):
            return lambda _req: Response(405, b"Method Not Allowed")
        if req.path.startswith("/rest/") or self.is_download(req.path):
            return self.rest
        return None

    def _problem_response(self, problem: OAuthProblem) -> Response:
        """Jira's OAuth Problem Reporting: WWW-Authenticate header plus a form body."""
        fields = {"oauth_problem": problem.problem, **problem.extra}
        header = f'OAuth realm="{self._realm()}"' + "".join(
            f', {name}="{percent_encode(value)}"' for name, value in fields.items()
        )
        body = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in fields.items())
        return Response(problem.status, body.encode(), headers={"WWW-Authenticate": header})


# ---------------------------------------------------------------- route helpers


def _require(params: dict[str, str], *names: str) -> None:
    """400 parameter_absent listing every missing oauth parameter, as net.oauth does."""
    missing = [name for name in names if not params.get(name)]
    if missing:
        raise OAuthProblem(400, "parameter_absent", oauth_parameters_absent="&".join(missing))


def _check_exchange(rt: _RequestToken | None, params: dict[str, str], now: float) -> None:
    """The access-token checks, in the order Jira makes them."""
    if rt is None or rt.consumer_key != params["oauth_consumer_key"]:
        raise OAuthProblem(401, "token_rejected")
    if now - rt.created > REQUEST_TOKEN_TTL:
        raise OAuthProblem(401, "token_expired")
    if rt.status == "denied":
        raise OAuthProblem(401, "permission_denied")
    if rt.status != "approved":
        raise OAuthProblem(401, "permission_unknown")
    if not secrets.compare_digest(rt.verifier, params["oauth_verifier"]):
        raise OAuthProblem(401, "token_rejected")


def _new_verifier() -> str:
    """A short random verifier like Jira's; never the literal "denied"."""
    while (verifier := random_token(6)) == DENIED:
        pass
    return verifier


def _with_query(callback: str, token: str, verifier: str) -> str:
    """Append oauth_token and oauth_verifier to the callback, keeping its own query."""
    query = urlencode({"oauth_token": token, "oauth_verifier": verifier})
    return f"{callback}{'&' if '?' in callback else '?'}{query}"


def _is_absolute_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _form_response(**fields: str) -> Response:
    """Jira's token answers: form-encoded, yet labelled text/plain."""
    return Response(200, urlencode(fields).encode(), TEXT_PLAIN)


def _json(status: int, payload: Any) -> Response:
    return Response(status, json.dumps(payload).encode(), APPLICATION_JSON)


def _html(status: int, title: str, body_html: str) -> Response:
    page = (
        f"<!DOCTYPE html><html><head><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body_html}</body></html>"
    )
    return Response(status, page.encode(), TEXT_HTML)


def _consent_form(rt: _RequestToken, users: list[str]) -> str:
    """Jira's consent page: one form per button, both POSTing back to /authorize.

    The user name field stands for Jira's login; it starts with the first user, and any other
    well-formed name is accepted (it becomes a new user)."""
    username = users[0] if users else ""

    def form(decision: str, label: str) -> str:
        return (
            f'<form method="post" action="authorize">'
            f'<input type="hidden" name="oauth_token" value="{html.escape(rt.token)}">'
            f'<input type="text" name="username" value="{html.escape(username)}">'
            f'<button type="submit" name="decision" value="{decision}">{label}</button>'
            f"</form>"
        )

    known = ", ".join(users) or "none yet"
    return (
        f"<p>{html.escape(rt.consumer_key)} would like to access your data</p>"
        + form("approve", "Allow")
        + form("deny", "Deny")
        + f"<p>Users: {html.escape(known)}. Any other name you type becomes a new user.</p>"
    )


def demo_user(name: str) -> dict[str, str]:
    """Display name and email for a user made up on the spot: ``bob`` is Bob Example, bob@example.com."""
    words = [word.capitalize() for word in re.split(r"[._+-]+", name.partition("@")[0]) if word]
    return {
        "display_name": " ".join([*words, "Example"]),
        "email": name if "@" in name else f"{name}@example.com",
    }


_AVATAR_SIZES = {"48x48": "large", "24x24": "small", "16x16": "xsmall", "32x32": "medium"}


def _jira_time(timestamp: float) -> str:
    """Jira's REST timestamps: ``2026-11-29T14:11:42.000+0000``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime(timestamp))


def _json_object(body: bytes) -> dict[str, Any]:
    """A JSON request body that must be an object, else Jira's 400."""
    try:
        value = json.loads(body.decode("utf-8")) if body.strip() else None
    except (UnicodeDecodeError, ValueError):
        raise _JiraError(400, "The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise _JiraError(400, "The request body must be a JSON object.")
    return value


def _int_param(name: str, value: object, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _JiraError(400, f"{name}: a number is expected")
    try:
        number = int(value)
    except ValueError:
        raise _JiraError(400, f"{name}: a number is expected") from None
    if number < 0:
        raise _JiraError(400, f"{name}: must not be negative")
    return number


def _ref(value: object, name: str) -> str:
    """``{"key": "ABC"}``-style references in an issue's fields: the named member, or ""."""
    member = value.get(name) if isinstance(value, dict) else None
    return member if isinstance(member, str) else ""


def _wanted_fields(values: list[str]) -> set[str] | None:
    """The ``fields`` parameter (repeated and/or comma-separated): None for every field."""
    names = {name.strip() for value in values for name in value.split(",") if name.strip()}
    if not names or names & {"*all", "*navigable"}:
        return None
    return names


def _multipart_files(content_type: str, body: bytes) -> list[tuple[str, str | None, bytes]]:
    """(file name, media type as sent or None, bytes) of each ``file`` part of a multipart/form-data body."""
    if not content_type.lower().startswith("multipart/form-data"):
        return []
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", errors="replace")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    files = []
    for part in message.walk():
        if part.is_multipart() or part.get_param("name", header="content-disposition") != "file":
            continue
        content = part.get_payload(decode=True)
        data = content if isinstance(content, bytes) else b""
        declared = part.get_content_type() if part.get("content-type") else None
        files.append((part.get_filename() or "attachment", declared, data))
    return files


# ---------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its FakeJira and its open connections."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # socketserver's 5 resets connections when tests connect by the dozen at once

    def __init__(self, address: tuple[str, int], handler: type[_Handler], fake: FakeJira) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def track(self, conn: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            (self._connections.add if open_ else self._connections.discard)(conn)

    def close_connections(self) -> None:
        """Kept-alive connections outlive shutdown(); cut them so handlers end."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up (timeout tests) are normal here: keep quiet."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP/1.1 requests into _Request objects for FakeJira.dispatch."""

    protocol_version = "HTTP/1.1"  # keep-alive, like the real thing
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Without TCP_NODELAY a reused connection waits ~40 ms (Nagle + delayed ACK).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request access log."""

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET
    do_HEAD = do_GET  # as Tomcat: GET's status and headers, no body (see _send)

    def _handle(self) -> None:
        fake = self.server.fake
        body = self._read_body()
        raw_path, _, query = self.path.partition("?")
        recorded = RecordedRequest(
            self.command,
            raw_path,
            parse_qs(query, keep_blank_values=True),
            dict(self.headers.items()),
            body,
        )
        fake._record(recorded)
        fake._run_before_hooks(recorded)
        if fake.delay:
            time.sleep(fake.delay)
        response = self._respond(fake, raw_path, query, body)
        ctx = fake.context_path
        fault = fake._body_fault(raw_path[len(ctx) :]) if raw_path.startswith(ctx) else None
        if fault is None:
            self._send(response)
        elif fault[0] == "trickle":
            self._send_trickled(response, fault[1])
        else:
            self._send_cut(response)

    def _respond(self, fake: FakeJira, raw_path: str, query: str, body: bytes) -> Response:
        """Strip the context path and dispatch; a bug in the fake becomes a 500."""
        ctx = fake.context_path
        if ctx and raw_path != ctx and not raw_path.startswith(ctx + "/"):
            return Response(404, b"Not Found")
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = _Request(self.command, raw_path[len(ctx) :], query, headers, body)
        try:
            return fake.dispatch(req)
        except Exception:  # show a bug in the fake to the test, not on stderr
            return Response(500, traceback.format_exc().encode())

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # CRLF after each chunk
        while self.rfile.readline().strip():  # trailers, then the final CRLF
            pass
        return b"".join(chunks)

    def _send(self, response: Response) -> None:
        self._send_head(response, len(response.body))
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _send_head(self, response: Response, content_length: int) -> None:
        self.send_response(response.status)
        if response.content_type:  # "": none (a 204)
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(content_length))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send_trickled(self, response: Response, interval: float) -> None:
        """Headers now, then the body a byte at a time (see FakeJira.trickle_body)."""
        self._send_head(response, len(response.body))
        for index in range(len(response.body)):
            if self.server.fake._server is None:  # the fake is stopping
                break
            try:
                self.wfile.write(response.body[index : index + 1])
            except OSError:  # the client hung up
                break
            time.sleep(interval)
        self.close_connection = True

    def _send_cut(self, response: Response) -> None:
        """Promise more body than is sent, send half of it, then close (see FakeJira.cut_body)."""
        body = response.body or b"{}"
        self._send_head(response, len(body) + 100)
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True


def main(argv: list[str] | None = None) -> int:
    """Run the fake Jira on its own, to try the broker's walk-through without a real Jira.

    ``python -m tests.fakejira --port 8090 --consumer-key jira-oauth-broker --public-key-file pub.pem`` plays an
    OAuth 1.0a Application Link; ``--oauth2-client-id ID --oauth2-client-secret S --oauth2-redirect-uri URL`` an
    OAuth 2.0 incoming link (scopes READ and WRITE). Give either or both.
    """
    import argparse

    parser = argparse.ArgumentParser(
        description="A fake Jira on loopback: an OAuth 1.0a Application Link, a Data Center OAuth 2.0 link, or both."
    )
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--context-path", default="/jira")
    parser.add_argument("--consumer-key", default="jira-oauth-broker")
    parser.add_argument(
        "--public-key-file",
        help="OAuth 1.0a: the Application Link's public key (PEM); read again whenever the file changes",
    )
    oauth2 = ("oauth2_client_id", "oauth2_client_secret", "oauth2_redirect_uri")
    parser.add_argument("--oauth2-client-id", help="OAuth 2.0: the incoming link's client ID")
    parser.add_argument("--oauth2-client-secret", help="OAuth 2.0: the incoming link's client secret")
    parser.add_argument("--oauth2-redirect-uri", help="OAuth 2.0: the incoming link's redirect URL (matched exactly)")
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        help="a user who exists from the start (repeatable; default alice); the Allow page takes any other name too",
    )
    args = parser.parse_args(argv)
    given = [getattr(args, name) is not None for name in oauth2]
    if any(given) and not all(given):
        parser.error("--oauth2-client-id, --oauth2-client-secret and --oauth2-redirect-uri go together")
    if not args.public_key_file and not any(given):
        parser.error("give --public-key-file (OAuth 1.0a), the three --oauth2-* options (OAuth 2.0), or both")
    fake = FakeJira(args.context_path, port=args.port, echo=False)
    links = []
    if args.public_key_file:
        fake.watch_public_key_file(args.consumer_key, args.public_key_file)
        links.append(f"Application Link '{args.consumer_key}', key from {args.public_key_file}")
    if all(given):
        fake.add_oauth2_client(args.oauth2_client_id, args.oauth2_client_secret, args.oauth2_redirect_uri)
        links.append(f"OAuth 2.0 client '{args.oauth2_client_id}' redirecting to {args.oauth2_redirect_uri}")
    for name in args.user or ["alice"]:
        fake.add_user(name, **demo_user(name))
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    with fake:
        # On stderr: a background job's announcement must not mix with the answers a shell prints.
        print(f"Fake Jira at {fake.base_url} ({'; '.join(links)}); Ctrl-C stops.", file=sys.stderr, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
