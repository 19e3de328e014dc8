"""Tokens at rest: sealed in the connection item, bound to their team and user; items from before
sealing keep working and are sealed on first use."""

from __future__ import annotations

import json

import boto3

from chalicelib.dynamo import to_item
from chalicelib.store import Store
from tests.conftest import TABLE, Broker
from tests.stored import stored_tokens

PROXY = "/v1/teams/acme/users/{user}/jira/proxy"
MYSELF = {"method": "GET", "path": "/rest/api/2/myself"}


def test_an_old_plain_item_keeps_working_and_is_sealed_in_place(connected: Broker, store: Store) -> None:
    tokens = stored_tokens()
    item = store.get_connection("acme", "alice")
    assert item is not None and "sealed" in item
    # As the broker wrote it before sealing: the tokens in plain attributes.
    old = {k: v for k, v in item.items() if k not in ("sealed", "pk", "sk")}
    old.update(tokens)
    store.client.put_item(TableName=TABLE, Item=to_item({**old, "pk": "TEAM#acme", "sk": "USER#alice"}))

    assert connected.call("POST", PROXY.format(user="alice"), MYSELF).status == 200
    resealed = store.get_connection("acme", "alice")
    assert resealed is not None and resealed.get("sealed")
    assert not {"access_token", "token_secret", "session_handle"} & set(resealed)
    assert tokens["access_token"] not in json.dumps(boto3.client("dynamodb").scan(TableName=TABLE)["Items"])
    assert stored_tokens() == tokens
    assert connected.call("POST", PROXY.format(user="alice"), MYSELF).status == 200


def test_a_sealed_value_copied_to_another_user_does_not_open(connected: Broker, store: Store) -> None:
    """Whoever can write the table cannot make bob act as alice by copying her sealed tokens."""
    item = store.get_connection("acme", "alice")
    assert item is not None
    store.client.put_item(
        TableName=TABLE,
        Item=to_item({**{k: v for k, v in item.items() if k not in ("pk", "sk")}, "pk": "TEAM#acme", "sk": "USER#bob"}),
    )
    answer = connected.call("POST", PROXY.format(user="bob"), MYSELF)
    assert answer.status == 401 and answer.error_code == "reauthorization_required"
    assert answer.json["error"]["connect_url"].startswith("http://broker.test/connect/")
    assert "could not be decrypted" in answer.json["error"]["message"]
    assert store.get_connection("acme", "bob") is None  # removed: it could never be used
    assert connected.call("POST", PROXY.format(user="alice"), MYSELF).status == 200  # alice's own still works
