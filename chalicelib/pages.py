"""The HTML pages people see: the shared template, connect, connected, denied and every error.

The admin's setup page is :mod:`setup_page`, on the same template.

One small template: inline CSS (allowed by its hash in the CSP, so no
``unsafe-inline``), no external assets, readable on a phone, labelled for
screen readers, and working without JavaScript. The one script is the setup
page's copy button: allowed by its hash on that page only, and the buttons
stay hidden without it. Everything echoed is HTML-escaped. Every page sends a
CSP with ``frame-ancestors 'none'``, ``Referrer-Policy: no-referrer`` (link
tokens are in URLs) and ``Cache-Control: no-store``. Each page names the Jira,
the user and the team it is about, and says what to do next.

Example::

    return connect_page(host="jira.acme.com", team="acme", user="alice", action="/connect/<token>")
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from html import escape

from chalice import Response

from .errors import BrokerError
from .links import CONNECT, SETUP

View = Callable[..., Response]

_CSS = (
    "*{box-sizing:border-box}"
    "body{font:16px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f4f5f7;color:#172b4d}"
    "main{max-width:40rem;margin:2rem auto;padding:1.5rem;background:#fff;border-radius:8px;"
    "box-shadow:0 1px 3px rgba(0,0,0,.15)}"
    "h1{font-size:1.4rem;line-height:1.25;margin:0 0 1rem}h2{font-size:1.15rem;margin:2rem 0 .5rem}"
    "h3,h4{font-size:1rem;margin:1.25rem 0 .25rem}p{margin:.5rem 0 1rem}"
    "dl{display:grid;grid-template-columns:auto 1fr;gap:.25rem 1rem;margin:0 0 1rem}dt{font-weight:600}"
    "dd{margin:0;overflow-wrap:anywhere}ol{padding-left:1.25rem}li{margin:.4rem 0}"
    "button{font:inherit;padding:.6rem 1.2rem;border:0;border-radius:4px;background:#0052cc;color:#fff;cursor:pointer}"
    "button:hover{background:#0747a6}button.secondary{background:#ebecf0;color:#172b4d}"
    "button.small{padding:.15rem .6rem;font-size:.875rem}"
    ":focus-visible{outline:3px solid #4c9aff;outline-offset:2px}"
    "label{display:block;font-weight:600;margin:1rem 0 .25rem}"
    "input[type=text],input[type=url],input[type=password],textarea{width:100%;font:inherit;padding:.5rem;"
    "border:2px solid #dfe1e6;"
    "border-radius:4px;background:#fafbfc;color:inherit}"
    "textarea{font:.8rem/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}input[type=file]{max-width:100%}"
    ".hint{color:#5e6c84;font-size:.875rem;margin:.25rem 0 1rem}"
    ".notice{border-left:4px solid #de350b;background:#ffebe6;padding:.5rem 1rem;border-radius:4px;margin:0 0 1rem}"
    ".notice h2{margin:.25rem 0}.notice.ok{border-color:#00875a;background:#e3fcef}"
    ".notice.info{border-color:#0052cc;background:#deebff}"
    "details{border:1px solid #dfe1e6;border-radius:4px;padding:.5rem .75rem;margin:.75rem 0}"
    "summary{cursor:pointer;font-weight:600}"
    "details.choice{border-width:2px;padding:.75rem 1rem}details.choice[open]{border-color:#0052cc}"
    "details.choice>summary{font-size:1.05rem}"
    "fieldset{border:1px solid #dfe1e6;border-radius:4px;padding:.25rem .75rem .5rem;margin:1rem 0}"
    "legend{font-weight:600;padding:0 .25rem}"
    "label.check{display:flex;gap:.5rem;align-items:baseline;font-weight:400;margin:.4rem 0}"
    "code.copyable{display:block;padding:.5rem .75rem;border:1px solid #dfe1e6;border-radius:4px;"
    "user-select:all;-webkit-user-select:all}"
    ".tag{font-size:.75rem;font-weight:600;background:#e3fcef;color:#006644;padding:.1rem .4rem;border-radius:3px}"
    ".error h1{color:#bf2600}.ok h1{color:#006644}small{color:#5e6c84}"
    "code{background:#f4f5f7;padding:0 .2rem;overflow-wrap:anywhere}"
    "@media (max-width:40rem){main{margin:0;border-radius:0;box-shadow:none;padding:1rem}}"
)
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()

# The copy buttons: shown only when this runs; Clipboard API first, selecting the text as the fallback.
_COPY_JS = (
    "document.querySelectorAll('button[data-copy]').forEach(function(b){"
    "var t=document.getElementById(b.getAttribute('data-copy')),label=b.textContent;b.hidden=false;"
    "function done(text){b.textContent=text;setTimeout(function(){b.textContent=label},2500)}"
    "function fallback(){if(t.select){t.select()}else{var r=document.createRange();r.selectNodeContents(t);"
    "var s=getSelection();s.removeAllRanges();s.addRange(r)}"
    "try{done(document.execCommand('copy')?'Copied':'Selected: press Ctrl+C')}catch(e){done('Selected: press Ctrl+C')}}"
    "b.addEventListener('click',function(){var text='value' in t?t.value:t.textContent;"
    "if(navigator.clipboard&&window.isSecureContext){navigator.clipboard.writeText(text).then("
    "function(){done('Copied')},fallback)}else{fallback()}})})"
)
_JS_HASH = base64.b64encode(hashlib.sha256(_COPY_JS.encode()).digest()).decode()


@dataclass(frozen=True)
class Who:
    """Whom a page is about: the team, its user and the team's Jira host (None when not set up)."""

    team: str
    user: str
    host: str | None = None


