"""infra/resources.json: the one table definition, API Gateway's own errors in the broker's envelope, and what
a fresh account needs and operations see: safe defaults, access logs, alarms, throttling."""

from __future__ import annotations

import json
import re
from typing import Any

import boto3
from chalice.deploy.swagger import CFNSwaggerGenerator
from chalice.package import TemplateDeepMerger

from app import SITE_METHODS, app
from scripts.chalice_local import gateway_responses
from scripts.infra import greedy_paths, path_parameters, render
from scripts.local_aws import ROOT, TEMPLATE
from scripts.sam_check import ACCESS_LOG_FIELDS
from tests.conftest import TABLE

CONFIG = ROOT / ".chalice" / "config.json"


def test_local_table_is_the_template_table(aws_mock: None) -> None:
    client = boto3.client("dynamodb")
    table = client.describe_table(TableName=TABLE)["Table"]
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = client.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED" and ttl["AttributeName"] == "ttl"


def _template() -> dict[str, Any]:
    return dict(json.loads(TEMPLATE.read_text()))


def test_gateway_responses_use_the_error_envelope() -> None:
    responses = _template()["Resources"]["RestAPI"]["Properties"]["GatewayResponses"]
    assert {"UNAUTHORIZED", "ACCESS_DENIED", "MISSING_AUTHENTICATION_TOKEN", "THROTTLED"} <= set(responses)
    for response in responses.values():
        body = json.loads(response["ResponseTemplates"]["application/json"])
        headers = response["ResponseParameters"]["Headers"]
        assert headers["X-Broker-Error"] == f"'{body['error']['code']}'"
        assert headers["Cache-Control"] == "'no-store'"
        assert len(body["error"]["message"]) > 20
        # Jira's error shape beside it: Jira client libraries build their exception text from errorMessages.
        assert body["errorMessages"] == [f"{body['error']['code']}: {body['error']['message']}"]
        assert body["errors"] == {} and set(body) == {"error", "errorMessages", "errors"}
        # A template is VTL: no $ or # that API Gateway would read as a reference or a directive.
        assert "$" not in response["ResponseTemplates"]["application/json"]
        assert "#" not in response["ResponseTemplates"]["application/json"]


def test_throttled_and_unavailable_say_when_to_retry() -> None:
    responses = _template()["Resources"]["RestAPI"]["Properties"]["GatewayResponses"]
    assert responses["THROTTLED"]["ResponseParameters"]["Headers"]["Retry-After"] == "'1'"
    for kind in ("AUTHORIZER_FAILURE", "AUTHORIZER_CONFIGURATION_ERROR"):
        assert responses[kind]["ResponseParameters"]["Headers"]["Retry-After"] == "'2'"
    assert gateway_responses()["THROTTLED"]["ResponseParameters"]["gatewayresponse.header.Retry-After"] == "'1'"


