"""Links in Jira's JSON moved to the user's transparent base: only what lies under Jira's base URL."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.rewrite import LinkRewriter

SITE = "https://broker.example.com/v1/teams/acme/users/alice/jira/site"
JIRA = "https://jira.example.com/jira"


def test_urls_under_the_base_move_to_the_site() -> None:
    rewriter = LinkRewriter([JIRA], SITE)
    cases = {
        f"{JIRA}/rest/api/2/issue/10000": f"{SITE}/rest/api/2/issue/10000",
        f"{JIRA}/rest/api/2/search?jql=a&startAt=50#top": f"{SITE}/rest/api/2/search?jql=a&startAt=50#top",
        JIRA: SITE,
        f"{JIRA}/": f"{SITE}/",
        "HTTPS://JIRA.example.com:443/jira/secure/attachment/1/a.png": f"{SITE}/secure/attachment/1/a.png",
    }
    for before, after in cases.items():
        assert rewriter.url(before) == after


def test_nothing_outside_the_base_moves() -> None:
    rewriter = LinkRewriter([JIRA], SITE)
    for url in (
        "https://jira.example.com/jira-legacy/rest/api/2/issue/1",  # not under /jira
        "http://jira.example.com/jira/rest/api/2/issue/1",  # another scheme
        "https://jira.example.com:8443/jira/x",  # another port
        "https://evil.example.com/jira/x",
        "https://jira.example.com/JIRA/x",  # paths are case-sensitive
        "https://jira.example.com/other",
        "not a url",
        "jira.example.com/jira/x",
    ):
        assert rewriter.url(url) == url


def test_both_the_configured_and_the_reported_base() -> None:
    rewriter = LinkRewriter(["http://10.0.0.5:8080/jira", JIRA], SITE)
    assert rewriter.url("http://10.0.0.5:8080/jira/rest/api/2/myself") == f"{SITE}/rest/api/2/myself"
    assert rewriter.url(f"{JIRA}/rest/api/2/myself") == f"{SITE}/rest/api/2/myself"


def test_a_jira_at_the_root_of_its_host() -> None:
    rewriter = LinkRewriter(["https://jira.example.com"], SITE)
    assert rewriter.url("https://jira.example.com/rest/api/2/myself") == f"{SITE}/rest/api/2/myself"
    assert rewriter.url("https://jira.example.com.evil.test/x") == "https://jira.example.com.evil.test/x"


def test_json_documents_values_not_keys_and_untouched_bytes_when_nothing_moves() -> None:
    rewriter = LinkRewriter([JIRA], SITE)
    document = {
        "self": f"{JIRA}/rest/api/2/issue/10000",
        "fields": {"attachment": [{"content": f"{JIRA}/secure/attachment/10100/a.txt", "size": 16}]},
        "avatarUrls": {"48x48": f"{JIRA}/secure/useravatar?avatarId=1"},
        f"{JIRA}/as-a-key": 1.5,
        "elsewhere": "https://cdn.example.com/a.png",
    }
    moved = json.loads(rewriter.json_body(json.dumps(document).encode()))
    assert moved["self"] == f"{SITE}/rest/api/2/issue/10000"
    assert moved["fields"]["attachment"][0] == {"content": f"{SITE}/secure/attachment/10100/a.txt", "size": 16}
    assert moved["avatarUrls"]["48x48"] == f"{SITE}/secure/useravatar?avatarId=1"
    assert moved[f"{JIRA}/as-a-key"] == 1.5 and moved["elsewhere"] == "https://cdn.example.com/a.png"
    untouched = b'{"name":  "alice",\n "n": 1.50}'
    assert rewriter.json_body(untouched) is untouched
    assert rewriter.json_body(b"not json") == b"not json"


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    )
)
def test_any_json_keeps_its_shape(document: object) -> None:
    rewriter = LinkRewriter([JIRA], SITE)
    raw = json.dumps(document).encode()
    assert json.loads(rewriter.json_body(raw)) == document  # nothing in it is a URL under the base
