"""Property tests: what the proxy sends is exactly what it signs, for any path, query and method.

The expected signature base string is computed here, from RFC 5849 §3.4.1, without oauthlib, and
the RSA-SHA1 signature in the Authorization header must verify against it.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import quote, unquote, urlsplit

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.oauth1 import JiraClient, UserRequest
from chalicelib.proxy import METHODS, check_path, encode_query, query_string

BASE_URL = "http://Jira.Example.com:80/jira"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def enc(value: str) -> str:
    return quote(value, safe="-._~")


def base_string_uri(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port
    default = {"http": 80, "https": 443}[parts.scheme.lower()]
    netloc = host if port in (None, default) else f"{host}:{port}"
    return f"{parts.scheme.lower()}://{netloc}{parts.path}"


def query_pairs(url: str) -> list[tuple[str, str]]:
    query = urlsplit(url).query
    if not query:
        return []
    return [(unquote(name), unquote(value)) for name, _, value in (p.partition("=") for p in query.split("&"))]


def header_params(header: str) -> dict[str, str]:
    assert header.startswith("OAuth ")
    return {k: unquote(v) for k, v in re.findall(r'(\w+)="([^"]*)"', header)}


def expected_base_string(method: str, url: str, oauth: dict[str, str]) -> str:
    params = query_pairs(url) + [(k, v) for k, v in oauth.items() if k not in {"oauth_signature", "realm"}]
    normalized = "&".join(f"{n}={v}" for n, v in sorted((enc(n), enc(v)) for n, v in params))
    return "&".join([method.upper(), enc(base_string_uri(url)), enc(normalized)])


segment_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/?#\\%"), min_size=1, max_size=12
).filter(lambda s: s not in {".", ".."})
escape = st.sampled_from(["%2F", "%20", "%25", "%C3%A9", "%3F"])
segment = st.lists(st.one_of(segment_text, escape), min_size=1, max_size=3).map("".join)
paths = st.lists(segment, min_size=1, max_size=4).map(lambda parts: "/rest/" + "/".join(parts))
names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=10)
values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
queries = st.dictionaries(names, st.one_of(values, st.lists(values, min_size=1, max_size=3)), max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(METHODS), path=paths, query=queries)
def test_what_is_sent_is_what_is_signed(method: str, path: str, query: dict[str, object]) -> None:
    if path.startswith("/rest/plugins"):
        return
    jira = JiraClient(BASE_URL, "consumer", KEY, timeout=(1, 1))
    pairs = encode_query(query)
    encoded = check_path(path)
    qs = query_string(pairs)
    prepared = jira.prepare_as("token-123", "secret", UserRequest(method, f"{encoded}?{qs}" if qs else encoded))
    url = str(prepared.url)

    # Lossless: Jira decodes exactly the path and parameters the caller asked for.
    assert unquote(urlsplit(url).path) == unquote("/jira" + path)
    assert query_pairs(url) == pairs

    # The signature verifies against an independently built base string.
    header = prepared.headers["Authorization"]
    oauth = header_params(header.decode() if isinstance(header, bytes) else header)
    assert oauth["oauth_signature_method"] == "RSA-SHA1" and oauth["oauth_token"] == "token-123"
    signature = base64.b64decode(oauth["oauth_signature"])
    base = expected_base_string(method, url, oauth)
    try:
        KEY.public_key().verify(signature, base.encode(), padding.PKCS1v15(), hashes.SHA1())
    except InvalidSignature:
        pytest.fail(f"signature does not match the independent base string for {method} {url}")


@settings(max_examples=100, deadline=None)
@given(form=st.dictionaries(names, values, max_size=4), method=st.sampled_from(["POST", "PUT"]))
def test_sign_endpoint_headers_cover_form_parameters(form: dict[str, str], method: str) -> None:
    jira = JiraClient(BASE_URL, "consumer", KEY, timeout=(1, 1))
    url = "http://jira.example.com/jira/rest/form?x=1"
    header, _ = jira.authorization("token-123", "secret", method, url, query_string(list(form.items())))
    oauth = header_params(header)
    params = query_pairs(url) + list(form.items()) + [(k, v) for k, v in oauth.items() if k != "oauth_signature"]
    normalized = "&".join(f"{n}={v}" for n, v in sorted((enc(n), enc(v)) for n, v in params))
    base = "&".join([method, enc(base_string_uri(url)), enc(normalized)])
    KEY.public_key().verify(
        base64.b64decode(oauth["oauth_signature"]), base.encode(), padding.PKCS1v15(), hashes.SHA1()
    )
