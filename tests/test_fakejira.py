"""Tests proving FakeJira behaves like Jira Server's OAuth 1.0a provider.

The client side is requests-oauthlib with RSA-SHA1 (a standard client, not the broker's code); raw
``requests`` builds the malformed calls a real client would never send.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.oauth1 import SIGNATURE_HMAC, SIGNATURE_RSA
from oauthlib.oauth1.rfc5849 import signature as oauthlib_signature
from requests_oauthlib import OAuth1, OAuth1Session

if TYPE_CHECKING:  # one name for mypy, which would otherwise see the file twice
    from fakejira import FakeJira
else:
    try:  # tests/ is not a package: pytest put tests/ itself on sys.path
        from fakejira import FakeJira
    except ImportError:  # tests/ became a package
        from tests.fakejira import FakeJira

CONSUMER = "jira-oauth-broker"
CALLBACK = "https://broker.example.com/oauth/callback"
SERVLET = "/plugins/servlet/oauth"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    """The broker's key pair, generated once: RSA-2048 keygen is the slow part."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    """A key Jira has never seen."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jira(private_key: rsa.RSAPrivateKey) -> Iterator[FakeJira]:
    """A running fake with the broker's Application Link and two users."""
    with FakeJira() as fake:
        fake.add_consumer(CONSUMER, public_pem(private_key))
        fake.add_user("alice", key="JIRAUSER10100", display_name="Alice A", email="a@x")
        fake.add_user("bob")
        yield fake


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """One keep-alive session per test, as the broker would use."""
    with requests.Session() as session:
        yield session


# ---------------------------------------------------------------- helpers


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def oauth(key: rsa.RSAPrivateKey, **kwargs: Any) -> OAuth1:
    """requests-oauthlib RSA-SHA1 auth; a loaded key object skips PEM re-parsing."""
    kwargs.setdefault("client_key", CONSUMER)
    return OAuth1(signature_method=SIGNATURE_RSA, rsa_key=key, **kwargs)


def verifier_of(callback_url: str) -> str:
    """The oauth_verifier Jira put on the callback URL."""
    return parse_qs(urlsplit(callback_url).query)["oauth_verifier"][0]


def problem(response: requests.Response) -> dict[str, str]:
    """Parse an OAuth Problem Reporting body and check Jira's framing of it."""
    assert response.headers["Content-Type"] == "text/plain;charset=UTF-8"
    fields = {k: v[0] for k, v in parse_qs(response.text).items()}
    header = response.headers["WWW-Authenticate"]
    assert header.startswith('OAuth realm="http%3A%2F%2F127.0.0.1%3A')
    assert f'oauth_problem="{fields["oauth_problem"]}"' in header
    return fields


def assert_problem(response: requests.Response, status: int, expected: str) -> None:
    assert response.status_code == status, response.text
    assert problem(response)["oauth_problem"] == expected


def post_request_token(jira: FakeJira, http: requests.Session, auth: OAuth1) -> requests.Response:
    return http.post(f"{jira.base_url}{SERVLET}/request-token", auth=auth)


def prepared_request_token_call(jira: FakeJira, key: rsa.RSAPrivateKey) -> requests.PreparedRequest:
    """A signed request-token call, prepared so a test can tamper with or resend it."""
    url = f"{jira.base_url}{SERVLET}/request-token"
    auth = oauth(key, callback_uri=CALLBACK)
    return requests.Request("POST", url, auth=auth).prepare()


def request_token(
    jira: FakeJira,
    http: requests.Session,
    key: rsa.RSAPrivateKey,
    callback: str = CALLBACK,
) -> str:
    """Step 1 of the dance; returns the request token."""
    r = post_request_token(jira, http, oauth(key, callback_uri=callback))
    assert r.status_code == 200, r.text
    return parse_qs(r.text)["oauth_token"][0]


