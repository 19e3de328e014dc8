"""The admin's setup link and page (Chalice's test client): the API, the page and its headers, generating a
key, verify and connect, failures, the own-key paths, CSRF, and forged, expired and used links."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import boto3
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from chalicelib import clock
from chalicelib.store import Store
from tests.conftest import (
    ACME_KEY,
    API_KEY,
    CONSUMER_KEY,
    PUBLIC_URL,
    Answer,
    Broker,
    _pem,
    assert_page,
    request_token_of,
)
from tests.fakejira import FakeJira

SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin", "Origin": "null"}


@dataclass
class SetupPage:
    """A setup page as a browser holds it: the answer, the form's CSRF token and the cookie."""

    url: str
    answer: Answer
    csrf: str
    cookie: str

    @property
    def text(self) -> str:
        return self.answer.text


def _setup_link(broker: Broker, team: str = "acme", user: str = "alice", **body: Any) -> str:
    answer = broker.call("POST", f"/v1/teams/{team}/jira/setup-link", {"user": user, **body})
    assert answer.status == 201, answer.body
    return str(answer.json["url"])


def _open(broker: Broker, url: str, cookie: str | None = None) -> SetupPage:
    answer = broker.browser("GET", url, headers={"Cookie": cookie} if cookie else None)
    assert answer.status == 200, answer.body
    match = re.search(r'name=csrf_token value="([^"]+)"', answer.text)
    assert match, answer.text
    set_cookie = answer.headers["Set-Cookie"]
    return SetupPage(url, answer, match.group(1), set_cookie.split(";", 1)[0])


Fields = dict[str, str] | list[tuple[str, str]]  # a list: a name may repeat, as ticked checkboxes do


def _pairs(fields: Fields) -> list[tuple[str, str]]:
    return list(fields.items()) if isinstance(fields, dict) else list(fields)


def _multipart(fields: Fields, files: dict[str, tuple[str, bytes]]) -> tuple[str, bytes]:
    boundary = "----brokertest7MA4YWxkTrZu0gW"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in _pairs(fields)
    ]
    for name, (filename, content) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + content + b"\r\n")
    return f"multipart/form-data; boundary={boundary}", b"".join(parts) + f"--{boundary}--\r\n".encode()


def _post(
    broker: Broker,
    page: SetupPage | str,
    fields: Fields,
    *,
    cookie: str | None = None,
    files: dict[str, tuple[str, bytes]] | None = None,
    headers: dict[str, str] | None = None,
    csrf: bool = True,
) -> Answer:
    """Send the setup form as the page's browser would (its CSRF token and cookie), unless told otherwise."""
    url = page.url if isinstance(page, SetupPage) else page
    if isinstance(page, SetupPage):
        cookie = page.cookie if cookie is None else cookie
        if csrf:
            fields = [("csrf_token", page.csrf), *_pairs(fields)]
    if files is not None:
        content_type, body = _multipart(fields, files)
    else:
        content_type, body = "application/x-www-form-urlencoded", urlencode(fields).encode()
    sent = {"Content-Type": content_type, **SAME_ORIGIN, **(headers or {})}
    if cookie:
        sent["Cookie"] = cookie
    response = broker.client.http.request("POST", urlsplit(url).path, headers=sent, body=body)
    answer = Answer(response.status_code, dict(response.headers), response.body)
    broker.keep_cookies(answer)  # the browser keeps the sign-in cookie for Jira's callback
    return answer


def _verify_fields(jira: FakeJira, **extra: str) -> dict[str, str]:
    return {"action": "verify", "base_url": jira.base_url, "consumer_key": CONSUMER_KEY, **extra}


def _public_key_on(page: str) -> str:
    match = re.search(r"<textarea id=public-key[^>]*>([^<]+)</textarea>", page)
    assert match, page
    return match.group(1).replace("&#x27;", "'")


def _assert_page_headers(answer: Answer) -> None:
    csp = answer.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    assert answer.headers["Cache-Control"] == "no-store"


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def _shift_clock(monkeypatch: pytest.MonkeyPatch, seconds: int) -> None:
    real = time.time
    monkeypatch.setattr(clock, "now", lambda: int(real()) + seconds)


