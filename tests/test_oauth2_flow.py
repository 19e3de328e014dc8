"""OAuth 2.0 (Jira DC 8.22+) end to end through the Chalice test client, moto and the fake Jira's provider:
setup and each refusal, connecting (PKCE, state bound to the browser), deny, the proxy with Bearer
tokens, expiry and refresh, revocation, the sign endpoint, and switching a team between OAuth versions.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from chalicelib.store import Store
from tests.conftest import CONSUMER_KEY, TABLE, Broker, assert_page
from tests.fakejira import FakeJira
from tests.stored import stored_tokens

CLIENT_ID = "broker-client-0a1b2c"
CLIENT_SECRET = "s3cret-of-the-incoming-link-0000000000000000"
REDIRECT_URI = "http://broker.test/oauth2/callback"
PROXY = "/v1/teams/acme/users/alice/jira/proxy"
MYSELF = {"method": "GET", "path": "/rest/api/2/myself"}


@pytest.fixture
def jira2(jira: FakeJira) -> FakeJira:
    """The fake Jira with an OAuth 2.0 incoming link for the broker's redirect URL."""
    jira.add_oauth2_client(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, scopes=("READ", "WRITE"))
    return jira


def setup_oauth2(broker: Broker, jira: FakeJira, **extra: Any) -> Any:
    body = {
        "auth": "oauth2",
        "base_url": extra.pop("base_url", None) or jira.base_url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    return broker.call("PUT", "/v1/teams/acme/jira", {**body, **extra})


def connect(broker: Broker, jira: FakeJira, user: str = "alice") -> Any:
    """Continue on a fresh connect link, Allow on Jira's page, follow Jira's redirect back."""
    authorize_url = start(broker, user)
    return broker.browser("GET", jira.oauth2_approve(authorize_url, user))


def start(broker: Broker, user: str = "alice") -> str:
    answer = broker.click_continue(broker.connect_link(user=user))
    assert answer.status == 303, answer.body
    return str(answer.headers["Location"])


@pytest.fixture
def connected2(broker: Broker, jira2: FakeJira) -> Broker:
    assert setup_oauth2(broker, jira2).status == 201
    assert_page(connect(broker, jira2), 200, None, "alice")
    return broker


def expire_access_token(user: str = "alice") -> None:
    """As if the access token had just run out: the broker reads its expiry from the item."""
    boto3.client("dynamodb").update_item(
        TableName=TABLE,
        Key={"pk": {"S": "TEAM#acme"}, "sk": {"S": f"USER#{user}"}},
        UpdateExpression="SET access_expires_at = :past",
        ExpressionAttributeValues={":past": {"N": "1"}},
    )


# -- setup ---------------------------------------------------------------------------------------
def test_setup_proves_the_client_and_shows_the_redirect_uri(broker: Broker, jira2: FakeJira) -> None:
    answer = setup_oauth2(broker, jira2, scopes=["READ", "WRITE"])
    assert answer.status == 201, answer.body
    shown = broker.call("GET", "/v1/teams/acme/jira").json
    assert shown["auth"] == "oauth2" and shown["client_id"] == CLIENT_ID
    assert shown["scopes"] == ["READ", "WRITE"] and shown["redirect_uri"] == REDIRECT_URI
    assert shown["jira"]["version"] == "9.12.2"
    assert "consumer_key" not in shown and "public_key" not in shown
    assert CLIENT_SECRET not in answer.text and CLIENT_SECRET not in json.dumps(shown)
    proofs = jira2.oauth2_token_calls("authorization_code")
    assert len(proofs) == 1 and proofs[0]["redirect_uri"] == REDIRECT_URI
    assert setup_oauth2(broker, jira2).json["scopes"] == ["WRITE"]  # the default


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"client_id": ""}, 400, "missing_field"),
        ({"client_secret": None}, 400, "missing_field"),
        ({"client_id": "has space"}, 400, "invalid_client_id"),
        ({"client_secret": ["not", "text"]}, 400, "invalid_client_secret"),
        ({"scopes": []}, 400, "invalid_scopes"),
        ({"scopes": ["WRITE", "WRITE"]}, 400, "invalid_scopes"),
        ({"scopes": ["write"]}, 400, "invalid_scopes"),
        ({"auth": "oauth3"}, 400, "invalid_auth"),
        ({"client_secret": "not-the-secret"}, 422, "oauth2_client_rejected"),
        ({"client_id": "no-such-client"}, 422, "oauth2_client_rejected"),
    ],
)
def test_setup_refusals(broker: Broker, jira2: FakeJira, change: dict[str, Any], status: int, code: str) -> None:
    answer = setup_oauth2(broker, jira2, **change)
    assert answer.status == status and answer.error_code == code, answer.body
    assert answer.json["error"]["message"]
    assert CLIENT_SECRET not in answer.text
    assert broker.call("GET", "/v1/teams/acme/jira").status == 404  # nothing stored


