"""The attacks of the "Trust" issue, each as a test through the real local stack.

One ``make run`` runner (embedded moto + real ``chalice local``) serves the whole module; each test
uses its own team ids and its own fake Jira on loopback. Browsers are ``requests.Session`` objects
(each keeps its own cookies). Two tests need a differently configured stack and start their own:
the trickling Jira (``BROKER_JIRA_CALL_SECONDS=2``) and the AWS outage (``AWS_ENDPOINT_URL`` at
tests/faultyaws.py's proxy in front of a moto server).

All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from tests import faultyaws
from tests.conftest import CONSUMER_KEY, public_pem
from tests.fakejira import FakeJira, RecordedRequest, parse_authorization
from tests.faultyaws import FaultyAWS
from tests.localstack import LocalStack, local_stack

API_KEY = "jb_attacks-e2e-key-0000000000000000000000000"
# What a browser sends when the Continue button on the broker's own page is clicked.
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin", "Origin": "null"}
COOKIE = "jira_broker_browser"
ACCESS_TOKEN_PATH = "/plugins/servlet/oauth/access-token"
TIMEOUT = 30

# tests/faultyaws.py's fixture (a fresh moto behind the fault-injecting proxy), visible here by name.
faulty_aws = faultyaws.faulty_aws


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The module's one local stack (default settings)."""
    with local_stack(tmp_path_factory.mktemp("attacks") / "run_local.log", API_KEY) as running:
        yield running


@pytest.fixture
def jira_b(rsa_key: rsa.RSAPrivateKey) -> Iterator[FakeJira]:
    """A second Jira site with the same Application Link (consumer key and public key) and users."""
    with FakeJira(context_path="/jira") as fake:
        fake.add_consumer(CONSUMER_KEY, public_pem(rsa_key))
        fake.add_user("alice", key="JIRAUSER10100", display_name="Alice Example", email="alice@example.com")
        yield fake


# -- helpers: the service's API calls ------------------------------------------------------------------
def assert_error(answer: requests.Response, status: int, code: str) -> dict[str, Any]:
    """A JSON error in the broker's envelope, with its code in ``X-Broker-Error``; returns the error object."""
    assert answer.status_code == status, (answer.status_code, answer.headers.get("X-Broker-Error"), answer.text[:600])
    assert answer.headers.get("X-Broker-Error") == code, answer.text[:600]
    assert answer.headers["Content-Type"].startswith("application/json")
    error = answer.json()["error"]
    assert error["code"] == code and isinstance(error["message"], str) and error["message"], error
    return dict(error)


def assert_page(answer: requests.Response, status: int, code: str | None, *texts: str) -> str:
    """An HTML page with this status (and ``X-Broker-Error``), naming each of ``texts``; returns its text."""
    assert answer.status_code == status, (answer.status_code, answer.headers.get("X-Broker-Error"), answer.text[:600])
    assert answer.headers.get("X-Broker-Error") == code, answer.text[:600]
    assert answer.headers["Content-Type"].startswith("text/html")
    text = html.unescape(answer.text)
    for wanted in texts:
        assert wanted in text, (wanted, text[:1500])
    return text


def set_up_team(stack: LocalStack, team: str, jira: FakeJira, private_pem: str) -> dict[str, Any]:
    answer = stack.api(
        "PUT",
        f"/v1/teams/{team}/jira",
        json={"base_url": jira.base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem},
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def connect_link(stack: LocalStack, team: str, user: str) -> str:
    answer = stack.api("POST", f"/v1/teams/{team}/users/{user}/jira/connect-link", json={})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["url"])


def proxy(stack: LocalStack, team: str, user: str, request: dict[str, Any] | None = None) -> requests.Response:
    body = request or {"method": "GET", "path": "/rest/api/2/myself"}
    return stack.api("POST", f"/v1/teams/{team}/users/{user}/jira/proxy", json=body)


def raw_proxy(stack: LocalStack, team: str, user: str, raw_json: str) -> requests.Response:
    """The proxy with a body sent exactly as written (escapes and nesting a JSON encoder would not make)."""
    return requests.post(
        f"{stack.url}/v1/teams/{team}/users/{user}/jira/proxy",
        data=raw_json.encode(),
        headers={"Authorization": f"Bearer {stack.api_key}", "Content-Type": "application/json"},
        timeout=TIMEOUT,
    )