def _secret_names() -> list[str]:
    return [s["Name"] for s in boto3.client("secretsmanager").list_secrets()["SecretList"]]


# -- the API: a setup link -------------------------------------------------------------------------
def test_setup_link_works_before_any_integration(broker: Broker, store: Store) -> None:
    answer = broker.call("POST", "/v1/teams/acme/jira/setup-link", {"user": "alice"})
    assert answer.status == 201, answer.body
    assert answer.json["url"].startswith(f"{PUBLIC_URL}/setup/")
    assert answer.json["expires_in"] == 3600
    assert answer.json["expires_at"].endswith("Z")
    assert broker.call("GET", "/v1/teams/acme/jira").status == 404  # nothing was set up by making a link
    longer = broker.call("POST", "/v1/teams/acme/jira/setup-link", {"user": "alice", "expires_in": 86400})
    assert longer.status == 201 and longer.json["expires_in"] == 86400


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "missing_field"),
        ({"user": ""}, "missing_field"),
        ({"user": "al ice"}, "invalid_user"),
        ({"user": 5}, "invalid_user"),
        ({"user": "alice", "expires_in": 10}, "invalid_expires_in"),
        ({"user": "alice", "expires_in": "3600"}, "invalid_expires_in"),
        ({"user": "alice", "expires_in": 86401}, "invalid_expires_in"),
    ],
)
def test_setup_link_request_errors(broker: Broker, body: dict[str, Any], code: str) -> None:
    answer = broker.call("POST", "/v1/teams/acme/jira/setup-link", body)
    assert answer.status == 400 and answer.error_code == code, answer.body
    assert answer.json["error"]["code"] == code


def test_setup_link_team_id_and_key_scope(broker: Broker) -> None:
    assert broker.call("POST", "/v1/teams/ac%20me/jira/setup-link", {"user": "alice"}).error_code == "invalid_team"
    other = broker.call("POST", "/v1/teams/globex/jira/setup-link", {"user": "alice"}, key=ACME_KEY)
    assert other.status == 403 and other.error_code == "team_forbidden"
    assert broker.call("POST", "/v1/teams/acme/jira/setup-link", {"user": "alice"}, key=ACME_KEY).status == 201
    assert broker.call("POST", "/v1/teams/acme/jira/setup-link", {"user": "alice"}, key=None).status == 401
    assert broker.call("POST", "/v1/teams/acme/jira/setup-link", {"user": "alice"}, key="jb_nope").status == 403


# -- the page ----------------------------------------------------------------------------------------
def test_page_walks_through_the_setup_and_changes_nothing(broker: Broker, jira: FakeJira, store: Store) -> None:
    url = _setup_link(broker)
    before = boto3.client("dynamodb").scan(TableName=store.table_name)["Items"]
    secrets_before = _secret_names()
    page = _open(broker, url)
    assert_page(
        page.answer,
        200,
        None,
        "Set up Jira for team acme",
        "<strong>alice</strong>",
        "Generate a key pair here",
        "I have a private key",
        "Jira 9",
        "Jira 8",
        "Create link",
        "Create new link",
        "Atlassian product",
        "Generic Application",
        "Create incoming link",
        "Application URL",
        PUBLIC_URL,
        f"<code>{CONSUMER_KEY}</code>",
        "Verify and connect",
        "not set up yet",
    )
    # Labelled fields, and the own-key fields belong to the main form.
    for field_id in ("base-url", "consumer-key", "private-key", "private-key-file"):
        assert f"<label for={field_id}>" in page.text and f"id={field_id} " in page.text
    assert "name=private_key form=setup-form" in page.text and "<form id=setup-form" in page.text
    # Opening the page writes nothing and asks Jira nothing.
    assert boto3.client("dynamodb").scan(TableName=store.table_name)["Items"] == before
    assert _secret_names() == secrets_before
    assert jira.requests == []


