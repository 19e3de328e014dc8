"""Signed link tokens: unguessable, bound to (team, user, expiry), checked without a database read.

A token is ``<payload>.<mac>``: base64url of a small JSON payload and of its
HMAC-SHA256 under the broker's link-signing key. A forged or altered token
fails the MAC before anything else is looked at; an expired one is told
apart from a forged one because its payload is authentic.

Example::

    signer = LinkSigner(secret=b"...32 random bytes...")
    token = signer.mint(LinkClaims("c", "Yk3...", "acme", "alice", 1767225600))
    signer.verify(token, now=1767220000)        # -> LinkClaims
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import Gone, NotFound

CONNECT = "c"  # a user's connect link: /connect/<token>
SETUP = "s"  # an admin's setup link: /setup/<token>


@dataclass(frozen=True)
class LinkClaims:
    """What a link token says: its kind, its id, whose it is and until when."""

    kind: str
    link_id: str
    team: str
    user: str
    expires_at: int


def new_link_id() -> str:
    return secrets.token_urlsafe(16)


def safe_string_equals(a: str, b: str) -> bool:
    """Constant-time comparison, so a MAC cannot be guessed byte by byte."""
    return hmac.compare_digest(a.encode(), b.encode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Mints and verifies link tokens with one HMAC key."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def mint(self, claims: LinkClaims) -> str:
        body = {"k": claims.kind, "l": claims.link_id, "t": claims.team, "u": claims.user, "e": claims.expires_at}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def verify(self, token: str, *, now: int, kind: str = CONNECT) -> LinkClaims:
        """Return the token's claims, or raise.

        Raises:
            NotFound: ``link_invalid`` for a forged, altered or truncated token.
            Gone: ``link_expired`` once its expiry has passed.
        """
        claims = self.authentic_claims(token)
        if claims is None or claims.kind != kind:
            raise NotFound(
                "This link is not valid: it was not made by this broker, or it was altered or cut short "
                "when it was copied.",
                code="link_invalid",
            )
        if now >= claims.expires_at:
            expired = datetime.fromtimestamp(claims.expires_at, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
            raise Gone(f"This link expired at {expired}.", code="link_expired")
        return claims

    def authentic_claims(self, token: str) -> LinkClaims | None:
        """The claims of a token this broker made, expired or not; None for anything else.

        For error pages only: an expired link may still say whose it was.
        """
        payload, _, mac = token.partition(".")
        if not payload or not mac or not safe_string_equals(mac, self._mac(payload)):
            return None
        try:
            body = json.loads(_unb64(payload))
            return LinkClaims(str(body["k"]), str(body["l"]), str(body["t"]), str(body["u"]), int(body["e"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None


def new_signing_secret() -> str:
    """A fresh link-signing key, as text for Secrets Manager."""
    return secrets.token_urlsafe(48)
