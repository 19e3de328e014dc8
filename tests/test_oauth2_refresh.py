"""OAuth 2.0 refresh-token rotation through the real local stack (chalice local, the request-serialised
moto of make run, the fake Jira): one refresh per connection at a time across every request, a refresh
token never sent twice by racing requests, a lost refresh answer never loops, a crashed holder's lease ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from chalicelib import clock
from tests.fakejira import FakeJira
from tests.localstack import LocalStack, local_stack
from tests.test_oauth2_flow import CLIENT_ID, CLIENT_SECRET, MYSELF

API_KEY = "jb_oauth2-refresh-tests-000000000000000000"
PROXY = "/v1/teams/acme/users/{user}/jira/proxy"
CALLERS = 50
ROUNDS = 20


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeJira]:
    with FakeJira(context_path="/jira") as jira:
        yield jira


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, fake: FakeJira) -> Iterator[LocalStack]:
    with local_stack(tmp_path_factory.mktemp("oauth2") / "run_local.log", API_KEY) as running:
        fake.add_oauth2_client(CLIENT_ID, CLIENT_SECRET, running.url + "/oauth2/callback")
        body = {"auth": "oauth2", "base_url": fake.base_url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        answer = running.api("PUT", "/v1/teams/acme/jira", json=body)
        assert answer.status_code == 201, answer.text
        yield running


def _connect(stack: LocalStack, fake: FakeJira, user: str) -> None:
    link = stack.api("POST", f"/v1/teams/acme/users/{user}/jira/connect-link", json={}).json()["url"]
    browser = requests.Session()
    started = browser.post(link, headers={"Sec-Fetch-Site": "same-origin"}, allow_redirects=False, timeout=30)
    assert started.status_code == 303, started.text
    back = browser.get(fake.oauth2_approve(started.headers["Location"], user), allow_redirects=False, timeout=30)
    assert back.status_code == 200, back.text


def _table(stack: LocalStack) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=stack.moto,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _set(stack: LocalStack, user: str, expression: str, values: dict[str, Any]) -> None:
    _table(stack).update_item(
        TableName="jira-oauth-broker-local",
        Key={"pk": {"S": "TEAM#acme"}, "sk": {"S": f"USER#{user}"}},
        UpdateExpression=expression,
        ExpressionAttributeValues=values,
    )


def _expire(stack: LocalStack, user: str) -> None:
    """As if the access token had just run out."""
    _set(stack, user, "SET access_expires_at = :past", {":past": {"N": str(clock.now() - 1)}})


def _all_at_once(stack: LocalStack, user: str, callers: int) -> list[requests.Response]:
    barrier = threading.Barrier(callers)
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def call() -> None:
        barrier.wait()
        answer = stack.api("POST", PROXY.format(user=user), json=MYSELF)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_fifty_callers_on_an_expired_token_make_exactly_one_refresh(stack: LocalStack, fake: FakeJira) -> None:
    _connect(stack, fake, "alice")
    took = []
    for round_ in range(ROUNDS):
        before = len(fake.oauth2_token_calls("refresh_token"))
        _expire(stack, "alice")
        started = time.monotonic()
        answers = _all_at_once(stack, "alice", CALLERS)
        took.append(time.monotonic() - started)
        statuses = sorted({a.status_code for a in answers})
        assert statuses == [200], (round_, [a.text for a in answers if a.status_code != 200][:3])
        assert {a.json()["name"] for a in answers} == {"alice"}
        assert len(fake.oauth2_token_calls("refresh_token")) == before + 1, round_
    presented = [call["refresh_token"] for call in fake.oauth2_token_calls("refresh_token")]
    assert len(presented) == ROUNDS and len(set(presented)) == ROUNDS  # no refresh token sent twice
    print(f"\n{CALLERS} callers on an expired token: {max(took):.2f} s at most, {sum(took) / ROUNDS:.2f} s on average")


def test_a_lost_refresh_answer_ends_in_reauthorization_not_a_loop(stack: LocalStack, fake: FakeJira) -> None:
    _connect(stack, fake, "bob")
    before = len(fake.oauth2_token_calls("refresh_token"))
    _expire(stack, "bob")
    seen: list[object] = []

    def cut_only_the_first(_request: object) -> None:
        seen.append(_request)
        if len(seen) > 1:
            fake.heal_bodies()

    fake.before("/rest/oauth2/latest/token", cut_only_the_first)
    fake.cut_body("/rest/oauth2/latest/token")  # Jira rotates, then the answer is cut off (once)
    try:
        answer = stack.api("POST", PROXY.format(user="bob"), json=MYSELF)
    finally:
        fake.before("/rest/oauth2/latest/token", None)
        fake.heal_bodies()
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"]["code"] == "reauthorization_required"
    assert answer.json()["error"]["connect_url"].startswith(stack.url + "/connect/")
    # The lost one, then the same token once more: Jira saw the reuse, revoked the grant, said invalid_grant.
    sent = fake.oauth2_token_calls("refresh_token")[before:]
    assert len(sent) == 2 and sent[0]["refresh_token"] == sent[1]["refresh_token"]
    again = stack.api("POST", PROXY.format(user="bob"), json=MYSELF)
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_connected"
    assert len(fake.oauth2_token_calls("refresh_token")) == before + 2  # and nothing more


def test_a_lease_left_by_a_crashed_container_ends_on_its_own(stack: LocalStack, fake: FakeJira) -> None:
    _connect(stack, fake, "carol")
    before = len(fake.oauth2_token_calls("refresh_token"))
    _expire(stack, "carol")
    until = clock.now() + 2
    _set(
        stack, "carol", "SET lease_id = :id, lease_until = :until", {":id": {"S": "gone"}, ":until": {"N": str(until)}}
    )
    answer = stack.api("POST", PROXY.format(user="carol"), json=MYSELF)
    assert answer.status_code == 200, answer.text
    assert clock.now() >= until  # it waited for the lease to end
    assert len(fake.oauth2_token_calls("refresh_token")) == before + 1


def test_the_stack_log_holds_no_token(stack: LocalStack, fake: FakeJira, tmp_path: Path) -> None:
    calls = fake.oauth2_token_calls()
    values = {call[name] for call in calls for name in ("code", "refresh_token", "client_secret") if call.get(name)}
    issued = {token for user in ("alice", "bob", "carol") for token in fake.oauth2_access_tokens_for(user)}
    assert values and issued
    log = stack.output()
    for value in values | issued:
        assert value not in log
