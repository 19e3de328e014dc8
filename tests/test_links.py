"""Link tokens: bound to (team, user, expiry); forged, altered and expired tokens are told apart."""

from __future__ import annotations

import pytest

from chalicelib.errors import Gone, NotFound
from chalicelib.links import CONNECT, LinkClaims, LinkSigner

CLAIMS = LinkClaims(CONNECT, "link-1", "acme", "alice", 2_000_000_000)


def test_round_trip() -> None:
    signer = LinkSigner(b"k" * 32)
    assert signer.verify(signer.mint(CLAIMS), now=1_900_000_000) == CLAIMS


def test_expired() -> None:
    signer = LinkSigner(b"k" * 32)
    with pytest.raises(Gone) as caught:
        signer.verify(signer.mint(CLAIMS), now=2_000_000_000)
    assert caught.value.code == "link_expired"


def test_other_key_altered_payload_and_truncation_are_invalid() -> None:
    signer = LinkSigner(b"k" * 32)
    token = signer.mint(CLAIMS)
    forged_by_other_key = LinkSigner(b"x" * 32).mint(CLAIMS)
    payload, mac = token.split(".")
    bob = LinkSigner(b"k" * 32).mint(LinkClaims(CONNECT, "link-1", "acme", "bob", 2_000_000_000)).split(".")[0]
    for bad in (forged_by_other_key, f"{bob}.{mac}", token[:-3], payload, "", "a.b", f"{payload}."):
        with pytest.raises(NotFound) as caught:
            signer.verify(bad, now=1_900_000_000)
        assert caught.value.code == "link_invalid"


def test_kind_is_checked() -> None:
    signer = LinkSigner(b"k" * 32)
    token = signer.mint(LinkClaims("s", "link-1", "acme", "alice", 2_000_000_000))
    with pytest.raises(NotFound):
        signer.verify(token, now=1_900_000_000, kind=CONNECT)
