"""One total deadline per call: connecting, sending, the status line, headers and body together.

``requests``' ``timeout=(connect, read)`` applies to each socket operation, so a server that
trickles a byte every few seconds holds a call for minutes, long after API Gateway gave up
(29 s). Here a call runs under a :class:`Deadline`. Each connection the call opens or takes
from the pool belongs to it until the connection goes back to the pool; when the deadline
passes, one watchdog thread shuts those sockets down (``shutdown(SHUT_RDWR)``: plain or TLS,
new or pooled), so whatever read or write is blocked fails at once. A TLS handshake gets the
time left as its socket timeout, which CPython applies to the whole handshake. The HTTP
request's budget (:func:`start_request`) caps every deadline started under it, so all of a
request's calls to Jira fit in API Gateway's time together.

Example::

    session = requests.Session()
    session.mount("https://", DeadlineAdapter())
    with start_request(24):                    # the HTTP request's budget (app.py's middleware)
        with limit(10) as call:                # one call, its body included
            response = session.get(url, timeout=call.cap((4, 8)))
            body = response.content
    call.fired                                 # True when the watchdog cut the call off

A streamed response (``stream=True``) is sent inside ``call.running()`` instead, which leaves
the deadline armed on exit while a connection is still out. It ends when the connection goes
back to the pool: the body read to its end, or the response closed. A response neither read
nor closed keeps it armed only until it passes: the watchdog then shuts the socket and forgets
it. So no deadline outlives its own seconds.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


@dataclass(frozen=True)
class _Budget:
    end: float  # time.monotonic()
    seconds: float


_budget: ContextVar[_Budget | None] = ContextVar("request_budget", default=None)
_current: ContextVar[Deadline | None] = ContextVar("call_deadline", default=None)

# Everything below is guarded by _lock: the armed deadlines (a heap by end time, watched by one
# thread), each deadline's connections and each connection's owner.
_lock = threading.Lock()
_wake = threading.Condition(_lock)
_armed: list[tuple[float, int, Deadline]] = []
_order = itertools.count()  # heap tie-breaker: Deadlines do not compare
_watchdog: threading.Thread | None = None
_responses: weakref.WeakKeyDictionary[requests.Response, Deadline] = weakref.WeakKeyDictionary()


@contextmanager
def start_request(seconds: float) -> Iterator[None]:
    """Give the current HTTP request ``seconds`` for all its calls; outside one, only each call's deadline applies."""
    token = _budget.set(_Budget(time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _budget.reset(token)


def budget_left() -> float | None:
    """Seconds left of the current request's budget; None outside :func:`start_request`."""
    budget = _budget.get()
    return None if budget is None else budget.end - time.monotonic()


@contextmanager
def limit(seconds: float) -> Iterator[Deadline]:
    """Run one call, body included, within ``seconds`` (or what is left of the request's budget)."""
    call = Deadline(seconds)
    try:
        with call.running():
            yield call
    finally:
        call.close()


def deadline_of(response: requests.Response) -> Deadline | None:
    """The deadline a response was sent under, which its streamed body is read within."""
    with _lock:
        return _responses.get(response)


def armed() -> int:
    """How many deadlines are armed now (each ends at the latest when it passes)."""
    with _lock:
        return len(_armed)


class Deadline:
    """One call's end: ``seconds`` from now, or the end of the request's budget if that comes first.

    ``seconds`` is what the call got; ``budget`` is the request's whole budget when that cut the
    call short (else None); ``fired`` says the watchdog shut down a connection of this call.
    """

    def __init__(self, seconds: float) -> None:
        now = time.monotonic()
        self.end, self.seconds = now + seconds, seconds
        self.budget: float | None = None
        budget = _budget.get()
        if budget is not None and budget.end < self.end:
            self.end, self.seconds, self.budget = budget.end, max(0.0, budget.end - now), budget.seconds
        self.fired = False
        self._running = False
        self._ended = False
        self._in_heap = False
        self._connections: set[_Connection] = set()

    def remaining(self) -> float:
        return self.end - time.monotonic()

    @property
    def expired(self) -> bool:
        return self.fired or self.remaining() <= 0

    def cap(self, timeout: Any) -> tuple[float, float]:
        """``requests``' per-operation timeout (a number or ``(connect, read)``), none longer than what is left."""
        left = max(self.remaining(), 0.001)
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        return (min(connect or left, left), min(read or left, left))

    @contextmanager
    def running(self) -> Iterator[Deadline]:
        """Connections used inside belong to this deadline. An error ends it; otherwise it ends at once,
        or, while a connection is still out (a streamed body), when that goes back to the pool."""
        token = _current.set(self)
        with _lock:
            self._running = True
        clean = False
        try:
            yield self
            clean = True
        finally:
            _current.reset(token)
            with _lock:
                self._running = False
                if not clean or not self._connections:
                    self._end()

    def close(self) -> None:
        """Disarm now; idempotent."""
        with _lock:
            self._end()

    # -- under _lock ---------------------------------------------------------------------------
    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        for connection in self._connections:
            if connection._deadline is self:
                connection._deadline = None
        self._connections.clear()
        if self._in_heap:
            index = next(i for i, entry in enumerate(_armed) if entry[2] is self)
            _armed[index] = _armed[-1]
            _armed.pop()
            heapq.heapify(_armed)
            self._in_heap = False

    def _fire(self) -> None:
        if self._connections:
            self.fired = True
            for connection in self._connections:
                connection._cut()
        if not self._running:
            self._end()


def _arm(deadline: Deadline) -> None:
    global _watchdog
    heapq.heappush(_armed, (deadline.end, next(_order), deadline))
    deadline._in_heap = True
    if _watchdog is None or not _watchdog.is_alive():
        _watchdog = threading.Thread(target=_watch, name="deadline-watchdog", daemon=True)
        _watchdog.start()
    elif _armed[0][2] is deadline:
        _wake.notify()


def _watch() -> None:
    """The watchdog: sleep until the earliest armed deadline, fire it, repeat."""
    with _wake:
        while True:
            now = time.monotonic()
            while _armed and _armed[0][0] <= now:
                deadline = heapq.heappop(_armed)[2]
                deadline._in_heap = False
                deadline._fire()
            _wake.wait(_armed[0][0] - now if _armed else None)


def _shut(sock: object) -> None:
    # socket.socket's own shutdown, also for an SSLSocket: its override would unwrap TLS state
    # under the reading thread. A socket closed meanwhile has fileno -1: EBADF, harmless.
    if isinstance(sock, socket.socket):
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


# -- urllib3 connections and pools that belong to the current deadline -----------------------------
class _Connection(HTTPConnection):
    """A connection that joins the current deadline when it connects or sends a request."""

    _deadline: Deadline | None = None
    _wire: socket.socket | None = None  # the socket reads block on (the TLS one, once wrapped)

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        deadline = self._deadline
        if deadline is not None:
            # A TLS handshake (wrapping detaches this socket, so the watchdog cannot reach it) takes at
            # most the socket's timeout in all (CPython's ssl, since 3.5): no longer than what is left.
            left = max(0.001, deadline.remaining())
            sock.settimeout(min(sock.gettimeout() or left, left))
        self._watch(sock)
        return sock

    def connect(self) -> None:
        self._join()
        super().connect()
        self._watch(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._join()
        super().request(*args, **kwargs)

    def _join(self) -> None:
        deadline = _current.get()
        if deadline is None:
            return
        with _lock:
            if deadline._ended or deadline.remaining() <= 0:
                raise TimeoutError("the call's deadline passed before it could use the connection")
            if self._deadline is not deadline:
                self._disown()
                self._deadline = deadline
                deadline._connections.add(self)
            if not deadline._in_heap:
                _arm(deadline)

    def _watch(self, sock: socket.socket | None) -> None:
        with _lock:
            self._wire = sock
            if self._deadline is not None and self._deadline.fired:  # fired between joining and this socket
                _shut(sock)

    def _cut(self) -> None:  # under _lock
        _shut(self._wire)

    def _leave(self) -> None:
        """Back to the pool: no longer its deadline's."""
        with _lock:
            self._disown()

    def _disown(self) -> None:  # under _lock; a deadline done with all its connections ends
        owner, self._deadline = self._deadline, None
        if owner is not None:
            owner._connections.discard(self)
            if not owner._running and not owner._connections:
                owner._end()


class _TLSConnection(_Connection, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection

    def _put_conn(self, conn: Any) -> None:
        if isinstance(conn, _Connection):
            conn._leave()
        super()._put_conn(conn)


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection

    def _put_conn(self, conn: Any) -> None:
        if isinstance(conn, _Connection):
            conn._leave()
        super()._put_conn(conn)


class DeadlineAdapter(HTTPAdapter):
    """A ``requests`` adapter whose connections obey the current :class:`Deadline` (plain ones without)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        deadline = _current.get()
        if deadline is None:
            return super().send(request, *args, **kwargs)
        if deadline.remaining() <= 0:
            raise requests.exceptions.ConnectTimeout("The call's deadline passed before connecting.", request=request)
        kwargs["timeout"] = deadline.cap(kwargs.get("timeout"))
        response = super().send(request, *args, **kwargs)
        with _lock:
            _responses[response] = deadline
        return response
