"""The greedy site route, ``/v1/teams/{team}/users/{user}/jira/site/{proxy+}``, routed as API Gateway routes it.

Chalice's router knows only one-segment ``{name}``; scripts/chalice_local.py teaches chalice.local's
RouteMatcher (which chalice local and Chalice's test client share) the greedy ``{name+}``: one or more
segments, joined with ``/`` and percent-decoded once in ``pathParameters``, as deployed. These tests
check the routing only (what reaches the view); tests/test_transparent.py checks what the view does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.app import Request
from chalice.local import RouteMatcher

from app import SITE_METHODS, app
from chalicelib.proxy import Upstream
from scripts.chalice_local import emulate_api_gateway, greedy_name
from tests.conftest import Broker
from tests.localstack import LocalStack, local_stack

SITE_ROUTE = "/v1/teams/{team}/users/{user}/jira/site/{proxy+}"
SITE = "/v1/teams/acme/users/alice/jira/site"
API_KEY = "jb_site-routing-key-0000000000000000000000000"


# -- the matcher ------------------------------------------------------------------------------------
def _match(url: str, routes: list[str] | None = None) -> tuple[str, dict[str, str], dict[str, list[str]]]:
    found = RouteMatcher(list(app.routes) if routes is None else routes).match_route(url)
    return found.route, dict(found.captured), dict(found.query_params)


def test_the_greedy_route_takes_the_rest_of_the_path() -> None:
    route, captured, query = _match(f"{SITE}/rest/api/2/myself?x=1&x=2&empty=")
    assert route == SITE_ROUTE
    assert captured == {"team": "acme", "user": "alice", "proxy": "rest/api/2/myself"}
    assert query == {"x": ["1", "2"], "empty": [""]}
    assert _match(f"{SITE}/myself")[1]["proxy"] == "myself"  # one segment: under "proxy", not "proxy+"
    assert _match(f"{SITE}/rest/api/2/issue/")[1]["proxy"] == "rest/api/2/issue"  # trailing slash, as chalice


def test_the_greedy_part_is_decoded_once_the_others_stay_as_chalice_local_gives_them() -> None:
    _, captured, _ = _match("/v1/teams/acme/users/al%40ice/jira/site/rest/api/2/user/bob%40example.com/a%2Fb%2520")
    assert captured == {"team": "acme", "user": "al%40ice", "proxy": "rest/api/2/user/bob@example.com/a/b%20"}
    # The other routes' parameters are untouched.
    assert _match("/v1/teams/acme/users/al%40ice/jira/proxy")[1] == {"team": "acme", "user": "al%40ice"}


@pytest.mark.parametrize("path", [SITE, f"{SITE}/", f"{SITE}//", f"{SITE}?x=1", f"{SITE}/?x=1"])
def test_nothing_after_site_matches_no_route(path: str) -> None:
    """API Gateway's {proxy+} needs at least one segment: deployed, this is its unknown-route answer."""
    with pytest.raises(ValueError, match="No matching route"):
        _match(path)


def test_concrete_routes_and_one_segment_captures_still_win() -> None:
    assert _match("/v1/teams/acme/users/alice/jira")[0] == "/v1/teams/{team}/users/{user}/jira"
    assert _match("/v1/teams/acme/users/alice/jira/proxy")[0] == "/v1/teams/{team}/users/{user}/jira/proxy"
    assert _match("/v1/teams/acme/users/alice/jira/sign")[0] == "/v1/teams/{team}/users/{user}/jira/sign"
    routes = ["/a/{proxy+}", "/a/{x}", "/a/b", "/a/b/{rest+}", "/c/{id}"]
    assert _match("/a/b", routes)[:2] == ("/a/b", {})
    assert _match("/a/z", routes)[:2] == ("/a/{x}", {"x": "z"})
    assert _match("/a/z/y", routes)[:2] == ("/a/{proxy+}", {"proxy": "z/y"})
    assert _match("/a/b/y/z", routes)[:2] == ("/a/b/{rest+}", {"rest": "y/z"})  # the most specific prefix
    with pytest.raises(ValueError):
        _match("/c/1/2", routes)  # no greedy route there: unchanged


def test_the_patch_is_idempotent_and_knows_greedy_routes() -> None:
    emulate_api_gateway()
    emulate_api_gateway()
    assert _match(f"{SITE}/a/b")[1]["proxy"] == "a/b"
    assert greedy_name(SITE_ROUTE) == "proxy" and greedy_name("/v1/teams/{team}/jira") is None
    assert [route for route in app.routes if greedy_name(route)] == [SITE_ROUTE]