# -- helpers: browsers and Jira ---------------------------------------------------------------------------
def click_continue(browser: requests.Session, url: str) -> tuple[str, str]:
    """Open the connect link and click Continue; returns (Jira's authorize URL, the request token)."""
    page = browser.get(url, timeout=TIMEOUT)
    assert page.status_code == 200 and "Continue to Jira" in page.text, page.text[:600]
    to_jira = browser.post(url, headers=SAME_ORIGIN, allow_redirects=False, timeout=TIMEOUT)
    assert to_jira.status_code == 303, (to_jira.status_code, to_jira.text[:600])
    authorize = to_jira.headers["Location"]
    return authorize, parse_qs(urlsplit(authorize).query)["oauth_token"][0]


def approve_in_browser(browser: requests.Session, authorize_url: str, username: str) -> str:
    """Jira's Allow page, as ``username``, in ``browser``; returns the callback URL Jira redirects to."""
    page = browser.get(authorize_url, timeout=TIMEOUT)
    assert page.status_code == 200, page.text[:600]
    token = parse_qs(urlsplit(authorize_url).query)["oauth_token"][0]
    back = browser.post(
        authorize_url.split("?")[0],
        data={"oauth_token": token, "username": username, "decision": "approve"},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    assert back.status_code == 302, back.text[:600]
    return str(back.headers["Location"])


def connect_user(stack: LocalStack, team: str, user: str, jira_user: str = "alice") -> requests.Session:
    """The whole sign-in of ``user`` in one browser, approved in Jira as ``jira_user``."""
    browser = requests.Session()
    authorize, _ = click_continue(browser, connect_link(stack, team, user))
    done = browser.get(approve_in_browser(browser, authorize, jira_user), timeout=TIMEOUT)
    assert done.status_code == 200 and "Connected as" in done.text, done.text[:600]
    return browser


def header(recorded: RecordedRequest, name: str) -> str:
    return next((v for k, v in recorded.headers.items() if k.lower() == name.lower()), "")


def oauth_token_of(recorded: RecordedRequest) -> str | None:
    params = parse_authorization(header(recorded, "Authorization"))
    return params.get("oauth_token") if params else None


def exchanges(jira: FakeJira, request_token: str | None = None) -> list[RecordedRequest]:
    """Access-token exchanges the fake received (for one request token, or all)."""
    return [
        r
        for r in list(jira.requests)
        if r.path.endswith(ACCESS_TOKEN_PATH) and request_token in (None, oauth_token_of(r))
    ]


def tokens_sent(jira: FakeJira) -> set[str]:
    """Every ``oauth_token`` (request or access token) any request to the fake carried."""
    return {token for token in map(oauth_token_of, list(jira.requests)) if token}


def rest_calls(jira: FakeJira) -> list[RecordedRequest]:
    """Signed REST calls the fake received (serverInfo is anonymous and not counted)."""
    return [r for r in list(jira.requests) if "/rest/" in r.path and not r.path.endswith("/serverInfo")]


# -- 1. session fixation --------------------------------------------------------------------------------
def test_session_fixation_approval_in_another_browser_connects_nobody(
    stack: LocalStack, jira: FakeJira, private_pem: str
) -> None:
    team = "fixation"
    jira.add_user("mallory", display_name="Mallory Example")
    set_up_team(stack, team, jira, private_pem)

    # Mallory's browser opens mallory's link and clicks Continue: it gets the cookie and Jira's URL.
    mallory = requests.Session()
    link = connect_link(stack, team, "mallory")
    mallory.get(link, timeout=TIMEOUT)
    to_jira = mallory.post(link, headers=SAME_ORIGIN, allow_redirects=False, timeout=TIMEOUT)
    assert to_jira.status_code == 303, to_jira.text[:600]
    cookie = to_jira.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=lax", "path=/"} <= attributes and "secure" not in attributes, cookie
    authorize = to_jira.headers["Location"]

    # Mallory forwards Jira's URL; alice's browser (none of mallory's cookies) approves as alice.
    alice = requests.Session()
    callback = approve_in_browser(alice, authorize, "alice")
    assert callback.startswith(stack.url + "/oauth/callback?")
    refused = alice.get(callback, timeout=TIMEOUT)
    assert_page(refused, 403, "signin_other_browser", "mallory", team, "another browser")

    # Nothing stored, nothing exchanged: alice's Jira account is not mallory's now.
    assert_error(stack.api("GET", f"/v1/teams/{team}/users/mallory/jira"), 404, "not_connected")
    assert_error(proxy(stack, team, "mallory"), 404, "not_connected")
    assert exchanges(jira) == []
    assert rest_calls(jira) == []


# -- 2. a stranger's callback neither finishes nor cancels the sign-in -------------------------------
def test_strangers_denied_callback_does_not_cancel_the_real_sign_in(
    stack: LocalStack, jira: FakeJira, private_pem: str
) -> None:
    team = "stranger"
    set_up_team(stack, team, jira, private_pem)
    browser = requests.Session()
    authorize, request_token = click_continue(browser, connect_link(stack, team, "alice"))

    callback = f"{stack.url}/oauth/callback"
    denied = requests.get(callback, params={"oauth_token": request_token, "oauth_verifier": "denied"}, timeout=TIMEOUT)
    assert_page(denied, 403, "signin_other_browser", "alice", team)
    forged_cookie = {"Cookie": f"{COOKIE}={'A' * 43}"}  # the right shape, another browser's id
    forged = requests.get(
        callback, params={"oauth_token": request_token, "oauth_verifier": "x"}, headers=forged_cookie, timeout=TIMEOUT
    )
    assert_page(forged, 403, "signin_other_browser", "alice")
    assert_error(stack.api("GET", f"/v1/teams/{team}/users/alice/jira"), 404, "not_connected")

    # The real user approves and comes back in their own browser: connected.
    done = browser.get(approve_in_browser(browser, authorize, "alice"), timeout=TIMEOUT)
    assert_page(done, 200, None, "Connected as Alice Example")
    status = stack.api("GET", f"/v1/teams/{team}/users/alice/jira")
    assert status.status_code == 200 and status.json()["jira_user"]["name"] == "alice"
    assert len(exchanges(jira, request_token)) == 1


# -- 3. one link, two sign-ins: it completes once -----------------------------------------------------
def test_a_link_completes_once_even_with_two_sign_ins(stack: LocalStack, jira: FakeJira, private_pem: str) -> None:
    team = "twice"
    jira.add_user("carol", display_name="Carol Example")
    set_up_team(stack, team, jira, private_pem)
    link = connect_link(stack, team, "u3")

    browser = requests.Session()
    authorize_1, rt1 = click_continue(browser, link)
    authorize_2, rt2 = click_continue(browser, link)  # Continue clicked again: a second request token
    assert rt1 != rt2

    first = browser.get(approve_in_browser(browser, authorize_1, "alice"), timeout=TIMEOUT)
    assert_page(first, 200, None, "Connected as Alice Example")
    second = browser.get(approve_in_browser(browser, authorize_2, "carol"), timeout=TIMEOUT)
    assert_page(second, 410, "link_used", "u3", team)

    status = stack.api("GET", f"/v1/teams/{team}/users/u3/jira")
    assert status.status_code == 200 and status.json()["jira_user"]["name"] == "alice", status.text
    assert proxy(stack, team, "u3").json()["name"] == "alice"
    # The broker checks the link before exchanging: carol's approval was never traded for a token.
    assert exchanges(jira, rt2) == []
    assert_page(browser.get(link, timeout=TIMEOUT), 410, "link_used")


# -- 4. the team moves to another Jira while a sign-in finishes ----------------------------------------
def test_callback_whose_integration_moved_meanwhile_stores_nothing(
    stack: LocalStack, jira: FakeJira, jira_b: FakeJira, private_pem: str
) -> None:
    team = "moved"
    set_up_team(stack, team, jira, private_pem)
    browser = requests.Session()
    authorize, _ = click_continue(browser, connect_link(stack, team, "alice"))
    callback = approve_in_browser(browser, authorize, "alice")

    moves: list[requests.Response] = []

    def move_to_b(_: RecordedRequest) -> None:  # runs while Jira A is answering the exchange
        body = {"base_url": jira_b.base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem}
        moves.append(stack.api("PUT", f"/v1/teams/{team}/jira", json=body))

    jira.before(ACCESS_TOKEN_PATH, move_to_b)
    answer = browser.get(callback, timeout=TIMEOUT)
    jira.before(ACCESS_TOKEN_PATH, None)

    assert jira.hook_errors == [] and len(moves) == 1
    assert moves[0].status_code == 200 and moves[0].json()["base_url"] == jira_b.base_url, moves[0].text
    assert len(exchanges(jira)) == 1  # the exchange did happen at A; its result must be dropped
    assert_page(answer, 409, "integration_changed", team)

    assert_error(stack.api("GET", f"/v1/teams/{team}/users/alice/jira"), 404, "not_connected")
    assert_error(proxy(stack, team, "alice"), 404, "not_connected")
    # B only saw the move's proof (request-token, serverInfo): no REST call, no token of any kind.
    assert rest_calls(jira_b) == [] and tokens_sent(jira_b) == set()


def test_moving_a_connected_team_never_sends_the_old_token(
    stack: LocalStack, jira: FakeJira, jira_b: FakeJira, private_pem: str
) -> None:
    team = "moved-connected"
    first = set_up_team(stack, team, jira, private_pem)
    connect_user(stack, team, "alice")
    assert proxy(stack, team, "alice").json()["name"] == "alice"
    assert tokens_sent(jira)  # alice's access token, used at A

    body = {"base_url": jira_b.base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem}
    moved = stack.api("PUT", f"/v1/teams/{team}/jira", json=body)
    assert moved.status_code == 200 and moved.json()["base_url"] == jira_b.base_url, moved.text
    assert moved.json()["created_at"] == first["created_at"]
    calls_at_a = len(rest_calls(jira))

    assert_error(stack.api("GET", f"/v1/teams/{team}/users/alice/jira"), 404, "not_connected")
    assert_error(proxy(stack, team, "alice"), 404, "not_connected")
    assert rest_calls(jira_b) == [] and tokens_sent(jira_b) == set() and len(rest_calls(jira)) == calls_at_a


# -- 5. concurrent first setup ---------------------------------------------------------------------------
def test_concurrent_first_puts_one_wins_the_rest_conflict(stack: LocalStack, jira: FakeJira, private_pem: str) -> None:
    team, writers = "race-setup", 10
    # Hold each PUT at its proof against Jira until all ten are there: every one of them has read
    # "no integration yet" before any writes, so this is a true race of first setups.
    all_read = threading.Barrier(writers, timeout=20)
    jira.before("/plugins/servlet/oauth/request-token", lambda _: all_read.wait())
    body = {"base_url": jira.base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem, "user": "alice"}
    start = threading.Barrier(writers)

    def put(_: int) -> requests.Response:
        start.wait()
        return stack.api("PUT", f"/v1/teams/{team}/jira", json=body)

    with ThreadPoolExecutor(writers) as pool:
        answers = list(pool.map(put, range(writers)))
    jira.before("/plugins/servlet/oauth/request-token", None)

    assert jira.hook_errors == [], "the ten PUTs did not reach Jira at the same time"
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] + [409] * (writers - 1), [(a.status_code, a.text[:300]) for a in answers]
    for lost in (a for a in answers if a.status_code == 409):
        assert_error(lost, 409, "integration_changed")
        assert "connect_url" not in lost.text
    won = next(a for a in answers if a.status_code == 201)
    page = requests.get(won.json()["connect_url"], timeout=TIMEOUT)
    assert_page(page, 200, None, "alice", team, "Continue to Jira")
    assert stack.api("GET", f"/v1/teams/{team}/jira").json()["base_url"] == jira.base_url


