"""Links in Jira's answers pointed back through the broker, for the transparent per-user endpoint.

Jira's JSON is full of absolute URLs under its base URL: ``self``, pagination's ``nextPage``,
attachments' ``content`` and ``thumbnail``, ``avatarUrls``, ``serverInfo``'s ``baseUrl``. A client
library follows them with the credentials it was given, the broker's API key, so each one is
rewritten to the same user's transparent base: the client stays on the broker and never sends
the API key to Jira itself. Only URLs *under* a base are rewritten: ``https://jira.example.com/jira-legacy``
is not under ``https://jira.example.com/jira``, and a URL elsewhere (a CDN avatar, a Confluence link)
is left as it is.

Example::

    rewriter = LinkRewriter(["https://jira.example.com/jira"], "https://broker.example.com/v1/teams/acme/users/alice/jira/site")
    rewriter.url("https://jira.example.com/jira/rest/api/2/issue/10000")
    # 'https://broker.example.com/v1/teams/acme/users/alice/jira/site/rest/api/2/issue/10000'
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def _origin(scheme: str, netloc: str) -> str:
    """``scheme://host[:port]`` compared without case and without a default port (as URLs are equal)."""
    scheme, netloc = scheme.lower(), netloc.lower().rsplit("@", 1)[-1]
    default = _DEFAULT_PORTS.get(scheme)
    if default and netloc.endswith(default):
        netloc = netloc[: -len(default)]
    return f"{scheme}://{netloc}"


class LinkRewriter:
    """Rewrites URLs under any of ``bases`` (Jira's base URL as configured and as Jira reports it) to ``site``."""

    def __init__(self, bases: Iterable[str], site: str) -> None:
        self.site = site.rstrip("/")
        found = set()
        for base in bases:
            if base:
                parts = urlsplit(base)
                found.add((_origin(parts.scheme, parts.netloc), parts.path.rstrip("/")))
        self._bases = sorted(found, key=lambda base: -len(base[1]))  # the longest path first

    def url(self, value: str) -> str:
        """``value`` moved under the site when it lies under a base; else unchanged."""
        if len(value) > 8192 or not value[:8].lower().startswith(("http://", "https://")):
            return value
        try:
            parts = urlsplit(value)
        except ValueError:  # not a URL after all: left as it is
            return value
        origin = _origin(parts.scheme, parts.netloc)
        for base_origin, base_path in self._bases:
            rest = parts.path[len(base_path) :]
            if origin == base_origin and parts.path.startswith(base_path) and (not rest or rest.startswith("/")):
                query = f"?{parts.query}" if parts.query else ""
                fragment = f"#{parts.fragment}" if parts.fragment else ""
                return f"{self.site}{rest}{query}{fragment}"
        return value

    def json_body(self, body: bytes) -> bytes:
        """Every string value of a JSON document rewritten (keys never); a body that is no JSON comes back as it is."""
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return body
        changed = [False]
        rewritten = self._walk(document, changed)
        if not changed[0]:
            return body  # nothing to rewrite: Jira's bytes, exactly
        return json.dumps(rewritten, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def _walk(self, value: Any, changed: list[bool]) -> Any:
        if isinstance(value, str):
            moved = self.url(value)
            if moved != value:
                changed[0] = True
            return moved
        if isinstance(value, list):
            return [self._walk(item, changed) for item in value]
        if isinstance(value, dict):
            return {key: self._walk(item, changed) for key, item in value.items()}
        return value