def _headers(
    form_targets: tuple[str, ...], code: str | None, script: bool, extra: dict[str, str] | None
) -> dict[str, str | list[str]]:
    form_action = " ".join(("'self'", *form_targets))
    script_src = f"script-src 'sha256-{_JS_HASH}'; " if script else ""
    headers: dict[str, str | list[str]] = {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; {script_src}form-action {form_action}; "
            "frame-ancestors 'none'; base-uri 'none'"
        ),
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    if code:
        headers["X-Broker-Error"] = code
    headers.update(extra or {})
    return headers


def render(
    title: str,
    body_html: str,
    *,
    status: int = 200,
    tone: str = "info",
    code: str | None = None,
    form_targets: tuple[str, ...] = (),
    script: bool = False,
    headers: dict[str, str] | None = None,
) -> Response:
    """Wrap ``body_html`` (already escaped) in the shared template.

    ``form_targets`` are CSP sources the page's forms may post or be redirected to
    besides the broker itself; ``script`` adds the copy-button script (and its hash).
    """
    tail = f"<script>{_COPY_JS}</script>" if script else ""
    html = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} · Jira connection</title><style>{_CSS}</style></head>"
        f'<body><main class="{tone}"><h1>{escape(title)}</h1>{body_html}</main>{tail}</body></html>'
    )
    return Response(body=html, status_code=status, headers=_headers(form_targets, code, script, headers))


def who_line(host: str | None, team: str, user: str) -> str:
    jira = escape(host) if host else "<em>not set up yet</em>"
    return (
        f"<dl><dt>Jira</dt><dd>{jira}</dd><dt>User</dt><dd>{escape(user)}</dd><dt>Team</dt><dd>{escape(team)}</dd></dl>"
    )


def _at(host: str | None) -> str:
    return f" at <strong>{escape(host)}</strong>" if host else ""


def connect_page(*, host: str, team: str, user: str, action: str, jira_origin: str) -> Response:
    """The page a connect link opens. It changes nothing; only its button starts the dance."""
    body = (
        f"<p>You are connecting Jira at <strong>{escape(host)}</strong> for "
        f"<strong>{escape(user)}</strong> in team <strong>{escape(team)}</strong>.</p>"
        f"{who_line(host, team, user)}"
        "<p><strong>Next:</strong> continue to Jira, sign in if asked, and click <em>Allow</em>. The broker "
        "will then act in Jira as the account you approve with.</p>"
        f"<p><small>Not {escape(user)}? Don't continue: this link was made for someone else. "
        "Ask your chat bot for a link of your own.</small></p>"
        f'<form method=post action="{escape(action)}"><button type=submit>Continue to Jira</button></form>'
    )
    return render("Connect your Jira account", body, form_targets=(jira_origin,))


def connected_page(*, host: str, team: str, user: str, display_name: str, jira_name: str) -> Response:
    body = (
        f"<p>Jira at <strong>{escape(host)}</strong> is connected for <strong>{escape(user)}</strong> in team "
        f"<strong>{escape(team)}</strong>. The broker acts in Jira as "
        f"<strong>{escape(display_name or jira_name)}</strong>"
        f"{f' ({escape(jira_name)})' if jira_name and display_name else ''}.</p>"
        f"{who_line(host, team, user)}"
        "<p><strong>Next:</strong> you can close this page and go back to your chat. To disconnect, revoke the "
        "access under your Jira profile's <em>Applications</em> tab, or ask your chat bot.</p>"
    )
    return render(f"Connected as {display_name or jira_name}", body, tone="ok")


