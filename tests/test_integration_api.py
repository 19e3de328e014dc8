"""PUT/GET/DELETE /v1/teams/{team}/jira and POST .../key-pair, against moto and the fake Jira."""

from __future__ import annotations

import socket
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from chalicelib import apikeys
from chalicelib.apikeys import save_api_key
from chalicelib.keys import fingerprint
from chalicelib.store import Store
from tests.conftest import ACME_KEY, API_KEY, CONSUMER_KEY, Broker, key_secret_name, public_pem
from tests.fakejira import FakeJira


def _secret_names() -> list[str]:
    client = boto3.client("secretsmanager")
    return [s["Name"] for s in client.list_secrets()["SecretList"]]


def _assert_error(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status == status, answer.body
    assert answer.error_code == code
    error = answer.json["error"]
    assert error["code"] == code and len(error["message"]) > 20
    return dict(error)


# -- happy path ----------------------------------------------------------------------
def test_setup_proves_against_jira_then_stores(
    broker: Broker, jira: FakeJira, private_pem: str, rsa_key: rsa.RSAPrivateKey, store: Store
) -> None:
    answer = broker.setup(jira, private_pem + "\n")
    assert answer.status == 201, answer.body
    body = answer.json
    assert body["team"] == "acme" and body["base_url"] == jira.base_url and body["consumer_key"] == CONSUMER_KEY
    assert body["public_key"] == public_pem(rsa_key)
    assert body["public_key_fingerprint"] == fingerprint(rsa_key)
    assert body["jira"]["version"] == "9.12.2" and body["jira"]["deployment_type"] == "Server"
    assert body["warnings"] == []
    assert body["created_at"].endswith("Z") and body["updated_at"] == body["created_at"]
    assert "PRIVATE" not in answer.text
    # Jira was asked for a request token, signed, with the broker's callback.
    request_token_calls = [r for r in jira.requests if r.path.endswith("/oauth/request-token")]
    assert len(request_token_calls) == 1
    assert (
        'oauth_callback="http%3A%2F%2Fbroker.test%2Foauth%2Fcallback"'
        in request_token_calls[0].headers["Authorization"]
    )
    # The key is in Secrets Manager; DynamoDB has none.
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=key_secret_name(rsa_key))["SecretString"]
    assert "BEGIN PRIVATE KEY" in secret
    item = store.get_integration("acme")
    assert item is not None and not any("PRIVATE KEY" in str(v) for v in item.values())
    # GET shows the same integration.
    got = broker.call("GET", "/v1/teams/acme/jira")
    assert got.status == 200 and got.json == body


def test_trailing_slash_dropped_and_context_path_kept(broker: Broker, jira: FakeJira, private_pem: str) -> None:
    answer = broker.call(
        "PUT",
        "/v1/teams/acme/jira",
        {"base_url": jira.base_url + "/", "consumer_key": CONSUMER_KEY, "private_key": private_pem},
    )
    assert answer.status == 201 and answer.json["base_url"].endswith("/jira")


def test_pkcs1_key_accepted(broker: Broker, jira: FakeJira, pkcs1_pem: str) -> None:
    assert broker.setup(jira, pkcs1_pem).status == 201


def test_setup_with_user_returns_a_connect_url(broker: Broker, jira: FakeJira, private_pem: str) -> None:
    answer = broker.setup(jira, private_pem, user="alice")
    assert answer.status == 201
    assert answer.json["connect_url"].startswith("http://broker.test/connect/")
    page = broker.browser("GET", answer.json["connect_url"])
    assert page.status == 200 and "alice" in page.text


def test_base_url_mismatch_is_a_warning(broker: Broker, jira: FakeJira, private_pem: str) -> None:
    jira.reported_base_url = "https://jira.example.com"
    answer = broker.setup(jira, private_pem)
    assert answer.status == 201
    assert [w["code"] for w in answer.json["warnings"]] == ["base_url_mismatch"]
    assert "https://jira.example.com" in answer.json["warnings"][0]["message"]


# -- validation ------------------------------------------------------------------------
@pytest.mark.parametrize("missing", ["base_url", "consumer_key"])
def test_missing_fields(broker: Broker, jira: FakeJira, private_pem: str, missing: str) -> None:
    body = {"base_url": jira.base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem}
    del body[missing]
    error = _assert_error(broker.call("PUT", "/v1/teams/acme/jira", body), 400, "missing_field")
    assert error["field"] == missing and missing in error["message"]
    assert jira.requests == []