def test_page_headers_csp_hashes_and_cookie(broker: Broker) -> None:
    page = _open(broker, _setup_link(broker))
    _assert_page_headers(page.answer)
    csp = page.answer.headers["Content-Security-Policy"]
    # The page's one style and one script are exactly those the CSP allows by hash; nothing else runs.
    (style,) = re.findall(r"<style>(.*?)</style>", page.text, re.S)
    (script,) = re.findall(r"<script>(.*?)</script>", page.text, re.S)
    assert f"style-src 'sha256-{_sha256(style)}'" in csp
    assert f"script-src 'sha256-{_sha256(script)}'" in csp
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", page.text)  # no inline event handlers
    assert "<link" not in page.text and "src=" not in page.text  # no external assets
    assert "form-action 'self' https: http:" in csp  # the last redirect goes to the Jira typed on the page
    cookie = page.answer.headers["Set-Cookie"]
    assert cookie.startswith("broker_setup_csrf=") and page.csrf in cookie
    for attribute in ("Path=/setup", "HttpOnly", "SameSite=Strict"):
        assert attribute in cookie
    # The same browser keeps its token when it opens the page again.
    again = _open(broker, page.url, cookie=page.cookie)
    assert again.csrf == page.csrf


def test_connect_pages_still_have_no_script(connected: Broker) -> None:
    page = connected.browser("GET", connected.connect_link(user="bob"))
    assert page.status == 200 and "<script" not in page.text
    assert "script-src" not in page.headers["Content-Security-Policy"]


# -- generate a key pair, verify and connect -----------------------------------------------------------
def test_generated_key_then_verify_and_connect(broker: Broker, jira: FakeJira, store: Store) -> None:
    page = _open(broker, _setup_link(broker))
    generated = _post(broker, page, {"action": "generate"})
    assert generated.status == 303 and generated.headers["Location"] == f"{page.url}#key"
    assert not generated.body
    # The page now shows the public key (with a copy button); the private key stays in the broker.
    shown = _open(broker, page.url, cookie=page.cookie)
    public = _public_key_on(shown.text)
    assert public.startswith("-----BEGIN PUBLIC KEY-----") and "PRIVATE" not in shown.text.replace("PRIVATE KEY---", "")
    assert "data-copy=public-key" in shown.text and "Generate a new key pair" in shown.text
    assert "sha256:" in shown.text

    # The admin pastes it into Jira's Application Link...
    jira.add_consumer(CONSUMER_KEY, public)
    jira.clear_requests()
    # ...and verifies: the broker proves it against Jira, saves it, and sends the admin on to Jira.
    answer = _post(broker, shown, _verify_fields(jira), files={"private_key_file": ("", b"")})
    assert answer.status == 303, answer.body
    location = answer.headers["Location"]
    assert location.startswith(f"{jira.base_url}/plugins/servlet/oauth/authorize?oauth_token=")
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    integration = broker.call("GET", "/v1/teams/acme/jira")
    assert integration.status == 200 and integration.json["public_key"].strip() == public.strip()
    assert not any(name.endswith("/pending-key") for name in _secret_names())  # the pending key became the team's

    # Jira's Allow page sends the admin back: connected.
    done = broker.browser("GET", jira.approve(request_token_of(location), "alice"))
    assert_page(done, 200, None, "Connected as Alice Example", "alice", "acme", urlsplit(jira.base_url).netloc)
    assert broker.call("GET", "/v1/teams/acme/users/alice/jira").json["jira_user"]["name"] == "alice"

    # The setup link worked once.
    used = broker.browser("GET", page.url)
    assert_page(used, 410, "link_used", "already used", "alice", "acme", urlsplit(jira.base_url).netloc)
    assert_page(_post(broker, page, _verify_fields(jira)), 410, "link_used")


def test_generating_again_replaces_the_pending_key(broker: Broker) -> None:
    page = _open(broker, _setup_link(broker))
    assert _post(broker, page, {"action": "generate"}).status == 303
    first = _public_key_on(_open(broker, page.url, cookie=page.cookie).text)
    assert _post(broker, page, {"action": "generate"}).status == 303
    second = _public_key_on(_open(broker, page.url, cookie=page.cookie).text)
    assert first != second


