"""The packaged template (chalice package + infra/resources.json) through SAM's own transform.

What CloudFormation deploys is the transform's output, not the SAM template: this proves the Gateway
Responses end up in the RestApi's definition and redeploy the stage when they change, and that the stage
logs by route and is throttled (``scripts/sam_check.py``). The transform, ``samtranslator``, is in the tools
venv (``requirements-tools.txt``, installed by ``make check-infra``), so it runs there, in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scripts.infra import render
from scripts.local_aws import ROOT

TOOLS_PYTHON = ROOT / ".venv-tools" / "bin" / "python"
SITE_ROUTE = "/v1/teams/{team}/users/{user}/jira/site/{proxy+}"
CHALICE = Path(sys.executable).parent / "chalice"


def _tools_have_samtranslator() -> bool:
    if not TOOLS_PYTHON.exists():
        return False
    return subprocess.run([TOOLS_PYTHON, "-c", "import samtranslator"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(
    not _tools_have_samtranslator(),
    reason="needs .venv-tools with aws-sam-translator (make check-infra installs it from requirements-tools.txt)",
)


@pytest.fixture(scope="module", params=["dev", "prod"])
def packaged(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make package``'s sam.json for the stage (without the code zip's .pyc step, which the template ignores)."""
    stage = request.param
    out = tmp_path_factory.mktemp(f"package-{stage}")
    merge = out / "merge.json"
    merge.write_text(json.dumps(render(stage), indent=2))
    env = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    command = [CHALICE, "package", "--stage", stage, "--merge-template", merge, out / "template"]
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    return out / "template" / "sam.json"


