"""The setup page's OAuth 2.0 way: the choice, the form, verify and connect (helpers: tests/test_setup_page.py)."""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from chalicelib.store import Store
from tests.conftest import CONSUMER_KEY, PUBLIC_URL, Broker, assert_page
from tests.fakejira import FakeJira
from tests.test_setup_page import _assert_page_headers, _open, _post, _setup_link, _verify_fields

# -- OAuth 2.0: the choice, the form, verify and connect ------------------------------------------------------------
CLIENT_ID = "broker-client-0a1b2c"
CLIENT_SECRET = "s3cret-of-the-incoming-link-0000000000000000"
REDIRECT_URI = f"{PUBLIC_URL}/oauth2/callback"
OAUTH2_CHOICE = "OAuth 2.0 (Jira Data Center 8.22 or later, recommended by Atlassian)"
OAUTH1_CHOICE = "OAuth 1.0a Application Link (any Jira Server/Data Center; also the choice for Jira before 8.22)"
ALL_SCOPES = ("READ", "WRITE", "ADMIN", "SYSTEM_ADMIN", "READ_ALL", "MANAGE_SUBSCRIPTIONS")


def _oauth2_fields(jira: FakeJira, *, scopes: tuple[str, ...] = ("WRITE",), **fields: str) -> list[tuple[str, str]]:
    """The OAuth 2.0 form as a browser sends it: one ``scopes`` pair per ticked box."""
    sent = {
        "action": "verify",
        "auth": "oauth2",
        "base_url": jira.base_url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        **fields,
    }
    return [*sent.items(), *(("scopes", scope) for scope in scopes)]


def _ticked(page: str) -> set[str]:
    return set(re.findall(r"name=scopes value=([A-Z_]+) checked", page))


def _opened(page: str) -> set[str]:
    return set(re.findall(r"<details class=choice name=auth-choice id=(oauth[12]) open>", page))


@pytest.fixture
def jira2(jira: FakeJira) -> FakeJira:
    """The fake Jira with an OAuth 2.0 incoming link for the broker's redirect URL."""
    jira.add_oauth2_client(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, scopes=("READ", "WRITE"))
    return jira


def test_page_offers_both_ways_and_says_which_to_choose(broker: Broker, jira: FakeJira) -> None:
    page = _open(broker, _setup_link(broker))
    assert_page(
        page.answer,
        200,
        None,
        OAUTH2_CHOICE,
        OAUTH1_CHOICE,
        "Which to choose",
        "deprecated",
        "Data Center 8.22 or later",
        "older than 8.22",
        "External application",
        "<strong>Incoming</strong>",
        "Atlassian product",
        f"<code id=redirect-uri class=copyable>{REDIRECT_URI}</code>",  # exactly the redirect URL, to copy
        "data-copy=redirect-uri",
        "Client ID",
        "Client secret",
        "Scopes",
    )
    assert REDIRECT_URI == "http://broker.test/oauth2/callback"
    assert page.text.count("<form id=") == 2 and "<form id=oauth2-form" in page.text  # each way its own form
    assert "<input type=hidden name=auth value=oauth2>" in page.text
    assert "<input type=hidden name=auth value=oauth1>" in page.text
    for field_id in ("oauth2-base-url", "client-id", "client-secret"):
        assert f"<label for={field_id}>" in page.text and f"id={field_id} " in page.text
    # The secret is a password field nothing fills in; every scope is a box, WRITE ticked by default.
    secret_input = re.search(r"<input id=client-secret [^>]*>", page.text)
    assert secret_input and "type=password" in secret_input.group(0) and "autocomplete=off" in secret_input.group(0)
    assert "value=" not in secret_input.group(0)
    for scope in ALL_SCOPES:
        assert f"<input type=checkbox id=scope-{scope.lower()} name=scopes value={scope}" in page.text
    assert _ticked(page.text) == {"WRITE"}
    assert _opened(page.text) == set()  # the admin chooses; neither way is open yet
    assert jira.requests == []


