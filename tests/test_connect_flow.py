"""Connect links, the Continue click, and Jira's callback: every path and every error."""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from chalicelib import clock, signin
from chalicelib.errors import BrokerError
from chalicelib.store import Store
from tests import faultyaws
from tests.conftest import PUBLIC_URL, TABLE, Broker, assert_page, request_token_of
from tests.fakejira import FakeJira
from tests.stored import stored_tokens

faulty_aws = faultyaws.faulty_aws
faulty_broker = faultyaws.faulty_broker


@pytest.fixture
def team(broker: Broker, jira: FakeJira, private_pem: str) -> Broker:
    assert broker.setup(jira, private_pem).status == 201
    jira.clear_requests()
    return broker


def _items(store: Store, prefix: str) -> list[dict[str, Any]]:
    items = boto3.client("dynamodb").scan(TableName=store.table_name)["Items"]
    return [i for i in items if i["pk"]["S"].startswith(prefix)]


def _shift_clock(monkeypatch: pytest.MonkeyPatch, seconds: int) -> None:
    real = time.time
    monkeypatch.setattr(clock, "now", lambda: int(real()) + seconds)


# -- creating links ----------------------------------------------------------------------
def test_create_link(team: Broker, store: Store) -> None:
    answer = team.call("POST", "/v1/teams/acme/users/alice/jira/connect-link", {"expires_in": 600})
    assert answer.status == 201
    assert answer.json["url"].startswith(f"{PUBLIC_URL}/connect/")
    assert answer.json["expires_at"].endswith("Z") and answer.json["expires_in"] == 600
    (link,) = _items(store, "LINK#")
    assert int(link["ttl"]["N"]) > int(link["expires_at"]["N"]) > clock.now()


@pytest.mark.parametrize("expires_in", [59, 86401, "3600", True, 1.5])
def test_link_lifetime_bounds(team: Broker, expires_in: Any) -> None:
    answer = team.call("POST", "/v1/teams/acme/users/alice/jira/connect-link", {"expires_in": expires_in})
    assert answer.status == 400 and answer.error_code == "invalid_expires_in"


def test_return_to_must_be_allowed(team: Broker) -> None:
    answer = team.call("POST", "/v1/teams/acme/users/alice/jira/connect-link", {"return_to": "https://evil.example/"})
    assert answer.status == 400 and answer.error_code == "return_to_not_allowed"
    assert "https://chat.example.com" in answer.json["error"]["message"]


def test_link_for_team_without_integration(broker: Broker) -> None:
    answer = broker.call("POST", "/v1/teams/acme/users/alice/jira/connect-link", {})
    assert answer.status == 404 and answer.error_code == "integration_not_found"


def test_invalid_user_id(team: Broker) -> None:
    answer = team.call("POST", "/v1/teams/acme/users/al%20ice/jira/connect-link", {})
    assert answer.status == 400 and answer.error_code == "invalid_user"


def test_user_id_with_at_sign(team: Broker, jira: FakeJira) -> None:
    link = team.connect_link(user="alice%40example.com")
    page = team.browser("GET", link)
    assert_page(page, 200, None, "alice@example.com")


# -- opening a link (GET) ------------------------------------------------------------------
def test_get_link_names_jira_user_and_team_and_asks_nothing_of_jira(team: Broker, jira: FakeJira, store: Store) -> None:
    link = team.connect_link()
    before = boto3.client("dynamodb").scan(TableName=store.table_name)["Items"]
    page = team.browser("GET", link)
    assert_page(page, 200, None, "Continue to Jira", "alice", "acme", urlsplit(jira.base_url).netloc)
    assert jira.requests == []
    assert boto3.client("dynamodb").scan(TableName=store.table_name)["Items"] == before
    csp = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src" not in csp and "unsafe-inline" not in csp
    assert page.headers["Referrer-Policy"] == "no-referrer" and page.headers["Cache-Control"] == "no-store"


def test_forged_link(team: Broker, jira: FakeJira) -> None:
    link = team.connect_link()
    for bad in (link[:-2] + "xx", f"{PUBLIC_URL}/connect/nonsense", link.replace("/connect/", "/connect/A")):
        assert_page(team.browser("GET", bad), 404, "link_invalid", "not valid")
        assert_page(team.click_continue(bad), 404, "link_invalid")
    assert jira.requests == []