def decide(jira: FakeJira, http: requests.Session, token: str, decision: str) -> requests.Response:
    """Step 2: click Allow or Deny on the consent page, as alice."""
    form = {"oauth_token": token, "username": "alice", "decision": decision}
    url = f"{jira.base_url}{SERVLET}/authorize"
    return http.post(url, data=form, allow_redirects=False)


def exchange(
    jira: FakeJira,
    http: requests.Session,
    key: rsa.RSAPrivateKey,
    token: str,
    verifier: str,
) -> requests.Response:
    """Step 3: trade the request token and verifier for an access token."""
    auth = oauth(key, resource_owner_key=token, verifier=verifier)
    return http.post(f"{jira.base_url}{SERVLET}/access-token", auth=auth)


def access_token(jira: FakeJira, http: requests.Session, key: rsa.RSAPrivateKey) -> str:
    """The whole dance, approving through the Python API; returns the access token."""
    token = request_token(jira, http, key)
    r = exchange(jira, http, key, token, verifier_of(jira.approve(token, "alice")))
    assert r.status_code == 200, r.text
    return parse_qs(r.text)["oauth_token"][0]


# ---------------------------------------------------------------- the dance


def test_full_dance_with_requests_oauthlib(
    jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey
) -> None:
    session = OAuth1Session(
        CONSUMER,
        signature_method=SIGNATURE_RSA,
        rsa_key=private_key,
        callback_uri=CALLBACK,
    )
    tokens = session.fetch_request_token(f"{jira.base_url}{SERVLET}/request-token")
    assert tokens["oauth_callback_confirmed"] == "true"
    assert len(tokens["oauth_token"]) == len(tokens["oauth_token_secret"]) == 32
    rt = tokens["oauth_token"]

    page = http.get(f"{jira.base_url}{SERVLET}/authorize", params={"oauth_token": rt})
    assert page.status_code == 200
    assert "Welcome to Jira" in page.text
    assert f"{CONSUMER} would like to access your data" in page.text
    assert 'name="username" value="alice"' in page.text

    allow = decide(jira, http, rt, "approve")
    assert allow.status_code == 302
    location = allow.headers["Location"]
    assert location.startswith(CALLBACK + "?")
    session.parse_authorization_response(location)

    access = session.fetch_access_token(f"{jira.base_url}{SERVLET}/access-token")
    assert len(access["oauth_token"]) == len(access["oauth_session_handle"]) == 32
    assert access["oauth_expires_in"] == "157680000"
    assert access["oauth_authorization_expires_in"] == "160272000"

    me = session.get(f"{jira.base_url}/rest/api/2/myself")
    assert me.status_code == 200
    assert me.json() == {
        "name": "alice",
        "key": "JIRAUSER10100",
        "displayName": "Alice A",
        "emailAddress": "a@x",
        "active": True,
    }


def test_token_answers_are_text_plain(jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey) -> None:
    r = post_request_token(jira, http, oauth(private_key, callback_uri=CALLBACK))
    assert r.headers["Content-Type"] == "text/plain;charset=UTF-8"
    fields = ["oauth_token", "oauth_token_secret", "oauth_callback_confirmed"]
    assert list(parse_qs(r.text)) == fields


def test_callback_with_query_gets_ampersand(
    jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey
) -> None:
    token = request_token(jira, http, private_key, callback=CALLBACK + "?team=T1")
    url = jira.approve(token, "bob")
    assert url.startswith(CALLBACK + "?team=T1&oauth_token=" + token + "&")
    assert len(verifier_of(url)) == 6


def test_escaped_callback_is_decoded_once(
    jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey
) -> None:
    # Header values are percent-decoded exactly once: "%2F" inside the callback
    # survives, both in the signature check and in the redirect.
    callback = CALLBACK + "?state=a%2Fb"
    token = request_token(jira, http, private_key, callback=callback)
    assert jira.approve(token, "alice").startswith(callback + "&oauth_token=")