def test_no_key_and_no_generated_key(broker: Broker, jira: FakeJira) -> None:
    answer = broker.call("PUT", "/v1/teams/acme/jira", {"base_url": jira.base_url, "consumer_key": CONSUMER_KEY})
    assert "key-pair" in _assert_error(answer, 400, "private_key_required")["message"]


@pytest.mark.parametrize(
    ("raw", "code"),
    [("{not json", "invalid_json"), ("[1, 2]", "invalid_json"), ('"text"', "invalid_json")],
)
def test_malformed_json(broker: Broker, raw: str, code: str) -> None:
    _assert_error(broker.call("PUT", "/v1/teams/acme/jira", raw=raw), 400, code)


@pytest.mark.parametrize(
    ("base_url", "code"),
    [
        ("ftp://jira", "invalid_base_url"),
        ("https://u:p@jira.example.com", "invalid_base_url"),
        ("https://jira.example.com/?x=1", "invalid_base_url"),
        ("https://jira.example.com/#f", "invalid_base_url"),
    ],
)
def test_bad_base_url(broker: Broker, private_pem: str, base_url: str, code: str) -> None:
    body = {"base_url": base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem}
    _assert_error(broker.call("PUT", "/v1/teams/acme/jira", body), 400, code)


def test_bad_private_key_is_refused_before_calling_jira(
    broker: Broker, jira: FakeJira, rsa_key: rsa.RSAPrivateKey
) -> None:
    answer = broker.setup(jira, public_pem(rsa_key))
    _assert_error(answer, 400, "private_key_is_public")
    answer = broker.setup(jira, "not a key")
    _assert_error(answer, 400, "invalid_private_key")
    assert jira.requests == []


def test_bad_consumer_key(broker: Broker, jira: FakeJira, private_pem: str) -> None:
    body = {"base_url": jira.base_url, "consumer_key": "has space", "private_key": private_pem}
    _assert_error(broker.call("PUT", "/v1/teams/acme/jira", body), 400, "invalid_consumer_key")


@pytest.mark.parametrize("team", ["a b", "x" * 129, "a%2Fb", "é"])
def test_invalid_team_ids(broker: Broker, team: str) -> None:
    answer = broker.call("GET", f"/v1/teams/{team}/jira")
    _assert_error(answer, 400, "invalid_team")


# -- Jira refuses -------------------------------------------------------------------------
def _nothing_stored(store: Store) -> None:
    assert store.get_integration("acme") is None
    assert not [name for name in _secret_names() if "/teams/acme/" in name]


def test_unknown_consumer_key(broker: Broker, jira: FakeJira, private_pem: str, store: Store) -> None:
    body = {"base_url": jira.base_url, "consumer_key": "not-a-link", "private_key": private_pem}
    error = _assert_error(broker.call("PUT", "/v1/teams/acme/jira", body), 422, "consumer_key_unknown")
    assert "not-a-link" in error["message"] and "Application link" in error["message"]
    _nothing_stored(store)


def test_key_mismatch_is_signature_invalid(
    broker: Broker, jira: FakeJira, other_rsa_key: rsa.RSAPrivateKey, store: Store
) -> None:
    from tests.conftest import _pem

    error = _assert_error(broker.setup(jira, _pem(other_rsa_key)), 422, "signature_invalid")
    assert "private key does not match" in error["message"]
    assert "oauth_signature_base_string" not in str(error) and "POST&" not in str(error)
    _nothing_stored(store)


def test_base_url_other_than_jiras_own_is_named(broker: Broker, jira: FakeJira, private_pem: str, store: Store) -> None:
    jira.signing_base_url = "https://jira.example.com/jira"
    jira.reported_base_url = "https://jira.example.com/jira"
    error = _assert_error(broker.setup(jira, private_pem), 422, "signature_invalid")
    assert "https://jira.example.com/jira" in error["message"]
    _nothing_stored(store)


def test_clock_skew(broker: Broker, jira: FakeJira, private_pem: str, store: Store) -> None:
    jira.clock_offset = 1000
    error = _assert_error(broker.setup(jira, private_pem), 422, "clock_skew")
    assert "1000 seconds" in error["message"] or "999 seconds" in error["message"] or "1001 seconds" in error["message"]
    _nothing_stored(store)


