"""Answers as API Gateway delivers them, every media type binary (``app.api.binary_types == ["*/*"]``).

API Gateway decodes a base64 answer only when the caller's FIRST Accept value matches one of the API's
binary media types; with ``*/*`` every value matches, so it decodes every answer. Chalice, with ``*/*``,
base64-encodes every answer (``isBase64Encoded``). So Jira's bytes arrive as Jira sent them for any Accept
(``*/*``, ``application/json, */*`` as client libraries send, none at all), and JSON and HTML arrive as
their text. Request bodies arrive base64 too, and Chalice's ``raw_body`` decodes them.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from chalice.app import Request
from chalice.local import LambdaContext

from app import app
from chalicelib.errors import JiraBadResponse
from chalicelib.proxy import MAX_RESPONSE_BYTES
from chalicelib.responses import (
    LAMBDA_ANSWER_LIMIT,
    MAX_ANSWER_BYTES,
    as_bytes,
    default_accept,
    error_response,
    passthrough_response,
)
from tests.conftest import API_KEY, Broker
from tests.fakejira import FAKE_PNG

PROXY = "/v1/teams/acme/users/alice/jira/proxy"
BINARY = {"method": "GET", "path": "/rest/fake/binary"}
JSON_ANSWER = {"method": "GET", "path": "/rest/api/2/myself"}
ACCEPTS = [
    None,
    "*/*",
    "application/json, */*",  # jira-python, most Jira client libraries
    "application/json",
    "image/png",
    "text/html, application/xhtml+xml, */*;q=0.8",
]


def _headers(accept: str | None) -> dict[str, str]:
    return {"Accept": accept} if accept is not None else {}


@pytest.mark.parametrize("accept", ACCEPTS)
def test_binary_answers_are_bytes_for_any_accept(connected: Broker, accept: str | None) -> None:
    answer = connected.call("POST", PROXY, BINARY, headers=_headers(accept))
    assert answer.status == 200, answer.body
    assert answer.headers["Content-Type"] == "image/png" and answer.body == FAKE_PNG


@pytest.mark.parametrize("accept", ACCEPTS)
def test_json_answers_arrive_as_text_for_any_accept(connected: Broker, accept: str | None) -> None:
    answer = connected.call("POST", PROXY, JSON_ANSWER, headers=_headers(accept))
    assert answer.status == 200 and answer.json["name"] == "alice"
    assert answer.headers["Content-Type"].startswith("application/json")


def test_html_pages_arrive_as_text(broker: Broker) -> None:
    for accept in (None, "text/html,application/xhtml+xml,*/*;q=0.8"):
        page = broker.browser("GET", "/connect/not-a-token", headers=_headers(accept))
        assert page.status in (400, 404, 410), page.status
        assert page.headers["Content-Type"].startswith("text/html") and "<html" in page.text.lower()


def _event(method: str, path: str, resource: str, **extra: Any) -> dict[str, Any]:
    """An API Gateway (REST, Lambda proxy) event with no Accept header and a base64 body, as */* makes it."""
    body = extra.pop("body", None)
    headers = {"Host": "abc.execute-api.us-east-1.amazonaws.com", **extra.pop("headers", {})}
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": extra.pop("params", None),
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/api{path}",
            "stage": "api",
            "domainName": "abc.execute-api.us-east-1.amazonaws.com",
            "requestId": "r-1",
            **extra.pop("context", {}),
        },
        "body": None if body is None else base64.b64encode(body).decode(),
        "isBase64Encoded": body is not None,
    }


def _lambda(event: dict[str, Any]) -> tuple[int, dict[str, Any], bytes]:
    """What the API function returns to API Gateway, and the bytes API Gateway makes of it."""
    answer = app(event, LambdaContext("jira-oauth-broker-dev", 1024))
    assert answer["isBase64Encoded"] is True, answer  # every answer: API Gateway decodes each (*/*)
    return answer["statusCode"], answer["headers"], base64.b64decode(answer["body"], validate=True)


def test_every_lambda_answer_is_base64_even_without_accept(aws_mock: None) -> None:
    """No Accept header at all: Chalice alone would answer 400 ("did not specify an Accept header")."""
    status, headers, body = _lambda(_event("GET", "/health", "/health"))
    assert status == 200 and json.loads(body)["status"] == "ok" and headers["Content-Type"] == "application/json"
    # Chalice's own error (405), in the broker's envelope, base64 too.
    status, headers, body = _lambda(_event("DELETE", "/health", "/health"))
    assert status == 405 and json.loads(body)["error"]["code"] == "method_not_allowed"