def test_oob_callback_shows_the_verifier(
    jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey
) -> None:
    token = request_token(jira, http, private_key, callback="oob")
    r = decide(jira, http, token, "approve")
    assert r.status_code == 200 and "verification code is <code>" in r.text


def test_authorize_page_for_unknown_token_is_400(jira: FakeJira, http: requests.Session) -> None:
    url = f"{jira.base_url}{SERVLET}/authorize"
    r = http.get(url, params={"oauth_token": "nope"})
    assert r.status_code == 400 and r.headers["Content-Type"].startswith("text/html")


def test_request_token_needs_a_callback(jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey) -> None:
    r = post_request_token(jira, http, oauth(private_key))
    assert r.status_code == 400
    assert problem(r) == {
        "oauth_problem": "parameter_absent",
        "oauth_parameters_absent": "oauth_callback",
    }


def test_unsigned_request_token_is_parameter_absent(jira: FakeJira, http: requests.Session) -> None:
    r = http.post(f"{jira.base_url}{SERVLET}/request-token")
    assert_problem(r, 401, "parameter_absent")


# ---------------------------------------------------------------- exchange problems


def test_deny_then_exchange_is_permission_denied(
    jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey
) -> None:
    token = request_token(jira, http, private_key)
    r = decide(jira, http, token, "deny")
    assert r.status_code == 302 and verifier_of(r.headers["Location"]) == "denied"
    r = exchange(jira, http, private_key, token, "denied")
    assert_problem(r, 401, "permission_denied")


def test_exchange_before_approval_is_permission_unknown(
    jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey
) -> None:
    token = request_token(jira, http, private_key)
    r = exchange(jira, http, private_key, token, "guess1")
    assert_problem(r, 401, "permission_unknown")


def test_wrong_verifier_is_token_rejected(
    jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey
) -> None:
    token = request_token(jira, http, private_key)
    jira.approve(token, "alice")
    r = exchange(jira, http, private_key, token, "wrong1")
    assert_problem(r, 401, "token_rejected")


def test_second_exchange_is_token_rejected(
    jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey
) -> None:
    token = request_token(jira, http, private_key)
    verifier = verifier_of(jira.approve(token, "alice"))
    assert exchange(jira, http, private_key, token, verifier).status_code == 200
    r = exchange(jira, http, private_key, token, verifier)
    assert_problem(r, 401, "token_rejected")


def test_expired_request_token_is_token_expired(
    jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey
) -> None:
    token = request_token(jira, http, private_key)
    verifier = verifier_of(jira.approve(token, "alice"))
    jira.clock_offset += 601
    # Sign with the fake's clock, or the ±300 s timestamp check answers first.
    auth = oauth(
        private_key,
        resource_owner_key=token,
        verifier=verifier,
        timestamp=str(int(jira.now())),
    )
    r = http.post(f"{jira.base_url}{SERVLET}/access-token", auth=auth)
    assert_problem(r, 401, "token_expired")
    with pytest.raises(ValueError):
        jira.approve(token, "alice")


# ---------------------------------------------------------------- signature checks


def test_wrong_private_key_is_signature_invalid_with_base_string(
    jira: FakeJira, http: requests.Session, other_key: rsa.RSAPrivateKey
) -> None:
    url = f"{jira.base_url}{SERVLET}/request-token?x=1"
    r = http.post(url, auth=oauth(other_key, callback_uri=CALLBACK))
    assert_problem(r, 401, "signature_invalid")
    assert "oauth_signature_base_string=" in r.headers["WWW-Authenticate"]
    # The fake's independent base string must equal the one oauthlib signed.
    sent = r.request
    # requests-oauthlib sets the Authorization header as bytes.
    headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in sent.headers.items()}
    params = oauthlib_signature.collect_parameters(uri_query=urlsplit(str(sent.url)).query, headers=headers)
    expected = oauthlib_signature.signature_base_string(
        "POST",
        oauthlib_signature.base_string_uri(str(sent.url)),
        oauthlib_signature.normalize_parameters(params),
    )
    assert problem(r)["oauth_signature_base_string"] == expected