def test_oauth_not_at_that_path(broker: Broker, jira: FakeJira, private_pem: str, store: Store) -> None:
    body = {
        "base_url": jira.base_url.removesuffix("/jira") + "/wrong",
        "consumer_key": CONSUMER_KEY,
        "private_key": private_pem,
    }
    error = _assert_error(broker.call("PUT", "/v1/teams/acme/jira", body), 422, "jira_oauth_not_found")
    assert "context path" in error["message"]
    _nothing_stored(store)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_jira(broker: Broker, private_pem: str, store: Store) -> None:
    body = {
        "base_url": f"http://127.0.0.1:{_closed_port()}/jira",
        "consumer_key": CONSUMER_KEY,
        "private_key": private_pem,
    }
    error = _assert_error(broker.call("PUT", "/v1/teams/acme/jira", body), 502, "jira_unreachable")
    assert "127.0.0.1" in error["message"]
    _nothing_stored(store)


def test_tls_failure(broker: Broker, jira: FakeJira, private_pem: str, store: Store) -> None:
    body = {
        "base_url": jira.base_url.replace("http://", "https://"),
        "consumer_key": CONSUMER_KEY,
        "private_key": private_pem,
    }
    error = _assert_error(broker.call("PUT", "/v1/teams/acme/jira", body), 502, "jira_tls_error")
    assert "TLS" in error["message"]
    _nothing_stored(store)


