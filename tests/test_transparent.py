"""The transparent per-user endpoint through the Chalice test client: ``.../jira/site/{path}`` is Jira, as the user.

Methods, paths, queries and bodies pass as sent; links come back pointing at the site; the proxy's rules
hold (paths, headers, sizes, revocation); errors carry Jira's ``errorMessages`` beside the broker's envelope.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import ACME_KEY, Answer, Broker
from tests.fakejira import FakeJira
from tests.stored import stored_tokens

SITE = "/v1/teams/acme/users/alice/jira/site"
PUBLIC_SITE = f"http://broker.test{SITE}"


def site(broker: Broker, method: str, path: str, body: bytes | str = b"", **headers: str) -> Answer:
    sent = {"Authorization": f"Bearer {headers.pop('key', None) or 'jb_test-key-for-every-team-000000000000000'}"}
    sent.update(headers)
    data = body.encode() if isinstance(body, str) else body
    response = broker.client.http.request(method, SITE + path, headers=sent, body=data)
    return Answer(response.status_code, dict(response.headers), response.body)


def _last(jira: FakeJira, suffix: str) -> Any:
    return [r for r in jira.requests if r.path.endswith(suffix)][-1]


def test_a_get_as_the_user_with_its_links_moved_to_the_site(connected: Broker, jira: FakeJira) -> None:
    answer = site(connected, "GET", "/rest/api/2/issue/ABC-1?fields=summary,status&expand=names")
    assert answer.status == 200, answer.body
    issue = answer.json
    assert issue["key"] == "ABC-1"
    assert issue["self"] == f"{PUBLIC_SITE}/rest/api/2/issue/10000"
    assert jira.base_url not in answer.text  # no link leads a client to Jira itself
    sent = _last(jira, "/rest/api/2/issue/ABC-1")
    assert sent.query == {"fields": ["summary,status"], "expand": ["names"]}
    authorization = {k.lower(): v for k, v in sent.headers.items()}["authorization"]
    assert authorization.startswith("OAuth ") and "jb_test" not in authorization  # signed; the API key stays here


def test_the_api_key_cookies_and_other_headers_never_reach_jira(connected: Broker, jira: FakeJira) -> None:
    answer = site(
        connected,
        "GET",
        "/rest/api/2/myself",
        Cookie="JSESSIONID=stolen",
        Host="evil.example.com",
        **{"X-Forwarded-For": "10.1.2.3", "Accept": "application/json", "X-Atlassian-Token": "no-check"},
    )
    assert answer.status == 200
    sent = {k.lower(): v for k, v in _last(jira, "/rest/api/2/myself").headers.items()}
    assert "cookie" not in sent and "x-forwarded-for" not in sent
    assert sent["accept"] == "application/json" and sent["x-atlassian-token"] == "no-check"
    assert "jb_test" not in json.dumps(sent)
    assert "Set-Cookie" not in answer.headers


def test_repeated_query_parameters_pass_in_order(connected: Broker, jira: FakeJira) -> None:
    answer = site(connected, "GET", "/rest/fake/echo?b=2&a=1&b=3&jql=project%20%3D%20ABC")
    assert answer.status == 200
    assert answer.json["query"] == {"b": ["2", "3"], "a": ["1"], "jql": ["project = ABC"]}


def test_a_json_post_and_its_created_self_link(connected: Broker, jira: FakeJira) -> None:
    body = {"fields": {"project": {"key": "ABC"}, "summary": "Through the site", "issuetype": {"name": "Task"}}}
    answer = site(connected, "POST", "/rest/api/2/issue", json.dumps(body), **{"Content-Type": "application/json"})
    assert answer.status == 201, answer.body
    assert answer.json["self"].startswith(f"{PUBLIC_SITE}/rest/api/2/issue/")
    assert json.loads(_last(jira, "/rest/api/2/issue").body) == body


def test_a_form_body_is_signed_and_an_oauth_parameter_refused(connected: Broker, jira: FakeJira) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    answer = site(connected, "POST", "/rest/fake/form", "name=a%20b&x=1", **form)
    assert answer.status == 200 and answer.json["body"] == "name=a%20b&x=1"
    refused = site(connected, "POST", "/rest/fake/form", "oauth_token=mine", **form)
    assert refused.status == 400 and refused.error_code == "invalid_request"
    query = site(connected, "GET", "/rest/fake/echo?oauth_token=mine")
    assert query.status == 400 and query.error_code == "invalid_request"


def test_a_redirect_location_points_at_the_site(connected: Broker) -> None:
    answer = site(connected, "GET", "/rest/fake/status/302")
    assert answer.status == 302
    assert answer.headers["Location"] == f"{PUBLIC_SITE}/rest/api/2/myself"


def test_head_and_delete(connected: Broker, jira: FakeJira) -> None:
    head = site(connected, "HEAD", "/rest/api/2/myself")
    assert head.status == 200 and head.body == b""
    assert _last(jira, "/rest/api/2/myself").method == "HEAD"
    assert site(connected, "DELETE", "/rest/fake/echo").json["method"] == "DELETE"


@pytest.mark.parametrize(
    "path",
    [
        "/plugins/servlet/oauth/access-token",
        "/PLUGINS/servlet/oauth/request-token",
        "/rest/%2e%2e/plugins/servlet/oauth/authorize",
        "/rest/api/2/%2E%2E/%2E%2E/x",
    ],
)
def test_bad_paths_get_the_proxys_answer_in_jiras_shape(connected: Broker, jira: FakeJira, path: str) -> None:
    jira.clear_requests()
    answer = site(connected, "GET", path)
    assert answer.status == 400 and answer.error_code == "invalid_path", answer.body
    assert answer.json["error"]["code"] == "invalid_path"
    assert answer.json["errorMessages"][0].startswith("invalid_path: ") and answer.json["errors"] == {}
    assert jira.requests == []


def test_not_connected_and_revoked_in_jiras_shape(connected: Broker, jira: FakeJira) -> None:
    nobody = connected.client.http.request(
        "GET",
        "/v1/teams/acme/users/bob/jira/site/rest/api/2/myself",
        headers={"Authorization": "Bearer jb_test-key-for-every-team-000000000000000"},
    )
    assert nobody.status_code == 404 and json.loads(nobody.body)["errorMessages"][0].startswith("not_connected: ")
    jira.revoke_access_token(stored_tokens()["access_token"])
    revoked = site(connected, "GET", "/rest/api/2/myself")
    assert revoked.status == 401 and revoked.error_code == "reauthorization_required"
    assert revoked.json["error"]["connect_url"].startswith("http://broker.test/connect/")
    assert revoked.json["errorMessages"][0].startswith("reauthorization_required: ")


def test_jira_down_is_a_502_in_jiras_shape(connected: Broker, jira: FakeJira) -> None:
    jira.stop()
    answer = site(connected, "GET", "/rest/api/2/myself")
    assert answer.status == 502 and answer.error_code == "jira_unreachable"
    assert answer.json["errorMessages"][0].startswith("jira_unreachable: ")


def test_jiras_own_errors_pass_untouched(connected: Broker) -> None:
    answer = site(connected, "GET", "/rest/api/2/issue/NOPE-1")
    assert answer.status == 404 and answer.error_code is None
    assert "error" not in answer.json and answer.json["errorMessages"]


def test_a_body_over_the_limit(connected: Broker) -> None:
    answer = site(connected, "POST", "/rest/fake/echo", b"x" * (4 * 1024 * 1024 + 1), **{"Content-Type": "text/plain"})
    assert answer.status == 413 and answer.error_code == "body_too_large"


def test_a_teams_key_reaches_only_its_team(connected: Broker) -> None:
    other = connected.client.http.request(
        "GET",
        "/v1/teams/other/users/alice/jira/site/rest/api/2/myself",
        headers={"Authorization": f"Bearer {ACME_KEY}"},
    )
    assert other.status_code == 403 and json.loads(other.body)["error"]["code"] == "team_forbidden"


def test_binary_answers_are_bytes(connected: Broker) -> None:
    from tests.fakejira import FAKE_PNG

    for accept in ("*/*", "application/json, */*", "image/png"):
        answer = site(connected, "GET", "/rest/fake/binary", Accept=accept)
        assert answer.status == 200 and answer.body == FAKE_PNG, accept


def test_an_oauth2_team_through_the_site(broker: Broker, jira: FakeJira) -> None:
    from tests.conftest import assert_page
    from tests.test_oauth2_flow import (
        CLIENT_ID,
        CLIENT_SECRET,
        REDIRECT_URI,
        connect,
        expire_access_token,
        setup_oauth2,
    )

    jira.add_oauth2_client(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI)
    assert setup_oauth2(broker, jira).status == 201
    assert_page(connect(broker, jira), 200, None)
    answer = site(broker, "GET", "/rest/api/2/issue/ABC-1")
    assert answer.status == 200 and answer.json["self"] == f"{PUBLIC_SITE}/rest/api/2/issue/10000"
    sent = {k.lower(): v for k, v in _last(jira, "/rest/api/2/issue/ABC-1").headers.items()}
    assert sent["authorization"] == f"Bearer {stored_tokens()['access_token']}"
    expire_access_token()
    assert site(broker, "GET", "/rest/api/2/myself").json["name"] == "alice"
    assert len(jira.oauth2_token_calls("refresh_token")) == 1