def test_a_wrong_secret_names_both_causes(broker: Broker, jira2: FakeJira) -> None:
    message = setup_oauth2(broker, jira2, client_secret="not-the-secret").json["error"]["message"]
    assert CLIENT_ID in message and "secret" in message and "not-the-secret" not in message


def test_a_jira_without_oauth2_is_named(broker: Broker, jira2: FakeJira) -> None:
    jira2.oauth2_enabled = False
    answer = setup_oauth2(broker, jira2)
    assert answer.status == 422 and answer.error_code == "oauth2_not_available"
    assert "8.22" in answer.json["error"]["message"] and "9.12.2" in answer.json["error"]["message"]


def test_an_unreachable_jira(broker: Broker, jira2: FakeJira) -> None:
    url = jira2.base_url
    jira2.stop()
    answer = setup_oauth2(broker, jira2, base_url=url)
    assert answer.status == 502 and answer.error_code == "jira_unreachable"


def test_a_new_secret_for_the_same_client_keeps_connections(connected2: Broker, jira2: FakeJira) -> None:
    jira2.add_oauth2_client(CLIENT_ID, "rotated-secret-000000000000", REDIRECT_URI, scopes=("READ", "WRITE"))
    assert setup_oauth2(connected2, jira2, client_secret="rotated-secret-000000000000").status == 200
    assert connected2.call("GET", "/v1/teams/acme/users/alice/jira").status == 200
    assert connected2.call("POST", PROXY, MYSELF).status == 200
    # Without a secret, the kept one is used (changing only the scopes).
    assert setup_oauth2(connected2, jira2, client_secret=None, scopes=["READ"]).status == 200
    assert connected2.call("GET", "/v1/teams/acme/users/alice/jira").status == 200


# -- connecting -----------------------------------------------------------------------------------
def test_continue_sends_the_browser_to_jira_with_pkce_and_state(broker: Broker, jira2: FakeJira) -> None:
    assert setup_oauth2(broker, jira2).status == 201
    url = start(broker)
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == jira2.base_url + "/rest/oauth2/latest/authorize"
    assert query["client_id"] == CLIENT_ID and query["redirect_uri"] == REDIRECT_URI
    assert query["response_type"] == "code" and query["scope"] == "WRITE"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 43
    assert "jira_broker_browser" in broker.cookies
    # The state is stored only as a hash; the verifier never leaves the broker.
    items = json.dumps(boto3.client("dynamodb").scan(TableName=TABLE)["Items"])
    assert query["state"] not in items


def test_the_whole_flow_connects_and_the_proxy_sends_bearer_tokens(connected2: Broker, jira2: FakeJira) -> None:
    status = connected2.call("GET", "/v1/teams/acme/users/alice/jira").json
    assert status["connected"] is True and status["jira_user"]["name"] == "alice"
    exchange = jira2.oauth2_token_calls("authorization_code")[-1]
    assert exchange["redirect_uri"] == REDIRECT_URI and exchange["code_verifier"]
    answer = connected2.call("POST", PROXY, MYSELF)
    assert answer.status == 200 and answer.json["name"] == "alice"
    sent = [r for r in jira2.requests if r.path.endswith("/rest/api/2/myself")][-1]
    assert {k.lower(): v for k, v in sent.headers.items()}["authorization"].startswith("Bearer ")


