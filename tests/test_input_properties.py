"""Property tests: whatever a caller sends to a JSON route, the broker answers with its envelope, never a 500.

Arbitrary JSON (nested objects and lists, any Unicode including lone surrogates, big, float and
negative numbers, wrong types), arbitrary text and header values, raw non-JSON bodies and deeply
nested JSON go to every JSON route of app.py. Every answer carrying ``X-Broker-Error`` must be
``{"error": {"code": str, "message": str}}`` with the same code, and below 500 unless Jira
(``jira_*``) or AWS (``storage_unavailable``) is to blame. The proxy may pass Jira's own statuses
through (no ``X-Broker-Error``).

Only loopback is ever reached: base_url hosts that pass validation are 127.0.0.1, localhost or ::1
by construction, and a guard refuses (and records) any name lookup or connection elsewhere.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chalicelib.errors import InvalidRequest
from chalicelib.urls import normalize_base_url
from tests.conftest import ACME_KEY, API_KEY, CONSUMER_KEY, Answer, Broker
from tests.fakejira import FakeJira

LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
PROPERTY = settings(
    # A deeper hunt: BROKER_PROPERTY_EXAMPLES=2000 (the default keeps the file well under a minute).
    max_examples=int(os.environ.get("BROKER_PROPERTY_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- only loopback --------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Refuse any DNS lookup or connection that is not loopback; the test fails if one was tried."""
    attempts: list[str] = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and str(name).lower() not in LOOPBACK_NAMES:
            attempts.append(f"lookup {name!r}")
            raise socket.gaierror(socket.EAI_NONAME, "not loopback: refused by the test")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            if not ipaddress.ip_address(str(address[0]).split("%", 1)[0]).is_loopback:
                attempts.append(f"connect {address!r}")
                raise ConnectionRefusedError("not loopback: refused by the test")
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    yield attempts
    assert attempts == [], attempts


# -- the invariant ----------------------------------------------------------------------------
def check(answer: Answer, *, passthrough: bool = False) -> None:
    """No 500; errors in the envelope; 5xx only for Jira or AWS; Jira's own answers only from the proxy."""
    code = answer.error_code
    event(f"{answer.status} {code or ''}")  # --hypothesis-show-statistics shows which answers were reached
    if code is None:
        assert passthrough or answer.status < 400, (answer.status, answer.body[:300])
        return
    error = json.loads(answer.body)["error"]
    assert isinstance(error, dict), answer.body[:300]
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"], error
    assert error["code"] == code, (code, error)
    assert code != "internal_error", answer.body[:300]
    if answer.status >= 500:
        assert code.startswith("jira_") or code == "storage_unavailable", (answer.status, answer.body[:300])
    else:
        assert 400 <= answer.status < 500, (answer.status, answer.body[:300])


def send(broker: Broker, method: str, path: str, data: bytes, headers: dict[str, str] | None = None) -> Answer:
    sent = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}", **(headers or {})}
    response = broker.client.http.request(method, path, headers=sent, body=data)
    return Answer(response.status_code, dict(response.headers), response.body)


def send_json(broker: Broker, method: str, path: str, body: object, *, key: str = API_KEY) -> Answer:
    # ensure_ascii: lone surrogates travel as \ud800 escapes, as a hostile client would send them.
    data = json.dumps(body).encode()
    return send(broker, method, path, data, {"Authorization": f"Bearer {key}"})


# -- strategies -----------------------------------------------------------------------------------
# Plausible values most of the time, so examples get past the first check and reach Jira; garbage,
# wrong types and lone surrogates often enough to find what breaks. one_of picks its branches evenly:
# a branch listed twice is drawn twice as often.
lone_surrogates = st.sampled_from(["\ud800", "\udfff", "a\udc00b", "\udbff\udbff"])
clean_text = st.one_of(st.text(max_size=30), st.text(st.characters(codec="ascii"), max_size=30))
# Lone surrogates come in through usually() (one field in eight) and a few JSON leaves: any more often,
# and nearly every body is refused as invalid_json before it reaches the checks behind it.
any_text = st.one_of(clean_text, clean_text, clean_text, clean_text, clean_text, lone_surrogates)
# NaN and infinities are not JSON (json.dumps writes NaN, Infinity): one special value in four.
specials = [0, -1, 2**63, -(2**63) - 1, 1e308, -0.0, 2048.0, 10**30, -(10**30), math.nan, math.inf, -math.inf]
numbers = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(specials),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, clean_text)
json_values = st.recursive(
    st.one_of(*[scalars] * 12, lone_surrogates),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(clean_text, inner, max_size=4)),
    max_leaves=8,
)
ids = st.one_of(
    st.sampled_from(["acme", "other", "alice", "a" * 128, "a" * 129, "x%40y", "%2e%2e", "%ud800", "%C3%A9"]),
    st.text(min_size=1, max_size=20).map(lambda s: quote(s.encode("utf-8", "surrogatepass"), safe="")),
)


