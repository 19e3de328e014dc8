"""No log line, response or error message ever holds a private key, a token or a link token."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from chalicelib.store import Store
from tests.conftest import API_KEY, Broker, _pem, request_token_of
from tests.fakejira import FakeJira
from tests.stored import stored_tokens


def _pem_lines(pem: str) -> list[str]:
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def test_a_whole_life_cycle_leaks_nothing(
    broker: Broker,
    jira: FakeJira,
    private_pem: str,
    other_rsa_key: rsa.RSAPrivateKey,
    store: Store,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    answers: list[Any] = []
    # Never in a log line nor in any response:
    secrets: list[str] = [API_KEY, *_pem_lines(private_pem), *_pem_lines(_pem(other_rsa_key))]
    # Never in a log line; a response may hand them to their owner (the link, Jira's authorize URL):
    log_only: list[str] = []

    def keep(answer: Any) -> Any:
        answers.append(answer)
        return answer

    # A generated key pair, then a failing setup (wrong key: Jira reports its base string), then a good one.
    keep(broker.call("POST", "/v1/teams/acme/jira/key-pair", {}))
    assert keep(broker.setup(jira, _pem(other_rsa_key))).status == 422
    assert keep(broker.setup(jira, private_pem, user="alice")).status == 201

    # Alice connects; the callback is replayed.
    link = broker.connect_link()
    log_only.append(link.rsplit("/", 1)[1])
    keep(broker.browser("GET", link))
    rt = request_token_of(keep(broker.click_continue(link)).headers["Location"])
    log_only.append(rt)
    callback = jira.approve(rt, "alice")
    verifier = parse_qs(urlsplit(callback).query)["oauth_verifier"][0]
    assert keep(broker.browser("GET", callback)).status == 200
    keep(broker.browser("GET", callback))
    connection = stored_tokens()
    secrets += [verifier, connection["access_token"], connection["token_secret"], connection["session_handle"]]

    # Bob's exchange fails with signature_invalid, whose base string holds his request token and verifier.
    link = broker.connect_link(user="bob")
    log_only.append(link.rsplit("/", 1)[1])
    rt = broker.start_dance(link)
    callback = jira.approve(rt, "bob")
    log_only.append(rt)
    secrets += [parse_qs(urlsplit(callback).query)["oauth_verifier"][0]]
    jira.signing_base_url = "https://elsewhere.example.com/jira"
    assert keep(broker.browser("GET", callback)).status == 422

    keep(broker.call("GET", "/v1/teams/acme/users/alice/jira"))
    keep(broker.call("GET", "/v1/teams/acme/jira"))

    # Alice's calls through the proxy; then Jira revokes her token and the proxy drops the connection.
    proxy = "/v1/teams/acme/users/alice/jira/proxy"
    jira.signing_base_url = None
    assert keep(broker.call("POST", proxy, {"method": "GET", "path": "/rest/api/2/myself"})).status == 200
    jira.revoke_access_token(connection["access_token"])
    assert keep(broker.call("POST", proxy, {"method": "GET", "path": "/rest/api/2/myself"})).status == 401

    captured = capfd.readouterr()
    logs = "\n".join([captured.out, captured.err, caplog.text] + [str(r.__dict__) for r in caplog.records])
    responses = "\n".join(a.text + str(a.headers) for a in answers)
    assert "user connected" in logs and "jira rejected the signature" in logs  # the logs are really captured
    assert "connection dropped by jira" in logs
    assert "oauth_token%3D[redacted]" in logs  # Jira's base string was logged, scrubbed
    for secret in secrets + log_only:
        assert len(secret) >= 6
        assert secret not in logs, f"a secret reached the logs: {secret[:4]}..."
    for secret in secrets:
        assert secret not in responses, f"a secret reached a response: {secret[:4]}..."


def test_an_unexpected_exception_is_logged_redacted(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from chalicelib import integrations
    from chalicelib.logs import logger

    written = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", written)  # what the Lambda writes to CloudWatch

    def fail(team: str) -> None:
        raise RuntimeError("boom while calling /connect/SECRETLINKTOKEN?oauth_token=SECRETTOKEN123")

    monkeypatch.setattr(integrations, "get_integration", fail)
    answer = broker.call("GET", "/v1/teams/acme/jira")
    assert answer.status == 500 and answer.error_code == "internal_error"
    logged = written.getvalue()
    assert "RuntimeError" in logged and "Traceback" in logged  # the traceback is logged ...
    assert "SECRETTOKEN123" not in logged and "SECRETLINKTOKEN" not in logged  # ... redacted
    assert "SECRET" not in answer.text


def test_an_oauth2_life_cycle_leaks_nothing(
    broker: Broker,
    jira: FakeJira,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Setup (a refused secret, then the right one), connect, a replayed callback, refresh, revoke."""
    from tests.test_oauth2_flow import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, expire_access_token, setup_oauth2, start

    caplog.set_level(logging.DEBUG)
    jira.add_oauth2_client(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI)
    answers: list[Any] = []

    def keep(answer: Any) -> Any:
        answers.append(answer)
        return answer

    assert keep(setup_oauth2(broker, jira, client_secret="wrong-secret-123456")).status == 422
    assert keep(setup_oauth2(broker, jira, user="alice")).status == 201
    redirect = jira.oauth2_approve(start(broker), "alice")
    assert keep(broker.browser("GET", redirect)).status == 200
    assert keep(broker.browser("GET", redirect)).status == 410  # replayed
    first = stored_tokens()
    expire_access_token()
    proxy = "/v1/teams/acme/users/alice/jira/proxy"
    assert keep(broker.call("POST", proxy, {"method": "GET", "path": "/rest/api/2/myself"})).status == 200
    second = stored_tokens()
    keep(broker.call("GET", "/v1/teams/acme/jira"))
    keep(broker.call("GET", "/v1/teams/acme/users/alice/jira"))
    jira.revoke_oauth2_grant("alice")
    assert keep(broker.call("POST", proxy, {"method": "GET", "path": "/rest/api/2/myself"})).status == 401

    query = parse_qs(urlsplit(redirect).query)
    secrets = [CLIENT_SECRET, "wrong-secret-123456", query["code"][0], *first.values(), *second.values()]
    verifiers = [call["code_verifier"] for call in jira.oauth2_token_calls("authorization_code")]
    log_only = [query["state"][0], *verifiers]
    captured = capfd.readouterr()
    logs = "\n".join([captured.out, captured.err, caplog.text] + [str(r.__dict__) for r in caplog.records])
    responses = "\n".join(a.text + str(a.headers) for a in answers)
    assert "user connected" in logs and "connection dropped by jira" in logs  # the logs are really captured
    for secret in secrets + log_only:
        assert len(secret) >= 6
        assert secret not in logs, f"a secret reached the logs: {secret[:4]}..."
    for secret in secrets:
        assert secret not in responses, f"a secret reached a response: {secret[:4]}..."
