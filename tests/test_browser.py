"""The pages in a real browser: Debian's Chromium, driven by Playwright, against the real local stack
(`make run`'s runner: embedded moto + chalice local) and the fake Jira on loopback.

An admin goes from a setup link to a verified integration and their own connected account with the
broker-generated key (OAuth 1.0a), or with an OAuth 2.0 incoming link and no JavaScript; users connect,
deny, and open expired and used links. Every page's headers are
checked as the browser received them, no CSP violation may occur, and each page is saved as a
screenshot under test-output/screenshots/ (`make test-browser`).

Skips, saying why, without /usr/bin/chromium or the playwright package (`pip install playwright`;
never `playwright install`: the browser is Debian's).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from chalicelib.links import CONNECT, LinkClaims, LinkSigner, new_link_id
from scripts.local_aws import FAKE_CREDENTIALS
from tests.conftest import CONSUMER_KEY, public_pem
from tests.fakejira import FakeJira
from tests.localstack import LocalStack, local_stack

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Response

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
# Chromium as root in a container: no sandbox, no GPU, and nothing that phones home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1100, "height": 900}
API_KEY = "jb_browser-key-00000000000000000000000000000"
SIGNING_KEY_SECRET = "jira-oauth-broker/local/broker/link-signing-key"
OAUTH1_CHOICE = "OAuth 1.0a Application Link"
OAUTH2_CHOICE = "OAuth 2.0 (Jira Data Center 8.22 or later"


# -- the browser, the local stack, the fake Jira ------------------------------------------------------
@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); the browser tests need it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed: .venv/bin/pip install playwright")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def link_signer(stack: LocalStack) -> LinkSigner:
    """The broker's own link signer, read from the stack's moto (to mint an already-expired link)."""
    client = boto3.client(
        "secretsmanager",
        endpoint_url=stack.moto,
        region_name="us-east-1",
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    return LinkSigner(client.get_secret_value(SecretId=SIGNING_KEY_SECRET)["SecretString"].encode())


@pytest.fixture(scope="module")
def stack(chromium: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with local_stack(tmp_path_factory.mktemp("browser") / "run_local.log", API_KEY) as running:
        assert running.moto, running.output()
        yield running


@pytest.fixture(scope="module")
def fake_jira() -> Iterator[FakeJira]:
    """A Jira with users and no Application Link yet: the admin creates it during the test."""
    with FakeJira(context_path="/jira") as fake:
        fake.add_user("alice", key="JIRAUSER10100", display_name="Alice Example", email="alice@example.com")
        fake.add_user("bob", key="JIRAUSER10200", display_name="Bob <Builder>", email="bob@example.com")
        yield fake


# -- watching what the browser gets --------------------------------------------------------------------
@dataclass
class Watch:
    """Every broker page the browser received (with its headers), and every console error."""

    origin: str
    pages: list[tuple[str, int, dict[str, str]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> Page:
        page.on("response", self._response)
        page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        return page

    def _response(self, response: Response) -> None:
        headers = response.headers
        if response.url.startswith(self.origin) and headers.get("content-type", "").startswith("text/html"):
            self.pages.append((urlsplit(response.url).path.split("/")[1], response.status, headers))

    def check(self) -> None:
        """Each page carried the headers, and nothing on any page broke its CSP."""
        assert self.pages
        for kind, status, headers in self.pages:
            csp = headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp, (kind, status, csp)
            assert headers["referrer-policy"] == "no-referrer", (kind, status)
            assert headers["cache-control"] == "no-store", (kind, status)
            assert "script-src" not in csp or kind == "setup", (kind, csp)  # the copy button's page only
        csp_errors = [e for e in self.errors if "Content Security Policy" in e or "Refused" in e]
        assert not csp_errors, csp_errors


def _context(chromium: Browser, viewport: dict[str, int], **options: Any) -> BrowserContext:
    context = chromium.new_context(viewport=viewport, **options)
    context.set_default_timeout(20_000)
    return context


def _shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _fits(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.viewport_size
    assert viewport is not None and width <= viewport["width"], f"the page is {width}px wide"


def _heading(page: Page) -> str:
    return str(page.locator("h1").inner_text())


def _choose(page: Page, way: str) -> None:
    """Open one way on the setup page (a <details>: works without JavaScript)."""
    page.locator("summary", has_text=way).click()


def _allow_in_jira(page: Page, jira: FakeJira, username: str) -> None:
    """On the fake Jira's consent page: type who you are, click Allow."""
    page.wait_for_url(f"{jira.base_url}/plugins/servlet/oauth/authorize?**")
    form = page.locator("form").filter(has=page.get_by_role("button", name="Allow"))
    form.locator("input[name=username]").fill(username)
    form.get_by_role("button", name="Allow").click()