def test_failure_shows_the_cause_and_keeps_what_was_typed(broker: Broker, jira: FakeJira) -> None:
    page = _open(broker, _setup_link(broker))
    assert _post(broker, page, {"action": "generate"}).status == 303
    answer = _post(broker, page, _verify_fields(jira, consumer_key="not-the-key"))
    assert_page(
        answer,
        422,
        "consumer_key_unknown",
        "The setup did not work",
        "no Application Link with consumer key",
        "What to do:",
        "Nothing was saved",
        f'value="{jira.base_url}"',
        'value="not-the-key"',
        "BEGIN PUBLIC KEY",  # the generated key is still shown
    )
    assert "role=alert" in answer.text and "was not kept" not in answer.text
    _assert_page_headers(answer)
    assert f'name=csrf_token value="{page.csrf}"' in answer.text  # the form can be sent again
    assert broker.call("GET", "/v1/teams/acme/jira").status == 404


def test_verify_without_any_key(broker: Broker, jira: FakeJira) -> None:
    page = _open(broker, _setup_link(broker))
    answer = _post(broker, page, _verify_fields(jira))
    assert_page(answer, 400, "private_key_required", "Generate a key pair in step 1")
    assert "POST /v1" not in answer.text
    assert jira.requests == []


def test_signature_invalid_with_a_key_jira_does_not_have(broker: Broker, jira: FakeJira) -> None:
    page = _open(broker, _setup_link(broker))
    assert _post(broker, page, {"action": "generate"}).status == 303  # but never given to Jira
    answer = _post(broker, page, _verify_fields(jira))
    assert_page(answer, 422, "signature_invalid", "rejected the signature", "public key shown in step 1")


# -- the admin's own key: pasted or uploaded --------------------------------------------------------------
def test_pasted_key(broker: Broker, jira: FakeJira, private_pem: str) -> None:
    page = _open(broker, _setup_link(broker))
    answer = _post(broker, page, _verify_fields(jira, private_key=private_pem))
    assert answer.status == 303, answer.body
    assert answer.headers["Location"].startswith(f"{jira.base_url}/plugins/servlet/oauth/authorize?")


def test_uploaded_key_file(broker: Broker, jira: FakeJira, pkcs1_pem: str) -> None:
    page = _open(broker, _setup_link(broker))
    answer = _post(
        broker,
        page,
        _verify_fields(jira, private_key=""),
        files={"private_key_file": ("jira.pem", pkcs1_pem.encode())},
    )
    assert answer.status == 303, answer.body
    assert answer.headers["Location"].startswith(f"{jira.base_url}/plugins/servlet/oauth/authorize?")


def test_a_pasted_key_is_never_shown_again(broker: Broker, jira: FakeJira, private_pem: str) -> None:
    page = _open(broker, _setup_link(broker))
    lines = [line for line in private_pem.splitlines() if "-----" not in line]
    failed = _post(broker, page, _verify_fields(jira, consumer_key="nope", private_key=private_pem))
    assert_page(failed, 422, "consumer_key_unknown", "was not kept", 'value="nope"')
    assert "<details open><summary>I have a private key" in failed.text
    upload = {"private_key_file": ("k.pem", private_pem.encode())}
    uploaded = _post(broker, page, _verify_fields(jira, consumer_key="nope"), files=upload)
    assert_page(uploaded, 422, "consumer_key_unknown", "was not kept")
    garbage = _post(broker, page, _verify_fields(jira, private_key="-----BEGIN PRIVATE KEY-----\nnot-base64-at-all\n"))
    assert_page(garbage, 400, "invalid_private_key", "not a readable PEM")
    for answer in (failed, uploaded, garbage):
        assert "not-base64-at-all" not in answer.text
        assert not any(line in answer.text for line in lines)


def test_a_public_key_pasted_as_private(broker: Broker, jira: FakeJira, rsa_key: rsa.RSAPrivateKey) -> None:
    from chalicelib.keys import public_pem

    page = _open(broker, _setup_link(broker))
    answer = _post(broker, page, _verify_fields(jira, private_key=public_pem(rsa_key)))
    assert_page(answer, 400, "private_key_is_public", "private_key is a public key")