# -- through Chalice's test client -------------------------------------------------------------------
@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Stand in for transparent.site_call: record what reached the view, answer it as JSON."""
    calls: list[dict[str, Any]] = []

    def site_call(team: str, user: str, path: str, request: Request, settings: Any = None) -> Upstream:
        seen = {
            "team": team,
            "user": user,
            "path": path,
            "method": request.method,
            "uri_params": request.uri_params,
            "query": {k: request.query_params.getlist(k) for k in request.query_params or {}},
            "resource": request.context.get("resourcePath"),
        }
        calls.append(seen)
        return Upstream(200, {"Content-Type": "application/json"}, json.dumps(seen).encode())

    monkeypatch.setattr("chalicelib.transparent.site_call", site_call)
    return calls


@pytest.mark.parametrize("method", SITE_METHODS)
def test_every_method_reaches_the_view_with_the_path_in_uri_params(
    broker: Broker, seen: list[dict[str, Any]], method: str
) -> None:
    answer = broker.call(method, f"{SITE}/rest/api/2/myself?x=1", headers={"Accept": "application/json, */*"})
    assert answer.status == 200, answer.body
    assert seen == [
        {
            "team": "acme",
            "user": "alice",
            "path": "rest/api/2/myself",
            "method": method,
            "uri_params": {"team": "acme", "user": "alice", "proxy": "rest/api/2/myself"},
            "query": {"x": ["1"]},
            "resource": SITE_ROUTE,
        }
    ]


def test_the_greedy_part_arrives_decoded(broker: Broker, seen: list[dict[str, Any]]) -> None:
    answer = broker.call("GET", f"{SITE}/rest/api/2/user/bob%40example.com?username=bob%40example.com")
    assert answer.status == 200, answer.body
    assert seen[-1]["path"] == "rest/api/2/user/bob@example.com"
    assert seen[-1]["query"] == {"username": ["bob@example.com"]}


def test_the_other_user_routes_are_unaffected(broker: Broker, seen: list[dict[str, Any]]) -> None:
    proxy = broker.call("POST", "/v1/teams/acme/users/alice/jira/proxy", {"method": "GET", "path": "/rest/x"})
    assert proxy.status == 404 and proxy.error_code == "integration_not_found"
    assert "errorMessages" not in proxy.json  # the envelope proxy's own errors: no Jira shape
    connection = broker.call("GET", "/v1/teams/acme/users/alice/jira")
    assert connection.status == 404 and "errorMessages" not in connection.json
    assert seen == []


def test_the_site_route_answers_as_jira_when_nothing_is_set_up(broker: Broker) -> None:
    answer = broker.call("GET", f"{SITE}/rest/api/2/myself?x=1")
    assert answer.status == 404 and answer.error_code == "integration_not_found"
    assert answer.json["errorMessages"][0].startswith("integration_not_found: ")  # it reached jira_site


def test_nothing_after_site_is_no_route_in_the_test_client(broker: Broker) -> None:
    """The test client answers an unknown route with chalice's raw 403; chalice local renders the Gateway
    Response (below), as API Gateway does."""
    for path in (SITE, f"{SITE}/"):
        answer = broker.client.http.request("GET", path, headers={}, body=b"")
        assert answer.status_code == 403 and b"Missing Authentication Token" in answer.body


# -- through a real chalice local ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with local_stack(tmp_path_factory.mktemp("site") / "run_local.log", API_KEY) as stack:
        yield stack


def test_chalice_local_routes_the_site_to_its_view(local: LocalStack) -> None:
    answer = local.api("GET", "/v1/teams/acme/users/alice/jira/site/rest/api/2/myself?x=1")
    assert answer.status_code == 404 and answer.headers["X-Broker-Error"] == "integration_not_found"
    body = answer.json()
    assert body["error"]["code"] == "integration_not_found" and body["errors"] == {}
    assert body["errorMessages"] == [f"integration_not_found: {body['error']['message']}"]
    for method in SITE_METHODS:
        other = local.api(method, "/v1/teams/acme/users/alice/jira/site/rest/api/2/issue%2FABC-1")
        assert other.status_code == 404 and other.headers["X-Broker-Error"] == "integration_not_found", method


def test_chalice_local_keeps_the_other_routes(local: LocalStack) -> None:
    proxy = local.api("POST", "/v1/teams/acme/users/alice/jira/proxy", json={"method": "GET", "path": "/rest/x"})
    assert proxy.status_code == 404 and proxy.headers["X-Broker-Error"] == "integration_not_found"
    assert "errorMessages" not in proxy.json()
    health = local.api("GET", "/health", key=None)
    assert health.status_code == 200 and health.headers["Content-Type"] == "application/json"
    assert health.json()["status"] == "ok"  # JSON arrives as text (chalice local decodes the base64)


@pytest.mark.parametrize("path", [SITE, f"{SITE}/"])
def test_chalice_local_answers_no_route_after_site_as_api_gateway(local: LocalStack, path: str) -> None:
    """Deployed: API Gateway's 403 Missing Authentication Token, i.e. the MISSING_AUTHENTICATION_TOKEN
    Gateway Response, 404 not_found; chalice local renders the same one from infra/resources.json."""
    answer = local.api("GET", path)
    assert answer.status_code == 404 and answer.headers["X-Broker-Error"] == "not_found"
    body = answer.json()
    assert body["error"]["code"] == "not_found"
    assert body["errorMessages"] == [f"not_found: {body['error']['message']}"] and body["errors"] == {}
    assert API_KEY not in answer.text


def test_chalice_local_gateway_responses_carry_jira_error_messages(local: LocalStack) -> None:
    for key, status, code in ((None, 401, "unauthorized"), ("jb_nope", 403, "forbidden")):
        answer = local.api("GET", f"{SITE}/rest/api/2/myself", key=key)
        assert answer.status_code == status and answer.headers["X-Broker-Error"] == code
        body = answer.json()
        assert body["errorMessages"] == [f"{code}: {body['error']['message']}"] and body["errors"] == {}
