"""Binary proxy answers as API Gateway delivers them.

API Gateway (REST, Lambda proxy) decodes a base64 body only when the caller's FIRST Accept value is
one of the API's binary media types; Chalice base64-encodes when ANY value matches (``*/*``
included). The broker answers bytes only in API Gateway's case, and otherwise a 406 that names the
Accept to send, so no caller ever receives base64 text labelled ``image/png``.
"""

from __future__ import annotations

import base64
import json

import pytest

from app import app
from chalicelib.responses import first_accept, passthrough_response
from tests.conftest import Broker
from tests.fakejira import FAKE_PNG

PROXY = "/v1/teams/acme/users/alice/jira/proxy"
BINARY = {"method": "GET", "path": "/rest/fake/binary"}
JSON_ANSWER = {"method": "GET", "path": "/rest/api/2/myself"}


@pytest.mark.parametrize(
    "accept",
    ["image/png", "IMAGE/PNG", "image/png;q=0.9", "image/png, application/json", "application/pdf, */*"],
)
def test_bytes_when_the_first_accept_value_is_binary(connected: Broker, accept: str) -> None:
    answer = connected.call("POST", PROXY, BINARY, headers={"Accept": accept})
    assert answer.status == 200, answer.body
    assert answer.headers["Content-Type"] == "image/png" and answer.body == FAKE_PNG


@pytest.mark.parametrize(
    "accept",
    [None, "*/*", "application/json", "application/json, image/png", "application/json, application/pdf", "image/*"],
)
def test_406_naming_the_accept_to_send_otherwise(connected: Broker, accept: str | None) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    answer = connected.call("POST", PROXY, BINARY, headers=headers)
    assert answer.status == 406 and answer.error_code == "binary_accept_required"
    assert answer.headers["X-Broker-Error"] == "binary_accept_required"
    message = answer.json["error"]["message"]
    assert "'Accept: image/png'" in message and "first" in message


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "image/png, application/json"])
def test_text_answers_ignore_accept(connected: Broker, accept: str | None) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    answer = connected.call("POST", PROXY, JSON_ANSWER, headers=headers)
    assert answer.status == 200 and answer.json["name"] == "alice"


def test_the_lambda_answer_is_base64_exactly_when_api_gateway_decodes_it() -> None:
    """What Chalice hands API Gateway: ``isBase64Encoded`` and a body that decodes to Jira's bytes."""
    response = passthrough_response(200, {"Content-Type": "image/png"}, FAKE_PNG, app.api.binary_types, "image/png")
    event = response.to_dict(app.api.binary_types)
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == FAKE_PNG
    refused = passthrough_response(200, {"Content-Type": "image/png"}, FAKE_PNG, app.api.binary_types, "*/*")
    event = refused.to_dict(app.api.binary_types)
    assert refused.status_code == 406 and not event.get("isBase64Encoded")
    assert json.loads(event["body"])["error"]["code"] == "binary_accept_required"


def test_every_added_binary_type_needs_its_own_accept() -> None:
    for media_type in ("application/pdf", "application/gzip", "application/x-zip-compressed", "image/svg+xml"):
        headers = {"Content-Type": media_type}
        assert passthrough_response(200, headers, b"\x00\xff", app.api.binary_types, media_type).status_code == 200
        assert passthrough_response(200, headers, b"\x00\xff", app.api.binary_types, "*/*").status_code == 406


def test_first_accept() -> None:
    assert first_accept(None) == "" and first_accept("") == ""
    assert first_accept(" Image/PNG ; q=1, */*") == "image/png"