def test_deny_shows_the_denied_page(broker: Broker, jira2: FakeJira) -> None:
    assert setup_oauth2(broker, jira2).status == 201
    answer = broker.browser("GET", jira2.oauth2_deny(start(broker)))
    assert_page(answer, 403, "access_denied", "denied", "alice")
    assert jira2.oauth2_token_calls("authorization_code")[1:] == []  # only setup's proof: nothing exchanged
    assert broker.call("GET", "/v1/teams/acme/users/alice/jira").status == 404


def test_another_error_from_jira_is_named_on_the_page(broker: Broker, jira2: FakeJira) -> None:
    assert setup_oauth2(broker, jira2).status == 201
    state = parse_qs(urlsplit(start(broker)).query)["state"][0]
    answer = broker.browser("GET", f"/oauth2/callback?error=invalid_scope&error_description=nope&state={state}")
    assert_page(answer, 403, "jira_authorization_error", "invalid_scope")


def test_the_state_works_only_in_the_browser_that_started(broker: Broker, jira2: FakeJira) -> None:
    assert setup_oauth2(broker, jira2).status == 201
    redirect = jira2.oauth2_approve(start(broker), "mallory")
    answer = broker.other_browser().browser("GET", redirect)
    assert_page(answer, 403, "signin_other_browser")
    assert jira2.oauth2_token_calls("authorization_code")[1:] == []  # no exchange: the code is not used
    assert_page(broker.browser("GET", redirect), 200, None)  # the browser that started still can
    assert_page(broker.browser("GET", redirect), 410, "request_token_used")  # once


def test_a_state_from_the_oauth1_callback_is_unknown(broker: Broker, jira2: FakeJira) -> None:
    assert setup_oauth2(broker, jira2).status == 201
    state = parse_qs(urlsplit(start(broker)).query)["state"][0]
    answer = broker.browser("GET", f"/oauth/callback?oauth_token={state}&oauth_verifier=x")
    assert_page(answer, 404, "request_token_unknown")
    assert_page(broker.browser("GET", "/oauth2/callback?code=abc"), 400, "missing_state")


def test_an_expired_code_is_refused_with_a_page(broker: Broker, jira2: FakeJira) -> None:
    assert setup_oauth2(broker, jira2).status == 201
    redirect = jira2.oauth2_approve(start(broker), "alice")
    jira2.clock_offset = 11  # Jira's codes live 10 seconds
    assert_page(broker.browser("GET", redirect), 422, "authorization_code_rejected", "10 seconds")


# -- acting as the user ---------------------------------------------------------------------------
def test_an_expired_access_token_is_refreshed_once(connected2: Broker, jira2: FakeJira, store: Store) -> None:
    before = stored_tokens()
    expire_access_token()
    assert connected2.call("POST", PROXY, MYSELF).status == 200
    assert connected2.call("POST", PROXY, MYSELF).status == 200
    refreshes = jira2.oauth2_token_calls("refresh_token")
    assert len(refreshes) == 1 and refreshes[0]["refresh_token"] == before["refresh_token"]
    assert refreshes[0]["redirect_uri"] == REDIRECT_URI  # Jira answers invalid_grant without it
    after = stored_tokens()
    assert after["refresh_token"] != before["refresh_token"] and after["access_token"] != before["access_token"]
    connection = store.get_connection("acme", "alice")
    assert connection is not None and connection["token_version"] == 2 and "lease_id" not in connection


def test_a_401_from_jira_refreshes_and_retries_once(connected2: Broker, jira2: FakeJira) -> None:
    old = stored_tokens()["access_token"]
    jira2.clock_offset = 3700  # Jira says the token expired though the broker thinks it fresh
    answer = connected2.call("POST", PROXY, MYSELF)
    assert answer.status == 200, answer.body
    assert len(jira2.oauth2_token_calls("refresh_token")) == 1
    assert stored_tokens()["access_token"] != old


