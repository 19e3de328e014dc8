"""One total deadline per call to Jira, and the request's budget, against misbehaving servers on loopback.

Each server here is a raw socket on 127.0.0.1 that answers in one bad way: trickling the status
line or the body a byte every half second, hanging after the headers, or cutting the body off.
The per-operation timeouts are long (5 s) so only the total deadline can end the call.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from chalicelib import deadline
from chalicelib.config import load_settings
from chalicelib.errors import BrokerError, JiraTimeout
from chalicelib.jirahttp import new_session
from chalicelib.oauth1 import JiraClient, UserRequest

DEADLINE = 1.5
MARGIN = 2.0  # a correctness bound, not a benchmark
SLOW_OPS = (5.0, 5.0)  # per-operation timeouts far longer than the trickle's 0.5 s steps
JSON_OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{"ok": "fine"}'

Handler = Callable[[socket.socket, "RawServer"], None]


class RawServer:
    """A tiny server on 127.0.0.1 that hands each accepted connection to ``handler``; counts connections."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler, self.tls = handler, tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.stopping = threading.Event()
        self._connections: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, name="raw-server", daemon=True)]
        self._threads[0].start()

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/jira"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pause(self, seconds: float) -> bool:
        """Wait; False once the server is stopping."""
        return not self.stopping.wait(seconds)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._connections.append(connection)
            thread = threading.Thread(target=self._serve, args=(connection,), name="raw-server", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            self.handler(connection, self)
        except (OSError, ssl.SSLError):
            pass  # the client hung up: the point of most of these tests
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()
        for connection in self._connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=5)


