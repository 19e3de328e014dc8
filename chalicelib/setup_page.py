"""The admin's setup page, on the shared template of :mod:`pages` (its copy button is the one script).

The admin chooses how the broker signs in to Jira, each way with its own form (both work without
JavaScript: each choice is a ``<details>``, opened by the server where it matters):

- OAuth 2.0 (Jira Data Center 8.22+): Jira's External application → Incoming link, then the client ID,
  secret and scopes (:mod:`setup_page_oauth2`).
- OAuth 1.0a Application Link (any Jira Server/Data Center): the key pair, Jira's Application Link
  screens, Jira's address and the consumer key.

Example::

    return setup_page(SetupView(team="acme", user="alice", action=url, csrf_token=token, ...))
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from chalice import Response

from .errors import BrokerError
from .pages import render, who_line
from .setup_page_oauth2 import OAuth2View, oauth2_part

APPLICATION_NAME = "Jira OAuth broker"

_SETUP_NEXT_STEP = {
    "consumer_key_unknown": "Compare the consumer key on Jira's incoming authentication screen (step 2) with "
    "the one in step 3: they must be exactly the same.",
    "signature_invalid": "Check that Jira's Application Link holds the public key shown in step 1 (all of "
    "it), and that the base URL is Jira's own Base URL.",
    "jira_unreachable": "Check the base URL for typos, and that Jira can be reached from the broker.",
    "jira_timeout": "Check that Jira is up, then try again.",
    "jira_tls_error": "Jira's HTTPS certificate must be valid and trusted; check the base URL and the certificate.",
    "invalid_base_url": "Type the address people open Jira at, such as https://jira.example.com.",
    "oauth2_client_rejected": "Open the incoming link in Jira (Administration > Applications > Application "
    "links) and copy its client ID and client secret again, whole; check that the base URL is that Jira's.",
    "oauth2_not_available": "OAuth 2.0 needs Jira Data Center 8.22 or later. On an older Jira, choose the OAuth "
    "1.0a Application Link instead. Also check that the base URL includes Jira's context path, if it has one.",
    "invalid_scopes": "Tick at least one scope: the same ones as on Jira's incoming link.",
    "invalid_client_id": "Copy the client ID from Jira's incoming link again, without spaces.",
    "invalid_client_secret": "Copy the client secret from Jira's incoming link again, without spaces.",
}

OAUTH1, OAUTH2 = "oauth1", "oauth2"
OAUTH2_CHOICE = "OAuth 2.0 (Jira Data Center 8.22 or later, recommended by Atlassian)"
OAUTH1_CHOICE = "OAuth 1.0a Application Link (any Jira Server/Data Center; also the choice for Jira before 8.22)"


@dataclass(frozen=True)
class SetupView:
    """What the setup page shows. ``error`` makes it the page after a failed verification."""

    team: str
    user: str
    action: str  # the forms' URL
    csrf_token: str
    expires_at: int
    broker_url: str  # the Application URL the admin gives Jira
    consumer_key: str
    oauth2: OAuth2View
    base_url: str = ""
    chosen: str | None = None  # the way shown open: "oauth1", "oauth2", or None (the admin picks)
    current_auth: str | None = None  # the team's integration's OAuth version, when it has one
    public_key: str | None = None  # the generated (pending) key pair's public half
    fingerprint: str | None = None
    current_host: str | None = None  # the team's integration, when it has one
    current_consumer_key: str | None = None
    error: BrokerError | None = None
    key_dropped: bool = False  # a pasted or uploaded private key was sent, and deliberately not shown again
    form_targets: tuple[str, ...] = ()


def _until(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _hidden(view: SetupView, action: str) -> str:
    return (
        f'<input type=hidden name=csrf_token value="{escape(view.csrf_token)}">'
        f'<input type=hidden name=action value="{action}">'
    )


def _problem(view: SetupView) -> str:
    error = view.error
    if error is None:
        return ""
    next_step = _SETUP_NEXT_STEP.get(error.code, "")
    html = (
        "<div class=notice role=alert id=problem><h2>The setup did not work</h2>"
        f"<p>{escape(error.message)}</p>"
        + (f"<p><strong>What to do:</strong> {escape(next_step)}</p>" if next_step else "")
        + (
            "<p>For your safety the private key you sent was not kept: paste it or choose its file again.</p>"
            if view.key_dropped
            else ""
        )
        + (
            "<p>For your safety the client secret you sent was not kept: type it again.</p>"
            if view.oauth2.secret_dropped
            else ""
        )
        + f"<p><small>Error code: <code>{escape(error.code)}</code>. Nothing was saved.</small></p></div>"
    )
    return html


def _key_step(view: SetupView) -> str:
    generate = f'<form method=post action="{escape(view.action)}">{_hidden(view, "generate")}'
    if view.public_key:
        generated = (
            '<p class="notice ok" role=status>The broker made a key pair and keeps its private key. Paste this '
            "public key into Jira in step 2.</p>"
            "<label for=public-key>Public key</label>"
            f"<textarea id=public-key rows=9 readonly spellcheck=false>{escape(view.public_key)}</textarea>"
            "<p><button type=button class=small data-copy=public-key hidden>Copy public key</button></p>"
            f"<p class=hint>Fingerprint: <code>{escape(view.fingerprint or '')}</code></p>"
            f"{generate}<button type=submit class=secondary>Generate a new key pair</button></form>"
            "<p class=hint>A new pair replaces this one: Jira would then need the new public key.</p>"
        )
    else:
        generated = (
            "<p>The broker creates the key pair and keeps the private key in AWS Secrets Manager. You only copy "
            "the public key into Jira; the private key never leaves the broker.</p>"
            f"{generate}<button type=submit>Generate a key pair here</button></form>"
        )
    own_open = " open" if view.key_dropped else ""
    return (
        "<section aria-labelledby=step-key id=key><h3 id=step-key>1. The key</h3>"
        "<p>Jira checks every request the broker sends against the public half of a key pair. The private half "
        "must stay secret: never paste it into a chat.</p>"
        "<h4>Generate a key pair here <span class=tag>recommended</span></h4>"
        f"{generated}"
        # The own-key fields belong to the main form below (form=setup-form), not to the generate form.
        f"<details{own_open}><summary>I have a private key</summary>"
        "<p>Use your own instead: an unencrypted RSA private key in PEM (PKCS#1 or PKCS#8), at least 2048 bits. "
        "Paste it, or choose its file (a chosen file wins). It is sent once, kept in AWS Secrets Manager, and "
        "never shown again.</p>"
        "<label for=private-key>Private key (PEM)</label>"
        "<textarea id=private-key name=private_key form=setup-form rows=6 autocomplete=off spellcheck=false "
        'placeholder="-----BEGIN PRIVATE KEY-----"></textarea>'
        "<label for=private-key-file>Or its file</label>"
        '<input id=private-key-file name=private_key_file form=setup-form type=file accept=".pem,.key,.txt">'
        "<p class=hint>In step 2, give Jira its public key: <code>openssl pkey -in key.pem -pubout</code>.</p>"
        "</details></section>"
    )


_OPEN_APPLINKS = (
    "<li>Open <strong>Administration</strong> (the cog) &rsaquo; <strong>Applications</strong> &rsaquo; "
    "<strong>Application links</strong>.</li>"
)


def _jira_steps(view: SetupView) -> str:
    name, consumer_key = escape(APPLICATION_NAME), escape(view.consumer_key)
    common = (
        "<li>Jira says <em>No response was received from the URL you entered</em>. That is expected (the broker "
        "is not an Atlassian product): click <strong>Continue</strong>.</li>"
        f"<li>In <strong>Link applications</strong>: Application Name <code>{name}</code>, Application Type "
        "<strong>Generic Application</strong>. The outgoing fields (Service Provider Name, Consumer key, Shared "
        "secret, Request Token URL, Access token URL, Authorize URL) are not used by the broker: Jira wants them "
        "filled, so type anything (the Application URL will do for the URLs). Tick <strong>Create incoming "
        "link</strong> and click <strong>Continue</strong>.</li>"
        f"<li>On the incoming screen: Consumer Key <code>{consumer_key}</code>, Consumer Name <code>{name}</code>, "
        "Public Key: all of the public key from step 1, from <code>-----BEGIN PUBLIC KEY-----</code> to the END "
        "line. Click <strong>Continue</strong>.</li>"
    )
    return (
        "<section aria-labelledby=step-jira><h3 id=step-jira>2. Create the Application Link in Jira</h3>"
        "<p>As a Jira administrator, create a link with these values:</p>"
        "<dl>"
        f"<dt>Application URL</dt><dd><code id=broker-url>{escape(view.broker_url)}</code> "
        "<button type=button class=small data-copy=broker-url hidden>Copy</button></dd>"
        f"<dt>Application name</dt><dd><code>{name}</code></dd>"
        "<dt>Application type</dt><dd>Generic Application</dd>"
        f"<dt>Consumer key</dt><dd><code>{consumer_key}</code> <small>(or your own: then type it in step 3)"
        "</small></dd>"
        f"<dt>Consumer name</dt><dd><code>{name}</code></dd>"
        "<dt>Public key</dt><dd>the public key from step 1</dd>"
        "</dl>"
        "<details open><summary>Jira 9: the Application links page has a <em>Create link</em> button</summary><ol>"
        f"{_OPEN_APPLINKS}"
        "<li>Click <strong>Create link</strong>. Choose <strong>Atlassian product</strong> (some versions call it "
        "<strong>Direct application link</strong>), not <strong>External application</strong>: that makes an "
        "OAuth 2.0 link (for that, choose OAuth 2.0 above instead).</li>"
        "<li>Paste the Application URL into <strong>Application URL</strong> and click <strong>Continue</strong>."
        f"</li>{common}</ol></details>"
        "<details><summary>Jira 8: the Application links page has a URL box and a <em>Create new link</em> button"
        "</summary><ol>"
        f"{_OPEN_APPLINKS}"
        "<li>Paste the Application URL into <strong>Enter the URL of the application you want to link</strong> and "
        f"click <strong>Create new link</strong>.</li>{common}</ol></details>"
        "<p class=hint>Already have a link for the broker? Edit it (the pencil), open <strong>Incoming "
        "Authentication</strong>, and set the consumer key and public key there.</p></section>"
    )


def _where_step(view: SetupView) -> str:
    return (
        "<section aria-labelledby=step-where><h3 id=step-where>3. Where Jira is</h3>"
        "<label for=base-url>Jira base URL</label>"
        f'<input id=base-url name=base_url type=url required inputmode=url autocomplete=url value="'
        f'{escape(view.base_url)}" placeholder="https://jira.example.com" aria-describedby=base-url-hint>'
        "<p class=hint id=base-url-hint>The address people open Jira at, with its context path if it has one "
        "(https://example.com/jira). Use Jira's own Base URL exactly (Administration &rsaquo; System &rsaquo; General "
        "configuration), or Jira rejects the broker's signatures.</p>"
        "<label for=consumer-key>Consumer key</label>"
        f'<input id=consumer-key name=consumer_key type=text required autocomplete=off spellcheck=false value="'
        f'{escape(view.consumer_key)}" aria-describedby=consumer-key-hint>'
        "<p class=hint id=consumer-key-hint>The consumer key you gave Jira's incoming screen in step 2.</p>"
        "</section>"
    )


def _current(view: SetupView) -> str:
    if not view.current_host:
        return ""
    team, host = escape(view.team), escape(view.current_host)
    if view.current_auth == OAUTH2:
        scopes = ", ".join(view.oauth2.current_scopes)
        return (
            f"<p class='notice info'>Team <strong>{team}</strong> already has Jira at <strong>{host}</strong> set "
            f"up with OAuth 2.0 (client ID <code>{escape(view.oauth2.current_client_id or '')}</code>, scopes "
            f"{escape(scopes)}). Verifying again replaces that setup; a different base URL, client ID or OAuth "
            "version disconnects every user of the team.</p>"
        )
    return (
        f"<p class='notice info'>Team <strong>{team}</strong> already has Jira at <strong>{host}</strong> set up "
        f"with an OAuth 1.0a Application Link (consumer key <code>{escape(view.current_consumer_key or '')}</code>). "
        "Verifying again replaces that setup; a different base URL, consumer key or OAuth version disconnects every "
        "user of the team.</p>"
    )


def _which(view: SetupView) -> str:
    return (
        "<section aria-labelledby=choose><h2 id=choose>Choose how the broker signs in to Jira</h2>"
        "<p>Both ways let the broker act in Jira as each user who connects, and only after that user allows it. "
        "Which to choose:</p><ul>"
        "<li><strong>OAuth 2.0</strong> wherever Jira is Data Center 8.22 or later. Atlassian marks OAuth 1.0a "
        "deprecated and recommends OAuth 2.0; each user's access token expires (after an hour) and the broker "
        "refreshes it; the scopes you pick limit what the broker can do.</li>"
        "<li><strong>OAuth 1.0a</strong> on a Jira older than 8.22, or where you already have an Application Link "
        "for the broker. Since 8.22, creating one needs <em>Atlassian product</em> (or <em>Direct application "
        "link</em>), not <em>External application</em>.</li></ul>"
        "<p class=hint>Not sure which Jira you have? The version is at the bottom of every Jira page and under "
        "Administration &rsaquo; System &rsaquo; System info. If Jira has no OAuth 2.0, verifying says so and "
        "changes nothing.</p></section>"
    )


def _choice(view: SetupView, way: str, summary: str, content: str) -> str:
    opened = " open" if view.chosen == way else ""
    # One name: a browser that supports it keeps one way open at a time; without that, both may be open.
    return f"<details class=choice name=auth-choice id={way}{opened}><summary>{summary}</summary>{content}</details>"


def _oauth1(view: SetupView) -> str:
    return (
        f"{_key_step(view)}"
        f'<form id=setup-form method=post action="{escape(view.action)}" enctype=multipart/form-data>'
        f"{_hidden(view, 'verify')}<input type=hidden name=auth value=oauth1>{_jira_steps(view)}{_where_step(view)}"
        "<section aria-labelledby=step-verify><h3 id=step-verify>4. Verify and connect</h3>"
        "<p>The broker asks Jira for a token with this key. Nothing is saved unless Jira accepts. Then you continue "
        f"to Jira to allow access to your own account ({escape(view.user)}).</p>"
        "<button type=submit>Verify and connect</button></section></form>"
    )


def setup_page(view: SetupView, *, headers: dict[str, str] | None = None) -> Response:
    """The setup link's page: which way to choose, then each way's steps and its own Verify and connect."""
    oauth2 = oauth2_part(
        view.oauth2,
        action=view.action,
        hidden=_hidden(view, "verify"),
        base_url=view.base_url,
        application_name=APPLICATION_NAME,
    )
    body = (
        f"<p>You are setting up Jira for team <strong>{escape(view.team)}</strong>. When Jira accepts the setup, "
        f"you go on to connect your own Jira account, as <strong>{escape(view.user)}</strong>.</p>"
        f"{who_line(view.current_host, view.team, view.user)}"
        f"{_problem(view)}{_current(view)}{_which(view)}"
        f"{_choice(view, OAUTH2, OAUTH2_CHOICE, oauth2)}"
        f"{_choice(view, OAUTH1, OAUTH1_CHOICE, _oauth1(view))}"
        f"<p><small>This setup link works once, until {_until(view.expires_at)}. Don't forward it: whoever "
        "holds it can set up the team's Jira.</small></p>"
    )
    error = view.error
    return render(
        f"Set up Jira for team {view.team}",
        body,
        status=error.status if error else 200,
        code=error.code if error else None,
        form_targets=view.form_targets,
        script=True,
        headers=headers,
    )