def denied_page(*, host: str, team: str, user: str) -> Response:
    body = (
        f"<p>You denied access in Jira at <strong>{escape(host)}</strong>, so <strong>{escape(user)}</strong> in "
        f"team <strong>{escape(team)}</strong> is not connected, and the broker stored nothing.</p>"
        f"{who_line(host, team, user)}"
        "<p><strong>Next:</strong> if that was a mistake, open your connect link again and click <em>Allow</em> "
        "in Jira.</p>"
    )
    return render("Access denied", body, status=403, tone="error", code="access_denied")


# -- errors -------------------------------------------------------------------------------
_TITLES = {
    "link_invalid": "This link is not valid",
    "link_expired": "This link has expired",
    "link_used": "This link was already used",
    "link_outdated": "This link no longer applies",
    "integration_not_found": "Jira is not set up for this team",
    "cross_site_request": "Refused: sent from another site",
    "csrf_token_invalid": "Refused: this form did not come from this page",
    "storage_unavailable": "The broker could not reach its storage just now",
    "signin_other_browser": "Finish signing in where you started",
    "integration_changed": "Jira's setup changed while you signed in",
}

_NEXT_STEP = {
    CONNECT: {
        "link_invalid": "Ask your chat bot for a new link, and open it exactly as posted.",
        "link_expired": "Ask your chat bot for a new link.",
        "link_used": "You are already connected. To connect again, ask your chat bot for a new link.",
        "link_outdated": "Ask your chat bot for a new link.",
        "integration_not_found": "Ask your Jira admin to set up the team's Jira integration again.",
        "request_token_unknown": "Open your connect link again and click Continue.",
        "request_token_used": "If you are not connected yet, open your connect link again.",
        "request_token_expired": "Open your connect link again and click Continue.",
        "cross_site_request": "Open the connect link yourself and click Continue on the broker's page.",
        "storage_unavailable": "Wait a few seconds, then open your connect link again.",
        "signin_other_browser": "If this is your own sign-in, open your connect link in this browser and click "
        "Continue again. If someone sent you the Jira page that led here, don't send them this page's address: "
        "it would let them connect your Jira account to theirs.",
        "integration_changed": "Ask your chat bot for a new link.",
    },
    SETUP: {
        "link_invalid": "Ask your chat bot for a new setup link, and open it exactly as posted.",
        "link_expired": "Ask your chat bot for a new setup link. If you already generated a key pair, the new "
        "link shows the same public key.",
        "link_used": "Jira is already set up through this link. To change the setup, ask your chat bot for a new "
        "setup link; to connect another account, ask it for a connect link.",
        "cross_site_request": "Open your setup link yourself and use the form on the broker's page.",
        "csrf_token_invalid": "Open your setup link again and send the form from that page. If this keeps "
        "happening, allow cookies for this site.",
        "body_too_large": "Choose the private key's PEM file itself: it is a few kilobytes.",
        "invalid_body": "Open your setup link again and send the form from that page.",
        "storage_unavailable": "Wait a few seconds, then open your setup link again and send the form again.",
    },
}


def _about(who: Who, kind: str) -> str:
    if kind == SETUP:
        return (
            f"<p>This setup link was made for <strong>{escape(who.user)}</strong> to set up Jira"
            f"{_at(who.host)} for team <strong>{escape(who.team)}</strong>.</p>"
        )
    return (
        f"<p>This link was made to connect Jira{_at(who.host)} for <strong>{escape(who.user)}</strong> "
        f"in team <strong>{escape(who.team)}</strong>.</p>"
    )


def error_page(
    error: BrokerError, *, title: str | None = None, who: Who | None = None, kind: str = CONNECT
) -> Response:
    """A page naming what went wrong, whose link it was (when known) and what to do next."""
    next_step = _NEXT_STEP.get(kind, {}).get(error.code, "")
    body = _about(who, kind) if who else ""
    body += f"<p>{escape(error.message)}</p>"
    if next_step:
        body += f"<p><strong>What to do:</strong> {escape(next_step)}</p>"
    body += f"<p><small>Error code: <code>{escape(error.code)}</code></small></p>"
    heading = title or _TITLES.get(error.code, "This didn't work")
    return render(heading, body, status=error.status, tone="error", code=error.code)
