"""Deployment: the rendered merge template, least-privilege policies that cover what the app calls,
the API key command, and settings that only exist when deployed."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.app import Request
from cryptography.hazmat.primitives.asymmetric import rsa

from chalicelib import apikeys, aws, config, sealing
from chalicelib.store import Store, token_hash
from chalicelib.web import remember_public_url
from scripts import apikeys as apikeys_cli
from scripts.infra import render
from tests.conftest import Broker, key_secret_name
from tests.fakejira import FakeJira

CHALICE = Path(__file__).resolve().parent.parent / ".chalice"


def _policy(name: str) -> dict[str, Any]:
    return dict(json.loads((CHALICE / name).read_text()))


# -- the template -------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_rendered_template_holds_the_table_with_ttl_pitr_and_kms(stage: str) -> None:
    template = render(stage)
    assert template["Parameters"]["Stage"]["Default"] == stage  # type: ignore[index]
    resources = template["Resources"]
    table = resources["BrokerTable"]["Properties"]  # type: ignore[index]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": {"Ref": "BrokerKey"}}
    assert table["DeletionProtectionEnabled"] == {"Fn::If": ["IsProd", True, False]}
    assert resources["BrokerKey"]["Properties"]["EnableKeyRotation"] is True  # type: ignore[index]
    env = resources["APIHandler"]["Properties"]["Environment"]["Variables"]  # type: ignore[index]
    assert env["BROKER_TABLE"] == {"Ref": "BrokerTable"} and env["BROKER_PUBLIC_URL"] == {"Ref": "PublicUrl"}
    assert env["BROKER_SECRET_PREFIX"] == {"Fn::Sub": "jira-oauth-broker/${Stage}"}


# -- IAM -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_policies_name_their_resources(stage: str) -> None:
    for name in (f"policy-{stage}.json", f"policy-authorizer-{stage}.json"):
        for statement in _policy(name)["Statement"]:
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            if "*" in resources:
                # X-Ray has no resource-level permissions: the one explained exception.
                assert statement["Sid"] == "XRayHasNoResourceLevelPermissions", statement
                assert all(action.startswith("xray:Put") for action in statement["Action"])
                continue
            for resource in resources:
                assert stage in resource or resource == "arn:aws:kms:*:*:key/*", resource
            if resources == ["arn:aws:kms:*:*:key/*"]:
                assert statement["Condition"]["ForAnyValue:StringEquals"]["kms:ResourceAliases"] == (
                    f"alias/jira-oauth-broker-{stage}"
                )


def _conditions(statement: dict[str, Any]) -> set[str]:
    return {key for block in statement.get("Condition", {}).values() for key in block}


def _direct_kms(policy: dict[str, Any]) -> list[dict[str, Any]]:
    """The statements that let the function itself (not a service on its behalf) use KMS data keys."""
    return [
        statement
        for statement in policy["Statement"]
        if statement["Effect"] == "Allow"
        and any(_allowed({"Statement": [statement]}, action) for action in ("kms:GenerateDataKey", "kms:Decrypt"))
        and "kms:ViaService" not in _conditions(statement)
    ]


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_only_the_api_function_seals_tokens_and_only_with_the_stage_key_and_context(stage: str) -> None:
    """chalicelib/sealing.py calls GenerateDataKey and Decrypt itself, so no kms:ViaService; the stage key only,
    and only with the tokens' encryption context (no other key in it). The authorizer never opens a token."""
    [statement] = _direct_kms(_policy(f"policy-{stage}.json"))
    assert sorted(statement["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert statement["Resource"] == "arn:aws:kms:*:*:key/*"
    context = {f"kms:EncryptionContext:{key}": value for key, value in sealing.ENCRYPTION_CONTEXT.items()}
    assert statement["Condition"] == {
        "ForAnyValue:StringEquals": {"kms:ResourceAliases": f"alias/jira-oauth-broker-{stage}"},
        "StringEquals": context,
        "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": sorted(sealing.ENCRYPTION_CONTEXT)},
    }
    assert _direct_kms(_policy(f"policy-authorizer-{stage}.json")) == []


def test_stages_use_their_policy_files_and_settings() -> None:
    stages = json.loads((CHALICE / "config.json").read_text())["stages"]
    assert set(stages) == {"local", "dev", "prod"}
    for stage in ("dev", "prod"):
        config_ = stages[stage]
        assert config_["autogen_policy"] is False
        functions = config_["lambda_functions"]
        assert functions["api_handler"]["iam_policy_file"] == f"policy-{stage}.json"
        assert functions["api_key_auth"]["iam_policy_file"] == f"policy-authorizer-{stage}.json"
        assert functions["api_handler"]["lambda_timeout"] < 29  # API Gateway's limit
        assert config_["environment_variables"]["BROKER_TABLE"] == f"jira-oauth-broker-{stage}"
        # No reserved concurrency by default: Lambda keeps 100 unreserved per account and new accounts often
        # have low quotas, so a reservation can fail a first deploy. The template's ReservedConcurrency sets it.
        assert "reserved_concurrency" not in config_
        assert all("reserved_concurrency" not in function for function in functions.values())


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_reserved_concurrency_comes_from_a_parameter_defaulting_to_none(stage: str) -> None:
    template = render(stage)
    parameter = template["Parameters"]["ReservedConcurrency"]  # type: ignore[index]
    assert parameter["Default"] == 0 and parameter["MinValue"] == 0
    for function in ("APIHandler", "ApiKeyAuth"):
        concurrency = template["Resources"][function]["Properties"]["ReservedConcurrentExecutions"]  # type: ignore[index]
        assert concurrency == {
            "Fn::If": ["HasReservedConcurrency", {"Ref": "ReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
        }


@pytest.fixture
def recorded_calls(aws_mock: None) -> Iterator[set[str]]:
    calls: set[str] = set()

    def record(model: Any, params: Any = None, **_: Any) -> None:
        prefix = {"DynamoDB": "dynamodb", "Secrets Manager": "secretsmanager", "KMS": "kms"}.get(
            model.service_model.service_id
        )
        if model.name != "TransactWriteItems":
            calls.add(f"{prefix}:{model.name}")
            return
        # IAM has no TransactWriteItems action: each item needs its own action's permission.
        body = params.get("body", params) if isinstance(params, dict) else {}
        if isinstance(body, bytes | str):
            body = json.loads(body)
        for item in body["TransactItems"]:
            for kind in item:
                calls.add(f"dynamodb:{_TRANSACT_ACTIONS[kind]}")

    for service in ("dynamodb", "secretsmanager", "kms"):
        aws.client(service).meta.events.register("before-call", record)
    yield calls


_TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def _allowed(policy: dict[str, Any], action: str) -> bool:
    return any(
        fnmatch.fnmatch(action, pattern)
        for statement in policy["Statement"]
        for pattern in (statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]])
    )


def test_the_policy_covers_every_call_the_app_makes(
    recorded_calls: set[str], broker: Broker, jira: FakeJira, private_pem: str
) -> None:
    """Drive every route once, under moto, and check each AWS call against the prod policy."""
    assert broker.call("POST", "/v1/teams/acme/jira/key-pair", {}).status == 201
    assert broker.setup(jira, private_pem).status == 201
    link = broker.connect_link()
    assert broker.browser("GET", jira.approve(broker.start_dance(link), "alice")).status == 200
    proxy = "/v1/teams/acme/users/alice/jira/proxy"
    assert broker.call("POST", proxy, {"method": "GET", "path": "/rest/api/2/myself"}).status == 200
    assert broker.call("DELETE", "/v1/teams/acme/users/alice/jira").status == 204
    assert broker.call("DELETE", "/v1/teams/acme/jira").status == 204
    assert broker.setup(jira, private_pem).status == 201  # restores the deleted secret
    policy = _policy("policy-prod.json")
    app_calls = set(recorded_calls)
    assert {
        "dynamodb:BatchGetItem",
        "dynamodb:ConditionCheckItem",
        "secretsmanager:RestoreSecret",
        "secretsmanager:CreateSecret",
    } <= app_calls
    missing = sorted(call for call in app_calls if not _allowed(policy, call))
    assert missing == [], f"the prod policy lacks {missing}"
    assert _allowed(_policy("policy-authorizer-prod.json"), "dynamodb:GetItem")
    assert not _allowed(_policy("policy-authorizer-prod.json"), "secretsmanager:GetSecretValue")


# -- settings only a deployment has ------------------------------------------------------------------
def test_public_url_comes_from_the_request_when_not_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BROKER_PUBLIC_URL", raising=False)
    context = {
        "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
        "stage": "api",
        "httpMethod": "GET",
        "resourcePath": "/health",
    }
    event = {
        "requestContext": context,
        "headers": {},
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "body": None,
        "isBase64Encoded": False,
        "stageVariables": None,
    }
    token = config.request_public_url.set(None)
    try:
        remember_public_url(Request(event))
        assert config.load_settings().public_url == "https://abc123.execute-api.eu-west-1.amazonaws.com/api"
        assert config.load_settings().callback_url.endswith(".amazonaws.com/api/oauth/callback")
        monkeypatch.setenv("BROKER_PUBLIC_URL", "https://jira-broker.example.com/")
        assert config.load_settings().public_url == "https://jira-broker.example.com"
    finally:
        config.request_public_url.reset(token)


def test_team_keys_are_encrypted_with_the_brokers_kms_key(
    aws_mock: None,
    broker: Broker,
    jira: FakeJira,
    private_pem: str,
    rsa_key: rsa.RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_id = boto3.client("kms").create_key()["KeyMetadata"]["KeyId"]
    monkeypatch.setenv("BROKER_SECRETS_KMS_KEY", key_id)
    assert broker.setup(jira, private_pem).status == 201
    secret = boto3.client("secretsmanager").describe_secret(SecretId=key_secret_name(rsa_key))
    assert key_id in secret["KmsKeyId"]


# -- the API key command ---------------------------------------------------------------------------------
def test_apikeys_create_list_revoke(
    aws_mock: None, broker: Broker, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apikeys_cli, "store_for", lambda stage: Store("jira-oauth-broker-local"))
    assert apikeys_cli.main(["create", "--name", "chat-bot", "--team", "acme", "--stage", "local"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith("jb_")
    assert broker.call("GET", "/v1/teams/acme/jira", key=key).status == 404  # accepted: no integration yet
    assert broker.call("GET", "/v1/teams/globex/jira", key=key).error_code == "team_forbidden"

    assert apikeys_cli.main(["list", "--stage", "local"]) == 0
    listing = capsys.readouterr().out
    key_id = token_hash(key)[:8]
    assert key_id in listing and "chat-bot" in listing and "acme" in listing and key not in listing

    assert apikeys_cli.main(["revoke", "--id", key_id, "--stage", "local"]) == 0
    assert "within 60 seconds" in capsys.readouterr().out
    apikeys.forget_cached_keys()  # the authorizer's cache TTL passing
    assert broker.call("GET", "/v1/teams/acme/jira", key=key).status == 403
    assert apikeys_cli.main(["revoke", "--name", "nobody", "--stage", "local"]) == 1
    items = boto3.client("dynamodb").scan(TableName="jira-oauth-broker-local")["Items"]
    assert key not in json.dumps(items)