# -- CSRF and cross-site posts -------------------------------------------------------------------------------
@pytest.mark.parametrize("action", ["generate", "verify"])
def test_a_post_without_the_forms_token_is_refused(broker: Broker, jira: FakeJira, action: str) -> None:
    page = _open(broker, _setup_link(broker))
    fields = _verify_fields(jira, action=action)
    attempts = [
        _post(broker, page, fields, csrf=False),  # no token in the form
        _post(broker, page, {"csrf_token": "x" * 43, **fields}, csrf=False),  # a wrong token
        _post(broker, page.url, {"csrf_token": page.csrf, **fields}),  # no cookie (another browser)
        _post(broker, page, fields, cookie="broker_setup_csrf=" + "y" * 43),  # another browser's cookie
    ]
    for answer in attempts:
        assert_page(answer, 403, "csrf_token_invalid", "security token", "changed nothing", "alice", "acme")
        _assert_page_headers(answer)
    assert not any(name.endswith("/pending-key") for name in _secret_names())
    assert jira.requests == []


def test_a_cross_site_post_is_refused(broker: Broker, jira: FakeJira) -> None:
    page = _open(broker, _setup_link(broker))
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example", "Sec-Fetch-Site": ""}):
        answer = _post(broker, page, {"action": "generate"}, headers=headers)
        assert_page(answer, 403, "cross_site_request", "another site", "changed nothing")
    assert not any(name.endswith("/pending-key") for name in _secret_names())


def test_unreadable_or_oversized_forms(broker: Broker) -> None:
    page = _open(broker, _setup_link(broker))
    big = _post(broker, page, {"action": "verify", "private_key": "A" * 70_000})
    assert_page(big, 413, "body_too_large", "larger than")
    sent = {"Content-Type": "text/plain", "Cookie": page.cookie, **SAME_ORIGIN}
    response = broker.client.http.request("POST", urlsplit(page.url).path, headers=sent, body=b"action=generate")
    assert response.status_code == 400 and response.headers["X-Broker-Error"] == "invalid_body"


# -- forged, expired and used links ------------------------------------------------------------------------
def test_forged_and_mixed_up_links(broker: Broker, connected: Broker) -> None:
    url = _setup_link(broker)
    token = url.rsplit("/", 1)[1]
    connect_token = connected.connect_link(user="bob").rsplit("/", 1)[1]
    for bad in (url[:-2] + "xx", f"{PUBLIC_URL}/setup/nonsense", f"{PUBLIC_URL}/setup/{connect_token}"):
        answer = broker.browser("GET", bad)
        assert_page(answer, 404, "link_invalid", "This link is not valid", "new setup link")
        assert "alice" not in answer.text and "bob" not in answer.text  # a forged link says nothing about anyone
        _assert_page_headers(answer)
        assert_page(_post(broker, bad, {"action": "generate"}), 404, "link_invalid")
    # A setup link is not a connect link either.
    assert_page(broker.browser("GET", f"{PUBLIC_URL}/connect/{token}"), 404, "link_invalid")