def usually(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``strategy``; one time in six any JSON value (wrong types), one in twelve a lone surrogate."""
    branches = {"plausible": strategy, "any": json_values, "surrogate": lone_surrogates}
    pick = st.sampled_from(["plausible"] * 9 + ["any"] * 2 + ["surrogate"])
    return pick.flatmap(lambda name: branches[name])


def bodies(
    fields: dict[str, st.SearchStrategy[Any]], required: tuple[str, ...] = ()
) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object with the route's ``required`` fields, any subset of the others, and now and then a stray one."""
    chosen = {name: usually(strategy) for name, strategy in fields.items() if name not in required}
    must = {name: usually(fields[name]) for name in required}
    stray = st.one_of(st.just({}), st.just({}), st.dictionaries(any_text, json_values, max_size=1))
    return st.tuples(st.fixed_dictionaries(must, optional=chosen), stray).map(lambda p: {**p[1], **p[0]})


def base_urls(jira_port: int) -> st.SearchStrategy[str]:
    """Base URLs around a loopback host: garbage only where it cannot change the host."""
    scheme = st.sampled_from(["http", "HTTP", "https", "ftp", "", "javascript", "http:"])
    host = st.sampled_from(["127.0.0.1", "localhost", "LocalHost", "[::1]", "[::1", "::1", "127.0.0.1]"])
    port = st.sampled_from([f":{jira_port}", ":0", ":99999", ":abc", ":", ":-1", ": 1"])
    path = st.one_of(st.sampled_from(["/jira", "", "/", "/jira/", "/other", "/jira?x=1", "/jira#f"]), any_text)
    built = st.tuples(scheme, host, port, path).map(lambda p: f"{p[0]}://{p[1]}{p[2]}{p[3]}")
    exact = st.just(f"http://127.0.0.1:{jira_port}/jira")
    return st.one_of(exact, exact, built, any_text.filter(_refused_or_loopback))


def _refused_or_loopback(raw: str) -> bool:
    """Arbitrary text is fine as base_url only if validation refuses it or its host is loopback."""
    try:
        url = normalize_base_url(raw)
    except InvalidRequest:
        return True
    return (urlsplit(url).hostname or "").lower() in LOOPBACK_NAMES


OAUTH_SPELLINGS = ["/plugins/servlet//oauth/access-token", "/plugins/servlet%2Foauth/request-token"]
paths = st.one_of(
    st.sampled_from(["/rest/api/2/myself", "/rest/api/2/search", "/rest/x;y", "/", *OAUTH_SPELLINGS]),
    clean_text.map(lambda s: "/rest/" + s),
    clean_text.map(lambda s: "/rest/" + s),
    clean_text,
)
header_names = st.sampled_from(["Accept", "content-type", "Accept-Language", "X-Atlassian-Token", "Cookie", "X"])
header_values = st.one_of(
    st.sampled_from(["application/json", "application/x-www-form-urlencoded", " x", "x ", "a\tb", "é", "\x00"]),
    clean_text,
)
queries = st.dictionaries(
    st.one_of(clean_text, st.sampled_from(["oauth_token", "jql", "OAUTH_nonce"])),
    st.one_of(scalars, st.lists(scalars, max_size=3)),
    max_size=4,
)
form_bodies = st.one_of(st.sampled_from(["a=1&b=x+y", "a=%zz", "oauth_token=x", "a=é", "=&&="]), clean_text)


# -- the integration routes: PUT/GET/DELETE /jira, key-pair, setup-link -----------------------------
@PROPERTY
@given(data=st.data())
def test_integration_routes_never_answer_500(broker: Broker, jira: FakeJira, private_pem: str, data: Any) -> None:
    team = data.draw(st.one_of(st.just("acme"), st.just("acme"), ids), label="team")
    route = data.draw(st.sampled_from(["put", "get", "delete", "key-pair", "setup-link"]), label="route")
    key = data.draw(st.sampled_from([API_KEY, API_KEY, ACME_KEY]), label="key")
    if route == "put":
        fields = {
            "base_url": base_urls(jira.port),
            "consumer_key": st.one_of(st.just(CONSUMER_KEY), st.just(CONSUMER_KEY), any_text),
            "private_key": st.one_of(st.just(private_pem), st.just(private_pem), any_text, st.just(private_pem[:200])),
            "user": st.one_of(st.just("alice"), ids, any_text),
        }
        body = data.draw(bodies(fields, required=("base_url", "consumer_key")), label="body")
        check(send_json(broker, "PUT", f"/v1/teams/{team}/jira", body, key=key))
    elif route == "key-pair":
        bits = st.sampled_from([2048, 2048.0, "2048", True, 1024, 3072, -2048, 10**30, None])
        body = data.draw(bodies({"bits": bits}), label="body")
        check(send_json(broker, "POST", f"/v1/teams/{team}/jira/key-pair", body, key=key))
    elif route == "setup-link":
        fields = {"user": st.one_of(st.just("alice"), ids), "expires_in": st.one_of(numbers, st.just(600))}
        body = data.draw(bodies(fields), label="body")
        check(send_json(broker, "POST", f"/v1/teams/{team}/jira/setup-link", body, key=key))
    else:
        method = "GET" if route == "get" else "DELETE"
        check(send_json(broker, method, f"/v1/teams/{team}/jira", data.draw(json_values, label="body"), key=key))


# -- the user routes: connect-link, GET/DELETE the connection -------------------------------------
@PROPERTY
@given(data=st.data())
def test_user_routes_never_answer_500(connected: Broker, data: Any) -> None:
    team = data.draw(st.one_of(st.just("acme"), st.just("acme"), ids), label="team")
    user = data.draw(st.one_of(st.sampled_from(["alice", "bob"]), st.just("alice"), ids), label="user")
    route = data.draw(st.sampled_from(["connect-link", "get", "delete"]), label="route")
    base = f"/v1/teams/{team}/users/{user}/jira"
    if route == "connect-link":
        odd = st.sampled_from(["http://[::1", "https://[x]/", "https://chat.example.com:99999/", "//chat.example.com"])
        return_to = st.one_of(st.just("https://chat.example.com/back"), odd, any_text)
        fields = {"expires_in": st.one_of(numbers, st.just(600)), "return_to": return_to}
        check(send_json(connected, "POST", f"{base}/connect-link", data.draw(bodies(fields), label="body")))
    else:
        check(send_json(connected, route.upper(), base, data.draw(json_values, label="body")))


# -- acting as the user: proxy and sign --------------------------------------------------------------
@PROPERTY
@given(data=st.data())
def test_proxy_never_answers_500(connected: Broker, data: Any) -> None:
    fields = {
        "method": st.sampled_from(["GET", "GET", "post", "PUT", "PATCH", "DELETE", "TRACE", ""]),
        "path": paths,
        "query": queries,
        "headers": st.dictionaries(header_names, header_values, max_size=3),
        "json": json_values,
        "body": form_bodies,
    }
    body = data.draw(bodies(fields, required=("method", "path")), label="body")
    check(send_json(connected, "POST", "/v1/teams/acme/users/alice/jira/proxy", body), passthrough=True)


@PROPERTY
@given(data=st.data())
def test_sign_never_answers_500(connected: Broker, jira: FakeJira, data: Any) -> None:
    tail = st.one_of(
        st.sampled_from(["/rest/api/2/myself", "/rest/x?a=1&b=%20", "//plugins/servlet/oauth/access-token", ""]),
        clean_text,
    )
    query = st.one_of(st.just(""), st.sampled_from(["?oauth_token=x", "?a=%zz", "?a=<>", "?a=1"]), clean_text)
    under_base = st.tuples(tail, query).map(lambda p: f"{jira.base_url}{p[0]}{p[1]}")
    url = st.one_of(under_base, under_base, under_base, clean_text)
    fields = {"method": st.sampled_from(["GET", "POST", "x"]), "url": url, "form": queries}
    body = data.draw(bodies(fields, required=("method", "url")), label="body")
    check(send_json(connected, "POST", "/v1/teams/acme/users/alice/jira/sign", body))


# -- raw bodies and request headers on every JSON route ----------------------------------------------
JSON_ROUTES = [
    ("PUT", "/v1/teams/acme/jira"),
    ("GET", "/v1/teams/acme/jira"),
    ("DELETE", "/v1/teams/nobody/jira"),
    ("POST", "/v1/teams/acme/jira/key-pair"),
    ("POST", "/v1/teams/acme/jira/setup-link"),
    ("POST", "/v1/teams/acme/users/alice/jira/connect-link"),
    ("GET", "/v1/teams/acme/users/alice/jira"),
    ("DELETE", "/v1/teams/acme/users/nobody/jira"),
    ("POST", "/v1/teams/acme/users/alice/jira/proxy"),
    ("POST", "/v1/teams/acme/users/alice/jira/sign"),
]
raw_bodies = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.integers(min_value=1, max_value=50_000).map(lambda n: ("[" * n + "]" * n).encode()),
    st.integers(min_value=1, max_value=3_000).map(lambda n: ('{"a":' * n + "1" + "}" * n).encode()),
    st.sampled_from([b"", b" ", b"null", b"[]", b'"x"', b"1e999", b'{"a": NaN}', b"\xef\xbb\xbf{}", b'{"a": 1}{']),
)
request_headers = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": st.sampled_from(["application/json", "application/json; charset=latin-1", "text/plain", "x"]),
        "Accept": st.sampled_from(["*/*", "application/json", "text/html", "application/pdf", "x"]),
    },
)


@PROPERTY
@given(route=st.sampled_from(JSON_ROUTES), raw=raw_bodies, headers=request_headers)
def test_raw_bodies_never_answer_500(
    connected: Broker, route: tuple[str, str], raw: bytes, headers: dict[str, str]
) -> None:
    method, path = route
    check(send(connected, method, path, raw, headers), passthrough=path.endswith("/proxy"))
