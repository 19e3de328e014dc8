"""infra/resources.json: the one table definition, and API Gateway's own errors in the broker's envelope."""

from __future__ import annotations

import json

import boto3

from scripts.local_aws import TEMPLATE
from tests.conftest import TABLE


def test_local_table_is_the_template_table(aws_mock: None) -> None:
    client = boto3.client("dynamodb")
    table = client.describe_table(TableName=TABLE)["Table"]
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = client.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED" and ttl["AttributeName"] == "ttl"


def test_gateway_responses_use_the_error_envelope() -> None:
    resources = json.loads(TEMPLATE.read_text())["Resources"]
    responses = {
        k: v["Properties"] for k, v in resources.items() if v.get("Type") == "AWS::ApiGateway::GatewayResponse"
    }
    assert {"UNAUTHORIZED", "ACCESS_DENIED", "MISSING_AUTHENTICATION_TOKEN"} <= {
        p["ResponseType"] for p in responses.values()
    }
    for props in responses.values():
        body = json.loads(props["ResponseTemplates"]["application/json"])
        header = props["ResponseParameters"]["gatewayresponse.header.X-Broker-Error"]
        assert header == f"'{body['error']['code']}'"
        assert len(body["error"]["message"]) > 20