def _set_up_by_api(stack: LocalStack, jira: FakeJira, team: str, key: rsa.RSAPrivateKey, private_pem: str) -> None:
    consumer_key = f"broker-{team}"
    jira.add_consumer(consumer_key, public_pem(key))
    body = {"base_url": jira.base_url, "consumer_key": consumer_key, "private_key": private_pem}
    answer = stack.api("PUT", f"/v1/teams/{team}/jira", json=body)
    assert answer.status_code == 201, answer.text


# -- the admin -------------------------------------------------------------------------------------------------
def test_admin_goes_from_a_setup_link_to_a_connected_account(
    chromium: Browser, stack: LocalStack, fake_jira: FakeJira
) -> None:
    jira = fake_jira
    host = urlsplit(jira.base_url).netloc
    link = stack.api("POST", "/v1/teams/acme/jira/setup-link", json={"user": "alice"}).json()["url"]
    context = _context(chromium, DESKTOP)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
    watch = Watch(stack.url)
    page = watch.attach(context.new_page())

    # The chat bot's link opens the setup page.
    opened = page.goto(link)
    assert opened is not None and opened.status == 200
    assert _heading(page) == "Set up Jira for team acme"
    assert "connect your own Jira account, as alice" in page.inner_text("main")
    assert not page.get_by_text("Jira 9: the Application links page").is_visible()  # the admin chooses first
    _shot(page, "01-setup-page")
    _choose(page, OAUTH1_CHOICE)
    assert page.get_by_text("Jira 9: the Application links page").is_visible()
    oauth1 = page.locator("#setup-form")

    # 1. Let the broker make the key pair; the page shows the public key with a working copy button.
    page.get_by_role("button", name="Generate a key pair here").click()
    page.wait_for_url(f"{link}#key")
    public = page.get_by_label("Public key", exact=True).input_value()
    assert public.startswith("-----BEGIN PUBLIC KEY-----")
    copy = page.get_by_role("button", name="Copy public key")
    assert copy.is_visible()  # shown by the script (hidden without JavaScript)
    copy.click()
    page.get_by_role("button", name="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == public
    _shot(page, "02-setup-key-generated")

    # 2. The admin creates the Application Link in Jira with that public key.
    jira.add_consumer(CONSUMER_KEY, public)

    # 3. and 4. A typo in the consumer key: the page comes back naming the cause, keeping what was typed.
    oauth1.get_by_label("Jira base URL").fill(jira.base_url)
    page.get_by_label("Consumer key", exact=True).fill("jira-oauth-brokr")
    oauth1.get_by_role("button", name="Verify and connect").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "no Application Link with consumer key 'jira-oauth-brokr'" in alert.inner_text()
    assert oauth1.get_by_label("Jira base URL").input_value() == jira.base_url
    assert page.get_by_label("Consumer key", exact=True).input_value() == "jira-oauth-brokr"
    assert page.get_by_label("Public key", exact=True).input_value() == public
    _shot(page, "03-setup-failure")

    # Fixed: Verify and connect goes on to Jira's own Allow page...
    page.get_by_label("Consumer key", exact=True).fill(CONSUMER_KEY)
    oauth1.get_by_role("button", name="Verify and connect").click()
    page.wait_for_url(f"{jira.base_url}/plugins/servlet/oauth/authorize?**")
    assert "would like to access your data" in page.inner_text("body")
    _shot(page, "04-jira-authorize")

    # ...and back on the broker, the admin's own account is connected.
    _allow_in_jira(page, jira, "alice")
    page.wait_for_url(f"{stack.url}/oauth/callback?**")
    assert _heading(page) == "Connected as Alice Example"
    text = page.inner_text("main")
    assert host in text and "alice" in text and "acme" in text
    _shot(page, "05-connected")

    integration = stack.api("GET", "/v1/teams/acme/jira").json()
    assert integration["public_key"].strip() == public.strip() and integration["consumer_key"] == CONSUMER_KEY
    assert stack.api("GET", "/v1/teams/acme/users/alice/jira").json()["jira_user"]["name"] == "alice"

    # The setup link worked once.
    again = page.goto(link)
    assert again is not None and again.status == 410
    assert _heading(page) == "This link was already used"
    assert "alice" in page.inner_text("main") and host in page.inner_text("main")
    _shot(page, "06-setup-link-used")

    watch.check()
    context.close()


def test_setup_with_an_uploaded_key_file(
    chromium: Browser, stack: LocalStack, fake_jira: FakeJira, rsa_key: rsa.RSAPrivateKey, private_pem: str
) -> None:
    jira = fake_jira
    jira.add_consumer("broker-globex", public_pem(rsa_key))
    link = stack.api("POST", "/v1/teams/globex/jira/setup-link", json={"user": "bob"}).json()["url"]
    context = _context(chromium, DESKTOP)
    watch = Watch(stack.url)
    page = watch.attach(context.new_page())
    page.goto(link)
    _choose(page, OAUTH1_CHOICE)
    page.get_by_text("I have a private key").click()
    page.get_by_label("Or its file").set_input_files(
        files=[{"name": "jira.pem", "mimeType": "application/x-pem-file", "buffer": private_pem.encode()}]
    )
    oauth1 = page.locator("#setup-form")
    oauth1.get_by_label("Jira base URL").fill(jira.base_url)
    page.get_by_label("Consumer key", exact=True).fill("broker-globex")
    _shot(page, "12-setup-own-key")
    oauth1.get_by_role("button", name="Verify and connect").click()
    _allow_in_jira(page, jira, "bob")
    page.wait_for_url(f"{stack.url}/oauth/callback?**")
    assert _heading(page) == "Connected as Bob <Builder>"  # escaped in the HTML, shown as typed
    assert stack.api("GET", "/v1/teams/globex/jira").json()["consumer_key"] == "broker-globex"
    watch.check()
    context.close()


def test_setup_page_on_a_phone_without_javascript(chromium: Browser, stack: LocalStack) -> None:
    link = stack.api("POST", "/v1/teams/hooli/jira/setup-link", json={"user": "gavin"}).json()["url"]
    context = _context(chromium, PHONE, is_mobile=True, has_touch=True, java_script_enabled=False)
    watch = Watch(stack.url)
    page = watch.attach(context.new_page())
    page.goto(link)
    _fits(page)
    _shot(page, "13-setup-page-phone-no-javascript")
    # Choosing a way and the forms work without JavaScript; only the copy buttons stay hidden.
    _choose(page, OAUTH1_CHOICE)
    page.get_by_role("button", name="Generate a key pair here").click()
    page.wait_for_url(f"{link}#key")
    assert page.get_by_label("Public key", exact=True).input_value().startswith("-----BEGIN PUBLIC KEY-----")
    assert page.locator("button[data-copy]").count() == 3  # public key, Application URL, redirect URL
    assert not page.locator("button[data-copy]").first.is_visible()
    _fits(page)
    _choose(page, OAUTH2_CHOICE)
    assert page.get_by_text("Create the incoming link in Jira").is_visible()
    assert not page.locator("button[data-copy=redirect-uri]").is_visible()
    _fits(page)
    watch.check()
    context.close()


def test_admin_sets_up_oauth2_without_javascript(chromium: Browser, stack: LocalStack, fake_jira: FakeJira) -> None:
    jira = fake_jira
    client_id, secret = "broker-browser-client", "secret-of-the-browser-link-0123456789"
    redirect_uri = f"{stack.url}/oauth2/callback"
    jira.add_oauth2_client(client_id, secret, redirect_uri, scopes=("READ", "WRITE"))
    link = stack.api("POST", "/v1/teams/wayne/jira/setup-link", json={"user": "alice"}).json()["url"]
    context = _context(chromium, PHONE, is_mobile=True, has_touch=True, java_script_enabled=False)
    watch = Watch(stack.url)
    page = watch.attach(context.new_page())
    page.goto(link)

    # The admin picks OAuth 2.0: the redirect URL to paste into Jira is there to copy, exactly.
    _choose(page, OAUTH2_CHOICE)
    assert page.locator("#redirect-uri").inner_text() == redirect_uri
    oauth2 = page.locator("#oauth2-form")
    write, read = (oauth2.locator(f"input[name=scopes][value={scope}]") for scope in ("WRITE", "READ"))
    assert write.is_checked() and not read.is_checked()  # WRITE by default
    oauth2.get_by_label("Jira base URL").fill(jira.base_url)
    oauth2.get_by_label("Client ID").fill(client_id)
    oauth2.get_by_label("Client secret").fill("not-the-secret")
    read.check()
    _fits(page)
    _shot(page, "14-setup-oauth2-phone-no-javascript")

    # A wrong secret: the page names the cause, keeps the rest, and drops the secret.
    oauth2.get_by_role("button", name="Verify and connect").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "does not accept client id" in alert.inner_text() and "was not kept" in alert.inner_text()
    oauth2 = page.locator("#oauth2-form")
    assert oauth2.get_by_label("Client ID").input_value() == client_id
    assert oauth2.get_by_label("Client secret").input_value() == ""
    assert oauth2.locator("input[name=scopes][value=READ]").is_checked()
    assert oauth2.locator("input[name=scopes][value=WRITE]").is_checked()
    _shot(page, "15-setup-oauth2-failure")

    # The right secret: on to Jira's OAuth 2.0 consent page, asking for the ticked scopes.
    oauth2.get_by_label("Client secret").fill(secret)
    oauth2.get_by_role("button", name="Verify and connect").click()
    page.wait_for_url(f"{jira.base_url}/rest/oauth2/latest/authorize?**")
    assert f"{client_id} would like to access your Jira account with the permissions READ, WRITE" in page.inner_text(
        "body"
    )
    _shot(page, "16-jira-oauth2-consent")
    form = page.locator("form").filter(has=page.get_by_role("button", name="Allow"))
    form.locator("input[name=username]").fill("alice")
    form.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{redirect_uri}?**")
    assert _heading(page) == "Connected as Alice Example"
    _shot(page, "17-connected-oauth2")

    integration = stack.api("GET", "/v1/teams/wayne/jira").json()
    assert integration["auth"] == "oauth2" and integration["client_id"] == client_id
    assert integration["scopes"] == ["READ", "WRITE"] and integration["redirect_uri"] == redirect_uri
    assert secret not in str(integration)
    assert stack.api("GET", "/v1/teams/wayne/users/alice/jira").json()["jira_user"]["name"] == "alice"
    assert secret not in stack.output()
    watch.check()
    context.close()


# -- users ---------------------------------------------------------------------------------------------------------
def test_users_connect_deny_and_meet_expired_and_used_links(
    chromium: Browser, stack: LocalStack, fake_jira: FakeJira, rsa_key: rsa.RSAPrivateKey, private_pem: str
) -> None:
    jira = fake_jira
    host = urlsplit(jira.base_url).netloc + "/jira"
    _set_up_by_api(stack, jira, "initech", rsa_key, private_pem)
    context = _context(chromium, PHONE, is_mobile=True, has_touch=True)
    watch = Watch(stack.url)
    page = watch.attach(context.new_page())

    # Bob's connect link: the page says whose account, on which Jira, and what to do.
    link = stack.api("POST", "/v1/teams/initech/users/bob/jira/connect-link", json={}).json()["url"]
    opened = page.goto(link)
    assert opened is not None and opened.status == 200
    assert f"You are connecting Jira at {host} for bob in team initech." in page.inner_text("main")
    _fits(page)
    _shot(page, "07-connect-page")
    page.get_by_role("button", name="Continue to Jira").click()
    _allow_in_jira(page, jira, "bob")
    page.wait_for_url(f"{stack.url}/oauth/callback?**")
    assert _heading(page) == "Connected as Bob <Builder>"
    _fits(page)
    _shot(page, "08-connected-phone")

    # The same link again: already used.
    used = page.goto(link)
    assert used is not None and used.status == 410
    assert _heading(page) == "This link was already used"
    assert "bob" in page.inner_text("main") and host in page.inner_text("main")
    _shot(page, "09-connect-link-used")

    # Alice clicks Deny in Jira.
    link = stack.api("POST", "/v1/teams/initech/users/alice/jira/connect-link", json={}).json()["url"]
    page.goto(link)
    page.get_by_role("button", name="Continue to Jira").click()
    page.wait_for_url(f"{jira.base_url}/plugins/servlet/oauth/authorize?**")
    page.get_by_role("button", name="Deny").click()
    page.wait_for_url(f"{stack.url}/oauth/callback?**")
    assert _heading(page) == "Access denied"
    assert f"You denied access in Jira at {host}, so alice in team initech is not connected" in page.inner_text("main")
    _fits(page)
    _shot(page, "10-denied")

    # A link that expired: the page still says whose it was and what to do.
    claims = LinkClaims(CONNECT, new_link_id(), "initech", "alice", int(time.time()) - 60)
    expired = page.goto(f"{stack.url}/connect/{link_signer(stack).mint(claims)}")
    assert expired is not None and expired.status == 410
    assert _heading(page) == "This link has expired"
    text = page.inner_text("main")
    assert f"connect Jira at {host} for alice in team initech" in text and "Ask your chat bot for a new link" in text
    _fits(page)
    _shot(page, "11-expired-link")

    assert stack.api("GET", "/v1/teams/initech/users/bob/jira").json()["connected"] is True
    assert stack.api("GET", "/v1/teams/initech/users/alice/jira").status_code == 404
    watch.check()
    context.close()


def test_no_link_token_reaches_the_stacks_log(stack: LocalStack) -> None:
    setup_url = stack.api("POST", "/v1/teams/umbrella/jira/setup-link", json={"user": "ada"}).json()["url"]
    assert requests.get(setup_url, timeout=30).status_code == 200
    assert requests.get(f"{stack.url}/connect/eyJub3QiOiJyZWFsIn0.x", timeout=30).status_code == 404
    output = stack.output()
    assert setup_url.rsplit("/", 1)[1] not in output
    assert "/setup/[redacted]" in output and "/connect/[redacted]" in output
    assert not re.search(r"/(setup|connect)/eyJ", output)
    assert "BEGIN RSA PRIVATE KEY" not in output and "BEGIN PRIVATE KEY" not in output
