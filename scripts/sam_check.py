"""What CloudFormation deploys from the packaged template: SAM's own transform, then checks on its output.

``.venv-tools/bin/python -m scripts.sam_check out/prod/template/sam.json`` (the transform, ``samtranslator``,
is in the tools venv; this module needs nothing else). It transforms the template as CloudFormation's
``AWS::Serverless-2016-10-31`` transform does and checks that:

- the Gateway Responses are in the RestApi's own definition (``x-amazon-apigateway-gateway-responses``),
  not separate ``AWS::ApiGateway::GatewayResponse`` resources, which SAM's deployment does not include;
- changing a Gateway Response changes the Deployment's logical id, so CloudFormation redeploys the stage;
- the stage writes JSON access logs with the route template (``$context.resourcePath``), never the raw path
  (``$context.path`` carries connect and setup link tokens), to the stack's access log group;
- the stage is throttled (rate and burst from the template's parameters);
- the API waits for the account's API Gateway CloudWatch role when the stack creates it;
- every method declares each of its path's variables as a path parameter (API Gateway's import expects each
  declared, and Chalice does not declare the greedy ``{proxy+}``: scripts/infra.py adds it);
- every media type is binary (``*/*``): the app base64-encodes every answer, which API Gateway then
  decodes for any Accept.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

# What each access log line must carry (the caller's key name is the authorizer's principalId).
ACCESS_LOG_FIELDS = (
    "$context.resourcePath",
    "$context.status",
    "$context.responseLatency",
    "$context.integrationLatency",
    "$context.requestId",
    "$context.extendedRequestId",
    "$context.authorizer.principalId",
    "$context.httpMethod",
    "$context.identity.sourceIp",
    "$context.error.responseType",
)
# Raw paths and query strings: connect and setup links carry their tokens there, the callback its verifier.
FORBIDDEN_LOG_VARIABLES = ("$context.path", "$context.requestOverride", "$input.")
PATH_VARIABLE = re.compile(r"\{(\w+)\+?\}")
HTTP_METHODS = {"get", "put", "post", "delete", "head", "patch"}  # not OPTIONS: Chalice's CORS mock


class _NoManagedPolicies:
    """The functions use the roles chalice writes, so the transform never looks a managed policy up."""

    def load(self) -> dict[str, str]:
        return {}


def transform(template: dict[str, Any]) -> dict[str, Any]:
    """``template`` as CloudFormation's SAM transform would expand it (the input is left unchanged)."""
    from samtranslator.translator.transform import transform as sam_transform

    # The transform records usage metrics it never publishes outside AWS, and warns about that on exit.
    logging.getLogger("samtranslator.metrics").setLevel(logging.ERROR)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # ARNs the transform writes name a partition
    template = copy.deepcopy(template)
    for resource in _of_type(template, "AWS::Serverless::Function").values():
        # What `aws cloudformation package` (make deploy) puts in place of the local ./deployment.zip.
        resource["Properties"]["CodeUri"] = "s3://deployment-bucket/deployment.zip"
    return dict(sam_transform(template, {}, _NoManagedPolicies()))


def _of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r.get("Type") == kind}


