"""HTTP to a team's Jira: pooled sessions under a total deadline per call, and failures as broker errors.

A call's failures name the host and say what to do: no connection (502 ``jira_unreachable``),
TLS (502 ``jira_tls_error``), too slow (504 ``jira_timeout``: the call's deadline or the
request's budget ran out, or a per-operation timeout), or an answer cut off part-way
(502 ``jira_bad_response``).

Example::

    call = Deadline(10)
    with translating("jira.example.com", call, (4, 8)):
        with call.running():
            response = session_for(base_url).send(prepared, timeout=call.cap((4, 8)))
"""

from __future__ import annotations

import http.client
import http.cookiejar
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
import urllib3

from .deadline import Deadline, DeadlineAdapter
from .errors import BrokerError, JiraBadResponse, JiraTimeout, JiraTLSError, JiraUnreachable

READ_CHUNK = 65536
# What a broken or cut-off exchange raises, from requests down to the socket (ValueError: an
# operation on a socket closed under it).
_NETWORK_ERRORS = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
    ValueError,
)


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """A cookie policy that keeps nothing and sends nothing."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


_sessions: dict[str, requests.Session] = {}
_sessions_lock = threading.Lock()


def new_session() -> requests.Session:
    """A session whose connections obey the current deadline; no ambient proxies, no cookies."""
    session = requests.Session()
    session.trust_env = False  # never route a team's Jira through ambient proxy settings
    # One session serves every user of a Jira: a cookie Jira sets for one user (JSESSIONID)
    # must never ride along on the next user's request.
    session.cookies.set_policy(_NoCookies())
    adapter = DeadlineAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def session_for(base_url: str) -> requests.Session:
    """A pooled session per Jira base URL, reused across warm invocations."""
    with _sessions_lock:
        session = _sessions.get(base_url)
        if session is None:
            session = _sessions[base_url] = new_session()
        return session


def _seconds(value: float) -> str:
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{text} second" if text == "1" else f"{text} seconds"


def timed_out(host: str, call: Deadline) -> JiraTimeout:
    """The call ran out of time: its own deadline, or what was left of the request's budget."""
    if call.budget is None:
        return JiraTimeout(
            f"Jira at {host} did not answer within {_seconds(call.seconds)}. "
            "Check that it is up and reachable from the broker."
        )
    if call.seconds <= 0:
        return JiraTimeout(
            f"The broker had no time left to call Jira at {host}: earlier calls to Jira used up the "
            f"{_seconds(call.budget)} this request may spend on Jira. Check that Jira answers quickly, then try again."
        )
    return JiraTimeout(
        f"Jira at {host} did not answer within {_seconds(call.seconds)}, all that was left of the "
        f"{_seconds(call.budget)} this request may spend on Jira. Check that it is up and reachable from the broker."
    )


def _broker_error(
    error: Exception, host: str, call: Deadline | None, timeout: tuple[float, float], reading: bool
) -> BrokerError | None:
    """What a failed call means for the caller; None for an error that is not about the exchange."""
    if call is not None and call.expired:
        return timed_out(host, call)  # whatever the cut socket made requests raise
    cause = error.args[0] if error.args else None
    if isinstance(error, requests.exceptions.SSLError):
        return JiraTLSError(
            f"The TLS handshake with {host} failed: its certificate is not trusted "
            "(self-signed, expired or for another name) or it does not speak https on that port.",
        )
    if isinstance(error, requests.exceptions.Timeout) or isinstance(cause, urllib3.exceptions.ReadTimeoutError):
        seconds = timeout[0] if isinstance(error, requests.exceptions.ConnectTimeout) else timeout[1]
        return JiraTimeout(
            f"Jira at {host} did not answer within {_seconds(seconds)}. "
            "Check that it is up and reachable from the broker.",
        )
    if isinstance(error, requests.exceptions.ContentDecodingError):
        return JiraBadResponse(f"Jira at {host} answered with a compressed body the broker could not decode.")
    if isinstance(error, requests.exceptions.ChunkedEncodingError) or (
        reading and isinstance(error, requests.exceptions.ConnectionError)
    ):
        return JiraBadResponse(
            f"Jira at {host} stopped sending its answer part-way: the connection ended before the whole body "
            "arrived. Try again; if it persists, check Jira and any proxy or load balancer in front of it.",
        )
    if isinstance(error, requests.exceptions.ConnectionError):
        return JiraUnreachable(
            f"The broker could not connect to {host}. Check base_url's host and port, "
            "and that Jira is reachable from the broker's network.",
        )
    return None


@contextmanager
def translating(
    host: str, call: Deadline | None, timeout: tuple[float, float], *, reading: bool = False
) -> Iterator[None]:
    """Turn a failed exchange with Jira into a broker error; a call the deadline cut off fails even if
    nothing raised (a body read until the connection closes just ends early). ``reading``: only the body
    is left, so a broken connection means a cut-off answer."""
    try:
        yield
    except _NETWORK_ERRORS as error:
        mapped = _broker_error(error, host, call, timeout, reading)
        if mapped is None:
            raise
        raise mapped from None
    if call is not None and call.fired:
        raise timed_out(host, call)


def read_capped(response: requests.Response, limit: int, host: str) -> bytes:
    """A streamed body, at most ``limit`` bytes; raises ``response_too_large`` past it."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise JiraBadResponse(
                f"Jira at {host} answered with more than {limit} bytes, more than the proxy can return. "
                "Ask for less (pagination), or use the sign endpoint and fetch it yourself.",
                code="response_too_large",
            )
        chunks.append(chunk)
    return b"".join(chunks)