# -- 6. proxy input that must never reach Jira ------------------------------------------------------------
SERVLET_PATHS = [
    "/plugins/servlet//oauth/access-token",
    "/PLUGINS/Servlet/OAuth/access-token",
    "/plugins/servlet/oauth%2Faccess-token",
    "/plugins%2Fservlet%2Foauth%2Frequest-token",
    "/plugins/servlet/oauth%252Faccess-token",
    "/plugins/servlet;x=1/oauth/authorize",
]


def test_proxy_refuses_paths_to_the_oauth_servlets(stack: LocalStack, jira: FakeJira, private_pem: str) -> None:
    team = "paths"
    set_up_team(stack, team, jira, private_pem)
    connect_user(stack, team, "alice")
    assert proxy(stack, team, "alice").status_code == 200  # the control: a good path reaches Jira
    jira.clear_requests()
    for method in ("GET", "POST"):
        for path in SERVLET_PATHS:
            answer = proxy(stack, team, "alice", {"method": method, "path": path})
            assert_error(answer, 400, "invalid_path")
    assert jira.requests == []


def test_proxy_refuses_a_callers_oauth_parameters(stack: LocalStack, jira: FakeJira, private_pem: str) -> None:
    team = "oauth-params"
    set_up_team(stack, team, jira, private_pem)
    connect_user(stack, team, "alice")
    jira.clear_requests()
    for query in ({"oauth_token": "stolen"}, {"OAUTH_VERIFIER": "x"}, {"jql": "x", "oauth_callback": ["a", "b"]}):
        answer = proxy(stack, team, "alice", {"method": "GET", "path": "/rest/api/2/search", "query": query})
        assert_error(answer, 400, "invalid_request")
    form = {
        "method": "POST",
        "path": "/rest/api/2/issue",
        "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        "body": "a=1&oauth_token=stolen",
    }
    assert_error(proxy(stack, team, "alice", form), 400, "invalid_request")
    assert jira.requests == []


