"""Lazily created, cached boto3 clients.

A client is made on first use, not at import, so moto (tests) or
``AWS_ENDPOINT_URL`` (the local runner) is in place by then. Warm Lambda
containers reuse it.

Example::

    dynamodb = aws.client("dynamodb")
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
from botocore.config import Config

_clients: dict[tuple[str, str, str], Any] = {}
_lock = threading.Lock()

# Short timeouts and bounded retries: every route must answer inside API
# Gateway's 29 seconds, and most of that budget belongs to Jira.
_CONFIG = Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"})


def client(service: str) -> Any:
    """Return the cached boto3 client for ``service`` in the current region/endpoint."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    key = (service, region, endpoint)
    with _lock:
        if key not in _clients:
            _clients[key] = boto3.session.Session().client(
                service, region_name=region, endpoint_url=endpoint or None, config=_CONFIG
            )
        return _clients[key]


def reset_clients() -> None:
    """Forget every cached client (tests start a fresh moto per test)."""
    with _lock:
        _clients.clear()
