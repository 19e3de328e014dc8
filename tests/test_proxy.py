"""The signing proxy and the sign endpoint: acting as a connected user against the fake Jira."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from chalicelib import aws, oauth1
from chalicelib.config import load_settings
from chalicelib.connection_tokens import ConnectionTokens
from chalicelib.sealing import sealer_for
from chalicelib.store import Store
from tests.conftest import CONSUMER_KEY, Answer, Broker, _pem, public_pem
from tests.fakejira import FAKE_PNG, FakeJira
from tests.stored import stored_tokens

PROXY = "/v1/teams/acme/users/alice/jira/proxy"
SIGN = "/v1/teams/acme/users/alice/jira/sign"


@pytest.fixture(autouse=True)
def _fresh_clock_offsets() -> Iterator[None]:
    oauth1._clock_offsets.clear()
    yield
    oauth1._clock_offsets.clear()


def _proxy(broker: Broker, **request: Any) -> Answer:
    return broker.call("POST", PROXY, request, headers={"Accept": "*/*"})


def _rest_requests(jira: FakeJira) -> list[Any]:
    return [r for r in jira.requests if "/rest/" in r.path]


# -- passing through ---------------------------------------------------------------------
def test_myself_as_alice(connected: Broker, jira: FakeJira) -> None:
    jira.clear_requests()
    answer = _proxy(connected, method="GET", path="/rest/api/2/myself")
    assert answer.status == 200 and answer.error_code is None
    assert answer.json["name"] == "alice" and answer.json["displayName"] == "Alice Example"
    assert answer.headers["Content-Type"].startswith("application/json")
    assert "X-AREQUESTID" in answer.headers and "Set-Cookie" not in answer.headers
    (sent,) = _rest_requests(jira)
    assert sent.path == "/jira/rest/api/2/myself"  # the context path is kept
    assert (
        sent.headers["Authorization"].startswith("OAuth ")
        and 'oauth_signature_method="RSA-SHA1"' in (sent.headers["Authorization"])
    )


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_every_method_with_json(connected: Broker, method: str) -> None:
    payload = {"fields": {"summary": "Ünïcode & <stuff> 🚀", "labels": ["a", "b"]}}
    answer = _proxy(connected, method=method, path="/rest/api/2/issue/ABC-1", json=payload)
    assert answer.status == 200, answer.body
    assert answer.json["method"] == method and answer.json["path"] == "/rest/api/2/issue/ABC-1"
    assert json.loads(answer.json["body"]) == payload


def test_query_with_repeated_names_unicode_and_reserved_characters(connected: Broker) -> None:
    query = {
        "jql": 'project = ABC AND text ~ "a+b&c=d/é"',
        "fields": ["summary", "status"],
        "maxResults": 50,
        "validate": True,
        "empty": "",
    }
    answer = _proxy(connected, method="GET", path="/rest/api/2/search", query=query)
    assert answer.status == 200, answer.body  # the fake verified the signature over these parameters
    assert answer.json["query"] == {
        "jql": [query["jql"]],
        "fields": ["summary", "status"],
        "maxResults": ["50"],
        "validate": ["true"],
        "empty": [""],
    }


def test_form_bodies_are_signed(connected: Broker, jira: FakeJira) -> None:
    answer = _proxy(
        connected,
        method="POST",
        path="/rest/form",
        body="a=1&b=x+y&c=%C3%A9",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status == 200, answer.body  # the fake includes form parameters in its base string
    assert answer.json["body"] == "a=1&b=x+y&c=%C3%A9"


def test_plain_text_body(connected: Broker) -> None:
    answer = _proxy(
        connected, method="PUT", path="/rest/text", body="just text ✓", headers={"Content-Type": "text/plain"}
    )
    assert answer.status == 200 and answer.json["body"] == "just text ✓"


def test_percent_encoded_and_unicode_paths(connected: Broker) -> None:
    answer = _proxy(connected, method="GET", path="/rest/api/2/user/josé%2Fx")
    assert answer.status == 200, answer.body
    assert answer.json["path"] == "/rest/api/2/user/jos%C3%A9%2Fx"


def test_only_allowed_headers_are_forwarded(connected: Broker, jira: FakeJira) -> None:
    jira.clear_requests()
    headers = {
        "Accept": "application/json",
        "Accept-Language": "de",
        "X-Atlassian-Token": "no-check",
        "Authorization": "Bearer stolen",
        "Cookie": "JSESSIONID=x",
        "Host": "evil.example",
        "X-Forwarded-For": "1.2.3.4",
    }
    assert _proxy(connected, method="GET", path="/rest/api/2/myself", headers=headers).status == 200
    (sent,) = _rest_requests(jira)
    names = {k.lower() for k in sent.headers}
    assert {"accept-language", "x-atlassian-token"} <= names
    assert "cookie" not in names and "x-forwarded-for" not in names
    assert sent.headers["Host"].startswith("127.0.0.1:") and sent.headers["Authorization"].startswith("OAuth ")


def test_no_cookie_carries_over_between_users(connected: Broker, jira: FakeJira) -> None:
    rt = connected.start_dance(connected.connect_link(user="bob"))
    assert connected.browser("GET", jira.approve(rt, "bob")).status == 200
    jira.clear_requests()
    assert _proxy(connected, method="GET", path="/rest/api/2/myself").status == 200  # Jira sets a cookie
    bob = connected.call("POST", "/v1/teams/acme/users/bob/jira/proxy", {"method": "GET", "path": "/rest/api/2/myself"})
    assert bob.json["name"] == "bob"
    assert all("cookie" not in {k.lower() for k in r.headers} for r in _rest_requests(jira))


def test_jira_status_and_redirects_are_returned_not_followed(connected: Broker, jira: FakeJira) -> None:
    jira.clear_requests()
    answer = _proxy(connected, method="GET", path="/rest/fake/status/302")
    assert answer.status == 302 and answer.headers["Location"].endswith("/rest/api/2/myself")
    assert len(_rest_requests(jira)) == 1
    assert _proxy(connected, method="GET", path="/rest/fake/status/404").status == 404
    assert _proxy(connected, method="DELETE", path="/rest/fake/status/204").status == 204


def test_binary_answers_pass_through(connected: Broker) -> None:
    request = {"method": "GET", "path": "/rest/fake/binary"}
    answer = connected.call("POST", PROXY, request, headers={"Accept": "image/png"})  # tests/test_binary_answers.py
    assert answer.status == 200 and answer.headers["Content-Type"] == "image/png" and answer.body == FAKE_PNG


# -- the path and the body ------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "rest/api/2/myself",
        "//evil.example/rest",
        "http://evil.example/rest",
        "/rest/../admin",
        "/rest/./x",
        "/rest/%2e%2e/admin",
        "/rest/%2E/x",
        "/rest/.%2E/x",
        "/rest\\admin",
        "/rest/%5cadmin",
        "/rest/\x00",
        "/rest/%0d%0aX: y",
        "/rest/api?x=1",
        "/rest/api#f",
        "/rest/%zz",
        "/plugins/servlet/oauth/access-token",
        "",
        7,
    ],
)
def test_invalid_paths(connected: Broker, jira: FakeJira, path: Any) -> None:
    jira.clear_requests()
    answer = _proxy(connected, method="GET", path=path)
    assert answer.status == 400 and answer.error_code == "invalid_path", (path, answer.body)
    assert jira.requests == []


@pytest.mark.parametrize(
    ("request_body", "code"),
    [
        ({"method": "TRACE", "path": "/rest/x"}, "invalid_method"),
        ({"path": "/rest/x"}, "invalid_method"),
        ({"method": "GET", "path": "/rest/x", "query": {"a": {"b": 1}}}, "invalid_query"),
        ({"method": "GET", "path": "/rest/x", "query": ["a"]}, "invalid_query"),
        ({"method": "POST", "path": "/rest/x", "json": {}, "body": "x"}, "invalid_body"),
        ({"method": "POST", "path": "/rest/x", "body": {"a": 1}}, "invalid_body"),
        (
            {
                "method": "POST",
                "path": "/rest/x",
                "body": "c=é d",
                "headers": {"Content-Type": "application/x-www-form-urlencoded"},
            },
            "invalid_body",
        ),
        ({"method": "GET", "path": "/rest/x", "headers": {"Accept": "a\r\nX-Evil: 1"}}, "invalid_headers"),
    ],
)
def test_invalid_requests(connected: Broker, request_body: dict[str, Any], code: str) -> None:
    answer = connected.call("POST", PROXY, request_body)
    assert answer.status == 400 and answer.error_code == code


def test_body_over_the_limit(connected: Broker, jira: FakeJira) -> None:
    jira.clear_requests()
    answer = _proxy(connected, method="POST", path="/rest/x", body="x" * (4 * 1024 * 1024 + 1))
    assert answer.status == 413 and answer.error_code == "body_too_large" and "sign endpoint" in answer.text
    assert jira.requests == []


# -- who may act ---------------------------------------------------------------------------------
def test_not_connected_and_no_integration(connected: Broker) -> None:
    answer = connected.call("POST", "/v1/teams/acme/users/carol/jira/proxy", {"method": "GET", "path": "/rest/x"})
    assert answer.status == 404 and answer.error_code == "not_connected"
    answer = connected.call("POST", "/v1/teams/globex/users/alice/jira/proxy", {"method": "GET", "path": "/rest/x"})
    assert answer.status == 404 and answer.error_code == "integration_not_found"


# -- Jira refuses ---------------------------------------------------------------------------------
def _reauthorization(answer: Answer, store: Store, connected: Broker, problem: str) -> None:
    assert answer.status == 401 and answer.error_code == "reauthorization_required"
    error = answer.json["error"]
    assert error["oauth_problem"] == problem and error["connect_url"].startswith("http://broker.test/connect/")
    assert store.get_connection("acme", "alice") is None
    assert connected.browser("GET", error["connect_url"]).status == 200


def test_revoked_token_drops_the_connection_and_offers_a_connect_url(
    connected: Broker, jira: FakeJira, store: Store
) -> None:
    jira.revoke_access_token(stored_tokens()["access_token"])
    _reauthorization(_proxy(connected, method="GET", path="/rest/api/2/myself"), store, connected, "token_revoked")


def test_rejected_token(connected: Broker, store: Store) -> None:
    tokens = ConnectionTokens(store, sealer_for(load_settings()))
    unknown = tokens.seal("acme", "alice", {**stored_tokens(), "access_token": "unknown-to-jira-0000000000000000"})
    store.client.update_item(
        TableName=store.table_name,
        Key={"pk": {"S": "TEAM#acme"}, "sk": {"S": "USER#alice"}},
        UpdateExpression="SET sealed = :sealed",
        ExpressionAttributeValues={":sealed": {"S": unknown}},
    )
    _reauthorization(_proxy(connected, method="GET", path="/rest/api/2/myself"), store, connected, "token_rejected")


def test_expired_token(connected: Broker, jira: FakeJira, store: Store) -> None:
    jira.fail_next("token_expired")
    _reauthorization(_proxy(connected, method="GET", path="/rest/api/2/myself"), store, connected, "token_expired")


def test_clock_skew_is_corrected_once_and_remembered(connected: Broker, jira: FakeJira) -> None:
    jira.clock_offset = 1000
    jira.clear_requests()
    assert _proxy(connected, method="GET", path="/rest/api/2/myself").status == 200
    assert len(_rest_requests(jira)) == 2  # refused, then re-signed on Jira's clock
    assert _proxy(connected, method="GET", path="/rest/api/2/myself").status == 200
    assert len(_rest_requests(jira)) == 3  # the offset is remembered


def test_nonce_used_is_retried_once(connected: Broker, jira: FakeJira) -> None:
    jira.clear_requests()
    jira.fail_next("nonce_used")
    assert _proxy(connected, method="GET", path="/rest/api/2/myself").status == 200
    nonces = [r.headers["Authorization"].split('oauth_nonce="')[1].split('"')[0] for r in _rest_requests(jira)]
    assert len(nonces) == 2 and nonces[0] != nonces[1]


def test_signature_invalid_is_integration_broken_and_keeps_the_connection(
    connected: Broker, jira: FakeJira, other_rsa_key: rsa.RSAPrivateKey, store: Store
) -> None:
    jira.add_consumer(CONSUMER_KEY, public_pem(other_rsa_key))
    answer = _proxy(connected, method="GET", path="/rest/api/2/myself")
    assert answer.status == 502 and answer.error_code == "integration_broken"
    assert "public key" in answer.json["error"]["message"]
    assert store.get_connection("acme", "alice") is not None


def test_consumer_key_unknown_is_integration_broken(connected: Broker, jira: FakeJira, store: Store) -> None:
    jira.remove_consumer(CONSUMER_KEY)
    answer = _proxy(connected, method="GET", path="/rest/api/2/myself")
    assert answer.status == 502 and answer.error_code == "integration_broken"
    assert answer.json["error"]["oauth_problem"] == "consumer_key_unknown"
    assert store.get_connection("acme", "alice") is not None


def test_unreachable_and_timeout(connected: Broker, jira: FakeJira, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_JIRA_READ_TIMEOUT", "0.3")
    jira.delay = 1.0
    answer = _proxy(connected, method="GET", path="/rest/api/2/myself")
    assert answer.status == 504 and answer.error_code == "jira_timeout"
    jira.delay = 0
    jira.stop()
    answer = _proxy(connected, method="GET", path="/rest/api/2/myself")
    assert answer.status == 502 and answer.error_code == "jira_unreachable"


# -- speed: what each call costs ------------------------------------------------------------------
def test_a_warm_call_costs_one_dynamodb_read_and_no_secrets_manager_call(connected: Broker) -> None:
    assert _proxy(connected, method="GET", path="/rest/api/2/myself").status == 200  # warm, and last_used written
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    for service in ("dynamodb", "secretsmanager"):
        aws.client(service).meta.events.register("before-call", count)
    for _ in range(3):
        assert _proxy(connected, method="GET", path="/rest/api/2/myself").status == 200
    assert calls == Counter({"BatchGetItem": 3})


def test_last_used_is_written_at_most_once_a_minute(
    connected: Broker, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib import clock

    assert _proxy(connected, method="GET", path="/rest/api/2/myself").status == 200
    first = store.get_connection("acme", "alice")
    assert first is not None and first["last_used_at"] >= first["connected_at"]
    assert _proxy(connected, method="GET", path="/rest/api/2/myself").status == 200
    later = store.get_connection("acme", "alice")
    assert later is not None and later["last_used_at"] == first["last_used_at"]
    real = clock.now
    monkeypatch.setattr(clock, "now", lambda: real() + 61)
    assert _proxy(connected, method="GET", path="/rest/api/2/myself").status == 200
    latest = store.get_connection("acme", "alice")
    assert latest is not None and latest["last_used_at"] >= first["last_used_at"] + 61


def test_a_rotated_key_replaces_the_cached_one(
    connected: Broker, jira: FakeJira, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    assert _proxy(connected, method="GET", path="/rest/api/2/myself").status == 200
    jira.add_consumer(CONSUMER_KEY, public_pem(other_rsa_key))
    assert connected.setup(jira, _pem(other_rsa_key)).status == 200
    assert _proxy(connected, method="GET", path="/rest/api/2/myself").status == 200


# -- the sign endpoint -------------------------------------------------------------------------------
def test_sign_then_send_yourself(connected: Broker, jira: FakeJira) -> None:
    url = f"{jira.base_url}/rest/api/2/search?jql=project%20%3D%20ABC&fields=summary&fields=status"
    answer = connected.call("POST", SIGN, {"method": "GET", "url": url})
    assert answer.status == 200, answer.body
    assert answer.json["authorization"].startswith("OAuth ") and answer.json["expires_at"].endswith("Z")
    sent = requests.get(url, headers={"Authorization": answer.json["authorization"]}, timeout=5)
    assert sent.status_code == 200 and sent.json()["user"] == "alice"


def test_sign_a_form_post(connected: Broker, jira: FakeJira) -> None:
    url = f"{jira.base_url}/rest/form"
    form = {"a": "1", "b": ["x y", "é"]}
    answer = connected.call("POST", SIGN, {"method": "POST", "url": url, "form": form})
    assert answer.status == 200, answer.body
    sent = requests.post(
        url,
        data=[("a", "1"), ("b", "x y"), ("b", "é")],
        timeout=5,
        headers={"Authorization": answer.json["authorization"]},
    )
    assert sent.status_code == 200, sent.text


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/jira/rest/api/2/myself",
        "{base}x/rest/api/2/myself",
        "{scheme_swapped}/rest/x",
        "{base}/rest/../../admin",
        "{base}/rest/x#frag",
        "/rest/api/2/myself",
        None,
    ],
)
def test_sign_refuses_urls_outside_base_url(connected: Broker, jira: FakeJira, url: str | None) -> None:
    if url is not None:
        url = url.format(base=jira.base_url, scheme_swapped=jira.base_url.replace("http://", "https://"))
    answer = connected.call("POST", SIGN, {"method": "GET", "url": url})
    assert answer.status == 400 and answer.error_code in {"url_not_allowed", "invalid_path"}


def test_jira_python_as_a_real_client(connected: Broker, jira: FakeJira) -> None:
    """jira-python sends its requests itself; each one is signed by the broker's sign endpoint."""
    from jira import JIRA

    class BrokerSigned(requests.auth.AuthBase):
        def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
            answer = connected.call("POST", SIGN, {"method": request.method, "url": request.url})
            assert answer.status == 200, answer.body
            request.headers["Authorization"] = answer.json["authorization"]
            return request

    client = JIRA(server=jira.base_url, get_server_info=False, options={"rest_api_version": "2"})
    client._session.auth = BrokerSigned()
    assert client.myself()["displayName"] == "Alice Example"
    assert client.server_info()["version"] == "9.12.2"


def test_proxy_and_sign_need_a_connection(broker: Broker) -> None:
    answer = broker.call("POST", SIGN, {"method": "GET", "url": "http://x/rest"})
    assert answer.status == 404 and answer.error_code == "integration_not_found"