def test_a_revoked_grant_asks_for_reauthorization(connected2: Broker, jira2: FakeJira, store: Store) -> None:
    assert jira2.revoke_oauth2_grant("alice") == 1
    answer = connected2.call("POST", PROXY, MYSELF)
    assert answer.status == 401 and answer.error_code == "reauthorization_required"
    assert answer.json["error"]["connect_url"].startswith("http://broker.test/connect/")
    assert answer.json["error"]["oauth2_error"] == "invalid_grant"
    assert store.get_connection("acme", "alice") is None
    assert connected2.call("POST", PROXY, MYSELF).error_code == "not_connected"


def test_a_deleted_link_asks_the_admin(connected2: Broker, jira2: FakeJira) -> None:
    jira2.remove_oauth2_client(CLIENT_ID)
    expire_access_token()
    answer = connected2.call("POST", PROXY, MYSELF)
    assert answer.status == 502 and answer.error_code == "integration_broken"
    assert answer.json["error"]["oauth2_error"] == "invalid_client"


def test_the_sign_endpoint_gives_a_short_lived_bearer(connected2: Broker, jira2: FakeJira) -> None:
    signed = connected2.call(
        "POST", "/v1/teams/acme/users/alice/jira/sign", {"method": "GET", "url": jira2.base_url + "/rest/api/2/myself"}
    )
    assert signed.status == 200
    header = signed.json["authorization"]
    assert header == f"Bearer {stored_tokens()['access_token']}" and signed.json["expires_at"].endswith("Z")
    import requests

    assert requests.get(jira2.base_url + "/rest/api/2/myself", headers={"Authorization": header}, timeout=5).ok


# -- switching OAuth versions -------------------------------------------------------------------------
def test_switching_from_oauth1_to_oauth2_is_a_new_revision(
    broker: Broker, jira2: FakeJira, private_pem: str, store: Store
) -> None:
    assert broker.setup(jira2, private_pem).status == 201
    assert_page(broker.browser("GET", jira2.approve(broker.start_dance(broker.connect_link()), "alice")), 200, None)
    old_link = broker.connect_link(user="bob")
    revision = store.get_integration("acme")["revision"]  # type: ignore[index]
    assert setup_oauth2(broker, jira2).status == 200
    assert store.get_integration("acme")["revision"] != revision  # type: ignore[index]
    assert broker.call("GET", "/v1/teams/acme/users/alice/jira").status == 404
    assert broker.call("POST", PROXY, MYSELF).error_code == "not_connected"
    assert_page(broker.browser("GET", old_link), 410, "link_outdated")
    assert_page(connect(broker, jira2), 200, None)
    assert broker.call("POST", PROXY, MYSELF).status == 200
    # And back: the OAuth 2.0 connection is not used by an OAuth 1.0a integration.
    body = {"base_url": jira2.base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem}
    assert broker.call("PUT", "/v1/teams/acme/jira", body).json["auth"] == "oauth1"
    assert broker.call("POST", PROXY, MYSELF).error_code == "not_connected"


# -- tokens at rest ----------------------------------------------------------------------------------
def test_no_token_or_secret_in_any_table_item(connected2: Broker, jira2: FakeJira) -> None:
    expire_access_token()
    assert connected2.call("POST", PROXY, MYSELF).status == 200  # a refresh wrote new tokens
    tokens = stored_tokens()
    items = json.dumps(boto3.client("dynamodb").scan(TableName=TABLE)["Items"])
    for secret in (tokens["access_token"], tokens["refresh_token"], CLIENT_SECRET):
        assert secret not in items
        for encoded in (base64.b64encode(secret.encode()).decode(), hashlib.sha256(secret.encode()).hexdigest()):
            assert encoded not in items
    assert len(tokens["access_token"]) >= 20  # the values searched for are real tokens