def test_expired_setup_link_names_the_team_and_user(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    url = _setup_link(broker, user="carol", expires_in=60)
    page = _open(broker, url)
    _shift_clock(monkeypatch, 61)
    for answer in (broker.browser("GET", url), _post(broker, page, {"action": "generate"})):
        assert_page(answer, 410, "link_expired", "This link has expired", "carol", "acme", "new setup link")
        _assert_page_headers(answer)


def test_expired_and_used_connect_links_name_jira_and_user(
    connected: Broker, jira: FakeJira, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = urlsplit(jira.base_url).netloc
    link = connected.connect_link(user="bob", expires_in=60)
    rt = connected.start_dance(connected.connect_link())
    assert connected.browser("GET", jira.approve(rt, "alice")).status == 200
    _shift_clock(monkeypatch, 61)
    expired = connected.browser("GET", link)
    assert_page(expired, 410, "link_expired", "This link has expired", "bob", "acme", host, "new link")
    _assert_page_headers(expired)


def test_existing_integration_is_named_and_kept_by_default(connected: Broker, jira: FakeJira) -> None:
    page = _open(connected, _setup_link(connected))
    host = urlsplit(jira.base_url).netloc
    assert_page(page.answer, 200, None, "already has Jira at", host, f'value="{jira.base_url}"')
    # Verify without a new key: the team's current key stays, and so do its connections.
    answer = _post(connected, page, _verify_fields(jira))
    assert answer.status == 303, answer.body
    assert connected.call("GET", "/v1/teams/acme/users/alice/jira").status == 200


def test_when_going_on_to_jira_fails_the_admin_gets_the_connect_page(
    broker: Broker, jira: FakeJira, private_pem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib import signin
    from chalicelib.errors import JiraUnreachable

    def unreachable(token: str, browser_id: str | None, settings: Any = None) -> str:
        raise JiraUnreachable("down")

    monkeypatch.setattr(signin, "start", unreachable)
    page = _open(broker, _setup_link(broker))
    answer = _post(broker, page, _verify_fields(jira, private_key=private_pem))
    assert answer.status == 303 and answer.headers["Location"].startswith(f"{PUBLIC_URL}/connect/")
    assert broker.call("GET", "/v1/teams/acme/jira").status == 200  # the setup itself is saved
    monkeypatch.undo()
    assert_page(broker.browser("GET", answer.headers["Location"]), 200, None, "Continue to Jira", "alice")


def test_a_slow_setup_leaves_going_on_to_jira_to_the_connect_page(
    broker: Broker, jira: FakeJira, private_pem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = _open(broker, _setup_link(broker))
    jira.clear_requests()
    # Proving the setup uses up the request's time budget: the request token arrives (0.4 s), Jira's
    # server info is cut off at 0.6 s (it is optional), and no time is left to go on to Jira.
    monkeypatch.setenv("BROKER_REQUEST_BUDGET_SECONDS", "0.6")
    jira.delay = 0.4
    answer = _post(broker, page, _verify_fields(jira, private_key=private_pem))
    jira.delay = 0
    assert answer.status == 303 and answer.headers["Location"].startswith(f"{PUBLIC_URL}/connect/")
    assert sum(r.path.endswith("/request-token") for r in jira.requests) == 1  # the proof only
    assert broker.call("GET", "/v1/teams/acme/jira").status == 200


# -- escaping and secrets ----------------------------------------------------------------------------------------
def test_echoed_values_are_escaped(broker: Broker, jira: FakeJira) -> None:
    page = _open(broker, _setup_link(broker))
    evil_url = 'https://x.example/"><script>alert(1)</script>'
    answer = _post(broker, page, _verify_fields(jira, base_url=evil_url, consumer_key='k"><b>x</b>'))
    assert answer.status == 400 and answer.error_code == "private_key_required"  # the values come back...
    assert "<script>alert(1)" not in answer.text and "<b>x</b>" not in answer.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text
    assert 'value="k&quot;&gt;&lt;b&gt;x&lt;/b&gt;"' in answer.text


def test_no_private_key_in_any_response_or_log(
    broker: Broker,
    jira: FakeJira,
    private_pem: str,
    other_rsa_key: rsa.RSAPrivateKey,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    answers: list[Answer] = []
    wrong = _pem(other_rsa_key)
    page = _open(broker, _setup_link(broker))
    answers.append(page.answer)
    answers.append(_post(broker, page, _verify_fields(jira, private_key=wrong)))  # signature_invalid
    answers.append(_post(broker, page, _verify_fields(jira, consumer_key="nope", private_key=private_pem)))
    answers.append(_post(broker, page, _verify_fields(jira), files={"private_key_file": ("k.pem", wrong.encode())}))
    answers.append(_post(broker, page, {"action": "generate"}))
    answers.append(broker.browser("GET", page.url, headers={"Cookie": page.cookie}))
    answers.append(_post(broker, page, _verify_fields(jira, private_key=private_pem)))
    assert [a.status for a in answers] == [200, 422, 422, 422, 303, 200, 303]
    captured = capfd.readouterr()
    logs = "\n".join([captured.out, captured.err, caplog.text] + [str(r.__dict__) for r in caplog.records])
    assert "setup page: verification failed" in logs and "setup page: integration verified and saved" in logs
    responses = "\n".join(a.text + str(a.headers) for a in answers)
    store_pending = boto3.client("secretsmanager")
    current = Store("jira-oauth-broker-local").get_integration("acme")
    assert current is not None
    team_key = store_pending.get_secret_value(SecretId=current["key_secret"])
    for pem in (private_pem, wrong, team_key["SecretString"]):
        for line in pem.splitlines():
            if "-----" in line:
                continue
            assert line not in logs, "a private key reached the logs"
            assert line not in responses, "a private key reached a response"
    token = page.url.rsplit("/", 1)[1]
    assert token not in logs and API_KEY not in logs
