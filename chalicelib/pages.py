"""The HTML pages people see: connect, connected, denied and every error.

One small template: inline CSS (allowed by its hash in the CSP, so no
``unsafe-inline``), no JavaScript, no external assets, readable on a phone.
Everything echoed is HTML-escaped. Every page sends a CSP with
``frame-ancestors 'none'``, ``Referrer-Policy: no-referrer`` (link tokens are
in URLs) and ``Cache-Control: no-store``.

Example::

    return connect_page(host="jira.acme.com", team="acme", user="alice", action="/connect/<token>")
"""

from __future__ import annotations

import base64
import hashlib
from html import escape

from chalice import Response

from .errors import BrokerError

_CSS = (
    "body{font:16px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f4f5f7;color:#172b4d}"
    "main{max-width:34rem;margin:2rem auto;padding:1.5rem;background:#fff;border-radius:8px;"
    "box-shadow:0 1px 3px rgba(0,0,0,.15)}"
    "h1{font-size:1.4rem;margin:0 0 1rem}p{margin:.5rem 0 1rem}"
    "dl{display:grid;grid-template-columns:auto 1fr;gap:.25rem 1rem;margin:0 0 1rem}dt{font-weight:600}"
    "dd{margin:0;word-break:break-all}"
    "button{font:inherit;padding:.6rem 1.2rem;border:0;border-radius:4px;background:#0052cc;color:#fff;cursor:pointer}"
    ".error h1{color:#bf2600}.ok h1{color:#006644}small{color:#5e6c84}code{background:#f4f5f7;padding:0 .2rem}"
    "@media (max-width:36rem){main{margin:0;border-radius:0}}"
)
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()


def _headers(form_targets: tuple[str, ...], code: str | None) -> dict[str, str | list[str]]:
    form_action = " ".join(("'self'", *form_targets))
    headers: dict[str, str | list[str]] = {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; form-action {form_action}; "
            "frame-ancestors 'none'; base-uri 'none'"
        ),
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    if code:
        headers["X-Broker-Error"] = code
    return headers


def render(
    title: str,
    body_html: str,
    *,
    status: int = 200,
    tone: str = "info",
    code: str | None = None,
    form_targets: tuple[str, ...] = (),
) -> Response:
    """Wrap ``body_html`` (already escaped) in the shared template."""
    html = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} · Jira connection</title><style>{_CSS}</style></head>"
        f'<body><main class="{tone}"><h1>{escape(title)}</h1>{body_html}</main></body></html>'
    )
    return Response(body=html, status_code=status, headers=_headers(form_targets, code))


def _who(host: str, team: str, user: str) -> str:
    return (
        "<dl>"
        f"<dt>Jira</dt><dd>{escape(host)}</dd>"
        f"<dt>User</dt><dd>{escape(user)}</dd>"
        f"<dt>Team</dt><dd>{escape(team)}</dd>"
        "</dl>"
    )


def connect_page(*, host: str, team: str, user: str, action: str, jira_origin: str) -> Response:
    """The page a connect link opens. It changes nothing; only its button starts the dance."""
    body = (
        f"<p>You are connecting Jira at <strong>{escape(host)}</strong> for "
        f"<strong>{escape(user)}</strong> in team <strong>{escape(team)}</strong>.</p>"
        f"{_who(host, team, user)}"
        "<p>Continue to Jira, sign in if asked, and click <em>Allow</em>. The broker will then act in "
        "Jira as the account you approve with.</p>"
        f"<p><small>Not {escape(user)}? Don't continue: this link was made for someone else. "
        "Ask your chat bot for a link of your own.</small></p>"
        f'<form method=post action="{escape(action)}"><button type=submit>Continue to Jira</button></form>'
    )
    return render("Connect your Jira account", body, form_targets=(jira_origin,))


def connected_page(*, host: str, team: str, user: str, display_name: str, jira_name: str) -> Response:
    body = (
        f"<p>Connected as <strong>{escape(display_name or jira_name)}</strong>"
        f"{f' ({escape(jira_name)})' if jira_name and display_name else ''}.</p>"
        f"{_who(host, team, user)}"
        "<p>You can close this page and go back to your chat. To disconnect, revoke the access "
        "under your Jira profile's <em>Applications</em> tab, or ask your chat bot.</p>"
    )
    return render(f"Connected as {display_name or jira_name}", body, tone="ok")


def denied_page(*, host: str, team: str, user: str) -> Response:
    body = (
        "<p>You denied access in Jira, so nothing was connected and the broker stored nothing.</p>"
        f"{_who(host, team, user)}"
        "<p>If that was a mistake, open your connect link again and click <em>Allow</em> in Jira.</p>"
    )
    return render("Access denied", body, status=403, tone="error", code="access_denied")


_NEXT_STEP = {
    "link_invalid": "Ask your chat bot for a new link, and open it exactly as posted.",
    "link_expired": "Ask your chat bot for a new link.",
    "link_used": "You are already connected. To connect again, ask your chat bot for a new link.",
    "link_outdated": "Ask your chat bot for a new link.",
    "integration_not_found": "Ask your Jira admin to set up the team's Jira integration again.",
    "request_token_unknown": "Open your connect link again and click Continue.",
    "request_token_used": "If you are not connected yet, open your connect link again.",
    "request_token_expired": "Open your connect link again and click Continue.",
    "cross_site_request": "Open the connect link yourself and click Continue on the broker's page.",
}


def error_page(error: BrokerError, *, title: str = "This didn't work") -> Response:
    """A page naming what went wrong and what to do next."""
    next_step = _NEXT_STEP.get(error.code, "")
    body = f"<p>{escape(error.message)}</p>"
    if next_step:
        body += f"<p><strong>What to do:</strong> {escape(next_step)}</p>"
    body += f"<p><small>Error code: <code>{escape(error.code)}</code></small></p>"
    return render(title, body, status=error.status, tone="error", code=error.code)
