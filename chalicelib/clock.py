"""Time in one place, so tests and pages agree on what 'now' is."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now() -> int:
    """Epoch seconds."""
    return int(time.time())


def iso(epoch: int | None) -> str | None:
    """``2026-11-29T01:48:00Z`` for an epoch, or None."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