def test_oauth2_verify_goes_on_to_jiras_consent_page(broker: Broker, jira2: FakeJira, store: Store) -> None:
    jira = jira2
    page = _open(broker, _setup_link(broker))
    answer = _post(broker, page, _oauth2_fields(jira, scopes=("READ", "WRITE")))
    assert answer.status == 303, answer.body
    location = answer.headers["Location"]
    assert location.startswith(f"{jira.base_url}/rest/oauth2/latest/authorize?")
    query = parse_qs(urlsplit(location).query)
    assert query["client_id"] == [CLIENT_ID] and query["redirect_uri"] == [REDIRECT_URI]
    assert query["response_type"] == ["code"] and query["scope"] == ["READ WRITE"]
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert len(query["state"][0]) >= 32
    integration = broker.call("GET", "/v1/teams/acme/jira").json
    assert integration["auth"] == "oauth2" and integration["client_id"] == CLIENT_ID
    assert integration["scopes"] == ["READ", "WRITE"] and integration["redirect_uri"] == REDIRECT_URI

    # Jira's Allow page sends the admin back: connected, and the setup link is used up.
    done = broker.browser("GET", jira.oauth2_approve(location, "alice"))
    assert_page(done, 200, None, "Connected as Alice Example", "alice", "acme")
    assert broker.call("GET", "/v1/teams/acme/users/alice/jira").json["jira_user"]["name"] == "alice"
    assert_page(broker.browser("GET", page.url), 410, "link_used")
    assert_page(_post(broker, page, _oauth2_fields(jira)), 410, "link_used")


def test_oauth2_missing_secret_comes_back_with_what_was_typed(broker: Broker, jira2: FakeJira) -> None:
    page = _open(broker, _setup_link(broker))
    answer = _post(broker, page, _oauth2_fields(jira2, scopes=("READ", "ADMIN"), client_secret=""))
    assert_page(
        answer,
        400,
        "missing_field",
        "The setup did not work",
        "Client secret is empty",
        "Nothing was saved",
        f'value="{jira2.base_url}"',
        f'value="{CLIENT_ID}"',
    )
    assert "client secret you sent was not kept" not in answer.text  # none was sent
    assert _ticked(answer.text) == {"READ", "ADMIN"}  # the boxes as they were ticked
    assert _opened(answer.text) == {"oauth2"}
    assert f'name=csrf_token value="{page.csrf}"' in answer.text
    _assert_page_headers(answer)
    missing_id = _post(broker, page, _oauth2_fields(jira2, client_id=""))
    assert_page(missing_id, 400, "missing_field", "Client ID is empty", "client secret you sent was not kept")
    assert CLIENT_SECRET not in missing_id.text
    assert jira2.requests == []  # nothing reached Jira
    assert broker.call("GET", "/v1/teams/acme/jira").status == 404


@pytest.mark.parametrize(
    ("fields", "scopes", "status", "code", "words"),
    [
        ({}, (), 400, "invalid_scopes", ("Tick at least one scope",)),
        ({}, ("WRITE", "OWNER"), 400, "invalid_scopes", ("Tick at least one scope",)),
        ({"client_secret": "has a space"}, ("WRITE",), 400, "invalid_client_secret", ("no spaces",)),
        ({"client_id": "has a space"}, ("WRITE",), 400, "invalid_client_id", ("no spaces",)),
        ({"auth": "oauth3"}, ("WRITE",), 400, "invalid_auth", ("oauth2",)),
    ],
)
def test_oauth2_form_errors(
    broker: Broker,
    jira2: FakeJira,
    fields: dict[str, str],
    scopes: tuple[str, ...],
    status: int,
    code: str,
    words: tuple[str, ...],
) -> None:
    page = _open(broker, _setup_link(broker))
    answer = _post(broker, page, _oauth2_fields(jira2, scopes=scopes, **fields))
    assert_page(answer, status, code, "The setup did not work", *words)
    assert "OWNER" not in answer.text  # only the page's own boxes come back ticked
    assert CLIENT_SECRET not in answer.text
    if "client_id" in fields:
        assert 'value="has a space"' in answer.text  # a client id is kept as typed, to correct it
    assert not jira2.oauth2_token_calls()


