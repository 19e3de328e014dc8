"""Trust: a Jira identity is bound only to the browser that started the sign-in, a link completes
once, connections never cross Jira sites, and setups racing each other cannot both win.

Through the Chalice test client against moto and the fake Jira; the same attacks run through the
real local stack in tests/test_attacks_local.py.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from chalicelib import integrations, oauth1
from chalicelib.config import load_settings
from chalicelib.errors import BrokerError
from chalicelib.keys import KeyVault, fingerprint
from chalicelib.store import Store
from tests.conftest import CONSUMER_KEY, Broker, _pem, assert_page, key_secret_name, public_pem
from tests.fakejira import FakeJira
from tests.stored import stored_tokens

PROXY = "/v1/teams/acme/users/{user}/jira/proxy"


def _exchanges(jira: FakeJira) -> int:
    return len([r for r in jira.requests if r.path.endswith("/oauth/access-token")])


def _rest_calls(jira: FakeJira) -> list[Any]:
    return [r for r in jira.requests if "/rest/" in r.path and not r.path.endswith("/serverInfo")]


@pytest.fixture
def team(broker: Broker, jira: FakeJira, private_pem: str) -> Broker:
    jira.add_user("mallory", display_name="Mallory Example")
    jira.add_user("carol", display_name="Carol Example")
    assert broker.setup(jira, private_pem).status == 201
    jira.clear_requests()
    return broker


# -- the sign-in is bound to the browser that clicked Continue ------------------------------------
def test_session_fixation_an_approval_forwarded_to_someone_else_connects_nobody(
    team: Broker, jira: FakeJira, store: Store
) -> None:
    rt = team.start_dance(team.connect_link(user="mallory"))  # mallory's browser clicks Continue
    callback = jira.approve(rt, "alice")  # ...and forwards Jira's Allow page to alice, who approves
    alice = team.other_browser()
    assert_page(
        alice.browser("GET", callback), 403, "signin_other_browser", "mallory", "another browser", "stored nothing"
    )
    assert store.get_connection("acme", "mallory") is None
    assert _exchanges(jira) == 0
    proxied = team.call("POST", PROXY.format(user="mallory"), {"method": "GET", "path": "/rest/api/2/myself"})
    assert proxied.status == 404 and proxied.error_code == "not_connected"
    # Nothing was consumed: the request token is still pending in the browser that started it.
    pending = store.get_pending(rt)
    assert pending["status"] == "pending"


def test_a_callback_without_the_cookie_neither_connects_nor_cancels(team: Broker, jira: FakeJira, store: Store) -> None:
    rt = team.start_dance(team.connect_link())
    stranger = team.other_browser()
    cancel = stranger.browser("GET", f"/oauth/callback?oauth_token={rt}&oauth_verifier=denied")
    assert_page(cancel, 403, "signin_other_browser")
    forged = {**team.cookies, "jira_broker_browser": "A" * 43}  # a well-formed id of another browser
    stranger.cookies = forged
    assert_page(stranger.browser("GET", jira.approve(rt, "alice")), 403, "signin_other_browser")
    # The person who started it still finishes it.
    assert_page(team.browser("GET", jira.approve(rt, "alice")), 200, None, "Connected as Alice Example")
    assert store.get_connection("acme", "alice") is not None


def test_continue_sets_an_httponly_lax_cookie_and_keeps_one_browser_id(team: Broker) -> None:
    first = team.click_continue(team.connect_link())
    cookie = first.headers["Set-Cookie"]
    assert cookie.startswith("jira_broker_browser=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/" in cookie and "Secure" not in cookie  # the local stage serves http
    browser_id = team.cookies["jira_broker_browser"]
    second = team.click_continue(team.connect_link(user="bob"))
    assert second.headers["Set-Cookie"].startswith(f"jira_broker_browser={browser_id};")  # two tabs, one browser


def test_outside_the_local_stage_the_cookie_is_secure_and_host_prefixed(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib import browser

    monkeypatch.setenv("BROKER_STAGE", "prod")
    monkeypatch.setenv("BROKER_PUBLIC_URL", "https://broker.example.com/api")
    cookie = browser.set_cookie(browser.new_browser_id(), load_settings())
    assert cookie.startswith("__Host-jira_broker_browser=") and "; Secure" in cookie and "Path=/;" in cookie


# -- a link completes once ---------------------------------------------------------------------------------
def test_a_second_sign_in_of_a_used_link_stores_nothing(team: Broker, jira: FakeJira, store: Store) -> None:
    link = team.connect_link()
    first, second = team.start_dance(link), team.start_dance(link)  # Continue clicked twice
    assert_page(team.browser("GET", jira.approve(first, "alice")), 200, None, "Connected as Alice Example")
    exchanges = _exchanges(jira)
    assert_page(team.browser("GET", jira.approve(second, "carol")), 410, "link_used", "stored nothing")
    assert _exchanges(jira) == exchanges  # the used link is seen before asking Jira for a token
    connection = store.get_connection("acme", "alice")
    assert connection is not None and connection["jira_user"]["name"] == "alice"


def test_the_transaction_refuses_a_link_completed_after_the_check(
    team: Broker, jira: FakeJira, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both sign-ins pass the link check; the one whose exchange finishes last must store nothing."""
    link = team.connect_link()
    first, second = team.start_dance(link), team.start_dance(link)
    first_callback = jira.approve(first, "alice")
    real_myself = oauth1.JiraClient.myself

    def myself_then_the_other_sign_in_finishes(self: oauth1.JiraClient, token: str, secret: str) -> dict[str, Any]:
        me = real_myself(self, token, secret)
        monkeypatch.setattr(oauth1.JiraClient, "myself", real_myself)
        assert_page(team.browser("GET", first_callback), 200, None, "Connected as Alice Example")
        return me

    monkeypatch.setattr(oauth1.JiraClient, "myself", myself_then_the_other_sign_in_finishes)
    assert_page(team.browser("GET", jira.approve(second, "carol")), 410, "link_used")
    connection = store.get_connection("acme", "alice")
    assert connection is not None and connection["jira_user"]["name"] == "alice"