def test_unknown_consumer(jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey) -> None:
    auth = oauth(private_key, client_key="nobody", callback_uri=CALLBACK)
    assert_problem(post_request_token(jira, http, auth), 401, "consumer_key_unknown")


def test_removed_and_rekeyed_consumer(
    jira: FakeJira,
    http: requests.Session,
    private_key: rsa.RSAPrivateKey,
    other_key: rsa.RSAPrivateKey,
) -> None:
    jira.add_consumer(CONSUMER, public_pem(other_key).decode())
    auth = oauth(private_key, callback_uri=CALLBACK)
    assert_problem(post_request_token(jira, http, auth), 401, "signature_invalid")
    jira.remove_consumer(CONSUMER)
    assert_problem(post_request_token(jira, http, auth), 401, "consumer_key_unknown")


def test_hmac_sha1_is_signature_method_rejected(jira: FakeJira, http: requests.Session) -> None:
    # jira-python's default; Jira only takes RSA-SHA1.
    auth = OAuth1(CONSUMER, "secret", signature_method=SIGNATURE_HMAC, callback_uri=CALLBACK)
    r = post_request_token(jira, http, auth)
    assert_problem(r, 400, "signature_method_rejected")


def test_other_version_is_version_rejected(
    jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey
) -> None:
    sent = prepared_request_token_call(jira, private_key)
    header: str | bytes = sent.headers["Authorization"]
    if isinstance(header, bytes):  # requests-oauthlib sets it as bytes
        header = header.decode()
    sent.headers["Authorization"] = header.replace('"1.0"', '"2.0"')
    assert_problem(http.send(sent), 400, "version_rejected")