def _one(template: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    found = _of_type(template, kind)
    if len(found) != 1:
        raise AssertionError(f"expected one {kind}, found {sorted(found)}")
    return next(iter(found.items()))


def deployment_id(transformed: dict[str, Any]) -> str:
    """The logical id of the one Deployment (SAM puts a hash of the API's definition in it)."""
    return _one(transformed, "AWS::ApiGateway::Deployment")[0]


def problems(template: dict[str, Any]) -> list[str]:
    """What is wrong with the packaged (SAM) ``template``; empty when it deploys as intended."""
    found: list[str] = []
    separate = sorted(_of_type(template, "AWS::ApiGateway::GatewayResponse"))
    if separate:
        found.append(f"separate Gateway Response resources (not in SAM's deployment): {separate}")
    api_name, api = _one(template, "AWS::Serverless::Api")
    wanted = api["Properties"].get("GatewayResponses") or {}
    if not wanted:
        found.append(f"{api_name} has no GatewayResponses")

    out = transform(template)
    rest_id, rest = _one(out, "AWS::ApiGateway::RestApi")
    attached = rest["Properties"].get("Body", {}).get("x-amazon-apigateway-gateway-responses", {})
    for kind, response in wanted.items():
        got = attached.get(kind)
        if got is None:
            found.append(f"Gateway Response {kind} is not in the RestApi's definition")
            continue
        given = response.get("ResponseParameters", {}).get("Headers", {})
        headers = {f"gatewayresponse.header.{name}": value for name, value in given.items()}
        if got.get("responseParameters") != headers or got.get("responseTemplates") != response["ResponseTemplates"]:
            found.append(f"Gateway Response {kind} differs in the RestApi's definition: {got}")
        if str(response.get("StatusCode", "")) != str(got.get("statusCode", "")):
            found.append(f"Gateway Response {kind}: status {got.get('statusCode')} in the definition")
    body = rest["Properties"].get("Body", {})
    found.extend(undeclared_path_parameters(body))
    if "*/*" not in body.get("x-amazon-apigateway-binary-media-types", []):
        found.append("the API's binary media types lack */*: base64 answers would reach some callers undecoded")
    if "ApiGatewayAccountReady" not in (rest.get("DependsOn") or []):
        found.append(f"{rest_id} does not wait for the account's API Gateway CloudWatch role (ApiGatewayAccountReady)")

    deployment, _ = _one(out, "AWS::ApiGateway::Deployment")
    stage_id, stage = _one(out, "AWS::ApiGateway::Stage")
    props = stage["Properties"]
    if props.get("DeploymentId") != {"Ref": deployment}:
        found.append(f"{stage_id} does not use {deployment}")
    if wanted:
        changed = copy.deepcopy(template)
        responses = changed["Resources"][api_name]["Properties"]["GatewayResponses"]
        first = next(iter(responses.values()))
        first["ResponseTemplates"] = {"application/json": '{"error": {"code": "changed", "message": "changed"}}'}
        if deployment_id(transform(changed)) == deployment:
            found.append("changing a Gateway Response does not change the Deployment: the stage would not redeploy")

    log = props.get("AccessLogSetting") or {}
    log_format = log.get("Format", "")
    try:
        json.loads(log_format)
    except ValueError:
        found.append(f"the access log format is not JSON: {log_format!r}")
    missing = [field for field in ACCESS_LOG_FIELDS if field not in log_format]
    if missing:
        found.append(f"the access log lacks {missing}")
    leaks = [variable for variable in FORBIDDEN_LOG_VARIABLES if variable in log_format]
    if leaks:
        found.append(f"the access log would record raw paths or bodies (link tokens): {leaks}")
    if "${ApiAccessLogGroup}" not in json.dumps(log.get("DestinationArn", "")):
        found.append(f"the access log does not go to ApiAccessLogGroup: {log.get('DestinationArn')}")

    throttled = [
        m
        for m in props.get("MethodSettings", [])
        if m.get("ResourcePath") == "/*"
        and m.get("HttpMethod") == "*"
        and m.get("ThrottlingRateLimit") == {"Ref": "ThrottlingRateLimit"}
        and m.get("ThrottlingBurstLimit") == {"Ref": "ThrottlingBurstLimit"}
    ]
    if not throttled:
        found.append(f"{stage_id} is not throttled by the ThrottlingRateLimit/ThrottlingBurstLimit parameters")
    return found


def undeclared_path_parameters(definition: dict[str, Any]) -> list[str]:
    """Each path variable (``{team}``, ``{proxy+}``) a method of the swagger ``definition`` does not declare."""
    found = []
    for path, methods in definition.get("paths", {}).items():
        wanted = PATH_VARIABLE.findall(path)
        for method, spec in methods.items():
            if method not in HTTP_METHODS or "x-amazon-apigateway-integration" not in spec:
                continue
            params = spec.get("parameters", [])
            declared = [p.get("name") for p in params if p.get("in") == "path" and p.get("required")]
            missing = [name for name in wanted if name not in declared]
            if missing:
                found.append(f"{method.upper()} {path} does not declare its path parameters {missing}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("template", type=Path, help="the packaged SAM template (out/STAGE/template/sam.json)")
    args = parser.parse_args(argv)
    template = json.loads(args.template.read_text())
    found = problems(template)
    for problem in found:
        print(f"{args.template}: {problem}", file=sys.stderr)
    if found:
        return 1
    out = transform(template)
    responses = _one(out, "AWS::ApiGateway::RestApi")[1]["Properties"]["Body"]["x-amazon-apigateway-gateway-responses"]
    print(
        f"{args.template}: SAM transform OK: {len(responses)} Gateway Responses in the RestApi's definition, "
        f"redeployed on change ({deployment_id(out)}); JSON access log by route; stage throttled; "
        "path parameters declared; every media type binary"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
