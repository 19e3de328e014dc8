"""Every multi-step write, failing at every step: nothing is lost and nothing is half-done.

An outage starts at the N-th mutating AWS call of the write (tests/faultyaws.py: that call and
every later one fail, boto's retries included), for N = 1, 2, ... until the write runs through
without meeting the fault. After each, with AWS healthy again, the test checks what the broker
shows against what it had before: the answer is the change (2xx) or a retryable 503, never a
500; a 503 leaves the previous state usable; and the key the integration shows is always the
key that signs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from chalicelib.keys import fingerprint, parse_private_key
from chalicelib.store import Store
from scripts.local_aws import create_kms_key, create_table
from tests import faultyaws
from tests.conftest import ACME_KEY, API_KEY, CONSUMER_KEY, TABLE, Answer, Broker, _pem, public_pem
from tests.fakejira import FakeJira
from tests.faultyaws import FaultyAWS

faulty_aws = faultyaws.faulty_aws
faulty_broker = faultyaws.faulty_broker
MAX_STEPS = 12
MYSELF = {"method": "GET", "path": "/rest/api/2/myself"}
PROXY = "/v1/teams/acme/users/alice/jira/proxy"


def _fresh(proxy: FaultyAWS, broker: Broker) -> None:
    """Empty AWS (moto reset), the table, the KMS key and the API keys again; the broker's warm caches forgotten."""
    proxy.heal()
    requests.post(f"{proxy.moto}/moto-api/reset", timeout=10).raise_for_status()
    create_table(proxy.direct("dynamodb"), TABLE)
    create_kms_key(proxy.direct("kms"), "local")
    store = Store(TABLE, client=proxy.direct("dynamodb"))
    from chalicelib.apikeys import save_api_key

    save_api_key(store, API_KEY, name="all-teams")
    save_api_key(store, ACME_KEY, name="acme-bot", team="acme")
    faultyaws._forget_cached_clients()
    broker.cookies.clear()
    proxy.forget_calls()


def _connect_alice(broker: Broker, jira: FakeJira, private_pem: str) -> None:
    assert broker.setup(jira, private_pem).status == 201
    rt = broker.start_dance(broker.connect_link())
    assert broker.browser("GET", jira.approve(rt, "alice")).status == 200


def _integration(proxy: FaultyAWS) -> dict[str, Any] | None:
    return Store(TABLE, client=proxy.direct("dynamodb")).get_integration_record("acme")


def _assert_shown_key_signs(proxy: FaultyAWS) -> None:
    """The secret the integration names holds exactly the key whose fingerprint it shows."""
    record = _integration(proxy)
    if record is None or record.get("status") == "deleting":
        return
    secret = proxy.direct("secretsmanager").get_secret_value(SecretId=record["key_secret"])["SecretString"]
    assert fingerprint(parse_private_key(secret)) == record["public_key_fingerprint"]


def _each_failing_step(
    proxy: FaultyAWS, broker: Broker, prepare: Callable[[], None], act: Callable[[], Answer]
) -> Iterator[tuple[int, Answer]]:
    """Run ``act`` with the outage starting at its 1st, 2nd, ... mutating call; stop after a clean run."""
    for step in range(1, MAX_STEPS + 1):
        _fresh(proxy, broker)
        prepare()
        proxy.forget_calls()
        proxy.fail("error", from_mutation=step)
        answer = act()
        met_the_fault = any(call.failed for call in proxy.calls)
        proxy.heal()
        faultyaws._forget_cached_clients()
        assert answer.status < 500 or answer.error_code == "storage_unavailable", (step, answer.body)
        _assert_shown_key_signs(proxy)
        yield step, answer
        if not met_the_fault:
            return
    raise AssertionError(f"the write still met the fault at step {MAX_STEPS}")


def _alice_works(broker: Broker, jira_user: str = "alice") -> None:
    answer = broker.call("POST", PROXY, MYSELF)
    assert answer.status == 200, answer.body
    assert answer.json["name"] == jira_user


def test_moving_the_team_to_another_jira_fails_cleanly_at_every_step(
    faulty_aws: FaultyAWS, faulty_broker: Broker, jira: FakeJira, other_jira: FakeJira, private_pem: str
) -> None:
    broker = faulty_broker
    body = {"base_url": other_jira.base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem}
    outcomes = []
    for step, answer in _each_failing_step(
        faulty_aws,
        broker,
        lambda: _connect_alice(broker, jira, private_pem),
        lambda: broker.call("PUT", "/v1/teams/acme/jira", body),
    ):
        shown = broker.call("GET", "/v1/teams/acme/jira").json
        if answer.status == 503:
            assert shown["base_url"] == jira.base_url, step  # nothing changed...
            _alice_works(broker)  # ...and alice is still connected to the first Jira
        else:
            assert answer.status == 200 and shown["base_url"] == other_jira.base_url, step
            moved = broker.call("POST", PROXY, MYSELF)
            assert moved.status in (401, 404) and moved.error_code in {"reauthorization_required", "not_connected"}
        outcomes.append(answer.status)
    assert 503 in outcomes and outcomes[-1] == 200


