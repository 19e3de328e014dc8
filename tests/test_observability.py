"""What operations people see: one log line per request, the authorizer's decision, EMF metrics; no secrets."""

from __future__ import annotations

import io
import json
import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from chalicelib import observability
from chalicelib.logs import logger
from chalicelib.store import Store
from tests.conftest import ACME_KEY, API_KEY, Broker, request_token_of
from tests.fakejira import FakeJira
from tests.stored import stored_tokens

PROXY = "/v1/teams/acme/users/alice/jira/proxy"
MYSELF = {"method": "GET", "path": "/rest/api/2/myself"}


class Output:
    """What the API function writes: log lines (the logger's stream) and everything printed (EMF)."""

    def __init__(self, written: io.StringIO, capsys: pytest.CaptureFixture[str]) -> None:
        self.written = written
        self.capsys = capsys
        self.printed = ""
        self.errors = ""

    def read(self) -> str:
        """Everything so far: log lines, stdout (EMF) and stderr."""
        captured = self.capsys.readouterr()
        self.printed += captured.out
        self.errors += captured.err
        return "\n".join([self.written.getvalue(), self.printed, self.errors])

    def lines(self, message: str) -> list[dict[str, Any]]:
        self.read()
        parsed = [json.loads(line) for line in self.written.getvalue().splitlines() if line.startswith("{")]
        return [line for line in parsed if line.get("message") == message]

    def requests(self) -> list[dict[str, Any]]:
        return self.lines("request")

    def emf(self) -> list[dict[str, Any]]:
        self.read()
        parsed = [json.loads(line) for line in self.printed.splitlines() if line.startswith('{"_aws"')]
        return parsed

    def clear(self) -> None:
        self.read()
        self.written.seek(0)
        self.written.truncate()
        self.printed = self.errors = ""


@pytest.fixture
def observed(broker: Broker) -> Broker:
    """The broker, with observability.per_request wired outside broker_envelope as app.py does."""
    from app import app

    handlers = [func for func, _ in app.middleware_handlers]
    assert observability.per_request in handlers
    assert handlers.index(observability.per_request) < [getattr(f, "__name__", "") for f in handlers].index(
        "broker_envelope"
    )
    return broker


