"""Binding a sign-in to the browser that started it, with an ``HttpOnly`` cookie.

Jira's Allow page URL carries the request token. Whoever clicks Continue could
forward that URL to someone else, whose approval would then land on the first
person's account (session fixation). So Continue gives the browser a random id
in a cookie and stores only its hash with the pending sign-in; the callback
completes only when the same browser comes back with it.

``SameSite=Lax``: Jira's redirect back to the callback is a top-level GET
navigation from another site, which Lax cookies ride along on (Strict ones
don't). Outside the local stage the cookie is ``Secure`` and ``__Host-``
prefixed, so no other site or subdomain can plant one.

Example::

    browser_id = read(request_cookie_header, settings) or new_browser_id()
    pending["browser"] = binding(browser_id)              # stored with the request token
    headers["Set-Cookie"] = set_cookie(browser_id, settings)
    matches(read(callback_cookie_header, settings), pending["browser"])   # True only there
"""

from __future__ import annotations

import hashlib
import re
import secrets
from http.cookies import CookieError, SimpleCookie

from .config import Settings
from .links import safe_string_equals

COOKIE = "jira_broker_browser"
BROWSER_ID_LIFETIME = 86400  # seconds; a sign-in itself must finish within Jira's 10 minutes
_BROWSER_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)


def new_browser_id() -> str:
    return secrets.token_urlsafe(32)


def binding(browser_id: str) -> str:
    """What is stored with a pending sign-in: a hash, so the table never holds the cookie itself."""
    return hashlib.sha256(b"browser:" + browser_id.encode()).hexdigest()


def matches(browser_id: str | None, stored: object) -> bool:
    """Whether this browser's id is the one a pending sign-in was bound to (constant time)."""
    if not browser_id or not isinstance(stored, str) or not stored:
        return False
    return safe_string_equals(binding(browser_id), stored)


def _secure(settings: Settings) -> bool:
    return not settings.is_local or settings.public_url.startswith("https://")


def cookie_name(settings: Settings) -> str:
    return f"__Host-{COOKIE}" if _secure(settings) else COOKIE


def set_cookie(browser_id: str, settings: Settings) -> str:
    """The ``Set-Cookie`` value; Path=/ because ``__Host-`` requires it (and the callback is on this host)."""
    secure = "; Secure" if _secure(settings) else ""
    return (
        f"{cookie_name(settings)}={browser_id}; Path=/; Max-Age={BROWSER_ID_LIFETIME}; HttpOnly; SameSite=Lax{secure}"
    )


def read_cookie(header: str | None, name: str, shape: re.Pattern[str]) -> str | None:
    """One cookie's value from a ``Cookie`` header, if it has the expected shape."""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header or "")
    except CookieError:
        return None
    morsel = jar.get(name)
    value = morsel.value if morsel is not None else ""
    return value if shape.match(value) else None


def read(header: str | None, settings: Settings) -> str | None:
    """This browser's id from its ``Cookie`` header, or None."""
    return read_cookie(header, cookie_name(settings), _BROWSER_ID)
