"""The setup page's OAuth 2.0 part (Jira Data Center 8.22+): Jira's External application → Incoming
link, then Jira's address, the client ID and secret and the scopes, then Verify and connect.

Its form posts ``auth=oauth2`` with ``base_url``, ``client_id``, ``client_secret`` and one
``scopes`` value per ticked box. The client secret is never written into the page, not even
after a failed verification.

Example::

    html = oauth2_part(OAuth2View(redirect_uri="https://broker.example.com/oauth2/callback"), ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from .oauth2 import DEFAULT_SCOPES

FORM_ID = "oauth2-form"

# Jira's scopes in its order, with what each lets the broker do (always capped by what the user may do).
SCOPE_CHOICES: tuple[tuple[str, str], ...] = (
    ("READ", "view projects and issues the user can view"),
    ("WRITE", "also create, change and delete what the user can change (the broker's default)"),
    ("ADMIN", "also most of Jira's administration, for users who are Jira administrators"),
    ("SYSTEM_ADMIN", "also system administration (backups, imports), for system administrators"),
    ("READ_ALL", "Jira 10.3 or later: read all content regardless of permissions; not needed to act as users"),
    ("MANAGE_SUBSCRIPTIONS", "Jira 10.3 or later: manage subscriptions for incremental sync services"),
)


@dataclass(frozen=True)
class OAuth2View:
    """What the OAuth 2.0 part shows: never the client secret."""

    redirect_uri: str  # the Redirect URL for Jira's incoming link, exactly
    client_id: str = ""
    scopes: tuple[str, ...] = DEFAULT_SCOPES  # the boxes ticked
    current_client_id: str | None = None  # the team's OAuth 2.0 link, whose secret the broker keeps
    current_scopes: tuple[str, ...] = ()  # and its scopes
    secret_dropped: bool = False  # a client secret was sent, and deliberately not shown again


def oauth2_part(view: OAuth2View, *, action: str, hidden: str, base_url: str, application_name: str) -> str:
    """Steps A to C in one form of its own (``hidden``: the CSRF and action fields)."""
    return (
        f'<form id={FORM_ID} method=post action="{escape(action)}">'
        f"{hidden}<input type=hidden name=auth value=oauth2>"
        f"{_jira_steps(view, application_name)}{_fields(view, base_url)}"
        "<section aria-labelledby=oauth2-step-verify><h3 id=oauth2-step-verify>C. Verify and connect</h3>"
        "<p>The broker shows the client ID and secret to Jira's token endpoint. Nothing is saved unless Jira accepts "
        "them. Then you continue to Jira to allow access to your own account.</p>"
        "<button type=submit>Verify and connect</button></section></form>"
    )


def _jira_steps(view: OAuth2View, application_name: str) -> str:
    https_note = ""
    if view.redirect_uri.startswith("http://"):
        https_note = (
            "<p class=hint>This broker's address is <code>http://</code>. Jira accepts such a redirect URL only when "
            "it runs with the system property <code>skip.redirect.url.https.requirement</code> (for testing); "
            "in production the broker must be on https.</p>"
        )
    return (
        "<section aria-labelledby=oauth2-step-jira><h3 id=oauth2-step-jira>A. Create the incoming link in Jira</h3>"
        "<p>As a Jira administrator (the screens are the same in Jira 8.22, 9 and 10):</p><ol>"
        "<li>Open <strong>Administration</strong> (the cog) &rsaquo; <strong>Applications</strong> &rsaquo; "
        "<strong>Application links</strong>.</li>"
        "<li>Click <strong>Create link</strong>, choose <strong>External application</strong>, then the direction "
        "<strong>Incoming</strong>, and click <strong>Continue</strong>.</li>"
        f"<li>Name: <code>{escape(application_name)}</code>. <strong>Redirect URL</strong>: paste this, exactly "
        "(character for character, no slash added at the end):"
        f"<code id=redirect-uri class=copyable>{escape(view.redirect_uri)}</code>"
        "<button type=button class=small data-copy=redirect-uri hidden>Copy redirect URL</button></li>"
        "<li>Under <strong>Permissions</strong>, give the link the scopes you tick in step B below (by default "
        "only <strong>Write</strong>). Jira refuses a sign-in that asks for a scope the link does not have. "
        "<em>Read all</em> and <em>Manage subscriptions</em> exist in Jira 10.3 and later only.</li>"
        "<li>Click <strong>Save</strong>. Jira shows the link's <strong>Client ID</strong> and <strong>Client "
        "secret</strong>: copy both into step B.</li></ol>"
        f"{https_note}</section>"
    )


def _scope_boxes(view: OAuth2View) -> str:
    boxes = []
    for name, meaning in SCOPE_CHOICES:
        checked = " checked" if name in view.scopes else ""
        boxes.append(
            f"<label class=check for=scope-{name.lower()}><input type=checkbox id=scope-{name.lower()} name=scopes "
            f"value={name}{checked}> <span><code>{name}</code>: {escape(meaning)}</span></label>"
        )
    return (
        "<fieldset aria-describedby=scopes-hint><legend>Scopes</legend>"
        f"{''.join(boxes)}"
        "<p class=hint id=scopes-hint>Tick the scopes you selected on Jira's incoming link; the broker asks "
        "each user for exactly these. A scope never gives the broker more than the user may do in Jira.</p>"
        "</fieldset>"
    )


def _fields(view: OAuth2View, base_url: str) -> str:
    keeps_secret = view.current_client_id is not None
    secret_hint = (
        "Leave it empty to keep the secret the broker has for client ID "
        f"<code>{escape(view.current_client_id or '')}</code>. "
        if keeps_secret
        else ""
    )
    return (
        "<section aria-labelledby=oauth2-step-where><h3 id=oauth2-step-where>B. Jira's address and the link's "
        "credentials</h3>"
        "<label for=oauth2-base-url>Jira base URL</label>"
        f'<input id=oauth2-base-url name=base_url type=url required inputmode=url autocomplete=url value="'
        f'{escape(base_url)}" placeholder="https://jira.example.com" aria-describedby=oauth2-base-url-hint>'
        "<p class=hint id=oauth2-base-url-hint>The address people open Jira at, with its context path if it has one "
        "(https://example.com/jira): Jira's own Base URL (Administration &rsaquo; System &rsaquo; General "
        "configuration).</p>"
        "<label for=client-id>Client ID</label>"
        f'<input id=client-id name=client_id type=text required autocomplete=off spellcheck=false value="'
        f'{escape(view.client_id)}" aria-describedby=client-id-hint>'
        "<p class=hint id=client-id-hint>From Jira's incoming link (step A).</p>"
        "<label for=client-secret>Client secret</label>"
        f"<input id=client-secret name=client_secret type=password{'' if keeps_secret else ' required'} "
        "autocomplete=off spellcheck=false aria-describedby=client-secret-hint>"
        f"<p class=hint id=client-secret-hint>{secret_hint}Kept in AWS Secrets Manager and never shown again, not "
        "even on this page.</p>"
        f"{_scope_boxes(view)}</section>"
    )
