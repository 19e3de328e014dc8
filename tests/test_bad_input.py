"""Bad input answers 4xx with the broker's envelope, never 500, and never reaches Jira when refused.

Each case here once answered 500 ``internal_error`` (or 502 ``integration_broken`` for a caller's own
``oauth_*`` parameter): deep JSON, lone surrogates, broken base URLs, unsendable header values, and
spellings of Jira's OAuth servlet path that slipped past the proxy's block.
"""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.errors import InvalidRequest
from chalicelib.json_input import MAX_JSON_DEPTH
from chalicelib.proxy_input import _body, _headers, _url_under_base, check_path, encode_query, sign_form
from chalicelib.urls import normalize_base_url
from tests.conftest import API_KEY, CONSUMER_KEY, Answer, Broker
from tests.fakejira import FakeJira

PROXY = "/v1/teams/acme/users/alice/jira/proxy"
SIGN = "/v1/teams/acme/users/alice/jira/sign"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON_ROUTES = [
    ("PUT", "/v1/teams/acme/jira"),
    ("POST", "/v1/teams/acme/jira/key-pair"),
    ("POST", "/v1/teams/acme/jira/setup-link"),
    ("POST", "/v1/teams/acme/users/alice/jira/connect-link"),
    ("POST", PROXY),
    ("POST", SIGN),
]


def assert_refused(answer: Answer, code: str, status: int = 400, case: object = None) -> str:
    """The broker's envelope with ``code``; returns the message."""
    assert answer.status == status, (case, answer.body)
    assert answer.error_code == code, (case, answer.body)
    error = answer.json["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"].endswith((".", ")"))
    return str(error["message"])