def read_request(connection: socket.socket) -> bool:
    """Read one bodiless request's head; False at end of stream."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return False
        data += chunk
    return True


def trickle(connection: socket.socket, server: RawServer, data: bytes) -> None:
    for byte in data:
        connection.sendall(bytes([byte]))
        if not server.pause(0.5):
            return


# -- the misbehaving servers --------------------------------------------------------------------------
def trickled_status(connection: socket.socket, server: RawServer) -> None:
    read_request(connection)
    trickle(connection, server, JSON_OK)


def headers_then_hang(connection: socket.socket, server: RawServer) -> None:
    read_request(connection)
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n")
    server.pause(60)


def trickled_body(connection: socket.socket, server: RawServer) -> None:
    read_request(connection)
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
    trickle(connection, server, b" " * 1000000)


def trickled_body_until_close(connection: socket.socket, server: RawServer) -> None:
    """No length: the body ends when the connection does, so a cut-off looks like an end."""
    read_request(connection)
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
    trickle(connection, server, b" " * 1000000)


def short_body(connection: socket.socket, server: RawServer) -> None:
    read_request(connection)
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n0123456789")


def cut_chunked(connection: socket.socket, server: RawServer) -> None:
    read_request(connection)
    connection.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"a\r\n0123456789\r\n100\r\nabc"
    )


def keep_alive(delays: list[float]) -> Handler:
    """Answer requests on one kept-alive connection, the n-th after ``delays[n]`` seconds."""

    def handler(connection: socket.socket, server: RawServer) -> None:
        for delay in delays:
            if not read_request(connection) or not server.pause(delay):
                return
            connection.sendall(JSON_OK)
        server.pause(60)

    return handler


# -- fixtures and the two ways the broker calls Jira ------------------------------------------------------
@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Handler, tls: ssl.SSLContext | None = None) -> RawServer:
        servers.append(RawServer(handler, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """After every test: no deadline armed, and at most the one watchdog thread added."""
    before = set(threading.enumerate())
    yield
    assert deadline.armed() == 0
    added = [t for t in threading.enumerate() if t not in before and t.name != "raw-server" and t.is_alive()]
    assert [t.name for t in added] in ([], ["deadline-watchdog"])


def client(server: RawServer, key: rsa.RSAPrivateKey, seconds: float = DEADLINE, **kwargs: object) -> JiraClient:
    return JiraClient(server.base_url, "consumer", key, timeout=SLOW_OPS, deadline=seconds, **kwargs)  # type: ignore[arg-type]


def dance_call(jira: JiraClient) -> object:
    """Like request-token or serverInfo: the body is read inside the call."""
    return jira.server_info()


def proxy_call(jira: JiraClient) -> object:
    """Like the proxy: a streamed answer, its body read afterwards with read_body."""
    response, _ = jira.call_as("token", "secret", UserRequest("GET", "/rest/api/2/myself"))
    return jira.read_body(response, 1 << 20)


def fails_with(call: Callable[[], object], code: str) -> tuple[BrokerError, float]:
    started = time.monotonic()
    with pytest.raises(BrokerError) as caught:
        call()
    assert caught.value.code == code, caught.value.message
    return caught.value, time.monotonic() - started


CALLS = [pytest.param(dance_call, id="dance"), pytest.param(proxy_call, id="proxy")]


# -- one total deadline per call -----------------------------------------------------------------------------
@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize(
    "handler", [trickled_status, headers_then_hang, trickled_body, trickled_body_until_close], ids=lambda h: h.__name__
)
def test_a_slow_jira_fails_at_the_deadline(
    serve: Callable[..., RawServer], rsa_key: rsa.RSAPrivateKey, handler: Handler, call: Callable[..., object]
) -> None:
    server = serve(handler)
    error, took = fails_with(lambda: call(client(server, rsa_key)), "jira_timeout")
    assert DEADLINE - 0.1 <= took < DEADLINE + MARGIN
    assert error.status == 504
    assert f"Jira at {server.host} did not answer within 1.5 seconds" in error.message


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("handler", [short_body, cut_chunked], ids=lambda h: h.__name__)
def test_an_answer_cut_off_part_way_is_a_bad_response(
    serve: Callable[..., RawServer], rsa_key: rsa.RSAPrivateKey, handler: Handler, call: Callable[..., object]
) -> None:
    server = serve(handler)
    error, took = fails_with(lambda: call(client(server, rsa_key)), "jira_bad_response")
    assert took < DEADLINE
    assert error.status == 502
    assert f"Jira at {server.host} stopped sending its answer part-way" in error.message


def test_read_body_caps_the_size(serve: Callable[..., RawServer], rsa_key: rsa.RSAPrivateKey) -> None:
    jira = client(serve(keep_alive([0])), rsa_key)
    response, _ = jira.call_as("token", "secret", UserRequest("GET", "/rest/api/2/myself"))
    error, _ = fails_with(lambda: jira.read_body(response, 10), "response_too_large")
    assert "more than 10 bytes" in error.message


# -- the request's budget ------------------------------------------------------------------------------------
def test_the_request_budget_caps_each_call_and_a_spent_budget_does_not_connect(
    serve: Callable[..., RawServer], rsa_key: rsa.RSAPrivateKey
) -> None:
    server = serve(headers_then_hang)
    jira = client(server, rsa_key, seconds=10)
    with deadline.start_request(1.0):
        error, took = fails_with(lambda: dance_call(jira), "jira_timeout")
        assert took < 1.0 + MARGIN
        assert "all that was left of the 1 second this request may spend on Jira" in error.message
        accepted = server.accepted
        error, took = fails_with(lambda: proxy_call(jira), "jira_timeout")
        assert took < 0.1
        assert "no time left" in error.message
    assert server.accepted == accepted
    assert deadline.budget_left() is None  # outside a request, only each call's own deadline applies


def test_without_a_request_only_the_call_deadline_applies(
    serve: Callable[..., RawServer], rsa_key: rsa.RSAPrivateKey
) -> None:
    jira = client(serve(keep_alive([0.3, 0.3])), rsa_key, seconds=1.0)
    assert dance_call(jira) == {"ok": "fine"}
    with deadline.start_request(5.0):
        assert dance_call(jira) == {"ok": "fine"}
        left = deadline.budget_left()
        assert left is not None and 0 < left < 4.8


# -- connections: pooled reuse and bookkeeping ------------------------------------------------------------------
def test_a_kept_alive_connection_serves_the_next_call_under_its_own_deadline(
    serve: Callable[..., RawServer], rsa_key: rsa.RSAPrivateKey
) -> None:
    server = serve(keep_alive([0, 1.5]))
    jira = client(server, rsa_key, seconds=2.0)
    assert proxy_call(jira) == b'{"ok": "fine"}'  # the first call's deadline ends 2 s from now
    time.sleep(1.0)
    started = time.monotonic()
    assert dance_call(jira) == {"ok": "fine"}  # answered ~2.5 s in: past the first deadline
    assert time.monotonic() - started >= 1.4
    assert server.accepted == 1


def test_a_response_neither_read_nor_closed_is_forgotten_when_its_deadline_passes(
    serve: Callable[..., RawServer], rsa_key: rsa.RSAPrivateKey
) -> None:
    jira = client(serve(trickled_body), rsa_key, seconds=0.5)
    response, _ = jira.call_as("token", "secret", UserRequest("GET", "/rest/api/2/myself"))
    assert deadline.armed() == 1
    started = time.monotonic()
    while deadline.armed() and time.monotonic() - started < 0.5 + MARGIN:
        time.sleep(0.02)
    assert deadline.armed() == 0
    fails_with(lambda: jira.read_body(response, 1 << 20), "jira_timeout")


def test_nothing_stays_armed_after_success_timeout_or_errors(
    serve: Callable[..., RawServer], rsa_key: rsa.RSAPrivateKey
) -> None:
    fast = client(serve(keep_alive([0, 0, 0])), rsa_key)
    assert dance_call(fast) == {"ok": "fine"}
    assert deadline.armed() == 0
    response, _ = fast.call_as("token", "secret", UserRequest("GET", "/rest/api/2/myself"))
    response.close()  # the caller gave up on the body (the proxy does on an oauth_problem)
    assert deadline.armed() == 0
    fails_with(lambda: dance_call(client(serve(headers_then_hang), rsa_key, seconds=0.3)), "jira_timeout")
    assert deadline.armed() == 0
    closed = serve(short_body)
    closed.stop()
    fails_with(lambda: dance_call(client(closed, rsa_key)), "jira_unreachable")
    assert deadline.armed() == 0
    with pytest.raises(ZeroDivisionError), deadline.limit(5):
        fast.session.get(fast.base_url + "/rest/api/2/serverInfo", timeout=(1, 1))
        raise ZeroDivisionError
    assert deadline.armed() == 0


# -- TLS: the socket is shut down under the TLS layer, during the handshake too --------------------------------
@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context, folder / "cert.pem"


def tls_client(server: RawServer, key: rsa.RSAPrivateKey, ca: Path) -> JiraClient:
    session = new_session()
    session.verify = str(ca)
    return client(server, key, session=session)


def test_tls_answers_work_and_a_trickled_tls_body_fails_at_the_deadline(
    serve: Callable[..., RawServer], rsa_key: rsa.RSAPrivateKey, tls: tuple[ssl.SSLContext, Path]
) -> None:
    context, ca = tls

    def wrapped(inner: Handler) -> Handler:
        return lambda connection, server: inner(context.wrap_socket(connection, server_side=True), server)

    assert dance_call(tls_client(serve(wrapped(keep_alive([0])), context), rsa_key, ca)) == {"ok": "fine"}
    for call in (dance_call, proxy_call):
        jira = tls_client(serve(wrapped(trickled_body), context), rsa_key, ca)
        _, took = fails_with(lambda: call(jira), "jira_timeout")  # noqa: B023 - called right here
        assert took < DEADLINE + MARGIN


def test_a_trickled_tls_handshake_fails_at_the_deadline(
    serve: Callable[..., RawServer], rsa_key: rsa.RSAPrivateKey, tls: tuple[ssl.SSLContext, Path]
) -> None:
    def slow_handshake(connection: socket.socket, server: RawServer) -> None:
        connection.recv(65536)  # the ClientHello
        trickle(connection, server, b"\x16\x03\x03\x40\x00" + b"\x00" * 16384)  # a record that never completes

    context, ca = tls
    _, took = fails_with(lambda: dance_call(tls_client(serve(slow_handshake, context), rsa_key, ca)), "jira_timeout")
    assert DEADLINE - 0.1 <= took < DEADLINE + MARGIN


# -- settings and the constructor --------------------------------------------------------------------------------
def test_settings_and_the_default_deadline(monkeypatch: pytest.MonkeyPatch, rsa_key: rsa.RSAPrivateKey) -> None:
    settings = load_settings()
    assert (settings.jira_call_seconds, settings.request_budget_seconds) == (10.0, 24.0)
    monkeypatch.setenv("BROKER_JIRA_CALL_SECONDS", "6")
    monkeypatch.setenv("BROKER_REQUEST_BUDGET_SECONDS", "20")
    settings = load_settings()
    assert (settings.jira_call_seconds, settings.request_budget_seconds) == (6.0, 20.0)
    assert JiraClient("http://127.0.0.1:9/jira", "c", rsa_key, timeout=(1, 2)).deadline == 3
    assert isinstance(JiraTimeout(), BrokerError)
