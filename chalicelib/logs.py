"""Logging: Powertools' structured Logger, with every secret scrubbed before it is written.

The broker never logs a secret on purpose; :func:`redact` is the safety net
for what libraries and access logs print (URLs with ``oauth_token``, connect
links, ``Authorization`` headers, PEM blocks).

Example::

    logger.info("integration saved", extra={"team": team})
    redact("GET /connect/eyJr.abc HTTP/1.1")   # 'GET /connect/[redacted] HTTP/1.1'
"""

from __future__ import annotations

import logging
import re

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
    # Connect and setup link tokens in paths.
    (re.compile(r"(/(?:connect|setup)/)[^/?\s\"']+"), r"\1[redacted]"),
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
_NOISY = ("oauthlib", "requests_oauthlib", "botocore", "boto3", "urllib3")

logger = Logger(service=SERVICE)
logger.addFilter(RedactingFilter())
for _name in _NOISY:
    logging.getLogger(_name).setLevel(logging.WARNING)
    logging.getLogger(_name).addFilter(RedactingFilter())