def test_a_key_rotation_fails_cleanly_at_every_step(
    faulty_aws: FaultyAWS,
    faulty_broker: Broker,
    jira: FakeJira,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
    private_pem: str,
) -> None:
    broker = faulty_broker

    def prepare() -> None:
        jira.add_consumer(CONSUMER_KEY, public_pem(rsa_key))
        _connect_alice(broker, jira, private_pem)
        jira.add_consumer(CONSUMER_KEY, public_pem(other_rsa_key))  # the admin pastes the new public key

    outcomes = []
    for step, answer in _each_failing_step(
        faulty_aws, broker, prepare, lambda: broker.setup(jira, _pem(other_rsa_key))
    ):
        shown = broker.call("GET", "/v1/teams/acme/jira").json["public_key_fingerprint"]
        if answer.status == 503:
            assert shown == fingerprint(rsa_key), step
        else:
            assert shown == fingerprint(other_rsa_key), step
            _alice_works(broker)  # the same Application Link: alice stays connected, signed with the new key
        outcomes.append(answer.status)
    assert 503 in outcomes and outcomes[-1] == 200


def test_a_first_setup_fails_cleanly_at_every_step_and_can_be_sent_again(
    faulty_aws: FaultyAWS, faulty_broker: Broker, jira: FakeJira, private_pem: str
) -> None:
    broker = faulty_broker
    for step, answer in _each_failing_step(faulty_aws, broker, lambda: None, lambda: broker.setup(jira, private_pem)):
        if answer.status == 503:
            assert broker.call("GET", "/v1/teams/acme/jira").error_code == "integration_not_found", step
            assert broker.setup(jira, private_pem).status == 201, step  # sending it again works
        rt = broker.start_dance(broker.connect_link())
        assert broker.browser("GET", jira.approve(rt, "alice")).status == 200, step
        _alice_works(broker)


def test_deleting_a_team_fails_cleanly_at_every_step_and_deleting_again_finishes(
    faulty_aws: FaultyAWS, faulty_broker: Broker, jira: FakeJira, private_pem: str
) -> None:
    broker = faulty_broker
    for step, answer in _each_failing_step(
        faulty_aws,
        broker,
        lambda: _connect_alice(broker, jira, private_pem),
        lambda: broker.call("DELETE", "/v1/teams/acme/jira"),
    ):
        if answer.status == 503:
            shown = broker.call("GET", "/v1/teams/acme/jira")
            if shown.status == 200:  # the outage began before anything changed
                _alice_works(broker)
            else:  # part-way: the team is hidden at once, and its record still names what to delete
                assert shown.error_code == "integration_not_found", step
                assert broker.call("POST", PROXY, MYSELF).error_code == "integration_not_found"
            assert broker.call("DELETE", "/v1/teams/acme/jira").status == 204, step
        assert answer.status in (204, 503)
        items = faulty_aws.direct("dynamodb").scan(TableName=TABLE)["Items"]
        assert not [item for item in items if item["pk"]["S"] == "TEAM#acme"], step
        secrets = faulty_aws.direct("secretsmanager").list_secrets(IncludePlannedDeletion=True)["SecretList"]
        assert all(s.get("DeletedDate") for s in secrets if "/teams/acme/" in s["Name"]), step
        assert broker.setup(jira, private_pem).status == 201, step  # and the team can be set up again


def test_a_callback_fails_cleanly_at_every_step_and_the_user_can_start_again(
    faulty_aws: FaultyAWS, faulty_broker: Broker, jira: FakeJira, private_pem: str
) -> None:
    broker = faulty_broker
    callback: dict[str, str] = {}

    def prepare() -> None:
        assert broker.setup(jira, private_pem).status == 201
        callback["link"] = broker.connect_link()
        callback["url"] = jira.approve(broker.start_dance(callback["link"]), "alice")

    for step, answer in _each_failing_step(faulty_aws, broker, prepare, lambda: broker.browser("GET", callback["url"])):
        connected = broker.call("GET", "/v1/teams/acme/users/alice/jira").status == 200
        link_page = broker.browser("GET", callback["link"])
        if answer.status == 503:
            assert answer.headers["Content-Type"].startswith("text/html") and "Retry-After" in answer.headers
            assert not connected and link_page.status == 200, step  # no connection, and the link still open
            rt = broker.start_dance(callback["link"])  # so the person simply starts again
            assert broker.browser("GET", jira.approve(rt, "alice")).status == 200, step
        else:
            assert answer.status == 200 and connected and link_page.status == 410, step
        _alice_works(broker)
