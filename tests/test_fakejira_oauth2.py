"""Tests proving FakeJira's OAuth 2.0 provider behaves as Jira Data Center's does (8.22+), over real HTTP.

The client side is plain ``requests``: every token-endpoint call is a form POST a test can bend.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tests import fakejira_oauth2
from tests.fakejira import FakeJira
from tests.fakejira_oauth2 import InvalidAuthorizeRequest

CLIENT, SECRET = "broker-client", "broker-secret"
REDIRECT = "http://127.0.0.1:9/oauth2/callback"  # never fetched: redirects are not followed
OAUTH2 = "/rest/oauth2/latest"
NOT_AUTHENTICATED = "You are not authenticated. Authentication required to perform this operation."
STATE = "st&te =/?ü"  # must come back exactly


@pytest.fixture
def jira(jira: FakeJira) -> FakeJira:
    """conftest's fake Jira (alice, bob) with the broker's incoming OAuth 2.0 link, scopes READ and WRITE."""
    jira.add_oauth2_client(CLIENT, SECRET, REDIRECT)
    return jira


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


# ---------------------------------------------------------------- helpers


def pkce() -> tuple[str, str]:
    """(code_verifier, its S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_url(jira: FakeJira, challenge: str | None = None, **params: str | None) -> str:
    """The URL the broker sends the browser to; ``params`` change or (None) drop a parameter."""
    query: dict[str, str | None] = {
        "client_id": CLIENT,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "READ WRITE",
        "state": STATE,
        "code_challenge": challenge,
        "code_challenge_method": "S256" if challenge else None,
        **params,
    }
    return f"{jira.base_url}{OAUTH2}/authorize?" + urlencode({k: v for k, v in query.items() if v is not None})


def query_of(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def token_call(jira: FakeJira, http: requests.Session, **fields: str | None) -> requests.Response:
    """POST the token endpoint with the client's credentials in the form; ``fields`` change or (None) drop one."""
    form = {"client_id": CLIENT, "client_secret": SECRET, **fields}
    return http.post(f"{jira.base_url}{OAUTH2}/token", data={k: v for k, v in form.items() if v is not None})


def exchange(jira: FakeJira, http: requests.Session, code: str, **fields: str | None) -> requests.Response:
    return token_call(
        jira, http, **{"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, **fields}
    )


def refresh(jira: FakeJira, http: requests.Session, refresh_token: str, **fields: str | None) -> requests.Response:
    grant = {"grant_type": "refresh_token", "refresh_token": refresh_token, "redirect_uri": REDIRECT}
    return token_call(jira, http, **{**grant, **fields})


def connect(jira: FakeJira, http: requests.Session, username: str = "alice") -> dict[str, Any]:
    """The whole flow with PKCE, Allow clicked through the Python API; the token answer."""
    verifier, challenge = pkce()
    code = query_of(jira.oauth2_approve(authorize_url(jira, challenge), username))["code"]
    answer = exchange(jira, http, code, code_verifier=verifier)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def assert_error(answer: requests.Response, status: int, error: str) -> None:
    assert (answer.status_code, answer.json()["error"]) == (status, error), answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json()["error_description"]


def myself(jira: FakeJira, http: requests.Session, access_token: str) -> requests.Response:
    return http.get(f"{jira.base_url}/rest/api/2/myself", headers={"Authorization": f"Bearer {access_token}"})


def assert_unauthenticated(answer: requests.Response) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.json() == {"errorMessages": [NOT_AUTHENTICATED], "errors": {}}
    assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="http://127.0.0.1:')


# ---------------------------------------------------------------- authorize


def test_code_flow_with_pkce_through_the_consent_page(jira: FakeJira, http: requests.Session) -> None:
    verifier, challenge = pkce()
    page = http.get(authorize_url(jira, challenge))
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert f"{CLIENT} would like to access your Jira account" in page.text and "READ, WRITE" in page.text
    # What a browser posts: the Allow form's hidden fields (the request, state included), user name, button.
    form = {
        name: html.unescape(value)
        for name, value in re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', page.text)
    }
    assert form == query_of(authorize_url(jira, challenge))
    allow = http.post(
        f"{jira.base_url}{OAUTH2}/authorize",
        data={**form, "username": "alice", "decision": "approve"},
        allow_redirects=False,
    )
    assert allow.status_code == 302, allow.text
    location = allow.headers["Location"]
    assert location.startswith(REDIRECT + "?code=") and query_of(location)["state"] == STATE

    answer = exchange(jira, http, query_of(location)["code"], code_verifier=verifier)
    assert answer.status_code == 200, answer.text
    tokens = answer.json()
    assert set(tokens) == {"access_token", "refresh_token", "token_type", "expires_in", "scope"}
    assert (tokens["token_type"], tokens["expires_in"], tokens["scope"]) == ("bearer", 3600, "READ WRITE")
    assert answer.headers["Cache-Control"] == "no-store"
    me = myself(jira, http, tokens["access_token"])
    assert me.status_code == 200 and me.json()["key"] == "JIRAUSER10100"
    assert jira.oauth2_token_calls("authorization_code")[0]["code_verifier"] == verifier
    assert [r.path for r in jira.requests].count(f"/jira{OAUTH2}/token") == 1


def test_pkce_is_optional_but_a_verifier_without_a_challenge_is_refused(jira: FakeJira, http: requests.Session) -> None:
    code = query_of(jira.oauth2_approve(authorize_url(jira), "alice"))["code"]
    assert exchange(jira, http, code).status_code == 200
    code = query_of(jira.oauth2_approve(authorize_url(jira), "alice"))["code"]
    assert_error(exchange(jira, http, code, code_verifier=pkce()[0]), 400, "invalid_grant")


def test_deny(jira: FakeJira, http: requests.Session) -> None:
    form = {**query_of(authorize_url(jira)), "username": "alice", "decision": "deny"}
    deny = http.post(f"{jira.base_url}{OAUTH2}/authorize", data=form, allow_redirects=False)
    assert deny.status_code == 302
    assert query_of(deny.headers["Location"]) == {"error": "access_denied", "state": STATE}
    assert query_of(jira.oauth2_deny(authorize_url(jira))) == {"error": "access_denied", "state": STATE}


def test_a_new_user_name_becomes_a_user(jira: FakeJira, http: requests.Session) -> None:
    tokens = connect(jira, http, "carol.jones")
    assert myself(jira, http, tokens["access_token"]).json()["displayName"] == "Carol Jones Example"
    with pytest.raises(ValueError, match="not a user name"):
        jira.oauth2_approve(authorize_url(jira), "no spaces please")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "invalid_request"),
        ({"scope": "READ ADMIN"}, "invalid_scope"),
        ({"scope": None}, "invalid_scope"),
        ({"code_challenge": "x" * 43, "code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "x" * 43, "code_challenge_method": None}, "invalid_request"),
    ],
)
def test_refusals_that_redirect(jira: FakeJira, http: requests.Session, change: dict[str, str], error: str) -> None:
    url = authorize_url(jira, **change)
    page = http.get(url, allow_redirects=False)
    assert page.status_code == 302, page.text
    assert page.headers["Location"].startswith(REDIRECT + "?")
    assert query_of(page.headers["Location"])["error"] == error and query_of(page.headers["Location"])["state"] == STATE
    with pytest.raises(InvalidAuthorizeRequest) as refused:
        jira.oauth2_approve(url, "alice")
    assert refused.value.error == error


@pytest.mark.parametrize(
    "change", [{"client_id": "nobody"}, {"redirect_uri": REDIRECT + "/"}, {"redirect_uri": None}], ids=str
)
def test_unknown_client_or_redirect_is_a_page_never_a_redirect(
    jira: FakeJira, http: requests.Session, change: dict[str, str]
) -> None:
    url = authorize_url(jira, **change)
    page = http.get(url, allow_redirects=False)
    assert page.status_code == 400 and "Location" not in page.headers
    assert page.headers["Content-Type"].startswith("text/html")
    error = KeyError if "client_id" in change else ValueError
    with pytest.raises(error):
        jira.oauth2_approve(url, "alice")


# ---------------------------------------------------------------- token: the code


def test_code_lives_ten_seconds(jira: FakeJira, http: requests.Session) -> None:
    first = query_of(jira.oauth2_approve(authorize_url(jira), "alice"))["code"]
    second = query_of(jira.oauth2_approve(authorize_url(jira), "alice"))["code"]
    jira.clock_offset = 9
    assert exchange(jira, http, first).status_code == 200
    jira.clock_offset = 11
    assert_error(exchange(jira, http, second), 400, "invalid_grant")


def test_a_code_used_twice_revokes_its_tokens(jira: FakeJira, http: requests.Session) -> None:
    code = query_of(jira.oauth2_approve(authorize_url(jira), "alice"))["code"]
    tokens = exchange(jira, http, code).json()
    assert myself(jira, http, tokens["access_token"]).status_code == 200
    assert_error(exchange(jira, http, code), 400, "invalid_grant")
    assert_unauthenticated(myself(jira, http, tokens["access_token"]))
    assert_error(refresh(jira, http, tokens["refresh_token"]), 400, "invalid_grant")


def test_wrong_verifier_and_redirect_mismatch_are_invalid_grant(jira: FakeJira, http: requests.Session) -> None:
    verifier, challenge = pkce()
    for fields in ({"code_verifier": pkce()[0]}, {"code_verifier": None}, {"redirect_uri": REDIRECT + "?x=1"}):
        code = query_of(jira.oauth2_approve(authorize_url(jira, challenge), "alice"))["code"]
        assert_error(exchange(jira, http, code, **{"code_verifier": verifier, **fields}), 400, "invalid_grant")
    code = query_of(jira.oauth2_approve(authorize_url(jira, challenge), "alice"))["code"]
    assert exchange(jira, http, code, code_verifier=verifier).status_code == 200


def test_missing_parameters_and_other_grant_types(jira: FakeJira, http: requests.Session) -> None:
    assert_error(token_call(jira, http, grant_type="authorization_code"), 400, "invalid_request")
    assert_error(exchange(jira, http, "some-code", redirect_uri=None), 400, "invalid_request")
    assert_error(token_call(jira, http, grant_type="refresh_token", redirect_uri=REDIRECT), 400, "invalid_request")
    assert_error(token_call(jira, http), 400, "invalid_request")
    assert_error(token_call(jira, http, grant_type="password", username="alice"), 400, "unsupported_grant_type")
    assert_error(token_call(jira, http, grant_type="client_credentials"), 400, "unsupported_grant_type")
    assert_error(exchange(jira, http, "no-such-code"), 400, "invalid_grant")


def test_client_authentication(jira: FakeJira, http: requests.Session) -> None:
    code = query_of(jira.oauth2_approve(authorize_url(jira), "alice"))["code"]
    assert_error(exchange(jira, http, code, client_secret="wrong"), 401, "invalid_client")
    assert_error(exchange(jira, http, code, client_id="nobody"), 401, "invalid_client")
    assert_error(exchange(jira, http, code, client_secret=None), 401, "invalid_client")
    url = f"{jira.base_url}{OAUTH2}/token"
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    wrong = http.post(url, data=form, auth=(CLIENT, "wrong"))
    assert_error(wrong, 401, "invalid_client")
    assert wrong.headers["WWW-Authenticate"].startswith("Basic ")
    basic = http.post(url, data=form, auth=(CLIENT, SECRET))  # the failed attempts did not spend the code
    assert basic.status_code == 200, basic.text


# ---------------------------------------------------------------- token: refresh


def test_refresh_rotates_and_old_access_tokens_keep_working(jira: FakeJira, http: requests.Session) -> None:
    first = connect(jira, http)
    second = refresh(jira, http, first["refresh_token"]).json()
    assert second["access_token"] != first["access_token"] and second["refresh_token"] != first["refresh_token"]
    assert (second["expires_in"], second["scope"]) == (3600, "READ WRITE")
    third = refresh(jira, http, second["refresh_token"])
    assert third.status_code == 200, third.text
    for tokens in (first, second, third.json()):
        assert myself(jira, http, tokens["access_token"]).json()["name"] == "alice"
    assert len(jira.oauth2_token_calls("refresh_token")) == 2


def test_refresh_needs_the_registered_redirect_uri(jira: FakeJira, http: requests.Session) -> None:
    tokens = connect(jira, http)
    assert_error(refresh(jira, http, tokens["refresh_token"], redirect_uri=None), 400, "invalid_grant")
    assert_error(refresh(jira, http, tokens["refresh_token"], redirect_uri=REDIRECT + "/x"), 400, "invalid_grant")
    assert refresh(jira, http, tokens["refresh_token"]).status_code == 200  # those did not spend it


def test_reusing_a_rotated_refresh_token_revokes_the_grant(jira: FakeJira, http: requests.Session) -> None:
    first = connect(jira, http)
    other = connect(jira, http)  # another grant of the same user is not touched
    second = refresh(jira, http, first["refresh_token"]).json()
    assert_error(refresh(jira, http, first["refresh_token"]), 400, "invalid_grant")
    assert_error(refresh(jira, http, second["refresh_token"]), 400, "invalid_grant")
    for tokens in (first, second):
        assert_unauthenticated(myself(jira, http, tokens["access_token"]))
    assert myself(jira, http, other["access_token"]).status_code == 200
    assert refresh(jira, http, other["refresh_token"]).status_code == 200


def test_lifetimes_of_access_and_refresh_tokens(jira: FakeJira, http: requests.Session) -> None:
    jira.oauth2_lifetimes(access=60, refresh=600)
    tokens = connect(jira, http)
    assert tokens["expires_in"] == 60
    jira.clock_offset = 59
    assert myself(jira, http, tokens["access_token"]).status_code == 200
    jira.clock_offset = 61
    assert_unauthenticated(myself(jira, http, tokens["access_token"]))
    assert jira.oauth2_access_tokens_for("alice") == []
    renewed = refresh(jira, http, tokens["refresh_token"]).json()  # counted from its own issue
    jira.clock_offset = 61 + 599
    assert refresh(jira, http, renewed["refresh_token"]).status_code == 200
    stale = connect(jira, http)
    jira.clock_offset += 601
    assert_error(refresh(jira, http, stale["refresh_token"]), 400, "invalid_grant")


def test_thirty_concurrent_refreshes_exactly_one_wins(jira: FakeJira, monkeypatch: pytest.MonkeyPatch) -> None:
    with requests.Session() as http:
        tokens = connect(jira, http)
    start = threading.Barrier(30)

    def slow_token(nbytes: int) -> str:  # widens the gap between checking a refresh token and rotating it
        time.sleep(0.01)
        return secrets.token_urlsafe(nbytes)

    fake_secrets = SimpleNamespace(
        token_urlsafe=slow_token, token_hex=secrets.token_hex, compare_digest=secrets.compare_digest
    )
    monkeypatch.setattr(fakejira_oauth2, "secrets", fake_secrets)

    def attempt(_: int) -> requests.Response:
        with requests.Session() as own:
            start.wait(timeout=10)
            return refresh(jira, own, tokens["refresh_token"])

    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(attempt, range(30)))
    assert sorted(answer.status_code for answer in answers) == [200] + [400] * 29
    assert {answer.json().get("error") for answer in answers} == {None, "invalid_grant"}
    assert len(jira.oauth2_token_calls("refresh_token")) == 30
    # The losers presented a rotated-away token: RFC 9700's reuse detection revoked the winner's grant.
    (winner,) = (answer.json() for answer in answers if answer.status_code == 200)
    with requests.Session() as http:
        assert_error(refresh(jira, http, winner["refresh_token"]), 400, "invalid_grant")


# ---------------------------------------------------------------- revocation and REST


def test_revoke_grant_by_user_and_client(jira: FakeJira, http: requests.Session) -> None:
    alice, bob = connect(jira, http, "alice"), connect(jira, http, "bob")
    jira.add_oauth2_client("other", "s2", REDIRECT, scopes=["READ"])
    assert jira.revoke_oauth2_grant("alice", client_id="other") == 0
    assert jira.revoke_oauth2_grant("alice", client_id=CLIENT) == 1
    assert_unauthenticated(myself(jira, http, alice["access_token"]))
    assert_error(refresh(jira, http, alice["refresh_token"]), 400, "invalid_grant")
    assert myself(jira, http, bob["access_token"]).status_code == 200
    assert http.post(f"{jira.base_url}/_fake/revoke", data={"client_id": CLIENT}).status_code == 400
    assert http.post(f"{jira.base_url}/_fake/revoke", data={"user": "bob"}).status_code == 204
    assert_unauthenticated(myself(jira, http, bob["access_token"]))
    assert jira.revoke_oauth2_grant("bob") == 0


def test_removing_the_client_kills_its_grants(jira: FakeJira, http: requests.Session) -> None:
    tokens = connect(jira, http)
    code = query_of(jira.oauth2_approve(authorize_url(jira), "alice"))["code"]
    jira.remove_oauth2_client(CLIENT)
    assert_unauthenticated(myself(jira, http, tokens["access_token"]))
    assert_error(refresh(jira, http, tokens["refresh_token"]), 401, "invalid_client")
    jira.add_oauth2_client(CLIENT, SECRET, REDIRECT)  # the same id again: a new link, nothing of the old one
    assert_unauthenticated(myself(jira, http, tokens["access_token"]))
    assert_error(refresh(jira, http, tokens["refresh_token"]), 400, "invalid_grant")
    assert_error(exchange(jira, http, code), 400, "invalid_grant")


def test_bearer_rest_calls(jira: FakeJira, http: requests.Session) -> None:
    bearer = {"Authorization": f"Bearer {connect(jira, http)['access_token']}"}
    search = http.get(f"{jira.base_url}/rest/api/2/search", params={"jql": "project = ABC"}, headers=bearer)
    assert search.status_code == 200 and search.json()["total"] == 2
    echo = http.post(f"{jira.base_url}/rest/api/2/whatever", json={"a": 1}, headers=bearer)
    assert echo.json()["user"] == "alice"
    for header in ("Bearer not-a-token", "Bearer", "bearer "):
        assert_unauthenticated(http.get(f"{jira.base_url}/rest/api/2/myself", headers={"Authorization": header}))
    info = http.get(f"{jira.base_url}/rest/api/2/serverInfo", headers={"Authorization": "Bearer not-a-token"})
    assert info.status_code == 200


def test_older_jira_has_no_oauth2(jira: FakeJira, http: requests.Session) -> None:
    jira.oauth2_enabled = False
    assert http.get(authorize_url(jira)).status_code == 404
    assert token_call(jira, http, grant_type="refresh_token").status_code == 404
    assert http.get(f"{jira.base_url}{OAUTH2}/client").status_code == 404
    with pytest.raises(ValueError):
        jira.oauth2_approve(authorize_url(jira), "alice")
    jira.oauth2_enabled = True
    assert http.get(authorize_url(jira)).status_code == 200
    assert http.get(f"{jira.base_url}{OAUTH2}/token").status_code == 405


# ---------------------------------------------------------------- hooks and the command line


def test_cut_answer_on_the_token_path_still_rotated(jira: FakeJira, http: requests.Session) -> None:
    tokens = connect(jira, http)
    jira.cut_body(f"{OAUTH2}/token")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        refresh(jira, http, tokens["refresh_token"])
    jira.heal_bodies()
    assert len(jira.oauth2_token_calls("refresh_token")) == 1
    assert len(jira.oauth2_access_tokens_for("alice")) == 2  # Jira issued one the client never saw
    assert_error(refresh(jira, http, tokens["refresh_token"]), 400, "invalid_grant")  # rotated away: grant gone


def test_before_hook_runs_before_the_token_answer(jira: FakeJira, http: requests.Session) -> None:
    tokens = connect(jira, http)
    seen: list[int] = []

    def revoke(_recorded: object) -> None:
        seen.append(len(jira.oauth2_token_calls("refresh_token")))
        jira.revoke_oauth2_grant("alice")

    jira.before(f"{OAUTH2}/token", revoke)
    assert_error(refresh(jira, http, tokens["refresh_token"]), 400, "invalid_grant")
    assert seen == [0] and jira.hook_errors == []


def test_command_line_plays_an_oauth2_link() -> None:
    from tests.fakejira import main

    for partial in (["--oauth2-client-id", CLIENT], []):  # one of the three, or no link at all
        with pytest.raises(SystemExit):
            main(["--port", "0", *partial])
    args = ["--oauth2-client-id", CLIENT, "--oauth2-client-secret", SECRET, "--oauth2-redirect-uri", REDIRECT]
    command = [sys.executable, "-m", "tests.fakejira", "--port", "0", *args]
    process = subprocess.Popen(command, cwd=Path(__file__).parents[1], stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert f"OAuth 2.0 client '{CLIENT}' redirecting to {REDIRECT}" in line, line
        base_url = line.split()[3]
        assert base_url.startswith("http://127.0.0.1:")
        query = {"client_id": CLIENT, "redirect_uri": REDIRECT, "response_type": "code", "scope": "WRITE"}
        page = requests.get(f"{base_url}{OAUTH2}/authorize", params=query, timeout=5)
        assert page.status_code == 200 and f"{CLIENT} would like" in page.text
    finally:
        process.terminate()
        process.wait(timeout=5)