def test_the_merge_template_declares_the_greedy_paths_parameters() -> None:
    """Chalice declares only {name} view arguments; API Gateway needs {proxy+}'s ``proxy`` declared too."""
    paths = render("dev")["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["paths"]
    site = "/v1/teams/{team}/users/{user}/jira/site/{proxy+}"
    assert set(paths) == {site}  # from app.app.routes: the one greedy route
    params = [{"name": name, "in": "path", "required": True, "type": "string"} for name in ("team", "user", "proxy")]
    assert paths[site] == {method.lower(): {"parameters": params} for method in SITE_METHODS}
    assert greedy_paths({"/a/{id}": ["GET"], "/a/{id}/{rest+}": ["GET", "PUT"]}) == {
        "/a/{id}/{rest+}": {
            "get": {"parameters": path_parameters("/a/{id}/{rest+}")},
            "put": {"parameters": path_parameters("/a/{id}/{rest+}")},
        }
    }
    assert [p["name"] for p in path_parameters("/a/{id}/{rest+}")] == ["id", "rest"]


def test_chalices_merge_replaces_the_parameter_lists() -> None:
    """chalice package's deep merge merges dictionaries and replaces lists: each method ends with exactly
    team, user and proxy, its integration and authorizer as Chalice wrote them."""
    swagger = CFNSwaggerGenerator().generate_swagger(app)
    chalice_template = {"Resources": {"RestAPI": {"Properties": {"DefinitionBody": swagger}}}}
    merged = TemplateDeepMerger().merge(render("prod"), chalice_template)
    definition = merged["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    site = definition["paths"]["/v1/teams/{team}/users/{user}/jira/site/{proxy+}"]
    assert sorted(site) == sorted(m.lower() for m in SITE_METHODS)
    for method in site.values():
        assert [p["name"] for p in method["parameters"]] == ["team", "user", "proxy"]
        assert method["x-amazon-apigateway-integration"]["type"] == "aws_proxy"
        assert method["security"] == [{"api_key_auth": []}]
    assert definition["x-amazon-apigateway-binary-media-types"] == ["*/*"]
    assert definition["info"]["title"] == {"Fn::Sub": "jira-oauth-broker-${Stage}"}  # the merge's own
    other = definition["paths"]["/v1/teams/{team}/users/{user}/jira"]["get"]["parameters"]
    assert [p["name"] for p in other] == ["team", "user"]  # the other routes: Chalice's, untouched


def test_gateway_responses_are_part_of_the_sam_api_not_separate_resources() -> None:
    """Separate AWS::ApiGateway::GatewayResponse resources are not in SAM's deployment (nor redeploy it)."""
    resources = _template()["Resources"]
    assert [k for k, v in resources.items() if v.get("Type") == "AWS::ApiGateway::GatewayResponse"] == []
    # chalice local renders the same responses, in the shape API Gateway holds them.
    local = gateway_responses()
    template = resources["RestAPI"]["Properties"]["GatewayResponses"]
    assert set(local) == set(template)
    assert local["UNAUTHORIZED"]["StatusCode"] == "401"
    assert local["THROTTLED"]["ResponseParameters"]["gatewayresponse.header.X-Broker-Error"] == "'throttled'"
    assert "StatusCode" not in local["DEFAULT_4XX"]  # keeps API Gateway's own status


def test_every_parameter_has_a_safe_default() -> None:
    """A brand-new account deploys with no parameter given (make deploy passes only a few)."""
    parameters = _template()["Parameters"]
    assert all("Default" in p for p in parameters.values()), [k for k, p in parameters.items() if "Default" not in p]
    assert parameters["ReservedConcurrency"]["Default"] == 0  # unreserved: new accounts have low quotas
    assert parameters["AlarmTopicArn"]["Default"] == ""  # alarms without actions
    assert parameters["CreateApiGatewayAccountRole"]["Default"] == "true"  # access logs need it
    assert parameters["ThrottlingRateLimit"]["Default"] == 50
    assert parameters["ThrottlingBurstLimit"]["Default"] == 100
    for name, parameter in parameters.items():
        if "AllowedPattern" in parameter:
            assert re.fullmatch(parameter["AllowedPattern"], str(parameter["Default"])), name
        if "AllowedValues" in parameter:
            assert parameter["Default"] in parameter["AllowedValues"], name


def test_kept_data_is_retained_except_when_a_first_deploy_rolls_back() -> None:
    """Retain would leave fixed names behind a failed first deploy, and the retry fails with 'already exists'."""
    resources = _template()["Resources"]
    kept = {"BrokerKey", "BrokerTable", "APIHandlerLogGroup", "ApiKeyAuthLogGroup", "ApiAccessLogGroup"}
    for name in kept:
        assert resources[name]["DeletionPolicy"] == "RetainExceptOnCreate", name
        assert resources[name]["UpdateReplacePolicy"] == "Retain", name
    assert [k for k, v in resources.items() if v.get("DeletionPolicy") == "Retain"] == []


def test_reserved_concurrency_is_a_parameter_off_by_default() -> None:
    template = _template()
    assert template["Conditions"]["HasReservedConcurrency"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "ReservedConcurrency"}, 0]}]
    }
    for function in ("APIHandler", "ApiKeyAuth"):
        assert template["Resources"][function]["Properties"]["ReservedConcurrentExecutions"] == {
            "Fn::If": ["HasReservedConcurrency", {"Ref": "ReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
        }


def test_access_log_is_json_by_route_to_the_encrypted_log_group() -> None:
    resources = _template()["Resources"]
    setting = resources["RestAPI"]["Properties"]["AccessLogSetting"]
    line = json.loads(setting["Format"])
    assert line["route"] == "$context.resourcePath"
    assert "$context.path" not in setting["Format"]  # connect and setup paths carry link tokens
    assert set(line.values()) >= set(ACCESS_LOG_FIELDS)
    assert "${ApiAccessLogGroup}" in setting["DestinationArn"]["Fn::Sub"]
    group = resources["ApiAccessLogGroup"]["Properties"]
    assert group["KmsKeyId"] == {"Fn::GetAtt": ["BrokerKey", "Arn"]} and group["RetentionInDays"] == 365
    # The key lets CloudWatch Logs use it for exactly the broker's log groups, the access log's included.
    statement = next(
        s
        for s in resources["BrokerKey"]["Properties"]["KeyPolicy"]["Statement"]
        if s["Sid"] == "CloudWatchLogsForTheBrokersLogGroups"
    )
    arns = [a["Fn::Sub"] for a in statement["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]]
    assert any(arn.endswith(f":log-group:{group['LogGroupName']['Fn::Sub']}") for arn in arns), arns
    assert all(":log-group:/aws/lambda/jira-oauth-broker-${Stage}-" in arn or arn.endswith("-access") for arn in arns)
    # The access-log skip is gone: checkov now checks the API logs.
    skipped = {s["id"] for s in resources["RestAPI"]["Metadata"]["checkov"]["skip"]}
    assert "CKV_AWS_76" not in skipped


def test_the_account_cloudwatch_role_is_optional_and_the_api_waits_for_it() -> None:
    template = _template()
    resources = template["Resources"]
    assert resources["ApiGatewayAccount"]["Condition"] == "CreateApiGatewayAccountRole"
    assert resources["ApiGatewayCloudWatchRole"]["Condition"] == "CreateApiGatewayAccountRole"
    # Kept when the stack goes: the account setting would otherwise name a deleted role.
    assert resources["ApiGatewayCloudWatchRole"]["DeletionPolicy"] == "RetainExceptOnCreate"
    assert resources["RestAPI"]["DependsOn"] == ["ApiGatewayAccountReady"]
    ready = resources["ApiGatewayAccountReady"]
    assert ready["Metadata"]["ApiGatewayAccount"] == {
        "Fn::If": ["CreateApiGatewayAccountRole", {"Ref": "ApiGatewayAccount"}, ""]
    }


def test_the_stage_is_throttled_by_parameters() -> None:
    settings = _template()["Resources"]["RestAPI"]["Properties"]["MethodSettings"]
    assert settings == [
        {
            "ResourcePath": "/*",
            "HttpMethod": "*",
            "ThrottlingRateLimit": {"Ref": "ThrottlingRateLimit"},
            "ThrottlingBurstLimit": {"Ref": "ThrottlingBurstLimit"},
        }
    ]


def test_alarms_watch_5xx_the_authorizer_throttles_and_jira() -> None:
    template = _template()
    resources = template["Resources"]
    alarms = {k: v["Properties"] for k, v in resources.items() if v.get("Type") == "AWS::CloudWatch::Alarm"}
    watched = sorted(json.dumps([p["Namespace"], p["MetricName"], p["Dimensions"]]) for p in alarms.values())
    api_stage = json.loads(CONFIG.read_text())["stages"]["prod"]["api_gateway_stage"]
    api_name = resources["RestAPI"]["Properties"]["Name"]
    expected = [
        ("AWS/ApiGateway", "5XXError", [("ApiName", api_name), ("Stage", api_stage)]),
        ("AWS/Lambda", "Errors", [("FunctionName", {"Ref": "ApiKeyAuth"})]),
        ("AWS/Lambda", "Throttles", [("FunctionName", {"Ref": "APIHandler"})]),
        ("AWS/Lambda", "Throttles", [("FunctionName", {"Ref": "ApiKeyAuth"})]),
        ("JiraOAuthBroker", "JiraErrors", [("service", "jira-oauth-broker")]),
    ]
    assert watched == sorted(
        json.dumps([ns, metric, [{"Name": k, "Value": v} for k, v in dims]]) for ns, metric, dims in expected
    )
    # The API's name in the 5xx alarm is the name it is deployed under (and the one in its definition).
    assert resources["RestAPI"]["Properties"]["DefinitionBody"]["info"]["title"] == api_name
    actions = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    for props in alarms.values():
        assert props["TreatMissingData"] == "notBreaching"
        assert props["AlarmActions"] == actions and props["OKActions"] == actions
        threshold = props["Threshold"]["Ref"]
        assert threshold in template["Parameters"] and "Default" in template["Parameters"][threshold]
    assert template["Conditions"]["HasAlarmTopic"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}
