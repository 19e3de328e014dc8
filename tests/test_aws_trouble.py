"""AWS trouble (throttling, 5xx, cut connections) is answered 503 with Retry-After, never 500 or
silence; the API key check fails closed with an answer; the embedded moto's conditional writes
are atomic. Driven through tests/faultyaws.py's proxy in front of a real moto server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from chalice.local import InvalidAuthorizerError

from chalicelib import aws
from chalicelib.errors import Conflict, StorageUnavailable
from scripts.chalice_local import render
from scripts.local_aws import start_moto, use_fake_credentials
from tests import faultyaws
from tests.conftest import API_KEY, TABLE, Answer, Broker
from tests.fakejira import FakeJira
from tests.faultyaws import FaultyAWS
from tests.localstack import LocalStack, apikeys_cli, local_stack

ROOT = Path(__file__).resolve().parent.parent
RUNNER_KEY = "jb_aws-trouble-e2e-key-00000000000000000000"

# The proxy's fixtures, made visible to this module's tests.
faulty_aws = faultyaws.faulty_aws
faulty_broker = faultyaws.faulty_broker


def _client_error(code: str, status: int, **extra: Any) -> ClientError:
    response: dict[str, Any] = {"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError({**response, **extra}, "PutItem")


def _assert_storage_unavailable(answer: Answer) -> None:
    assert answer.status == 503, answer.body
    assert answer.error_code == "storage_unavailable"
    assert answer.headers["Retry-After"] == "2"
    assert answer.json["error"]["code"] == "storage_unavailable"
    assert "Try again in a few seconds" in answer.json["error"]["message"]


# -- which failures count as storage trouble ---------------------------------------------------
@pytest.mark.parametrize(
    "error",
    [
        _client_error("ThrottlingException", 400),
        _client_error("ProvisionedThroughputExceededException", 400),
        _client_error("RequestLimitExceeded", 400),
        _client_error("InternalServerError", 500),
        _client_error("InternalServiceError", 500),  # Secrets Manager's spelling
        _client_error("SomethingNew", 503),
        _client_error(
            "TransactionCanceledException", 400, CancellationReasons=[{"Code": "None"}, {"Code": "ThrottlingError"}]
        ),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
        ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:9"),
        ConnectionClosedError(endpoint_url="http://127.0.0.1:9"),
    ],
)
def test_throttles_5xx_and_connection_failures_are_storage_trouble(error: Exception) -> None:
    assert aws.storage_trouble(error)
    assert isinstance(aws.as_broker_error(error), StorageUnavailable)


@pytest.mark.parametrize(
    "error",
    [
        _client_error("ConditionalCheckFailedException", 400),
        _client_error("ValidationException", 400),
        _client_error("ResourceNotFoundException", 400),
        _client_error("TransactionCanceledException", 400, CancellationReasons=[{"Code": "ConditionalCheckFailed"}]),
        ValueError("a bug"),
    ],
)
def test_request_errors_and_bugs_are_not_storage_trouble(error: Exception) -> None:
    assert not aws.storage_trouble(error)
    assert aws.as_broker_error(error) is None


def test_a_transaction_conflict_is_a_409_to_run_again() -> None:
    for error in (
        _client_error("TransactionConflictException", 400),
        _client_error("TransactionCanceledException", 400, CancellationReasons=[{"Code": "TransactionConflict"}]),
    ):
        mapped = aws.as_broker_error(error)
        assert isinstance(mapped, Conflict) and mapped.status == 409 and mapped.code == "write_conflict"


# -- the proxy itself: what the lead's step-by-step failure tests rely on -----------------------------
def _put(client: Any, pk: str, **extra: Any) -> None:
    client.put_item(TableName=TABLE, Item={"pk": {"S": pk}, "sk": {"S": "x"}}, **extra)


def test_proxy_breaks_every_mutation_from_the_nth_on_and_records_them(faulty_aws: FaultyAWS) -> None:
    dynamodb = aws.client("dynamodb")
    faulty_aws.fail("cut", from_mutation=2)
    _put(dynamodb, "step-1")
    dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "step-1"}, "sk": {"S": "x"}})  # reads don't count
    with pytest.raises(ConnectionClosedError):
        _put(dynamodb, "step-2")
    with pytest.raises(ConnectionClosedError):
        _put(dynamodb, "step-3")

    steps = [(c.operation, c.fault) for c in faulty_aws.mutations()]
    assert steps[0] == ("PutItem", None) and steps[1:] and all(fault == "cut" for _, fault in steps[1:])
    assert len(steps) == 1 + 2 * 3  # boto3 tries each failing call 3 times (total_max_attempts in aws.py)
    direct = faulty_aws.direct("dynamodb")
    assert "Item" in direct.get_item(TableName=TABLE, Key={"pk": {"S": "step-1"}, "sk": {"S": "x"}})
    assert "Item" not in direct.get_item(TableName=TABLE, Key={"pk": {"S": "step-2"}, "sk": {"S": "x"}})


def test_proxy_after_forwarding_loses_only_the_reply(faulty_aws: FaultyAWS) -> None:
    dynamodb = aws.client("dynamodb")
    faulty_aws.fail("error", operation="PutItem", times=1, after_forwarding=True)
    # The write happened; its 500 made boto3 retry, and the retry found the item already there.
    with pytest.raises(ClientError) as raised:
        _put(dynamodb, "once", ConditionExpression="attribute_not_exists(pk)")
    assert raised.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert [(c.fault, c.forwarded) for c in faulty_aws.calls] == [("error", True), (None, True)]


def test_proxy_delays_then_forwards(faulty_aws: FaultyAWS) -> None:
    dynamodb = aws.client("dynamodb")
    with faulty_aws.failing("delay", service="dynamodb", delay=0.3):
        started = time.monotonic()
        _put(dynamodb, "slow")
        assert time.monotonic() - started >= 0.3
    assert faulty_aws.calls[-1].fault == "delay" and not faulty_aws.calls[-1].failed
    _put(dynamodb, "fast")  # the rule ended with the block
    assert faulty_aws.calls[-1].fault is None


# -- through the Chalice test client and the faulty proxy --------------------------------------------
def _warm_key(broker: Broker) -> None:
    """One successful call: the API key is cached, so later calls get past the authorizer."""
    assert broker.call("GET", "/v1/teams/acme/jira").error_code == "integration_not_found"


@pytest.mark.parametrize(
    ("mode", "rule"),
    [
        ("error", {}),
        ("cut", {}),
        ("throttle", {"error": "ProvisionedThroughputExceededException"}),
    ],
)
def test_api_call_with_dynamodb_failing_is_503_with_retry_after(
    faulty_broker: Broker, faulty_aws: FaultyAWS, mode: str, rule: dict[str, Any]
) -> None:
    _warm_key(faulty_broker)
    faulty_aws.fail(mode, service="dynamodb", **rule)
    _assert_storage_unavailable(faulty_broker.call("GET", "/v1/teams/acme/jira"))
    assert [c.fault for c in faulty_aws.calls if c.operation == "GetItem"][-1] == mode

    faulty_aws.heal()  # it recovers by itself: nothing was cached or broken
    assert faulty_broker.call("GET", "/v1/teams/acme/jira").error_code == "integration_not_found"


def test_connect_page_with_dynamodb_failing_is_an_html_503(
    faulty_broker: Broker, faulty_aws: FaultyAWS, jira: FakeJira, private_pem: str
) -> None:
    assert faulty_broker.setup(jira, private_pem).status == 201
    link = faulty_broker.connect_link()
    faulty_aws.fail("error", service="dynamodb")

    page = faulty_broker.browser("GET", link)

    assert page.status == 503 and page.headers["Content-Type"].startswith("text/html")
    assert page.error_code == "storage_unavailable" and page.headers["Retry-After"] == "2"
    assert "could not reach its storage just now" in page.text
    assert "Wait a few seconds, then open your connect link again." in page.text
    faulty_aws.heal()
    assert faulty_broker.browser("GET", link).status == 200


def test_connect_page_with_secrets_manager_failing_is_an_html_503(faulty_broker: Broker, faulty_aws: FaultyAWS) -> None:
    # A cold container must read the link-signing key from Secrets Manager before anything else.
    faulty_aws.fail("error", service="secretsmanager")
    page = faulty_broker.browser("GET", "/connect/not-a-real-token")
    assert page.status == 503 and page.error_code == "storage_unavailable"
    assert any(c.service == "secretsmanager" and c.failed for c in faulty_aws.calls)


def test_authorizer_with_dynamodb_down_answers_and_lets_nothing_through(
    faulty_broker: Broker, faulty_aws: FaultyAWS
) -> None:
    faulty_aws.fail("error", service="dynamodb", operation="GetItem")

    answer = faulty_broker.call("GET", "/v1/teams/acme/jira")

    # Chalice's test client answers an authorizer without a policy as API Gateway's own 500; it
    # cannot render Gateway Responses. Deployed and under chalice local, the template's response
    # for it is the 503 envelope:
    assert answer.status == 500 and answer.headers["x-amzn-ErrorType"] == "AuthorizerConfigurationException"
    assert answer.error_code is None  # the route never ran
    status, headers, body = render(_gateway_error(answer))
    assert status == 503 and headers["X-Broker-Error"] == "authorizer_unavailable" and headers["Retry-After"] == "2"
    assert json.loads(body)["error"]["code"] == "authorizer_unavailable"

    # Nothing was cached: once DynamoDB answers, the same key works at once.
    faulty_aws.heal()
    assert faulty_broker.call("GET", "/v1/teams/acme/jira").error_code == "integration_not_found"
    assert faulty_broker.call("GET", "/v1/teams/acme/jira", key="jb_unknown").status == 403


def _gateway_error(answer: Answer) -> InvalidAuthorizerError:
    return InvalidAuthorizerError(answer.headers, answer.body)


# -- through the real local runner, with AWS_ENDPOINT_URL at the faulty proxy ---------------------------
@pytest.fixture
def runner_on_proxy(faulty_aws: FaultyAWS, tmp_path: Path) -> Iterator[LocalStack]:
    with local_stack(tmp_path / "run_local.log", RUNNER_KEY, aws_endpoint=faulty_aws.endpoint) as stack:
        yield stack


def test_runner_uses_aws_endpoint_url_and_answers_503_when_dynamodb_fails(
    runner_on_proxy: LocalStack, faulty_aws: FaultyAWS
) -> None:
    stack = runner_on_proxy
    assert "no embedded moto" in stack.output() and stack.moto == faulty_aws.endpoint
    # The table already existed (the fixture made it): used as it is; the key went through the proxy.
    assert {"CreateTable", "PutItem"} <= {c.operation for c in faulty_aws.calls}
    listed = _apikeys("list")  # scripts.apikeys finds the runner's endpoint by itself
    assert "local" in listed and "all-teams" in listed

    # The key is not cached yet and DynamoDB fails: the authorizer answers, as API Gateway would.
    faulty_aws.fail("error", service="dynamodb")
    refused = stack.api("GET", "/v1/teams/acme/jira")
    assert refused.status_code == 503 and refused.headers["X-Broker-Error"] == "authorizer_unavailable"
    assert refused.headers["Retry-After"] == "2" and refused.json()["error"]["code"] == "authorizer_unavailable"

    faulty_aws.heal()
    assert stack.api("GET", "/v1/teams/acme/jira").headers["X-Broker-Error"] == "integration_not_found"

    # The key is cached now; the route's own read fails: 503 from the broker, not a dropped connection.
    faulty_aws.fail("cut", service="dynamodb")
    failed = stack.api("GET", "/v1/teams/acme/jira")
    assert failed.status_code == 503 and failed.headers["X-Broker-Error"] == "storage_unavailable"
    assert failed.headers["Retry-After"] == "2" and failed.json()["error"]["code"] == "storage_unavailable"
    assert API_KEY not in stack.output() and RUNNER_KEY not in stack.output()


_apikeys = apikeys_cli


# -- the embedded moto handles one request at a time -----------------------------------------------
def test_serialised_moto_has_exactly_one_conditional_put_winner() -> None:
    use_fake_credentials()
    server, endpoint = start_moto()
    try:
        config = Config(retries={"max_attempts": 0})
        clients = [boto3.client("dynamodb", endpoint_url=endpoint, config=config) for _ in range(20)]
        clients[0].create_table(
            TableName="race",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        for round_ in range(50):
            assert _winners(clients, f"item-{round_}") == 1, f"round {round_}"
    finally:
        server.stop()


def _winners(clients: list[Any], pk: str) -> int:
    start = threading.Barrier(len(clients))
    won: list[int] = []
    other_errors: list[str] = []

    def write(index: int) -> None:
        start.wait()
        try:
            clients[index].put_item(
                TableName="race",
                Item={"pk": {"S": pk}, "writer": {"N": str(index)}},
                ConditionExpression="attribute_not_exists(pk)",
            )
            won.append(index)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                other_errors.append(str(error))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not other_errors
    return len(won)


def test_the_runner_removes_only_its_own_endpoint_file(tmp_path: Path) -> None:
    from scripts.local_aws import claim_endpoint_file, release_endpoint_file

    state = tmp_path / "8000.endpoint"  # make run's per-port file (.local/<port>.endpoint)
    mine = claim_endpoint_file(state, "http://127.0.0.1:4566")
    assert mine is not None and claim_endpoint_file(state, "http://127.0.0.1:4567") is None  # a live owner
    state.write_text("http://127.0.0.1:4566\n# written by scripts.run_local, pid 1\n")  # not ours any more
    release_endpoint_file(state, mine)
    assert state.exists()
    # A runner that was killed left its file behind (a pid above Linux's highest: no such process).
    state.write_text("http://127.0.0.1:4566\n# written by scripts.run_local, pid 4194305\n")
    mine = claim_endpoint_file(state, "http://127.0.0.1:4566")
    assert mine is not None
    release_endpoint_file(state, mine)
    assert not state.exists()


def test_chalice_local_answers_an_authorizer_that_raises() -> None:
    """chalice local itself would drop the connection; scripts.chalice_local answers as API Gateway does."""
    from chalice import Chalice
    from chalice.config import Config as ChaliceConfig
    from chalice.local import LocalGateway, LocalGatewayException

    app = Chalice(app_name="raising-authorizer")

    @app.authorizer()
    def broken(auth_request: Any) -> Any:
        raise RuntimeError("a bug in the authorizer")

    @app.route("/guarded", authorizer=broken)
    def guarded() -> dict[str, str]:
        return {"reached": "yes"}

    gateway = LocalGateway(app, ChaliceConfig())
    with pytest.raises(LocalGatewayException) as raised:
        gateway.handle_request(method="GET", path="/guarded", headers={"authorization": "Bearer x"}, body=b"")
    status, headers, body = render(raised.value)
    assert status == 503 and headers["X-Broker-Error"] == "authorizer_unavailable" and headers["Retry-After"] == "2"
    assert json.loads(body)["error"]["code"] == "authorizer_unavailable"