def test_proxy_refuses_deep_json_and_lone_surrogates(stack: LocalStack, jira: FakeJira, private_pem: str) -> None:
    team = "json-input"
    set_up_team(stack, team, jira, private_pem)
    connect_user(stack, team, "alice")
    jira.clear_requests()
    deep = "[" * 10000 + "]" * 10000
    for raw in (
        '{"method": "POST", "path": "/rest/api/2/issue", "json": ' + deep + "}",
        deep,
        '{"method": "POST", "path": "/rest/api/2/issue", "json": {"a": ' + '{"b": ' * 5000 + "1" + "}" * 5001 + "}",
    ):
        assert_error(raw_proxy(stack, team, "alice", raw), 400, "invalid_json")
    # The same nesting on another JSON route is refused just the same.
    put = requests.put(
        f"{stack.url}/v1/teams/{team}/jira",
        data=deep.encode(),
        headers={"Authorization": f"Bearer {stack.api_key}", "Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert_error(put, 400, "invalid_json")

    surrogates = (
        r'{"method": "GET", "path": "/rest/api/2/issue/\ud800"}',
        r'{"method": "GET", "path": "/rest/api/2/search", "query": {"jql": "a\ud800"}}',
        r'{"method": "GET", "path": "/rest/api/2/search", "query": {"\udfff": "x"}}',
        r'{"method": "POST", "path": "/rest/api/2/issue", "body": "\ud800"}',
        r'{"method": "POST", "path": "/rest/api/2/issue", "json": {"summary": "x\udc00y"}}',
    )
    for raw in surrogates:
        answer = raw_proxy(stack, team, "alice", raw)
        assert answer.status_code == 400, (raw, answer.status_code, answer.text[:300])
        code = answer.headers.get("X-Broker-Error") or ""
        assert code in ("invalid_json", "invalid_path", "invalid_query", "invalid_body"), (raw, code)
        assert_error(answer, 400, code)
        assert "surrogate" in answer.json()["error"]["message"], answer.text
    assert jira.requests == []
    assert proxy(stack, team, "alice").status_code == 200  # and the user's good calls still work


# -- 7. parallel callbacks: exactly one wins -----------------------------------------------------------------
def test_parallel_callbacks_with_one_token_connect_exactly_once(
    stack: LocalStack, jira: FakeJira, private_pem: str
) -> None:
    team, rounds, parallel = "callback-race", 50, 20
    set_up_team(stack, team, jira, private_pem)
    # Twenty tabs of one browser, each with its connection already open: the race is between
    # requests, not TCP handshakes (chalice local listens with a backlog of 5; twenty new
    # connections at once would wait a second for SYN retries, and arrive spread out).
    tabs = [requests.Session() for _ in range(parallel)]
    for tab in tabs:
        assert tab.get(stack.url + "/health", timeout=TIMEOUT).status_code == 200
    started = time.monotonic()
    failures: list[str] = []
    with ThreadPoolExecutor(parallel) as pool:
        for round_ in range(rounds):
            user = f"racer{round_}"
            browser = requests.Session()
            _, request_token = click_continue(browser, connect_link(stack, team, user))
            callback = jira.approve(request_token, "alice")
            cookie = {"Cookie": f"{COOKIE}={browser.cookies[COOKIE]}"}  # the browser's cookie, in every tab
            go = threading.Barrier(parallel)

            def call_back(tab: int, url: str = callback, headers: dict[str, str] = cookie, gate: Any = go) -> Any:
                gate.wait()
                answer = tabs[tab].get(url, headers=headers, timeout=TIMEOUT, allow_redirects=False)
                return answer.status_code, answer.headers.get("X-Broker-Error"), answer.text

            answers = list(pool.map(call_back, range(parallel)))
            won = [a for a in answers if a[0] == 200]
            lost = [(a[0], a[1]) for a in answers if a[0] != 200]
            if len(won) != 1 or "Connected as Alice Example" not in html.unescape(won[0][2]):
                failures.append(f"round {round_}: {len(won)} answers 200; others {sorted(lost)}")
            if any(status != 410 or code != "request_token_used" for status, code in lost):
                failures.append(f"round {round_}: losers answered {sorted(lost)}")
            if stack.api("GET", f"/v1/teams/{team}/users/{user}/jira").status_code != 200:
                failures.append(f"round {round_}: {user} is not connected")
            if len(exchanges(jira, request_token)) != 1:
                failures.append(f"round {round_}: {len(exchanges(jira, request_token))} exchanges")
    elapsed = time.monotonic() - started
    print(f"\n{rounds} rounds of {parallel} parallel callbacks took {elapsed:.1f} s")
    assert failures == [], failures


# -- 8. a trickling or cut-off Jira (one total deadline per call) -----------------------------------------
CALL_SECONDS = 2


@pytest.fixture(scope="module")
def short_deadline_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A second local stack whose calls to Jira get ``BROKER_JIRA_CALL_SECONDS=2`` in all."""
    log = tmp_path_factory.mktemp("short-deadline") / "run_local.log"
    with local_stack(log, API_KEY, BROKER_JIRA_CALL_SECONDS=str(CALL_SECONDS)) as running:
        yield running


def test_trickling_jira_is_cut_off_at_the_call_deadline(
    short_deadline_stack: LocalStack, jira: FakeJira, private_pem: str
) -> None:
    team, slow = "trickle", short_deadline_stack
    set_up_team(slow, team, jira, private_pem)
    connect_user(slow, team, "alice")

    jira.trickle_body("/rest/api/2/trickle", interval=0.5)  # headers at once, then a byte every 0.5 s
    started = time.monotonic()
    answer = proxy(slow, team, "alice", {"method": "GET", "path": "/rest/api/2/trickle"})
    took = time.monotonic() - started
    assert_error(answer, 504, "jira_timeout")
    assert took < CALL_SECONDS + 2, f"the trickled call took {took:.1f} s"

    jira.heal_bodies()
    assert proxy(slow, team, "alice").json()["name"] == "alice"  # nothing poisoned afterwards


def test_a_body_cut_off_mid_way_is_a_bad_response(
    short_deadline_stack: LocalStack, jira: FakeJira, private_pem: str
) -> None:
    team, slow = "cut-body", short_deadline_stack
    set_up_team(slow, team, jira, private_pem)
    connect_user(slow, team, "alice")

    jira.cut_body("/rest/api/2/cut")  # Content-Length promises 100 bytes more than are sent, then closes
    started = time.monotonic()
    answer = proxy(slow, team, "alice", {"method": "GET", "path": "/rest/api/2/cut"})
    assert time.monotonic() - started < CALL_SECONDS + 2
    assert_error(answer, 502, "jira_bad_response")

    jira.heal_bodies()
    assert proxy(slow, team, "alice").json()["name"] == "alice"


# -- 9. an AWS outage on the local stack ------------------------------------------------------------------------
def _assert_unavailable(answer: requests.Response, *codes: str) -> None:
    code = answer.headers.get("X-Broker-Error") or ""
    assert code in codes, (answer.status_code, code, answer.text[:400])
    assert_error(answer, 503, code)
    assert int(answer.headers["Retry-After"]) > 0


def test_aws_outage_answers_503_and_a_failed_move_changes_nothing(
    tmp_path: Path, faulty_aws: FaultyAWS, jira: FakeJira, jira_b: FakeJira, private_pem: str
) -> None:
    team = "outage"
    with local_stack(tmp_path / "run_local.log", API_KEY, aws_endpoint=faulty_aws.endpoint) as aws_stack:
        assert aws_stack.moto == faulty_aws.endpoint
        set_up_team(aws_stack, team, jira, private_pem)
        connect_user(aws_stack, team, "alice")
        assert proxy(aws_stack, team, "alice").json()["name"] == "alice"

        # DynamoDB failing or cutting connections: answers, 503 with Retry-After, never a dropped connection.
        for mode in ("error", "cut", "throttle"):
            with faulty_aws.failing(mode, service="dynamodb"):
                for path in (f"/v1/teams/{team}/jira", f"/v1/teams/{team}/users/alice/jira"):
                    _assert_unavailable(aws_stack.api("GET", path), "storage_unavailable", "authorizer_unavailable")
                _assert_unavailable(proxy(aws_stack, team, "alice"), "storage_unavailable", "authorizer_unavailable")
                # A key the authorizer has never seen needs DynamoDB: the authorizer itself answers 503.
                unseen = aws_stack.api("GET", f"/v1/teams/{team}/jira", key=f"jb_never-seen-{mode}-0000000000000000")
                _assert_unavailable(unseen, "authorizer_unavailable")

        # A move to Jira B whose integration write fails: 503, and nothing changed.
        body = {"base_url": jira_b.base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem}
        faulty_aws.forget_calls()
        with faulty_aws.failing("error", service="dynamodb", from_mutation=1):
            _assert_unavailable(aws_stack.api("PUT", f"/v1/teams/{team}/jira", json=body), "storage_unavailable")
        writes = [c for c in faulty_aws.calls if c.service == "dynamodb" and c.mutating]
        assert writes and writes[0].operation in ("PutItem", "TransactWriteItems") and writes[0].failed, writes

        current = aws_stack.api("GET", f"/v1/teams/{team}/jira")
        assert current.status_code == 200 and current.json()["base_url"] == jira.base_url, current.text
        works = proxy(aws_stack, team, "alice")
        assert works.status_code == 200 and works.json()["name"] == "alice", works.text
        assert rest_calls(jira_b) == []


def test_a_connection_of_an_older_revision_is_never_used(
    tmp_path: Path, faulty_aws: FaultyAWS, jira: FakeJira, jira_b: FakeJira, private_pem: str
) -> None:
    """The move's integration write succeeds but its clean-up of old connections fails: the old
    connection stays stored, and the proxy must neither use it nor send its token anywhere."""
    team = "stale"
    with local_stack(tmp_path / "run_local.log", API_KEY, aws_endpoint=faulty_aws.endpoint) as aws_stack:
        set_up_team(aws_stack, team, jira, private_pem)
        connect_user(aws_stack, team, "alice")
        assert proxy(aws_stack, team, "alice").json()["name"] == "alice"
        calls_at_a = len(rest_calls(jira))

        body = {"base_url": jira_b.base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem}
        faulty_aws.forget_calls()
        with faulty_aws.failing("error", service="dynamodb", from_mutation=2):  # 1: the integration write
            moved = aws_stack.api("PUT", f"/v1/teams/{team}/jira", json=body)
        failed = [c.operation for c in faulty_aws.calls if c.failed]
        assert "DeleteItem" in failed, faulty_aws.calls  # the old connection's removal failed: it is still stored
        assert moved.status_code == 200, moved.text  # the move happened; only its clean-up failed
        assert aws_stack.api("GET", f"/v1/teams/{team}/jira").json()["base_url"] == jira_b.base_url

        stale = proxy(aws_stack, team, "alice")
        error = assert_error(stale, 401, "reauthorization_required")
        assert error["connect_url"].startswith(aws_stack.url + "/connect/")
        assert_page(requests.get(error["connect_url"], timeout=TIMEOUT), 200, None, "alice", team)
        assert_error(aws_stack.api("GET", f"/v1/teams/{team}/users/alice/jira"), 404, "not_connected")
        assert_error(proxy(aws_stack, team, "alice"), 404, "not_connected")
        assert len(rest_calls(jira)) == calls_at_a  # the stale token went nowhere: not to A ...
        assert rest_calls(jira_b) == [] and tokens_sent(jira_b) == set()  # ... nor to B
