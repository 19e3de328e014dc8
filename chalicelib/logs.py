"""Logging: Powertools' structured Logger, with every secret scrubbed before it is written.

The broker never logs a secret on purpose; :func:`redact` is the safety net
for what libraries, exceptions and access logs print (URLs with ``oauth_token`` or an
OAuth 2.0 ``code`` and ``state``, connect links, ``Authorization`` headers, PEM blocks). It runs over each whole
JSON log line, so extra fields and tracebacks are covered as well as messages.

Example::

    logger.info("integration saved", extra={"team": team})
    redact("GET /connect/eyJr.abc HTTP/1.1")   # 'GET /connect/[redacted] HTTP/1.1'
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from aws_lambda_powertools import Logger

SERVICE = "jira-oauth-broker"

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # PEM blocks of any kind of private key.
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
        "[redacted private key]",
    ),
    # OAuth values as query/form parameters, header fields or percent-encoded inside base strings.
    (
        re.compile(
            r"(oauth_(?:token|token_secret|verifier|session_handle|signature)"
            r"(?:=|%3D|%253D|\"?\s*[:=]\s*\"?))([^&\s\"',%]+|%[^&\s\"']*?(?=%26|%2526|&|\"|'|\s|$))"
        ),
        r"\1[redacted]",
    ),
    # OAuth 2.0: the callback's code and state in a query string; tokens, secret and PKCE verifier as
    # query/form parameters or JSON fields (the bare word ``code`` elsewhere is an error code: kept).
    (re.compile(r"([?&](?:code|state)=)[^&\s\"']+"), r"\1[redacted]"),
    (
        re.compile(r"((?:access_token|refresh_token|client_secret|code_verifier)(?:=|%3D|\"?\s*:\s*\"))([^&\s\"',]+)"),
        r"\1[redacted]",
    ),
    # The sign-in's browser id and the setup page's CSRF token, in Cookie / Set-Cookie headers.
    (re.compile(r"((?:__Host-)?jira_broker_browser=|broker_setup_csrf=)[^;\s\"',]+"), r"\1[redacted]"),
    # Connect and setup link tokens in paths (not the route template ``/connect/{token}``).
    (re.compile(r"(/(?:connect|setup)/)(?!\{token\}(?:[\s\"']|$))[^/?\s\"']+"), r"\1[redacted]"),
    # Bearer API keys and OAuth Authorization headers.
    (re.compile(r"(Bearer\s+)[^\s\"',]+", re.I), r"\1[redacted]"),
    (re.compile(r"(Authorization[\"']?\s*[:=]\s*[\"']?OAuth\s)[^\"'\n]*", re.I), r"\1[redacted]"),
]


def redact(text: str) -> str:
    """Scrub private keys, OAuth tokens, link tokens and API keys from ``text``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites each record's message through :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


# Libraries that log request URLs, bodies or OAuth parameters at DEBUG level.
_NOISY = ("oauthlib", "botocore", "boto3", "urllib3")


def _redacted_json(record: dict[str, Any]) -> str:
    """Powertools' serializer, redacted: the message, every extra field, and exception tracebacks."""
    return redact(json.dumps(record, default=str, separators=(",", ":"), ensure_ascii=False))


logger = Logger(service=SERVICE, json_serializer=_redacted_json)
for _name in _NOISY:
    logging.getLogger(_name).setLevel(logging.WARNING)
    logging.getLogger(_name).addFilter(RedactingFilter())