def nested(depth: int) -> str:
    """A JSON object whose innermost value sits ``depth`` objects and arrays deep."""
    return '{"a":' * (depth // 2) + "[" * (depth - depth // 2) + "1" + "]" * (depth - depth // 2) + "}" * (depth // 2)


# -- JSON bodies on every route (one moto account per test: the cases loop) ----------------------
def test_deeply_nested_json_is_refused_naming_the_limit(broker: Broker) -> None:
    for depth in (MAX_JSON_DEPTH + 1, 1_000, 100_000):
        for method, path in JSON_ROUTES:
            message = assert_refused(broker.call(method, path, raw=nested(depth)), "invalid_json", case=(depth, path))
            assert str(MAX_JSON_DEPTH) in message
    # 32 levels parse; the proxy then answers for the missing integration, not for the JSON.
    body = '{"method": "GET", "path": "/rest/x", "json": ' + nested(MAX_JSON_DEPTH - 1) + "}"
    assert broker.call("POST", PROXY, raw=body).error_code == "integration_not_found"


LONE_SURROGATES = [
    ('{"base_url": "\\ud800"}', "base_url"),
    ('{"path": "/rest/\\udfff"}', "path"),
    ('{"query": {"jql": "a\\ud800b"}}', "query.jql"),
    ('{"query": {"\\ud800": "x"}}', "a name in query"),
    ('{"body": "\\udbff"}', "body"),
    ('{"form": {"a": ["ok", "\\ud800"]}}', "form.a[1]"),
    ('{"url": "http://127.0.0.1/\\ud800"}', "url"),
]


def test_lone_surrogates_are_refused_naming_the_field(broker: Broker) -> None:
    for raw, word in LONE_SURROGATES:
        for method, path in JSON_ROUTES:
            assert word in assert_refused(broker.call(method, path, raw=raw), "invalid_json", case=(raw, path))


NOT_JSON = [
    ('{"a": NaN}', "NaN"),
    ('{"a": -Infinity}', "-Infinity"),
    ('{"a": 1e999}', "too large"),
    ("[1, 2]", "object"),
    ('{"a": 1', "not valid JSON"),
    ('{"a": ' + "9" * 5000 + "}", "not valid JSON"),
]


def test_json_that_is_not_json_or_not_utf8(broker: Broker) -> None:
    for raw, word in NOT_JSON:
        assert word in assert_refused(broker.call("POST", PROXY, raw=raw), "invalid_json", case=raw[:30])
    for data in (b'{"a": "\xff"}', b'{"a": "\xed\xa0\x80"}', '{"a": 1}'.encode("utf-16")):
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
        answer = broker.client.http.request("POST", PROXY, headers=headers, body=data)
        got = Answer(answer.status_code, dict(answer.headers), answer.body)
        assert "UTF-8" in assert_refused(got, "invalid_json", case=data)


# -- base_url ---------------------------------------------------------------------------------
BAD_BASE_URLS = [
    ("http://[::1", "IPv6"),
    ("http://[not-an-address]/jira", "IPv6"),
    ("http://" + "a" * 64 + ".example/jira", "63"),
    ("http://a..b.example", "label"),
    ("http://.jira.example", "label"),
    ("http://*.jira.example", "label"),
    ("http://jira.example" + ".x" * 130, "253"),
    ("http://\U0001f4a9.example", "IDNA"),
    ("http://xn--a\u00e9.example", "IDNA"),
    ("http://[fe80::1%25eth0]:8080", "zone"),
    ("http://127.0.0.1:0/jira", "port"),
]


def test_base_urls_refused_before_any_connection(broker: Broker, private_pem: str) -> None:
    for base_url, word in BAD_BASE_URLS:
        body = {"base_url": base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem}
        answer = broker.call("PUT", "/v1/teams/acme/jira", body)
        assert word in assert_refused(answer, "invalid_base_url", case=base_url)


def test_return_to_that_does_not_parse(broker: Broker) -> None:
    for return_to in ("http://[::1", "https://[chat.example.com]/back"):
        answer = broker.call("POST", "/v1/teams/acme/users/alice/jira/connect-link", {"return_to": return_to})
        assert_refused(answer, "invalid_return_to", case=return_to)


def test_base_url_surrogate_and_idn_hosts() -> None:
    with pytest.raises(InvalidRequest) as caught:
        normalize_base_url("http://\ud800.example")
    assert caught.value.code == "invalid_base_url" and "surrogate" in caught.value.message
    # A valid IDN becomes the A-label requests connects to, so the address check resolves that name.
    assert normalize_base_url("https://J\u00efra.Example.com:8443/jira/") == "https://xn--jra-zma.example.com:8443/jira"


# -- the proxy and the sign endpoint (one connected user per test: the cases loop) ----------------
def _proxy(broker: Broker, **request: Any) -> Answer:
    return broker.call("POST", PROXY, request, headers={"Accept": "*/*"})


OAUTH_SERVLET_SPELLINGS = [
    "/plugins/servlet//oauth/access-token",
    "/plugins//servlet/oauth/request-token",
    "/PLUGINS/Servlet/OAuth/access-token",
    "/plugins/servlet%2Foauth/access-token",
    "/plugins%2fservlet%2foauth%2faccess-token",
    "/plugins/servlet/%2Foauth/authorize",
    "/plugins/servlet%252Foauth/access-token",
    "/plugins/servlet;jsessionid=x/oauth/access-token",
    "/plugins/servlet/oauth",
    "/plugins/servlet/oauth;x",
]


def test_oauth_servlets_are_blocked_in_every_spelling(connected: Broker, jira: FakeJira) -> None:
    jira.clear_requests()
    for path in OAUTH_SERVLET_SPELLINGS:
        answer = _proxy(connected, method="POST", path=path)
        assert "OAuth endpoints" in assert_refused(answer, "invalid_path", case=path)
    assert jira.requests == []
    for path in ("/plugins/servlet/oauthx", "/plugins/servlet/applinks/whoami"):  # near misses still pass
        assert _proxy(connected, method="GET", path=path).error_code != "invalid_path", path


CALLERS_OAUTH_PARAMETERS: list[dict[str, Any]] = [
    {"query": {"oauth_token": "someone-elses"}},
    {"query": {"OAuth_Nonce": "1"}},
    {"query": {"a": "1", "oauth_signature_method": "PLAINTEXT"}},
    {"method": "POST", "body": "a=1&oauth_verifier=x", "headers": FORM},
    {"method": "POST", "body": "oauth%5Ftoken=x", "headers": FORM},
]


def test_callers_oauth_parameters_are_refused_up_front(connected: Broker, jira: FakeJira) -> None:
    """Jira would answer an oauth_problem, which the broker would blame on the admin (502 integration_broken)."""
    jira.clear_requests()
    for extra in CALLERS_OAUTH_PARAMETERS:
        answer = _proxy(connected, **{"method": "GET", "path": "/rest/api/2/myself", **extra})
        assert "adds the OAuth parameters" in assert_refused(answer, "invalid_request", case=extra)
    assert jira.requests == []


BAD_HEADER_VALUES: list[object] = [
    "application/js\u00f6n",
    " application/json",
    "application/json ",
    "a\tb",
    "a\x01b",
    "a\x7f",
    "a" * 8193,
    7,
    None,
]


def test_header_values_jira_cannot_take(connected: Broker, jira: FakeJira) -> None:
    jira.clear_requests()
    for value in BAD_HEADER_VALUES:
        answer = _proxy(connected, method="GET", path="/rest/api/2/myself", headers={"accept": value})
        assert "header Accept" in assert_refused(answer, "invalid_headers", case=repr(value)[:40])
    answer = _proxy(connected, method="POST", path="/rest/x", json={"a": 1}, headers=FORM)
    assert "'body'" in assert_refused(answer, "invalid_body")  # JSON sent as a form would break the signature
    assert jira.requests == []


def test_a_form_content_type_in_any_case_is_signed_as_a_form(connected: Broker) -> None:
    headers = {"Content-Type": "Application/X-WWW-Form-URLEncoded; charset=UTF-8"}
    answer = _proxy(connected, method="POST", path="/rest/form", body="a=1&b=x+y", headers=headers)
    assert answer.status == 200, answer.body  # the fake Jira checked the form parameters' signature
    assert answer.json["body"] == "a=1&b=x+y"


BAD_SIGN_URLS = [
    ("http://[::1", "url_not_allowed", "url"),
    ("{base}/rest/api/2/user?username=jos\u00e9", "url_not_allowed", "ASCII"),
    ("{base}/rest/a b", "url_not_allowed", "ASCII"),
    ("{base}/rest/x\r\nX: y", "url_not_allowed", "control"),
    ("{base}/rest/x?a=%zz", "invalid_query", "URL-encoded"),
    ("{base}/rest/x?a=<b>", "invalid_query", "URL-encoded"),
    ("{base}/rest/x?oauth_token=other", "invalid_request", "adds the OAuth parameters"),
    ("{base}/rest/x?a=1&oauth%5Fcallback=x", "invalid_request", "adds the OAuth parameters"),
    ("{base}//plugins/servlet/oauth/access-token", "invalid_path", "OAuth endpoints"),
    ("{base}/plugins/servlet//oauth/access-token", "invalid_path", "OAuth endpoints"),
]
BAD_SIGN_FORMS = [
    ({"oauth_verifier": "x"}, "invalid_request", "adds the OAuth parameters"),
    (["a=1"], "invalid_body", "form must be an object"),
    ({"a": {"b": 1}}, "invalid_body", "form value for 'a'"),
]


def test_sign_refuses_bad_urls_and_forms(connected: Broker, jira: FakeJira) -> None:
    for url, code, word in BAD_SIGN_URLS:
        answer = connected.call("POST", SIGN, {"method": "GET", "url": url.format(base=jira.base_url)})
        assert word in assert_refused(answer, code, case=url)
    for form, code, word in BAD_SIGN_FORMS:
        answer = connected.call("POST", SIGN, {"method": "POST", "url": f"{jira.base_url}/rest/x", "form": form})
        assert word in assert_refused(answer, code, case=form)


# -- the checks themselves, for callers inside the broker (no JSON layer in front) -----------------
@pytest.mark.parametrize(
    ("check", "code", "field"),
    [
        (lambda: check_path("/rest/\ud800"), "invalid_path", "path"),
        (lambda: encode_query({"jql": "\udc00"}), "invalid_query", "query value for 'jql'"),
        (lambda: encode_query({"\ud800": "x"}), "invalid_query", "query parameter name"),
        (lambda: sign_form({"a": "\ud800"}), "invalid_body", "form value for 'a'"),
        (lambda: _body({"body": "a\ud800"}, {}), "invalid_body", "body"),
        (lambda: _url_under_base("http://h/\ud800", "http://h"), "url_not_allowed", "url"),
        (lambda: _headers({"Accept": "\ud800"}), "invalid_headers", "header Accept"),
    ],
)
def test_surrogates_are_refused_by_each_check(check: Any, code: str, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check()
    assert caught.value.code == code and field in caught.value.message
    assert "\ud800" not in caught.value.message and "\udc00" not in caught.value.message


def test_messages_do_not_echo_long_or_unprintable_names() -> None:
    for name in ("oauth_" + "x" * 5000, "oauth_\x00\x1b[31m"):
        with pytest.raises(InvalidRequest) as caught:
            encode_query({name: "v"})
        assert len(caught.value.message) < 300 and "\x00" not in caught.value.message
