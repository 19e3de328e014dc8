"""A fault-injecting HTTP proxy in front of a moto server: AWS trouble, on demand, on loopback.

boto3 talks to the proxy (``AWS_ENDPOINT_URL=proxy.endpoint``); the proxy forwards every
call to moto, except the ones a rule says to break. A rule picks calls by service and
operation (read from ``X-Amz-Target``, e.g. ``DynamoDB_20120810.PutItem``) and/or "from
the N-th mutating call on", and breaks them by

- ``"error"``: an AWS error answer (default 500 ``InternalServerError``; Secrets Manager:
  ``InternalServiceError``; KMS: ``KMSInternalException``; any code via ``error=``), JSON-protocol
  body and ``x-amzn-ErrorType``;
- ``"throttle"``: 400 ``ThrottlingException`` (or ``error="ProvisionedThroughputExceededException"``);
- ``"delay"``: wait ``delay`` seconds, then forward;
- ``"cut"``: close the connection without an answer.

``after_forwarding=True`` lets moto do the call first and breaks only the answer: the write
happened, and the caller cannot know it (a lost reply). A call is *mutating* unless its
operation starts with Get, Describe, List, Query, Scan or BatchGet, or is one of KMS's
cryptographic operations (Decrypt, GenerateDataKey, Encrypt: they change nothing). ``from_mutation=N``
counts the matching mutating calls made after the rule was set: the N-th and every later
one (boto's retries included) fail, like an outage that starts at step N of a multi-step write.

Every call is recorded as a :class:`Call` (service, operation, mutating, the fault applied).

Example::

    server, moto = start_moto()
    with FaultyAWS(moto) as proxy:                # proxy.endpoint: http://127.0.0.1:PORT
        os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint
        proxy.fail("error", service="dynamodb", operation="PutItem")
        proxy.heal()                              # no more faults
        proxy.fail("cut", from_mutation=3)       # step 3 of the next write, and all after it
        ...
        [c.operation for c in proxy.mutations()]  # ['PutItem', 'PutSecretValue', 'UpdateItem', ...]

In tests, the ``faulty_aws`` fixture gives a fresh moto, the proxy in front of it, the broker's
table and the two API keys of tests/conftest.py, with ``AWS_ENDPOINT_URL`` set to the proxy;
``faulty_broker`` adds the Chalice test client (``tests.conftest.Broker``). Make them
visible to a test module by name (an assignment, so ruff does not see a shadowed import)::

    from tests import faultyaws
    from tests.faultyaws import FaultyAWS

    faulty_aws = faultyaws.faulty_aws
    faulty_broker = faultyaws.faulty_broker

    def test_x(faulty_broker: Broker, faulty_aws: FaultyAWS) -> None:
        faulty_aws.fail("throttle", service="dynamodb")
        assert faulty_broker.call("GET", "/v1/teams/acme/jira").status == 503
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from chalice.test import Client

from chalicelib import apikeys, aws, resources, sealing
from chalicelib.apikeys import save_api_key
from chalicelib.store import Store
from scripts.local_aws import create_kms_key, create_table, start_moto
from tests.conftest import ACME_KEY, API_KEY, TABLE, Broker

MODES = ("error", "throttle", "delay", "cut")
READ_PREFIXES = ("Get", "Describe", "List", "Query", "Scan", "BatchGet")
# KMS's cryptographic operations change no state: never a step of a multi-step write.
KMS_CRYPTO = frozenset({"Decrypt", "GenerateDataKey", "Encrypt"})
# X-Amz-Target prefixes that are not the service's boto3 name (KMS's JSON API is "TrentService").
_TARGET_SERVICES = {"trentservice": "kms"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "expect", "te", "upgrade"}
_ERROR_STATUS = {
    "ThrottlingException": 400,
    "ProvisionedThroughputExceededException": 400,
    "RequestLimitExceeded": 400,
    "TransactionConflictException": 400,
    "ServiceUnavailable": 503,
}
_SCOPE = re.compile(r"Credential=[^/,]+/[^/,]+/[^/,]+/([^/,]+)/")


@dataclass(frozen=True)
class Call:
    """One call the proxy saw. ``fault``: the mode applied to it, or None (forwarded untouched)."""

    service: str
    operation: str
    mutating: bool
    fault: str | None = None
    forwarded: bool = True  # whether moto received it (a "delay", or after_forwarding=True)

    @property
    def failed(self) -> bool:
        """Whether the caller got no normal answer (an error or a cut, not a mere delay)."""
        return self.fault not in (None, "delay")


@dataclass
class Rule:
    """Which calls to break and how; see :meth:`FaultyAWS.fail`."""

    mode: str
    service: str | None = None
    operation: str | None = None
    from_mutation: int | None = None
    times: int | None = None
    error: str | None = None
    delay: float = 0.5
    after_forwarding: bool = False
    mutations_seen: int = 0  # matching mutating calls since the rule was set
    hits: int = 0  # calls it broke

    def _selects(self, service: str, operation: str) -> bool:
        return (self.service in (None, service)) and (self.operation in (None, operation))

    def observe(self, service: str, operation: str, mutating: bool) -> None:
        if mutating and self._selects(service, operation):
            self.mutations_seen += 1

    def applies(self, service: str, operation: str, mutating: bool) -> bool:
        if not self._selects(service, operation) or (self.times is not None and self.hits >= self.times):
            return False
        if self.from_mutation is None:
            return True
        return mutating and self.mutations_seen >= self.from_mutation


def is_mutating(operation: str) -> bool:
    return bool(operation) and not operation.startswith(READ_PREFIXES) and operation not in KMS_CRYPTO


def identify(headers: Any, path: str) -> tuple[str, str]:
    """(service, operation) of a boto3 call: ``DynamoDB_20120810.PutItem`` -> ("dynamodb", "PutItem"),
    ``TrentService.Decrypt`` -> ("kms", "Decrypt")."""
    target = headers.get("X-Amz-Target") or ""
    prefix, _, operation = target.rpartition(".")
    if prefix:
        service = prefix.split("_")[0].lower()
        return _TARGET_SERVICES.get(service, service), operation
    scope = _SCOPE.search(headers.get("Authorization") or "")
    return (scope.group(1) if scope else ""), ""


class FaultyAWS:
    """The proxy: ``start()``/``stop()`` or a ``with`` block; ``endpoint`` is its URL."""

    def __init__(self, upstream: str, host: str = "127.0.0.1") -> None:
        parts = urlsplit(upstream)
        if parts.hostname not in LOOPBACK or host not in LOOPBACK:
            raise ValueError("FaultyAWS forwards only between loopback addresses.")
        self.moto = upstream
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._host = host
        self._rules: list[Rule] = []
        self._calls: list[Call] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.endpoint = ""

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> FaultyAWS:
        server = ThreadingHTTPServer((self._host, 0), _Handler)
        server.daemon_threads = True
        server.proxy = self  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server
        self.endpoint = f"http://{self._host}:{server.server_address[1]}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultyAWS:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- faults ----------------------------------------------------------------------------
    def fail(
        self,
        mode: str = "error",
        *,
        service: str | None = None,
        operation: str | None = None,
        from_mutation: int | None = None,
        times: int | None = None,
        error: str | None = None,
        delay: float = 0.5,
        after_forwarding: bool = False,
    ) -> Rule:
        """Break matching calls from now on (until :meth:`heal`). Rules are tried in the order given.

        ``service``: "dynamodb", "secretsmanager", "kms"; ``operation``: "PutItem", "GetSecretValue", ...;
        ``from_mutation``: the N-th matching mutating call after now, and every later one;
        ``times``: break only this many calls; ``error``: the AWS error code for "error"/"throttle".
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        rule = Rule(mode, service, operation, from_mutation, times, error, delay, after_forwarding)
        with self._lock:
            self._rules.append(rule)
        return rule

    def heal(self) -> None:
        """Forget every rule: all calls are forwarded again."""
        with self._lock:
            self._rules.clear()

    @contextmanager
    def failing(self, mode: str = "error", **rule: Any) -> Iterator[Rule]:
        """:meth:`fail` for the ``with`` block only."""
        made = self.fail(mode, **rule)
        try:
            yield made
        finally:
            with self._lock:
                if made in self._rules:
                    self._rules.remove(made)

    # -- what happened -------------------------------------------------------------------------
    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def mutations(self) -> list[Call]:
        """The mutating calls, in order (retries included): the steps of multi-step writes."""
        return [c for c in self.calls if c.mutating]

    def forget_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def direct(self, service: str) -> Any:
        """A boto3 client straight to moto (no faults, not recorded): to look at or prepare state."""
        return boto3.client(service, endpoint_url=self.moto)

    # -- used by the handler --------------------------------------------------------------------
    def _decide(self, service: str, operation: str, mutating: bool) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                rule.observe(service, operation, mutating)
            for rule in self._rules:
                if rule.applies(service, operation, mutating):
                    rule.hits += 1
                    return rule
            return None

    def _record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as boto3 uses it

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read the call log instead
        pass

    def _proxy(self) -> None:
        proxy: FaultyAWS = self.server.proxy  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        service, operation = identify(self.headers, self.path)
        mutating = is_mutating(operation)
        rule = proxy._decide(service, operation, mutating) if not self.path.startswith("/moto-api") else None
        mode = rule.mode if rule else None
        forwarded = rule is None or mode == "delay" or rule.after_forwarding
        proxy._record(Call(service, operation, mutating, mode, forwarded))
        if rule is not None and mode == "delay":
            time.sleep(rule.delay)
        answer = self._forward(proxy, body) if forwarded else None
        if rule is None or mode == "delay":
            assert answer is not None
            self._send(*answer)
        elif mode == "cut":
            self.close_connection = True  # no answer at all: the client sees the connection closed
        else:
            self._send(*_aws_error(service, rule))

    def _forward(self, proxy: FaultyAWS, body: bytes) -> tuple[int, dict[str, str], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        connection = http.client.HTTPConnection(*proxy._upstream, timeout=30)
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            sent = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
            return response.status, sent, response.read()
        finally:
            connection.close()

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _proxy


_INTERNAL_ERRORS = {"secretsmanager": "InternalServiceError", "kms": "KMSInternalException"}


def _aws_error(service: str, rule: Rule) -> tuple[int, dict[str, str], bytes]:
    """An AWS JSON-protocol error answer, as DynamoDB and Secrets Manager send them."""
    default = "ThrottlingException" if rule.mode == "throttle" else None
    code = rule.error or default or _INTERNAL_ERRORS.get(service, "InternalServerError")
    status = _ERROR_STATUS.get(code, 500)
    body = json.dumps({"__type": code, "message": f"Injected by FaultyAWS: {code}"}).encode()
    protocol = "1.0" if service == "dynamodb" else "1.1"
    headers = {
        "Content-Type": f"application/x-amz-json-{protocol}",
        "x-amzn-ErrorType": code,
        "x-amzn-RequestId": str(uuid.uuid4()),
    }
    return status, headers, body


# -- pytest fixtures ----------------------------------------------------------------------------
def _forget_cached_clients() -> None:
    aws.reset_clients()
    resources.forget_cached_signers()
    apikeys.forget_cached_keys()
    sealing.forget_cached_sealers()


@pytest.fixture
def faulty_aws(settings_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyAWS]:
    """A fresh moto behind a :class:`FaultyAWS`, with the broker's table and the two API keys.

    ``AWS_ENDPOINT_URL`` points at the proxy; the set-up went straight to moto, so
    ``proxy.calls`` starts empty.
    """
    server, moto = start_moto()
    try:
        # moto's state lives in this process, shared with mock_aws: start from nothing.
        requests.post(f"{moto}/moto-api/reset", timeout=10).raise_for_status()
        with FaultyAWS(moto) as proxy:
            create_table(proxy.direct("dynamodb"), TABLE)
            create_kms_key(proxy.direct("kms"), "local")
            store = Store(TABLE, client=proxy.direct("dynamodb"))
            save_api_key(store, API_KEY, name="all-teams")
            save_api_key(store, ACME_KEY, name="acme-bot", team="acme")
            monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
            _forget_cached_clients()
            yield proxy
    finally:
        _forget_cached_clients()
        requests.post(f"{moto}/moto-api/reset", timeout=10)
        server.stop()


@pytest.fixture
def faulty_broker(faulty_aws: FaultyAWS) -> Iterator[Broker]:
    """The app through Chalice's test client, its AWS calls going through ``faulty_aws``."""
    from app import app

    with Client(app, stage_name="local") as client:
        yield Broker(client)
