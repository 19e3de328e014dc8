"""End to end: `make run`'s runner (embedded moto + real `chalice local`), driven over plain HTTP
as a chat bot and a browser would, against the fake Jira on loopback."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import CONSUMER_KEY, public_pem
from tests.fakejira import FAKE_PNG, FakeJira
from tests.localstack import LocalStack, apikeys_cli, local_stack

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "jb_e2e-key-000000000000000000000000000000000"


@pytest.fixture
def local_broker(tmp_path: Path) -> Iterator[LocalStack]:
    with local_stack(tmp_path / "run_local.log", API_KEY, BROKER_RETURN_TO_ORIGINS="https://chat.example.com") as stack:
        yield stack


_apikeys = apikeys_cli
SITE = "/v1/teams/acme/users/alice/jira/site"


def _as_bot(stack: LocalStack, method: str, path: str, accept: str | None = None, **kwargs: Any) -> requests.Response:
    """A call with the stack's key and exactly this Accept (None: no Accept header at all)."""
    headers: dict[str, str | None] = {"Authorization": f"Bearer {stack.api_key}", "Accept": accept}
    return requests.request(method, stack.url + path, headers=headers, timeout=30, **kwargs)


def _form_action(html: str) -> str:
    match = re.search(r'<form method=post action="([^"]+)"', html)
    assert match, html
    return match.group(1)


def test_whole_flow_through_chalice_local(
    local_broker: LocalStack, rsa_key: rsa.RSAPrivateKey, private_pem: str
) -> None:
    with FakeJira(context_path="/jira") as jira:
        jira.add_consumer(CONSUMER_KEY, public_pem(rsa_key))
        jira.add_user("alice", key="JIRAUSER10100", display_name="Alice Example", email="alice@example.com")

        # The service API key guards the API (chalice local runs the built-in authorizer).
        # API Gateway's own answers come in the broker's envelope, as deployed (infra's Gateway Responses).
        for key, status, code in ((None, 401, "unauthorized"), ("nope", 403, "forbidden")):
            refused = local_broker.api("GET", "/v1/teams/acme/jira", key=key)
            assert refused.status_code == status and refused.headers["X-Broker-Error"] == code
            assert refused.json()["error"]["code"] == code
            # Jira client libraries print errorMessages: the Gateway Responses carry them too.
            assert refused.json()["errorMessages"] == [f"{code}: {refused.json()['error']['message']}"]
        unknown = local_broker.api("GET", "/v1/no/such/route", key="jb_secret-never-echoed")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
        assert unknown.json()["errors"] == {} and unknown.json()["errorMessages"][0].startswith("not_found: ")
        assert "jb_secret-never-echoed" not in unknown.text
        missing = local_broker.api("GET", "/v1/teams/acme/jira")
        assert missing.status_code == 404 and missing.headers["X-Broker-Error"] == "integration_not_found"
        assert missing.json()["error"]["code"] == "integration_not_found"

        # The chat bot sets the team up for its first user.
        setup = local_broker.api(
            "PUT",
            "/v1/teams/acme/jira",
            json={"base_url": jira.base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem, "user": "alice"},
        )
        assert setup.status_code == 201, setup.text
        connect_url = setup.json()["connect_url"]
        assert connect_url.startswith(local_broker.url + "/connect/")

        # The browser opens the link, clicks Continue, approves in Jira and comes back.
        browser = requests.Session()
        page = browser.get(connect_url, timeout=15)
        assert page.status_code == 200 and "alice" in page.text and "Continue to Jira" in page.text
        action = _form_action(page.text)
        assert action.startswith(local_broker.url + "/connect/")
        to_jira = browser.post(
            action, timeout=15, allow_redirects=False, headers={"Sec-Fetch-Site": "same-origin", "Origin": "null"}
        )
        assert to_jira.status_code == 303, to_jira.text
        authorize = browser.get(to_jira.headers["Location"], timeout=15)
        assert authorize.status_code == 200
        token = re.search(r'name="oauth_token" value="([^"]+)"', authorize.text)
        assert token, authorize.text
        back = browser.post(
            to_jira.headers["Location"].split("?")[0],
            timeout=15,
            allow_redirects=False,
            data={"oauth_token": token.group(1), "username": "alice", "decision": "approve"},
        )
        assert back.status_code == 302 and back.headers["Location"].startswith(local_broker.url + "/oauth/callback?")
        done = browser.get(back.headers["Location"], timeout=15)
        assert done.status_code == 200 and "Connected as Alice Example" in done.text

        # The bot sees the connection; the used link and the replayed callback are refused.
        status = local_broker.api("GET", "/v1/teams/acme/users/alice/jira")
        assert status.status_code == 200 and status.json()["jira_user"]["name"] == "alice"
        assert browser.get(connect_url, timeout=15).status_code == 410
        assert browser.get(back.headers["Location"], timeout=15).status_code == 410

        # Jira as alice through the transparent site ({proxy+}, matched by scripts/chalice_local.py) and the
        # envelope proxy: JSON as text, Jira's bytes as bytes for the Accept client libraries send, or none.
        me = _as_bot(local_broker, "GET", f"{SITE}/rest/api/2/myself?x=1", accept="application/json, */*")
        assert me.status_code == 200 and me.json()["name"] == "alice", me.text
        assert me.headers["Content-Type"].startswith("application/json")
        sent = jira.requests[-1]
        assert sent.path.endswith("/rest/api/2/myself") and sent.query == {"x": ["1"]}
        echo = _as_bot(local_broker, "GET", f"{SITE}/rest/api/2/thing/bob%40example.com")
        assert echo.status_code == 200 and echo.json()["path"] == "/rest/api/2/thing/bob@example.com", echo.text
        for accept in ("application/json, */*", "*/*", None):
            png = _as_bot(local_broker, "GET", f"{SITE}/rest/fake/binary", accept=accept)
            assert png.status_code == 200 and png.content == FAKE_PNG, (accept, png.content[:40])
            assert png.headers["Content-Type"] == "image/png"
        proxied = _as_bot(
            local_broker,
            "POST",
            "/v1/teams/acme/users/alice/jira/proxy",
            accept="application/json, */*",
            json={"method": "GET", "path": "/rest/fake/binary"},
        )
        assert proxied.status_code == 200 and proxied.content == FAKE_PNG

    # The API key command works against the local stack (it finds make run's moto by itself).
    key = _apikeys("create", "--name", "bot", "--team", "acme").strip().splitlines()[-1]
    assert local_broker.api("GET", "/v1/teams/acme/jira", key=key).status_code == 200
    assert local_broker.api("GET", "/v1/teams/globex/jira", key=key).headers["X-Broker-Error"] == "team_forbidden"
    unused = _apikeys("create", "--name", "spare").strip().splitlines()[-1]
    assert "spare" in _apikeys("list") and unused not in _apikeys("list")
    _apikeys("revoke", "--name", "spare")
    assert local_broker.api("GET", "/v1/teams/acme/jira", key=unused).status_code == 403

    # Ctrl-C stops everything the runner started.
    os.killpg(local_broker.process.pid, signal.SIGINT)
    assert local_broker.process.wait(timeout=20) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(local_broker.url + "/health", timeout=2)

    # chalice local's access log went through the redaction.
    output = local_broker.output()
    assert "GET /connect/[redacted]" in output and "oauth_token=[redacted]" in output
    assert connect_url.rsplit("/", 1)[1] not in output and token.group(1) not in output
    assert API_KEY not in output