def test_timeout(
    broker: Broker, jira: FakeJira, private_pem: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROKER_JIRA_READ_TIMEOUT", "0.3")
    jira.delay = 1.5
    error = _assert_error(broker.setup(jira, private_pem), 504, "jira_timeout")
    assert "did not answer" in error["message"]
    _nothing_stored(store)


# -- replacing, rotating, deleting ---------------------------------------------------------------
def test_put_again_replaces_and_rotating_only_the_key_keeps_connections(
    connected: Broker, jira: FakeJira, other_rsa_key: rsa.RSAPrivateKey, store: Store
) -> None:
    from tests.conftest import _pem

    jira.add_consumer(CONSUMER_KEY, public_pem(other_rsa_key))
    answer = connected.setup(jira, _pem(other_rsa_key))
    assert answer.status == 200, answer.body
    assert answer.json["public_key_fingerprint"] == fingerprint(other_rsa_key)
    assert answer.json["created_at"] <= answer.json["updated_at"]
    assert connected.call("GET", "/v1/teams/acme/users/alice/jira").status == 200


def test_changing_consumer_key_drops_connections(
    connected: Broker, jira: FakeJira, rsa_key: rsa.RSAPrivateKey, private_pem: str
) -> None:
    jira.add_consumer("second-link", public_pem(rsa_key))
    body = {"base_url": jira.base_url, "consumer_key": "second-link", "private_key": private_pem}
    assert connected.call("PUT", "/v1/teams/acme/jira", body).status == 200
    _assert_error(connected.call("GET", "/v1/teams/acme/users/alice/jira"), 404, "not_connected")


def test_put_without_key_reuses_the_current_key(connected: Broker, jira: FakeJira) -> None:
    body = {"base_url": jira.base_url, "consumer_key": CONSUMER_KEY}
    assert connected.call("PUT", "/v1/teams/acme/jira", body).status == 200


def test_delete_removes_everything_and_setup_works_again(
    connected: Broker, jira: FakeJira, private_pem: str, rsa_key: rsa.RSAPrivateKey, store: Store
) -> None:
    secret_name = key_secret_name(rsa_key)
    assert connected.call("DELETE", "/v1/teams/acme/jira").status == 204
    _assert_error(connected.call("GET", "/v1/teams/acme/jira"), 404, "integration_not_found")
    _assert_error(connected.call("GET", "/v1/teams/acme/users/alice/jira"), 404, "not_connected")
    described = boto3.client("secretsmanager").describe_secret(SecretId=secret_name)
    assert described.get("DeletedDate")  # scheduled for deletion, name still taken
    assert connected.call("DELETE", "/v1/teams/acme/jira").status == 204  # idempotent
    again = connected.setup(jira, private_pem)
    assert again.status == 201, again.body
    assert not boto3.client("secretsmanager").describe_secret(SecretId=secret_name).get("DeletedDate")


def test_get_unknown_team(broker: Broker) -> None:
    _assert_error(broker.call("GET", "/v1/teams/nobody/jira"), 404, "integration_not_found")


# -- generated key pairs ---------------------------------------------------------------------
def test_generated_key_pair_is_used_by_a_put_without_private_key(broker: Broker, jira: FakeJira) -> None:
    answer = broker.call("POST", "/v1/teams/acme/jira/key-pair", {"bits": 3072})
    assert answer.status == 201
    assert "PRIVATE" not in answer.text and answer.json["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    jira.add_consumer("generated", answer.json["public_key"])
    setup = broker.call("PUT", "/v1/teams/acme/jira", {"base_url": jira.base_url, "consumer_key": "generated"})
    assert setup.status == 201, setup.body
    assert setup.json["public_key_fingerprint"] == answer.json["public_key_fingerprint"]
    assert "jira-oauth-broker/local/teams/acme/pending-key" not in [
        s["Name"] for s in boto3.client("secretsmanager").list_secrets()["SecretList"] if not s.get("DeletedDate")
    ]


def test_key_pair_default_bits_and_bad_bits(broker: Broker) -> None:
    assert broker.call("POST", "/v1/teams/acme/jira/key-pair").status == 201
    for bits in (1024, "2048", True, 8192):
        _assert_error(broker.call("POST", "/v1/teams/acme/jira/key-pair", {"bits": bits}), 400, "invalid_bits")


# -- API keys ---------------------------------------------------------------------------------
def test_missing_api_key_is_401(broker: Broker) -> None:
    assert broker.call("GET", "/v1/teams/acme/jira", key=None).status == 401


def test_wrong_api_key_is_403(broker: Broker) -> None:
    assert broker.call("GET", "/v1/teams/acme/jira", key="jb_wrong").status == 403


def test_revoked_api_key_is_403(broker: Broker, store: Store) -> None:
    from chalicelib.apikeys import save_api_key

    save_api_key(store, "jb_revoked", name="old")
    assert broker.call("GET", "/v1/teams/acme/jira", key="jb_revoked").status == 404  # valid: no integration yet
    record = store.get_api_key(__import__("chalicelib.store").store.token_hash("jb_revoked"))
    assert record is not None
    store.put_api_key(__import__("chalicelib.store").store.token_hash("jb_revoked"), {**record, "revoked": True})
    # Like API Gateway's authorizer cache, a warm container honours the revocation within CACHE_SECONDS.
    assert broker.call("GET", "/v1/teams/acme/jira", key="jb_revoked").status == 404
    apikeys.forget_cached_keys()  # what CACHE_SECONDS passing does
    assert broker.call("GET", "/v1/teams/acme/jira", key="jb_revoked").status == 403


def test_api_keys_are_stored_only_as_hashes(store: Store) -> None:
    items = boto3.client("dynamodb").scan(TableName=store.table_name)["Items"]
    assert items and ACME_KEY not in str(items)


def test_team_limited_key(broker: Broker, jira: FakeJira, private_pem: str) -> None:
    assert broker.call("GET", "/v1/teams/acme/jira", key=ACME_KEY).status == 404
    error = _assert_error(broker.call("GET", "/v1/teams/globex/jira", key=ACME_KEY), 403, "team_forbidden")
    assert "acme" in error["message"]
    body = {"base_url": jira.base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem}
    _assert_error(broker.call("PUT", "/v1/teams/globex/jira", body, key=ACME_KEY), 403, "team_forbidden")
    assert jira.requests == []


def test_health(broker: Broker) -> None:
    answer = broker.call("GET", "/health", key=None)
    assert answer.status == 200 and answer.json["status"] == "ok"


def test_outside_the_local_stage_private_and_http_jiras_are_refused(
    aws_mock: None, jira: FakeJira, private_pem: str
) -> None:
    from chalice.test import Client

    from app import app
    from scripts.local_aws import create_kms_key, create_table

    create_table(boto3.client("dynamodb"), "jira-oauth-broker-dev")  # the dev stage's table
    create_kms_key(boto3.client("kms"), "dev")  # and its key, alias/jira-oauth-broker-dev
    save_api_key(Store("jira-oauth-broker-dev"), API_KEY, name="all-teams")
    with Client(app, stage_name="dev") as client:
        broker = Broker(client)
        _assert_error(broker.setup(jira, private_pem), 400, "insecure_base_url")
        body = {
            "base_url": jira.base_url.replace("http://", "https://"),
            "consumer_key": CONSUMER_KEY,
            "private_key": private_pem,
        }
        error = _assert_error(broker.call("PUT", "/v1/teams/acme/jira", body), 400, "base_url_not_allowed")
        assert "127.0.0.1" in error["message"]
    assert jira.requests == []


def test_chalices_own_errors_get_the_envelope(broker: Broker) -> None:
    answer = broker.call("PATCH", "/health", key=None)
    error = _assert_error(answer, 405, "method_not_allowed")
    assert "PATCH" in error["message"] and answer.headers["Allow"] == "GET"
    answer = broker.call("PUT", "/v1/teams/acme/jira", raw="x", headers={"Content-Type": "text/plain"})
    assert "application/json" in _assert_error(answer, 415, "unsupported_media_type")["message"]
