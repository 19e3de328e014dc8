"""URL rules: team and user ids, Jira base URLs, return_to, and where the broker may connect.

Example::

    base_url = normalize_base_url("https://jira.acme.com/jira/")   # "https://jira.acme.com/jira"
    check_jira_destination(base_url, settings)                      # raises for 10.0.0.5 in prod
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import idna

from .config import Settings
from .errors import InvalidRequest, JiraUnreachable

_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
_CONTROL = re.compile(r"[\x00-\x20\x7f\\]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_LABEL = re.compile(r"^[A-Za-z0-9_-]{1,63}$")


def validate_id(kind: str, value: str) -> str:
    """Return a team or user id, or raise 400 ``invalid_<kind>``.

    ``chalice local`` hands path parameters over still percent-encoded
    (``%40``) while API Gateway decodes them, so decode once here. A ``%``
    is not a legal id character, so decoding can never widen what passes.
    """
    if "%" in value:
        value = unquote(value)
    if not _ID.match(value):
        raise InvalidRequest(
            f"The {kind} id must be 1 to 128 characters of letters, digits and . _ : @ -",
            code=f"invalid_{kind}",
        )
    return value


def normalize_base_url(raw: object) -> str:
    """Check a Jira base URL's shape and drop a trailing slash; case and context path are kept.

    A non-ASCII host name becomes its IDNA A-label (``xn--...``): that is the
    host requests connects to, so the address check resolves the same name.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise _bad_base_url("base_url must be a non-empty string such as https://jira.example.com.")
    url = raw.strip()
    if _CONTROL.search(url):
        raise _bad_base_url("base_url must not contain spaces, control characters or backslashes.")
    if _SURROGATE.search(url):
        raise _bad_base_url("base_url holds a lone surrogate (an unpaired \\ud800-\\udfff escape); send valid Unicode.")
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed '[' or a bracketed host that is no IPv6 address
        raise _bad_base_url(
            "base_url is not a valid URL; write an IPv6 host in brackets, e.g. http://[::1]:8080."
        ) from None
    if parts.scheme.lower() not in {"http", "https"}:
        raise _bad_base_url("base_url must start with http:// or https://.")
    if "@" in parts.netloc:
        raise _bad_base_url("base_url must not carry a user name or password; remove the 'user@' part.")
    if "?" in url or parts.query:
        raise _bad_base_url("base_url must not carry a query string; remove the '?...' part.")
    if "#" in url or parts.fragment:
        raise _bad_base_url("base_url must not carry a fragment; remove the '#...' part.")
    try:
        port = parts.port  # raises ValueError for a bad port
    except ValueError:
        raise _bad_base_url("base_url has an invalid port number.") from None
    if port == 0:
        raise _bad_base_url("base_url has an invalid port number: use 1 to 65535.")
    if not parts.hostname:
        raise _bad_base_url("base_url has no host name.")
    netloc = _checked_netloc(parts.netloc, parts.hostname)
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _checked_netloc(netloc: str, hostname: str) -> str:
    """The netloc, if its host is an IP address or a DNS name requests and getaddrinfo can both use."""
    if netloc.startswith("["):
        if "%" in hostname:  # urlsplit has already checked the rest of the IPv6 literal
            raise _bad_base_url("base_url's IPv6 host must not carry a zone id ('%...').")
        return netloc
    name = hostname.removesuffix(".")  # a fully qualified name may end with a dot
    if name.isascii():
        _check_labels(name, hostname)
        return netloc
    try:  # what requests does with a non-ASCII host (IDNA 2008 with UTS 46 mapping)
        a_label = idna.encode(name, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise _bad_base_url(
            "base_url's host name is not a valid internationalized domain name (IDNA); check it for typos."
        ) from None
    _check_labels(a_label, hostname)
    _, colon, port = netloc.partition(":")
    return a_label + colon + port


def _check_labels(name: str, hostname: str) -> None:
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise _bad_base_url(
            f"base_url's host {_shown_host(hostname)} is not a valid host name: each dot-separated label must be "
            "1 to 63 letters, digits, '-' or '_', and the whole name at most 253 characters."
        )


def _shown_host(hostname: str) -> str:
    return hostname if len(hostname) <= 100 and hostname.isprintable() else "(too long to show)"


def _bad_base_url(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_base_url")


def check_jira_destination(base_url: str, settings: Settings) -> None:
    """Refuse Jira URLs the stage does not allow: http, and private or link-local hosts.

    Outside the local stage the broker must not become a way into the network
    it runs in (SSRF: the instance metadata address, internal services).
    """
    parts = urlsplit(base_url)
    if parts.scheme.lower() != "https" and not settings.allow_http_jira:
        raise InvalidRequest(
            f"base_url must use https:// in the {settings.stage} stage "
            "(set BROKER_ALLOW_HTTP_JIRA=true to allow http).",
            code="insecure_base_url",
        )
    if settings.allow_private_networks:
        return
    host = parts.hostname or ""
    for address in _resolve(host, parts.port or (443 if parts.scheme.lower() == "https" else 80)):
        if not _is_public(address):
            raise InvalidRequest(
                f"base_url's host {host} resolves to {address}, a loopback, link-local or private "
                "address, which this broker may not reach (set BROKER_ALLOW_PRIVATE_NETWORKS=true "
                "if your Jira is on a private network).",
                code="base_url_not_allowed",
            )


_checked: dict[tuple[str, str], float] = {}
CHECK_SECONDS = 60


def check_jira_destination_cached(base_url: str, settings: Settings) -> None:
    """:func:`check_jira_destination`, remembered for a minute per Jira in the warm container.

    The proxy checks on every call, so a Jira host whose DNS later points at a
    private address is refused within a minute, without a lookup per call.
    """
    key = (base_url, settings.stage)
    now = time.monotonic()
    if now - _checked.get(key, -CHECK_SECONDS) < CHECK_SECONDS:
        return
    check_jira_destination(base_url, settings)
    _checked[key] = now


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise JiraUnreachable(
            f"The host name {host} could not be resolved. Check base_url for typos.",
            code="jira_unreachable",
        ) from None
    return sorted({str(info[4][0]) for info in infos})


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_return_to(raw: object, settings: Settings) -> str:
    """Return ``return_to`` if its origin is on the configured allowlist, else raise 400."""
    if not isinstance(raw, str) or not raw:
        raise InvalidRequest("return_to must be an absolute http(s) URL.", code="invalid_return_to")
    try:
        parts = urlsplit(raw)
    except ValueError:  # an unclosed '[' or a bracketed host that is no IPv6 address
        raise InvalidRequest("return_to must be an absolute http(s) URL.", code="invalid_return_to") from None
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname or "@" in parts.netloc:
        raise InvalidRequest("return_to must be an absolute http(s) URL.", code="invalid_return_to")
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    allowed = {o.lower() for o in settings.return_to_origins}
    if origin not in allowed:
        listed = ", ".join(settings.return_to_origins) or "none are configured"
        raise InvalidRequest(
            f"return_to's origin {origin} is not allowed. Allowed origins: {listed} (BROKER_RETURN_TO_ORIGINS).",
            code="return_to_not_allowed",
        )
    return raw


def with_query(url: str, **params: str) -> str:
    """Add query parameters to a URL that may already have some."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def host_label(base_url: str) -> str:
    """What a person recognises a Jira by: host[:port] plus the context path."""
    parts = urlsplit(base_url)
    return f"{parts.netloc}{parts.path}"


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