def test_skewed_clock_is_timestamp_refused_with_range(
    jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey
) -> None:
    jira.clock_offset = 1000
    r = post_request_token(jira, http, oauth(private_key, callback_uri=CALLBACK))
    assert_problem(r, 400, "timestamp_refused")
    low, high = map(int, problem(r)["oauth_acceptable_timestamps"].split("-"))
    assert high - low == 600 and low <= time.time() + 1000 <= high + 1
    # Re-signing with the server's clock (what the broker's retry does) works.
    auth = oauth(private_key, callback_uri=CALLBACK, timestamp=str((low + high) // 2))
    assert post_request_token(jira, http, auth).status_code == 200


def test_nonce_replay_is_nonce_used(jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey) -> None:
    sent = prepared_request_token_call(jira, private_key)
    assert http.send(sent).status_code == 200
    assert_problem(http.send(sent), 401, "nonce_used")


def test_signing_base_url_mismatch_is_signature_invalid(
    jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey
) -> None:
    jira.signing_base_url = "https://jira.example.com"  # proxy strips /jira, adds TLS
    r = post_request_token(jira, http, oauth(private_key, callback_uri=CALLBACK))
    assert_problem(r, 401, "signature_invalid")
    base = problem(r)["oauth_signature_base_string"]
    assert base.startswith("POST&https%3A%2F%2Fjira.example.com%2Fplugins%2Fservlet")


def test_signing_base_url_is_normalized(jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey) -> None:
    # Same URL with an upper-case scheme/host and a trailing slash still verifies.
    jira.signing_base_url = jira.base_url.replace("http://", "HTTP://") + "/"
    auth = oauth(private_key, callback_uri=CALLBACK)
    assert post_request_token(jira, http, auth).status_code == 200


# ---------------------------------------------------------------- REST


def test_signed_rest_calls_echo_with_query_and_form_body(
    jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey
) -> None:
    token = access_token(jira, http, private_key)
    auth = oauth(private_key, resource_owner_key=token)
    url = f"{jira.base_url}/rest/api/2/search"
    params = {"jql": "project = ABC ORDER BY key", "fields": "ü,*all"}
    # A form body is part of the signature, so this checks the fake's param handling.
    r = http.post(url, params=params, data={"a": "1 2", "b": "~&="}, auth=auth)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "method": "POST",
        "path": "/rest/api/2/search",
        "query": {k: [v] for k, v in params.items()},
        "user": "alice",
        "body": "a=1+2&b=~%26%3D",
    }
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        r = http.request(method, url + "/x", json={"k": "v"}, auth=auth)
        assert r.status_code == 200 and r.json()["method"] == method


def test_unsigned_rest_call_is_jira_json_401(jira: FakeJira, http: requests.Session) -> None:
    r = http.get(f"{jira.base_url}/rest/api/2/myself")
    assert r.status_code == 401
    assert r.json()["errorMessages"][0].startswith("You are not authenticated")


def test_revoked_and_unknown_access_tokens(
    jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey
) -> None:
    token = access_token(jira, http, private_key)
    jira.revoke_access_token(token)
    myself = f"{jira.base_url}/rest/api/2/myself"
    r = http.get(myself, auth=oauth(private_key, resource_owner_key=token))
    assert_problem(r, 401, "token_revoked")
    r = http.get(myself, auth=oauth(private_key, resource_owner_key="x" * 32))
    assert_problem(r, 401, "token_rejected")


def test_server_info_needs_no_auth(jira: FakeJira, http: requests.Session) -> None:
    info = http.get(f"{jira.base_url}/rest/api/2/serverInfo").json()
    assert info["baseUrl"] == jira.base_url
    assert info["versionNumbers"] == [9, 12, 2] and info["deploymentType"] == "Server"
    jira.reported_base_url = "https://jira.example.com"
    info = http.get(f"{jira.base_url}/rest/api/2/serverInfo").json()
    assert info["baseUrl"] == "https://jira.example.com"


# ---------------------------------------------------------------- plumbing


def test_context_path_is_respected(jira: FakeJira, http: requests.Session, private_key: rsa.RSAPrivateKey) -> None:
    assert jira.base_url.endswith("/jira")
    root = jira.base_url.removesuffix("/jira")
    assert http.get(f"{root}/rest/api/2/serverInfo").status_code == 404
    auth = oauth(private_key, callback_uri=CALLBACK)
    assert http.post(f"{root}{SERVLET}/request-token", auth=auth).status_code == 404
    assert http.get(f"{root}/jirafoo/rest/api/2/serverInfo").status_code == 404


def test_root_context_path(private_key: rsa.RSAPrivateKey, http: requests.Session) -> None:
    with FakeJira("") as jira:
        jira.add_consumer(CONSUMER, public_pem(private_key))
        assert urlsplit(jira.base_url).path == ""
        request_token(jira, http, private_key)


def test_records_requests(jira: FakeJira, http: requests.Session) -> None:
    http.get(f"{jira.base_url}/rest/api/2/serverInfo", params={"a": "1"})
    (recorded,) = jira.requests
    assert (recorded.method, recorded.path) == ("GET", "/jira/rest/api/2/serverInfo")
    assert recorded.query == {"a": ["1"]} and recorded.body == b""
    jira.clear_requests()
    assert jira.requests == []


def test_delay_lets_clients_time_out(jira: FakeJira, http: requests.Session) -> None:
    jira.delay = 0.3
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.get(f"{jira.base_url}/rest/api/2/serverInfo", timeout=0.05)


def test_keep_alive_is_fast(jira: FakeJira, http: requests.Session) -> None:
    # TCP_NODELAY: a reused connection must not pay the ~40 ms Nagle/delayed-ACK tax.
    url = f"{jira.base_url}/rest/api/2/serverInfo"
    http.get(url)
    started = time.perf_counter()
    for _ in range(5):
        assert http.get(url).status_code == 200
    assert time.perf_counter() - started < 0.15