def test_expired_link(team: Broker, jira: FakeJira, monkeypatch: pytest.MonkeyPatch) -> None:
    link = team.connect_link(expires_in=60)
    _shift_clock(monkeypatch, 61)
    assert_page(team.browser("GET", link), 410, "link_expired", "expired", "new link")
    assert_page(team.click_continue(link), 410, "link_expired")
    assert jira.requests == []


def test_link_after_integration_deleted_or_changed(team: Broker, jira: FakeJira, private_pem: str) -> None:
    link = team.connect_link()
    assert team.call("DELETE", "/v1/teams/acme/jira").status == 204
    assert_page(team.browser("GET", link), 404, "integration_not_found")
    assert team.setup(jira, private_pem).status == 201
    assert_page(team.browser("GET", link), 410, "link_outdated")


# -- Continue (POST) --------------------------------------------------------------------------
def test_continue_gets_a_request_token_now_and_redirects_to_jira(team: Broker, jira: FakeJira, store: Store) -> None:
    link = team.connect_link()
    answer = team.click_continue(link)
    assert answer.status == 303
    location = answer.headers["Location"]
    assert location.startswith(f"{jira.base_url}/plugins/servlet/oauth/authorize?oauth_token=")
    assert [r.path for r in jira.requests] == ["/jira/plugins/servlet/oauth/request-token"]
    (pending,) = _items(store, "RT#")
    rt = request_token_of(location)
    assert rt not in str(pending)  # stored under its hash
    assert int(pending["expires_at"]["N"]) - clock.now() in range(595, 601)
    assert int(pending["ttl"]["N"]) > int(pending["expires_at"]["N"])