@pytest.fixture
def output(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Output:
    written = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", written)  # what the Lambda writes to CloudWatch
    return Output(written, capsys)


@pytest.fixture
def emf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ask for the metrics outside a Lambda, as an operator trying it locally would."""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")


def _connect(broker: Broker, jira: FakeJira, private_pem: str) -> None:
    assert broker.setup(jira, private_pem).status == 201
    rt = broker.start_dance(broker.connect_link())
    assert broker.browser("GET", jira.approve(rt, "alice")).status == 200


def _metric_sets(blobs: list[dict[str, Any]]) -> list[tuple[list[str], dict[str, Any]]]:
    """Each EMF blob as (its dimension sets' names, its values)."""
    out = []
    for blob in blobs:
        (directive,) = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "JiraOAuthBroker"
        for names in directive["Dimensions"]:
            out.append((sorted(names), blob))
    return out


def _values(blobs: list[dict[str, Any]], metric: str, **dimensions: str) -> list[float]:
    """The values of ``metric`` published with exactly these dimensions (service implied)."""
    wanted = sorted(["service", *dimensions])
    found: list[float] = []
    for names, blob in _metric_sets(blobs):
        if names == wanted and metric in blob and all(blob.get(k) == v for k, v in dimensions.items()):
            assert blob["service"] == "jira-oauth-broker"
            found += blob[metric]
    return found


# -- the per-request line ------------------------------------------------------------------------
def test_one_line_per_request_with_the_route_template_and_jira_fields(
    observed: Broker, jira: FakeJira, private_pem: str, output: Output
) -> None:
    _connect(observed, jira, private_pem)
    output.clear()

    answer = observed.call("POST", PROXY, MYSELF)
    assert answer.status == 200
    (line,) = output.requests()
    assert line["route"] == "/v1/teams/{team}/users/{user}/jira/proxy"
    assert line["method"] == "POST" and line["status"] == 200 and "code" not in line
    assert line["team"] == "acme" and line["key_name"] == "all-teams"
    assert line["jira_calls"] == 1 and line["jira_status"] == 200 and line["jira_latency_ms"] > 0
    assert 0 < line["jira_latency_ms"] <= line["latency_ms"]
    assert line["correlation_id"] == line["request_id"]
    assert line["level"] == "INFO" and line["service"] == "jira-oauth-broker"

    # A broker error: its code; a request that never reached Jira has no Jira fields.
    output.clear()
    answer = observed.call("POST", "/v1/teams/acme/users/nobody/jira/proxy", MYSELF, key=ACME_KEY)
    assert answer.status == 404
    (line,) = output.requests()
    assert line["code"] == answer.error_code and line["status"] == 404 and line["key_name"] == "acme-bot"
    assert "jira_calls" not in line and "jira_status" not in line

    # A route without a team, and one the authorizer refused (API Gateway answers: no line from the function).
    output.clear()
    assert observed.call("GET", "/health", key=None).status == 200
    assert observed.call("GET", "/v1/teams/acme/jira", key="jb_not-a-key").status == 403
    (line,) = output.requests()
    assert line["route"] == "/health" and "team" not in line and line["status"] == 200


def test_every_log_line_of_a_request_carries_its_request_id(
    observed: Broker, jira: FakeJira, private_pem: str, output: Output
) -> None:
    _connect(observed, jira, private_pem)
    lines = [json.loads(line) for line in output.written.getvalue().splitlines() if line.startswith("{")]
    connected = next(line for line in lines if line["message"] == "user connected")
    request = next(line for line in lines if line["message"] == "request" and line["route"] == "/oauth/callback")
    assert connected["correlation_id"] == request["request_id"]
    output.clear()
    logger.info("outside any request")
    (outside,) = output.lines("outside any request")
    assert "correlation_id" not in outside


def test_jira_failures_are_named_in_the_line(
    observed: Broker, jira: FakeJira, private_pem: str, output: Output, emf: None
) -> None:
    _connect(observed, jira, private_pem)

    jira.cut_body("/rest/api/2/myself")  # Jira stops part-way through its answer
    output.clear()
    answer = observed.call("POST", PROXY, MYSELF)
    assert answer.status == 502 and answer.error_code == "jira_bad_response"
    (line,) = output.requests()
    assert line["code"] == "jira_bad_response" and line["jira_error"] == "bad_response"
    assert line["jira_status"] == 200 and line["level"] == "WARNING"
    blobs = output.emf()
    assert _values(blobs, "JiraErrors") == [1.0]  # the alarm's metric: service only
    assert _values(blobs, "JiraErrors", kind="bad_response") == [1.0]
    assert _values(blobs, "Errors", route=line["route"], code="jira_bad_response") == [1.0]
    jira.heal_bodies()

    jira.fail_next("signature_invalid")  # the Application Link's key changed in Jira
    output.clear()
    answer = observed.call("POST", PROXY, MYSELF)
    assert answer.error_code == "integration_broken"
    (line,) = output.requests()
    assert line["jira_error"] == "oauth_problem" and line["jira_problem"] == "signature_invalid"
    assert line["jira_status"] == 401
    assert _values(output.emf(), "JiraErrors", kind="oauth_problem") == [1.0]

    jira.stop()  # nobody answers at Jira's address
    output.clear()
    answer = observed.call("POST", PROXY, MYSELF)
    assert answer.error_code == "jira_unreachable"
    (line,) = output.requests()
    assert line["jira_error"] == "unreachable" and "jira_status" not in line
    assert _values(output.emf(), "JiraErrors", kind="unreachable") == [1.0]


# -- metrics ----------------------------------------------------------------------------------
def test_metrics_per_request_in_emf(
    observed: Broker, jira: FakeJira, private_pem: str, store: Store, output: Output, emf: None
) -> None:
    assert observed.setup(jira, private_pem).status == 201
    rt = observed.start_dance(observed.connect_link())
    output.clear()
    assert observed.browser("GET", jira.approve(rt, "alice")).status == 200
    blobs = output.emf()
    assert _values(blobs, "ConnectionsMade") == [1.0]
    assert _values(blobs, "Requests", route="/oauth/callback") == [1.0]
    assert _values(blobs, "Requests", route="/oauth/callback", code="none") == [1.0]
    assert len(_values(blobs, "JiraLatency")) == 2  # the access-token exchange and /myself

    output.clear()
    assert observed.call("POST", PROXY, MYSELF).status == 200
    blobs = output.emf()
    route = "/v1/teams/{team}/users/{user}/jira/proxy"
    assert _values(blobs, "Requests") == [1.0] and _values(blobs, "Errors") == [0.0]
    assert _values(blobs, "ProxiedCalls") == [1.0]
    assert len(_values(blobs, "JiraLatency")) == 1 and _values(blobs, "JiraErrors") == []
    assert _values(blobs, "Requests", route=route) == [1.0] and _values(blobs, "Errors", route=route) == [0.0]
    base = next(blob for names, blob in _metric_sets(blobs) if names == ["service"])
    assert {"route", "code", "kind"}.isdisjoint(base)  # the service-level set has only `service`

    jira.revoke_access_token(stored_tokens()["access_token"])
    output.clear()
    answer = observed.call("POST", PROXY, MYSELF)
    assert answer.status == 401 and answer.error_code == "reauthorization_required"
    blobs = output.emf()
    assert _values(blobs, "Reauthorizations") == [1.0]
    assert _values(blobs, "Errors") == [1.0] and _values(blobs, "JiraErrors") == [1.0]
    assert _values(blobs, "Errors", route=route, code="reauthorization_required") == [1.0]
    assert _values(blobs, "JiraErrors", kind="oauth_problem") == [1.0]


def test_no_metrics_are_printed_outside_a_lambda_unless_asked(
    observed: Broker, monkeypatch: pytest.MonkeyPatch, output: Output
) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    observed.call("GET", "/health", key=None)
    assert output.requests() and output.emf() == []
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "jira-oauth-broker-dev")  # in a Lambda: printed
    observed.call("GET", "/health", key=None)
    assert _values(output.emf(), "Requests", route="/health") == [1.0]
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")  # unless switched off
    output.clear()
    observed.call("GET", "/health", key=None)
    assert output.emf() == []


# -- the authorizer ---------------------------------------------------------------------------
def test_the_authorizer_decision_names_the_key_never_the_key_itself(output: Output) -> None:
    record = {"name": "acme-bot", "team": "acme", "key_hash": "h" * 64, "key": ACME_KEY}
    observability.authorizer_decision("allow", record)
    observability.authorizer_decision("allow", {"name": "all-teams", "key_hash": "g" * 64})
    observability.authorizer_decision("deny")
    observability.authorizer_decision("unavailable")
    scoped, everything, denied, unavailable = output.lines("authorizer decision")
    assert scoped["decision"] == "allow" and scoped["key_name"] == "acme-bot" and scoped["team_scope"] == "acme"
    assert everything["team_scope"] == "*"
    assert denied["decision"] == "deny" and "key_name" not in denied
    assert unavailable["decision"] == "unavailable" and unavailable["level"] == "WARNING"
    logged = output.read()
    assert ACME_KEY not in logged and "h" * 64 not in logged and "g" * 64 not in logged


def test_the_authorizer_logs_each_decision(broker: Broker, output: Output) -> None:
    assert broker.call("GET", "/v1/teams/acme/jira", key=ACME_KEY).status == 404
    assert broker.call("GET", "/v1/teams/acme/jira", key="jb_not-a-key").status == 403
    decisions = output.lines("authorizer decision")
    assert [d["decision"] for d in decisions] == ["allow", "deny"]
    assert decisions[0]["key_name"] == "acme-bot" and decisions[0]["team_scope"] == "acme"
    assert ACME_KEY not in output.read() and "jb_not-a-key" not in output.read()


# -- nothing leaks ------------------------------------------------------------------------------
def test_per_request_lines_and_metrics_leak_nothing(
    observed: Broker,
    jira: FakeJira,
    private_pem: str,
    store: Store,
    output: Output,
    emf: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    assert observed.setup(jira, private_pem, user="alice").status == 201
    link = observed.connect_link()
    link_token = link.rsplit("/", 1)[1]
    assert observed.browser("GET", link).status == 200
    rt = request_token_of(observed.click_continue(link).headers["Location"])
    callback = jira.approve(rt, "alice")
    verifier = parse_qs(urlsplit(callback).query)["oauth_verifier"][0]
    assert observed.browser("GET", callback).status == 200
    observed.browser("GET", callback)  # replayed
    cookies = list(observed.cookies.values())
    setup_link = observed.call("POST", "/v1/teams/acme/jira/setup-link", {"user": "alice"}).json["url"]
    setup_token = setup_link.rsplit("/", 1)[1]
    observed.browser("GET", setup_link)
    connection = stored_tokens()
    assert observed.call("POST", PROXY, {**MYSELF, "query": {"expand": "groups"}}).status == 200
    signed = {"method": "GET", "url": jira.base_url + "/rest/api/2/myself"}
    assert observed.call("POST", "/v1/teams/acme/users/alice/jira/sign", signed).status == 200
    jira.revoke_access_token(connection["access_token"])
    assert observed.call("POST", PROXY, MYSELF).status == 401

    logs = "\n".join([output.read(), caplog.text, *(str(r.__dict__) for r in caplog.records)])
    routes = {line["route"] for line in output.requests()}
    assert {
        "/connect/{token}",
        "/oauth/callback",
        "/setup/{token}",
        "/v1/teams/{team}/users/{user}/jira/proxy",
        "/v1/teams/{team}/users/{user}/jira/sign",
    } <= routes  # the lines are really there
    assert _values(output.emf(), "ConnectionsMade") == [1.0]  # the metrics are really there
    secrets = [
        API_KEY,
        link_token,
        setup_token,
        rt,
        verifier,
        connection["access_token"],
        connection["token_secret"],
        connection["session_handle"],
        *cookies,
    ]
    for secret in secrets:
        assert len(secret) >= 6
        assert secret not in logs, f"a secret reached the logs: {secret[:4]}..."
    # No query string or Jira path in what the broker writes (moto's own DEBUG records in caplog aside).
    assert "expand=groups" not in output.read() and "/rest/api/2/myself" not in output.printed