def test_oauth2_wrong_secret_unknown_client_and_old_jira(broker: Broker, jira2: FakeJira) -> None:
    page = _open(broker, _setup_link(broker))
    wrong = _post(broker, page, _oauth2_fields(jira2, client_secret="not-the-secret-0000"))
    assert_page(
        wrong,
        422,
        "oauth2_client_rejected",
        "The setup did not work",
        f"does not accept client id &#x27;{CLIENT_ID}&#x27;",
        "copy its client ID and client secret again",
        "client secret you sent was not kept",
        f'value="{CLIENT_ID}"',
    )
    assert "not-the-secret-0000" not in wrong.text and CLIENT_SECRET not in wrong.text
    assert _opened(wrong.text) == {"oauth2"}
    unknown = _post(broker, page, _oauth2_fields(jira2, client_id="no-such-client"))
    assert_page(unknown, 422, "oauth2_client_rejected", 'value="no-such-client"')

    jira2.oauth2_enabled = False  # a Jira older than 8.22
    old = _post(broker, page, _oauth2_fields(jira2))
    assert_page(old, 422, "oauth2_not_available", "8.22 or later", "choose the OAuth 1.0a Application Link")
    assert broker.call("GET", "/v1/teams/acme/jira").status == 404


def test_oauth2_form_needs_the_csrf_token_and_the_same_origin(broker: Broker, jira2: FakeJira) -> None:
    page = _open(broker, _setup_link(broker))
    fields = _oauth2_fields(jira2)
    attempts = [
        _post(broker, page, fields, csrf=False),  # no token in the form
        _post(broker, page, [("csrf_token", "x" * 43), *fields], csrf=False),  # a wrong token
        _post(broker, page.url, [("csrf_token", page.csrf), *fields]),  # no cookie (another browser)
        _post(broker, page, fields, cookie="broker_setup_csrf=" + "y" * 43),  # another browser's cookie
    ]
    for answer in attempts:
        assert_page(answer, 403, "csrf_token_invalid", "security token", "changed nothing", "alice", "acme")
        assert CLIENT_SECRET not in answer.text
    cross = _post(broker, page, fields, headers={"Sec-Fetch-Site": "cross-site"})
    assert_page(cross, 403, "cross_site_request", "another site", "changed nothing")
    assert jira2.requests == []
    assert broker.call("GET", "/v1/teams/acme/jira").status == 404


def test_repeated_scopes_in_either_encoding_and_the_field_limit(broker: Broker, jira2: FakeJira) -> None:
    page = _open(broker, _setup_link(broker))
    fields = _oauth2_fields(jira2, scopes=("READ", "WRITE"), client_secret="")  # fails before Jira: shows the boxes
    assert _ticked(_post(broker, page, fields).text) == {"READ", "WRITE"}
    assert _ticked(_post(broker, page, fields, files={}).text) == {"READ", "WRITE"}  # multipart
    every = _oauth2_fields(jira2, scopes=ALL_SCOPES, client_secret="")  # 12 fields with the token: allowed
    assert _ticked(_post(broker, page, every).text) == set(ALL_SCOPES)
    too_many = _oauth2_fields(jira2, scopes=ALL_SCOPES + ("READ",) * 5)  # 17 fields
    assert_page(_post(broker, page, too_many), 400, "invalid_body")
    assert_page(_post(broker, page, too_many, files={}), 400, "invalid_body")