def test_cross_site_continue_is_refused(team: Broker, jira: FakeJira) -> None:
    link = team.connect_link()
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
        assert_page(team.browser("POST", link, headers=headers), 403, "cross_site_request")
    assert jira.requests == []
    ok = team.browser("POST", link, headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"})
    assert ok.status == 303


# -- the callback --------------------------------------------------------------------------------
def test_full_flow_connects_the_user(team: Broker, jira: FakeJira, store: Store) -> None:
    link = team.connect_link()
    rt = team.start_dance(link)
    page = team.browser("GET", jira.approve(rt, "alice"))
    assert_page(page, 200, None, "Connected as Alice Example", "alice", "acme")
    answer = team.call("GET", "/v1/teams/acme/users/alice/jira")
    assert answer.status == 200
    assert answer.json["connected"] is True
    assert answer.json["jira_user"] == {
        "name": "alice",
        "key": "JIRAUSER10100",
        "display_name": "Alice Example",
        "email": "alice@example.com",
    }
    assert answer.json["connected_at"].endswith("Z")
    connection = store.get_connection("acme", "alice")
    assert connection is not None
    tokens = stored_tokens()
    assert tokens["access_token"] not in answer.text and tokens["token_secret"] not in answer.text
    assert len(tokens["access_token"]) == 32 and len(tokens["session_handle"]) == 32
    assert "access_token" not in connection and tokens["access_token"] not in str(connection)  # sealed at rest
    assert connection["expires_at"] - connection["connected_at"] == 157680000
    paths = [r.path.removeprefix("/jira") for r in jira.requests]
    assert paths[-2:] == ["/plugins/servlet/oauth/access-token", "/rest/api/2/myself"]


def test_display_names_are_escaped(team: Broker, jira: FakeJira) -> None:
    rt = team.start_dance(team.connect_link(user="bob"))
    page = team.browser("GET", jira.approve(rt, "bob"))
    assert page.status == 200
    assert "Bob &lt;Builder&gt;" in page.text and "<Builder>" not in page.text


def test_link_used_after_completion(connected: Broker, jira: FakeJira) -> None:
    # `connected` used one link; make, complete and reuse another.
    link = connected.connect_link()
    rt = connected.start_dance(link)
    assert connected.browser("GET", jira.approve(rt, "alice")).status == 200
    jira.clear_requests()
    assert_page(connected.browser("GET", link), 410, "link_used", "already used")
    assert_page(connected.click_continue(link), 410, "link_used")
    assert jira.requests == []


def test_callback_replayed(team: Broker, jira: FakeJira) -> None:
    rt = team.start_dance(team.connect_link())
    callback = jira.approve(rt, "alice")
    assert team.browser("GET", callback).status == 200
    assert_page(team.browser("GET", callback), 410, "request_token_used", "already used")


def test_unknown_and_missing_tokens(team: Broker) -> None:
    assert_page(team.browser("GET", "/oauth/callback?oauth_token=nope&oauth_verifier=x"), 404, "request_token_unknown")
    assert_page(team.browser("GET", "/oauth/callback"), 400, "missing_oauth_token")


def test_expired_request_token(team: Broker, jira: FakeJira, monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
    rt = team.start_dance(team.connect_link())
    callback = jira.approve(rt, "alice")
    _shift_clock(monkeypatch, 601)
    assert_page(team.browser("GET", callback), 410, "request_token_expired", "10 minutes")
    assert store.get_connection("acme", "alice") is None


def test_denied(team: Broker, jira: FakeJira, store: Store) -> None:
    link = team.connect_link()
    rt = team.start_dance(link)
    jira.clear_requests()
    assert_page(team.browser("GET", jira.deny(rt)), 403, "access_denied", "denied")
    assert store.get_connection("acme", "alice") is None
    assert jira.requests == []  # a denied token is never exchanged
    assert team.browser("GET", link).status == 200  # the link can be tried again


def test_exchange_failure_names_the_problem(team: Broker, jira: FakeJira, store: Store) -> None:
    rt = team.start_dance(team.connect_link())
    callback = jira.approve(rt, "alice")
    query = parse_qs(urlsplit(callback).query)
    wrong = f"/oauth/callback?oauth_token={query['oauth_token'][0]}&oauth_verifier=wrong"
    assert_page(team.browser("GET", wrong), 422, "token_rejected", "Jira did not accept")
    assert store.get_connection("acme", "alice") is None


def test_exchange_when_the_link_was_removed_from_jira(team: Broker, jira: FakeJira) -> None:
    rt = team.start_dance(team.connect_link())
    callback = jira.approve(rt, "alice")
    jira.remove_consumer("jira-oauth-broker")
    assert_page(team.browser("GET", callback), 422, "consumer_key_unknown", "Application link")


def test_return_to_gets_the_outcome(team: Broker, jira: FakeJira) -> None:
    link = team.connect_link(return_to="https://chat.example.com/done?chan=1")
    rt = team.start_dance(link)
    answer = team.browser("GET", jira.approve(rt, "alice"))
    assert answer.status == 303
    assert answer.headers["Location"] == "https://chat.example.com/done?chan=1&jira=connected"

    link = team.connect_link(user="bob", return_to="https://chat.example.com/done")
    answer = team.browser("GET", jira.deny(team.start_dance(link)))
    assert answer.headers["Location"] == "https://chat.example.com/done?jira=denied"

    link = team.connect_link(user="carol", return_to="https://chat.example.com/done")
    rt = team.start_dance(link)
    answer = team.browser("GET", f"/oauth/callback?oauth_token={rt}&oauth_verifier=wrong")
    assert answer.headers["Location"] == "https://chat.example.com/done?jira=error&jira_error=permission_unknown"


def test_two_callbacks_racing_for_one_token(faulty_broker: Broker, jira: FakeJira, private_pem: str) -> None:
    """On the request-serialised moto server (as make run uses): in-process moto's conditional
    writes are not atomic across threads, DynamoDB's and the local server's are."""
    team, store = faulty_broker, Store(TABLE)
    assert team.setup(jira, private_pem).status == 201
    jira.clear_requests()
    rt = team.start_dance(team.connect_link())
    query = parse_qs(urlsplit(jira.approve(rt, "alice")).query)
    verifier = query["oauth_verifier"][0]
    barrier = threading.Barrier(4)
    results: list[str] = []

    def callback() -> None:
        barrier.wait()
        try:
            results.append(
                signin.finish(
                    "oauth1", {"oauth_token": rt, "oauth_verifier": verifier}, team.cookies["jira_broker_browser"]
                ).result
            )
        except BrokerError as error:
            results.append(error.code)

    threads = [threading.Thread(target=callback) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["connected"] + ["request_token_used"] * 3
    assert len(_items(store, "TEAM#acme")) == 2  # the integration and exactly one connection
    exchanges = [r for r in jira.requests if r.path.endswith("/access-token")]
    assert len(exchanges) == 1


# -- user connections ------------------------------------------------------------------------------
def test_disconnect(connected: Broker) -> None:
    assert connected.call("DELETE", "/v1/teams/acme/users/alice/jira").status == 204
    answer = connected.call("GET", "/v1/teams/acme/users/alice/jira")
    assert answer.status == 404 and answer.error_code == "not_connected"
    assert connected.call("DELETE", "/v1/teams/acme/users/alice/jira").status == 204