def test_request_bodies_arrive_base64_and_are_read(aws_mock: None) -> None:
    """With */* binary, API Gateway base64-encodes every request body (``isBase64Encoded: true``)."""
    event = _event(
        "POST",
        "/v1/teams/acme/jira/key-pair",
        "/v1/teams/{team}/jira/key-pair",
        params={"team": "acme"},
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
        context={"authorizer": {"principalId": "all-teams", "team": ""}},
        body=b"{}",
    )
    status, _, body = _lambda(event)
    assert status == 201, body
    assert json.loads(body)["public_key"].startswith("-----BEGIN PUBLIC KEY-----")


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("image/png", FAKE_PNG),
        ("application/vnd.ms-excel", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00\xff"),  # was 502 unsupported_binary
        ("application/octet-stream", bytes(range(256))),
        ("text/plain;charset=ISO-8859-1", "café".encode("latin-1")),  # was re-encoded as UTF-8
        ("application/json;charset=UTF-8", '{"name": "zoë"}'.encode()),
        ("", b"\x00\x01"),
    ],
)
def test_jira_bytes_pass_exactly_whatever_their_type(content_type: str, data: bytes) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = passthrough_response(200, headers, data)
    assert response.status_code == 200 and response.body == data
    sent = as_bytes(response).to_dict(app.api.binary_types)
    assert sent["isBase64Encoded"] is True and base64.b64decode(sent["body"]) == data


def test_every_body_becomes_bytes_for_chalice() -> None:
    """Chalice takes only bytes for a non-JSON type once */* is binary; as_bytes gives it them."""
    page = as_bytes(passthrough_response(200, {"Content-Type": "text/html"}, b"<p>hi</p>"))
    assert page.body == b"<p>hi</p>"
    from chalice import Response

    text = as_bytes(Response(body="zoë", headers={"Content-Type": "text/plain"}))
    assert text.body == "zoë".encode()
    chalice_error = as_bytes(Response(body={"Code": "X", "Message": "y"}, status_code=400))
    assert json.loads(chalice_error.body) == {"Code": "X", "Message": "y"}
    sent = as_bytes(error_response(JiraBadResponse())).to_dict(["*/*"])
    assert json.loads(base64.b64decode(sent["body"]))["error"]["code"] == "jira_bad_response"
    with pytest.raises(ValueError, match="Expected bytes"):  # what as_bytes prevents
        Response(body="<p>", headers={"Content-Type": "text/html"}).to_dict(["*/*"])


def test_an_answer_too_large_for_lambda_is_refused() -> None:
    with pytest.raises(JiraBadResponse) as refused:
        passthrough_response(200, {"Content-Type": "application/json"}, b"x" * (MAX_ANSWER_BYTES + 1))
    assert refused.value.code == "response_too_large" and refused.value.status == 502


def test_the_largest_answers_fit_lambdas_6_mb_after_base64() -> None:
    """The cost of base64: 4 bytes for 3 in the Lambda payload (on the wire, API Gateway sends the bytes)."""
    headers = {"Content-Type": "application/json;charset=UTF-8", "Cache-Control": "no-store", "X-AREQUESTID": "x" * 8}
    for size in (MAX_RESPONSE_BYTES, MAX_ANSWER_BYTES):
        answer = as_bytes(passthrough_response(200, headers, b"x" * size)).to_dict(app.api.binary_types)
        payload = len(json.dumps(answer))
        assert payload < LAMBDA_ANSWER_LIMIT, (size, payload)
    # The proxy's read limit (4 MiB) leaves room for links the transparent site rewrites longer.
    assert MAX_RESPONSE_BYTES < MAX_ANSWER_BYTES


def test_no_accept_means_any() -> None:
    event = _event("GET", "/health", "/health")
    request = Request(event)
    default_accept(request)
    assert request.headers["accept"] == "*/*" and request.headers["host"].startswith("abc.")
    given = Request(_event("GET", "/health", "/health", headers={"Accept": "image/png"}))
    default_accept(given)
    assert given.headers["accept"] == "image/png"


def test_every_media_type_is_binary() -> None:
    assert app.api.binary_types == ["*/*"]