def test_a_setup_link_used_meanwhile_changes_nothing(
    broker: Broker, jira: FakeJira, private_pem: str, store: Store
) -> None:
    link = broker.call("POST", "/v1/teams/acme/jira/setup-link", {"user": "alice"})
    assert link.status == 201
    settings = load_settings()
    body = {"base_url": jira.base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem}
    from chalicelib import setup as setup_module

    claims = setup_module.check_link(link.json["url"].rsplit("/", 1)[1], settings)
    assert integrations.put_integration("acme", body, settings, complete_link=claims.link_id)[0] == 201
    jira.add_consumer("other", public_pem_of(private_pem))
    with pytest.raises(BrokerError) as raised:
        integrations.put_integration("acme", {**body, "consumer_key": "other"}, settings, complete_link=claims.link_id)
    assert raised.value.code == "link_used"
    current = store.get_integration("acme")
    assert current is not None and current["consumer_key"] == CONSUMER_KEY and current["version"] == 1


def public_pem_of(private_pem: str) -> str:
    from chalicelib.keys import parse_private_key

    return public_pem(parse_private_key(private_pem))


# -- connections belong to one integration revision ---------------------------------------------------------
def test_a_team_moved_to_another_jira_during_the_callback_stores_nothing(
    team: Broker, jira: FakeJira, other_jira: FakeJira, private_pem: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = team.start_dance(team.connect_link())
    callback = jira.approve(rt, "alice")
    real_access_token = oauth1.JiraClient.access_token
    body = {"base_url": other_jira.base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem}

    def exchange_while_the_admin_moves_the_team(self: oauth1.JiraClient, *args: Any) -> Any:
        access = real_access_token(self, *args)
        assert integrations.put_integration("acme", body, load_settings())[0] == 200
        return access

    monkeypatch.setattr(oauth1.JiraClient, "access_token", exchange_while_the_admin_moves_the_team)
    assert_page(team.browser("GET", callback), 409, "integration_changed", "stored nothing")
    assert store.get_connection("acme", "alice") is None
    other_jira.clear_requests()
    proxied = team.call("POST", PROXY.format(user="alice"), {"method": "GET", "path": "/rest/api/2/myself"})
    assert proxied.status == 404 and proxied.error_code == "not_connected"
    assert _rest_calls(other_jira) == []


def test_a_connection_of_an_older_revision_is_never_used(
    connected: Broker, jira: FakeJira, other_jira: FakeJira, private_pem: str, store: Store
) -> None:
    old = store.get_connection("acme", "alice")
    assert old is not None
    old_token = stored_tokens()["access_token"]
    body = {"base_url": other_jira.base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem}
    assert connected.call("PUT", "/v1/teams/acme/jira", body).status == 200
    # As if the old connection had survived (a clean-up step failed, or a write raced): put it back.
    store.client.put_item(
        TableName=store.table_name,
        Item={"pk": {"S": "TEAM#acme"}, "sk": {"S": "USER#alice"}, **_typed(old, skip=("pk", "sk"))},
    )
    status = connected.call("GET", "/v1/teams/acme/users/alice/jira")
    assert status.status == 404 and status.error_code == "not_connected"
    jira.clear_requests()
    other_jira.clear_requests()
    for route, request in (
        ("proxy", {"method": "GET", "path": "/rest/api/2/myself"}),
        ("sign", {"method": "GET", "url": other_jira.base_url + "/rest/api/2/myself"}),
    ):
        answer = connected.call("POST", f"/v1/teams/acme/users/alice/jira/{route}", request)
        if answer.status == 401:
            assert answer.error_code == "reauthorization_required"
            assert answer.json["error"]["connect_url"].startswith("http://broker.test/connect/")
            assert old_token not in answer.text
        else:
            assert answer.status == 404 and answer.error_code == "not_connected"
    assert _rest_calls(jira) == [] and _rest_calls(other_jira) == []
    assert store.get_connection("acme", "alice") is None  # the stale connection was removed


def _typed(values: dict[str, Any], skip: tuple[str, ...]) -> dict[str, Any]:
    from chalicelib.dynamo import to_item

    return to_item({k: v for k, v in values.items() if k not in skip})


# -- every write a new version; a key rotation is exact -----------------------------------------------------
def test_every_write_bumps_the_version_and_a_new_site_the_revision(
    connected: Broker, jira: FakeJira, other_jira: FakeJira, private_pem: str, store: Store
) -> None:
    before = store.get_integration("acme")
    assert before is not None and before["version"] == 1
    assert connected.setup(jira, private_pem).status == 200  # the same site again
    same = store.get_integration("acme")
    assert same is not None and same["version"] == 2 and same["revision"] == before["revision"]
    assert connected.call("GET", "/v1/teams/acme/users/alice/jira").status == 200  # still connected
    body = {"base_url": other_jira.base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem}
    assert connected.call("PUT", "/v1/teams/acme/jira", body).status == 200
    moved = store.get_integration("acme")
    assert moved is not None and moved["version"] == 3 and moved["revision"] != before["revision"]


def test_a_key_rotation_signs_with_exactly_the_key_get_shows(
    connected: Broker, jira: FakeJira, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey, store: Store
) -> None:
    jira.add_consumer(CONSUMER_KEY, public_pem(other_rsa_key))  # the admin pastes the new public key
    rotated = connected.setup(jira, _pem(other_rsa_key))
    assert rotated.status == 200
    shown = connected.call("GET", "/v1/teams/acme/jira").json["public_key_fingerprint"]
    assert shown == fingerprint(other_rsa_key)
    integration = store.get_integration("acme")
    assert integration is not None and integration["key_secret"] == key_secret_name(other_rsa_key)
    secrets = boto3.client("secretsmanager")
    old = secrets.describe_secret(SecretId=key_secret_name(rsa_key))
    assert old.get("DeletedDate")  # the old key is scheduled for deletion once nothing names it
    proxied = connected.call("POST", PROXY.format(user="alice"), {"method": "GET", "path": "/rest/api/2/myself"})
    assert proxied.status == 200, proxied.body


def test_an_integration_from_before_versions_and_key_names_still_works_and_moves_on(
    broker: Broker, jira: FakeJira, rsa_key: rsa.RSAPrivateKey, private_pem: str, store: Store
) -> None:
    """Items written by the previous release: no version, no key_secret, the key under the old single name."""
    vault = KeyVault("jira-oauth-broker/local")
    boto3.client("secretsmanager").create_secret(Name=vault.team_key_name("acme"), SecretString=private_pem)
    legacy = {
        "team": "acme",
        "base_url": jira.base_url,
        "consumer_key": CONSUMER_KEY,
        "public_key": public_pem(rsa_key),
        "public_key_fingerprint": fingerprint(rsa_key),
        "revision": "0123456789abcdef",
        "server": {},
        "warnings": [],
        "created_at": 1,
        "updated_at": 1,
    }
    from chalicelib.dynamo import to_item

    store.client.put_item(TableName=store.table_name, Item=to_item({**legacy, "pk": "TEAM#acme", "sk": "INTEGRATION"}))
    rt = broker.start_dance(broker.connect_link())
    assert_page(broker.browser("GET", jira.approve(rt, "alice")), 200, None, "Connected as Alice Example")
    assert broker.setup(jira, private_pem).status == 200  # replaces the unversioned item
    current = store.get_integration("acme")
    assert current is not None and current["version"] == 1 and current["revision"] == "0123456789abcdef"
    assert current["key_secret"] == key_secret_name(rsa_key)
    assert boto3.client("secretsmanager").describe_secret(SecretId=vault.team_key_name("acme")).get("DeletedDate")
    assert broker.call("GET", "/v1/teams/acme/users/alice/jira").status == 200


def test_a_request_token_of_a_callback_is_the_lookup_key_never_stored(team: Broker, store: Store) -> None:
    rt = team.start_dance(team.connect_link())
    items = boto3.client("dynamodb").scan(TableName=store.table_name)["Items"]
    assert rt not in str(items)
    assert team.cookies["jira_broker_browser"] not in str(items)  # only its hash is kept
