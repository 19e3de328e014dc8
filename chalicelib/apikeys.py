"""Service API keys: made once, shown once, stored only as SHA-256 hashes.

A key may be limited to one team; it then gets 403 ``team_forbidden`` on any other.

Example::

    key = new_api_key()                                  # "jb_..." shown to the operator once
    save_api_key(store, key, name="chat-bot", team="acme")
    lookup(store, "Bearer " + key)                      # -> the key's record, or None
                                                        #    (StorageUnavailable: it could not be checked)
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from . import aws, clock
from .errors import StorageUnavailable
from .logs import logger
from .store import Store, token_hash

PREFIX = "jb_"


def new_api_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def save_api_key(store: Store, key: str, *, name: str, team: str | None = None) -> dict[str, Any]:
    record = {"name": name, "team": team, "created_at": clock.now(), "revoked": False}
    store.put_api_key(token_hash(key), record)
    return record


def bearer_token(header: str | None) -> str | None:
    """The key from ``Authorization: Bearer <key>``, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


# Valid keys are remembered this long in a warm container, like API Gateway's
# authorizer cache: a revocation takes effect within this many seconds.
CACHE_SECONDS = 60
_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_cache_lock = threading.Lock()


def lookup(store: Store, header: str | None) -> dict[str, Any] | None:
    """The live record for the presented key, or None. Only the hash is ever looked up.

    Raises:
        StorageUnavailable: DynamoDB throttled, failed or did not answer; the key was neither
            accepted nor refused, and nothing was cached.
    """
    key = bearer_token(header)
    if key is None:
        return None
    key_hash = token_hash(key)
    with _cache_lock:
        cached = _cache.get(key_hash)
    if cached and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    try:
        record = store.get_api_key(key_hash)
    except Exception as error:
        if not aws.storage_trouble(error):
            raise
        logger.warning("the API key could not be checked", extra=aws.trouble_details(error))
        raise StorageUnavailable() from error
    if record is None or record.get("revoked"):
        return None
    with _cache_lock:
        _cache[key_hash] = (time.monotonic(), record)
    return record


def forget_cached_keys() -> None:
    """Tests revoke keys and expect the next call to see it."""
    with _cache_lock:
        _cache.clear()