def test_existing_oauth2_integration_is_named_and_its_secret_kept(broker: Broker, jira2: FakeJira) -> None:
    body = {"auth": "oauth2", "base_url": jira2.base_url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    assert broker.call("PUT", "/v1/teams/acme/jira", {**body, "scopes": ["READ"]}).status == 201
    page = _open(broker, _setup_link(broker))
    host = urlsplit(jira2.base_url).netloc
    assert_page(
        page.answer,
        200,
        None,
        "already has Jira at",
        host,
        f"set up with OAuth 2.0 (client ID <code>{CLIENT_ID}</code>, scopes READ)",
        f'value="{CLIENT_ID}"',
        f'value="{jira2.base_url}"',
        "Leave it empty to keep the secret",
    )
    assert _opened(page.text) == {"oauth2"} and _ticked(page.text) == {"READ"}
    assert "<input id=client-secret name=client_secret type=password required" not in page.text
    assert CLIENT_SECRET not in page.text
    # Verify with the secret left empty: the broker's copy is used, and the scopes change.
    answer = _post(broker, page, _oauth2_fields(jira2, scopes=("READ", "WRITE"), client_secret=""))
    assert answer.status == 303, answer.body
    assert parse_qs(urlsplit(answer.headers["Location"]).query)["scope"] == ["READ WRITE"]
    assert broker.call("GET", "/v1/teams/acme/jira").json["scopes"] == ["READ", "WRITE"]


def test_which_way_is_open(broker: Broker, connected: Broker, jira: FakeJira) -> None:
    # An OAuth 1.0a team: its way is open and named as such.
    page = _open(connected, _setup_link(connected))
    assert _opened(page.text) == {"oauth1"} and "with an OAuth 1.0a Application Link" in page.text
    assert f"consumer key <code>{CONSUMER_KEY}</code>" in page.text
    # A generated key opens OAuth 1.0a; a failed OAuth 2.0 verification opens OAuth 2.0 instead.
    other = _open(broker, _setup_link(broker, team="globex"))
    assert _post(broker, other, {"action": "generate"}).status == 303
    assert _opened(_open(broker, other.url, cookie=other.cookie).text) == {"oauth1"}
    failed = _post(broker, other, _oauth2_fields(jira, client_secret=""))
    assert _opened(failed.text) == {"oauth2"} and "BEGIN PUBLIC KEY" in failed.text
    # An old-style form (no auth field) is OAuth 1.0a, as before.
    old_style = _post(broker, other, _verify_fields(jira, consumer_key="nope"))
    assert_page(old_style, 422, "consumer_key_unknown")
    assert _opened(old_style.text) == {"oauth1"}


def test_oauth2_echoed_values_are_escaped(broker: Broker, jira2: FakeJira) -> None:
    page = _open(broker, _setup_link(broker))
    answer = _post(broker, page, _oauth2_fields(jira2, client_id='c"><b>x</b>', client_secret=""))
    assert answer.status == 400 and answer.error_code == "missing_field"
    assert "<b>x</b>" not in answer.text and 'value="c&quot;&gt;&lt;b&gt;x&lt;/b&gt;"' in answer.text


def test_no_client_secret_in_any_page_or_log(
    broker: Broker, jira2: FakeJira, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-secret-0123456789abcdef"
    page = _open(broker, _setup_link(broker))
    answers = [
        page.answer,
        _post(broker, page, _oauth2_fields(jira2, client_secret=wrong)),  # oauth2_client_rejected
        _post(broker, page, _oauth2_fields(jira2, scopes=())),  # invalid_scopes
        _post(broker, page, _oauth2_fields(jira2, client_id="")),  # missing_field
        _post(broker, page, _oauth2_fields(jira2), files={}),  # multipart: verified
    ]
    assert [a.status for a in answers] == [200, 422, 400, 400, 303]
    answers.append(broker.browser("GET", jira2.oauth2_approve(answers[-1].headers["Location"], "alice")))
    answers.append(broker.browser("GET", _setup_link(broker)))
    answers.append(broker.call("GET", "/v1/teams/acme/jira"))
    assert [a.status for a in answers[-3:]] == [200, 200, 200]
    captured = capfd.readouterr()
    logs = "\n".join([captured.out, captured.err, caplog.text] + [str(r.__dict__) for r in caplog.records])
    assert "setup page: verification failed" in logs and "setup page: integration verified and saved" in logs
    responses = "\n".join(a.text + str(a.headers) for a in answers)
    for secret in (CLIENT_SECRET, wrong):
        assert secret not in responses, "a client secret reached a response"
        assert secret not in logs, "a client secret reached the logs"