def _sam_check(template: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TOOLS_PYTHON, "-m", "scripts.sam_check", template], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def _transformed(template: Path) -> dict[str, Any]:
    code = "import json, sys; from scripts.sam_check import transform as t; print(json.dumps(t(json.load(sys.stdin))))"
    result = subprocess.run(
        [TOOLS_PYTHON, "-c", code], cwd=ROOT, input=template.read_text(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def _variant(packaged: Path, tmp_path: Path, change: Any) -> Path:
    template = json.loads(packaged.read_text())
    change(template["Resources"])
    path = tmp_path / "sam.json"
    path.write_text(json.dumps(template))
    return path


def test_the_transformed_template_deploys_as_intended(packaged: Path) -> None:
    result = _sam_check(packaged)
    assert result.returncode == 0, result.stderr
    assert "10 Gateway Responses in the RestApi's definition" in result.stdout
    assert "path parameters declared; every media type binary" in result.stdout


def test_the_site_path_is_routed_by_api_gateway_with_its_proxy_parameter(packaged: Path) -> None:
    """``{proxy+}``: every method declares team, user and proxy; the API handler's aws_proxy; the authorizer."""
    for template in (json.loads(packaged.read_text()), _transformed(packaged)):
        resources = template["Resources"]
        if "RestAPI" in resources and resources["RestAPI"]["Type"] == "AWS::Serverless::Api":
            definition = resources["RestAPI"]["Properties"]["DefinitionBody"]
        else:
            (rest,) = [r for r in resources.values() if r["Type"] == "AWS::ApiGateway::RestApi"]
            definition = rest["Properties"]["Body"]
        site = definition["paths"][SITE_ROUTE]
        assert sorted(site) == ["delete", "get", "head", "patch", "post", "put"]
        for method, spec in site.items():
            params = sorted(spec["parameters"], key=lambda p: p["name"])
            assert params == [
                {"name": name, "in": "path", "required": True, "type": "string"} for name in ("proxy", "team", "user")
            ], method
            integration = spec["x-amazon-apigateway-integration"]
            assert integration["type"] == "aws_proxy" and integration["httpMethod"] == "POST", method
            assert "${APIHandler.Arn}" in integration["uri"]["Fn::Sub"], method
            assert spec["security"] == [{"api_key_auth": []}], method
        assert "api_key_auth" in definition["securityDefinitions"]
        # Every media type binary: API Gateway decodes every base64 answer, for any Accept.
        assert definition["x-amazon-apigateway-binary-media-types"] == ["*/*"]


def test_gateway_responses_carry_jira_error_messages_and_throttled_a_retry_after(packaged: Path) -> None:
    (rest,) = [r for r in _transformed(packaged)["Resources"].values() if r["Type"] == "AWS::ApiGateway::RestApi"]
    attached = rest["Properties"]["Body"]["x-amazon-apigateway-gateway-responses"]
    for kind, response in attached.items():
        body = json.loads(response["responseTemplates"]["application/json"])
        assert body["errorMessages"] == [f"{body['error']['code']}: {body['error']['message']}"], kind
    assert attached["THROTTLED"]["responseParameters"]["gatewayresponse.header.Retry-After"] == "'1'"


def test_gateway_responses_are_attached_and_a_change_redeploys(packaged: Path, tmp_path: Path) -> None:
    before = _transformed(packaged)
    resources = before["Resources"]
    assert not [r for r in resources.values() if r["Type"] == "AWS::ApiGateway::GatewayResponse"]
    (rest,) = [r for r in resources.values() if r["Type"] == "AWS::ApiGateway::RestApi"]
    attached = rest["Properties"]["Body"]["x-amazon-apigateway-gateway-responses"]
    assert attached["UNAUTHORIZED"]["statusCode"] == "401"
    assert attached["UNAUTHORIZED"]["responseParameters"]["gatewayresponse.header.X-Broker-Error"] == "'unauthorized'"
    assert json.loads(attached["THROTTLED"]["responseTemplates"]["application/json"])["error"]["code"] == "throttled"

    def reword(res: dict[str, Any]) -> None:
        throttled = res["RestAPI"]["Properties"]["GatewayResponses"]["THROTTLED"]
        throttled["ResponseTemplates"]["application/json"] = '{"error": {"code": "throttled", "message": "Slow down."}}'

    after = _transformed(_variant(packaged, tmp_path, reword))

    def deployment(template: dict[str, Any]) -> str:
        (name,) = [k for k, r in template["Resources"].items() if r["Type"] == "AWS::ApiGateway::Deployment"]
        return name

    assert deployment(before) != deployment(after)
    (stage,) = [r for r in after["Resources"].values() if r["Type"] == "AWS::ApiGateway::Stage"]
    assert stage["Properties"]["DeploymentId"] == {"Ref": deployment(after)}


def test_the_transformed_stage_logs_by_route_and_is_throttled(packaged: Path) -> None:
    resources = _transformed(packaged)["Resources"]
    (stage,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::ApiGateway::Stage"]
    line = json.loads(stage["AccessLogSetting"]["Format"])
    assert line["route"] == "$context.resourcePath" and "$context.path" not in json.dumps(line)
    assert stage["MethodSettings"][0]["ThrottlingBurstLimit"] == {"Ref": "ThrottlingBurstLimit"}
    (rest,) = [r for r in resources.values() if r["Type"] == "AWS::ApiGateway::RestApi"]
    assert rest["DependsOn"] == ["ApiGatewayAccountReady"]
    for function in ("APIHandler", "ApiKeyAuth"):
        assert resources[function]["Properties"]["ReservedConcurrentExecutions"]["Fn::If"][0] == (
            "HasReservedConcurrency"
        )


def test_sam_check_catches_what_would_go_wrong(packaged: Path, tmp_path: Path) -> None:
    def separate_response(res: dict[str, Any]) -> None:
        res["Extra"] = {
            "Type": "AWS::ApiGateway::GatewayResponse",
            "Properties": {"RestApiId": {"Ref": "RestAPI"}, "ResponseType": "DEFAULT_4XX"},
        }

    def raw_path_in_log(res: dict[str, Any]) -> None:
        setting = res["RestAPI"]["Properties"]["AccessLogSetting"]
        setting["Format"] = setting["Format"].replace("$context.resourcePath", "$context.path")

    def unthrottled(res: dict[str, Any]) -> None:
        del res["RestAPI"]["Properties"]["MethodSettings"]

    def proxy_undeclared(res: dict[str, Any]) -> None:
        get = res["RestAPI"]["Properties"]["DefinitionBody"]["paths"][SITE_ROUTE]["get"]
        get["parameters"] = [p for p in get["parameters"] if p["name"] != "proxy"]

    def some_types_binary(res: dict[str, Any]) -> None:
        res["RestAPI"]["Properties"]["DefinitionBody"]["x-amazon-apigateway-binary-media-types"] = ["image/png"]

    for change, problem in (
        (separate_response, "separate Gateway Response resources"),
        (raw_path_in_log, "['$context.path']"),
        (unthrottled, "is not throttled"),
        (proxy_undeclared, f"GET {SITE_ROUTE} does not declare its path parameters ['proxy']"),
        (some_types_binary, "binary media types lack */*"),
    ):
        result = _sam_check(_variant(packaged, tmp_path, change))
        assert result.returncode == 1 and problem in result.stderr, (problem, result.stderr)
