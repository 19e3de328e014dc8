"""What a caller may ask the proxy and the sign endpoint to send: the input checks.

Every check refuses with a 400 naming the field (``path``, ``query``,
``headers``, ``body``, ``url``, ``form``) before anything reaches Jira, so a
caller's mistake never turns into a 500 or into an OAuth problem at Jira that
the broker would report as the admin's (``integration_broken``). Messages
never echo a long or unprintable value back.

Example::

    path = check_path("/rest/api/2/myself")          # "/rest/api/2/myself", percent-encoded
    pairs = encode_query({"jql": "project = ABC"})  # [("jql", "project = ABC")]
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .errors import BrokerError, InvalidRequest
from .oauth1 import FORM_CONTENT_TYPE

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# What a caller may send on to Jira; Authorization, Cookie and Host never go.
FORWARDED_REQUEST_HEADERS = {
    "content-type": "Content-Type",
    "accept": "Accept",
    "accept-language": "Accept-Language",
    "x-atlassian-token": "X-Atlassian-Token",
}
# Lambda takes at most 6 MB in and out (base64 for binary answers): 4 MiB each way fits.
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_HEADER_CHARS = 8192  # Tomcat's whole request header block defaults to 8 KiB
# RFC 3986 characters that may stand unencoded in a path; '%' keeps the caller's own escapes.
# ';' is encoded: servlet containers and urlparse treat it as a path-parameter separator, and
# oauthlib drops an empty one from the base string ("/a;" signs as "/a").
_PATH_SAFE = "/:@!$&'()*+,=-._~%"
_DOT_SEGMENT = re.compile(r"^(\.|\.\.)$")
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A lone surrogate (JSON's "\ud800") is not text: it cannot be UTF-8 encoded, quoted or signed.
_SURROGATE = re.compile("[\ud800-\udfff]")
# Printable ASCII on one line, no leading or trailing blank: what requests and Jira's Tomcat accept.
_HEADER_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?")
# What oauthlib accepts in a signed URL's query (it refuses anything else with a ValueError).
_URL_QUERY = re.compile(r"(?:[A-Za-z0-9\-._~=&;:+,*@!()/?'$]|%[0-9A-Fa-f]{2})*")
_OAUTH_SERVLET = "/plugins/servlet/oauth"
_DECODE_ROUNDS = 3  # a front proxy plus Tomcat decode at most twice; one more round for good measure


def shown(name: str) -> str:
    """A caller's name fit to quote in a message: itself if short and printable, else a stand-in."""
    return f"'{name}'" if len(name) <= 64 and name.isprintable() else "(a long or unprintable name)"


def _surrogate_error(field: str, code: str) -> InvalidRequest:
    return InvalidRequest(
        f"{field} holds a lone surrogate (an unpaired \\ud800-\\udfff escape), which is not text. Send valid Unicode.",
        code=code,
    )


def _oauth_parameter_error(name: str, field: str) -> InvalidRequest:
    return InvalidRequest(
        f"{field} carries the OAuth parameter {shown(name)}. The broker adds the OAuth parameters (oauth_*) itself "
        "and signs them; remove it.",
        code="invalid_request",
    )


# -- path --------------------------------------------------------------------------------
def _invalid_path(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_path")


def check_path(path: object) -> str:
    """A Jira path relative to base_url, percent-encoded; raises 400 ``invalid_path``.

    It must start with a single ``/``, hold no scheme or host, no ``.`` or
    ``..`` segment (also percent-encoded), no backslash or control character,
    no lone surrogate, no query or fragment (send those as ``query``), and
    must not reach Jira's OAuth servlets in any spelling.
    """
    if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
        raise _invalid_path("path must start with a single '/', relative to the team's Jira, e.g. /rest/api/2/myself.")
    if _SURROGATE.search(path):
        raise _surrogate_error("path", "invalid_path")
    if _CONTROL.search(path) or "\\" in path:
        raise _invalid_path("path must not contain backslashes or control characters.")
    if "?" in path or "#" in path:
        raise _invalid_path("path must not carry a query or fragment; send query parameters as 'query'.")
    if _ESCAPE.search(path):
        raise _invalid_path("path has a '%' that does not start a %XX escape.")
    decoded = unquote(path)
    if "\\" in decoded or _CONTROL.search(decoded):
        raise _invalid_path("path must not contain backslashes or control characters, also percent-encoded.")
    if any(_DOT_SEGMENT.match(segment) for segment in decoded.split("/")):
        raise _invalid_path("path must not contain '.' or '..' segments, also percent-encoded.")
    if _reaches_oauth_servlet(path):
        raise _invalid_path("The OAuth endpoints are the broker's own business; call Jira's REST API instead.")
    return quote(path, safe=_PATH_SAFE)


def _reaches_oauth_servlet(path: str) -> bool:
    """Whether Jira could route this path to ``/plugins/servlet/oauth/...``.

    Servlet containers match case-insensitively here, merge repeated slashes,
    drop ``;parameters`` from segments and decode ``%XX`` (``%2F`` too, behind
    some proxies): check each decoded spelling in that canonical form.
    """
    spelling = path
    for _ in range(_DECODE_ROUNDS + 1):
        segments = (segment.split(";", 1)[0] for segment in spelling.lower().split("/"))
        canonical = re.sub("/{2,}", "/", "/".join(segments))
        if canonical == _OAUTH_SERVLET or canonical.startswith(_OAUTH_SERVLET + "/"):
            return True
        decoded = unquote(spelling)
        if decoded == spelling:
            return False
        spelling = decoded
    return False


# -- query and form parameters -------------------------------------------------------------
_FIELD_CODES = {"query": "invalid_query", "form": "invalid_body"}


def encode_query(query: object, field: str = "query") -> list[tuple[str, str]]:
    """``{"name": "v" | ["v1", "v2"]}`` as ordered pairs; numbers and booleans become text.

    ``field`` is ``query`` or ``form`` (the sign endpoint's form body); it names
    the field in messages. ``oauth_*`` names are refused: the broker signs those.
    """
    code = _FIELD_CODES[field]
    if query is None:
        return []
    if not isinstance(query, dict):
        raise InvalidRequest(f"{field} must be an object of names to a value or a list of values.", code=code)
    pairs: list[tuple[str, str]] = []
    for raw_name, value in query.items():
        name = str(raw_name)
        if _SURROGATE.search(name):
            raise _surrogate_error(f"A {field} parameter name", code)
        if name.lower().startswith("oauth_"):
            raise _oauth_parameter_error(name, field)
        for item in value if isinstance(value, list) else [value]:
            pairs.append((name, _query_value(name, item, field)))
    return pairs


def _query_value(name: str, value: object, field: str = "query") -> str:
    code = _FIELD_CODES[field]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise _surrogate_error(f"The {field} value for {shown(name)}", code)
        return value
    if isinstance(value, int | float):
        return str(value)
    raise InvalidRequest(f"{field} value for {shown(name)} must be text, a number or a boolean.", code=code)


def query_string(pairs: list[tuple[str, str]]) -> str:
    """RFC 3986 encoding (``%20``, not ``+``), so what is sent is exactly what is signed."""
    return "&".join(f"{quote(name, safe='-._~')}={quote(value, safe='-._~')}" for name, value in pairs)


def sign_form(form: object) -> str | None:
    """The sign endpoint's ``form``: the form body's parameters, encoded as they are signed."""
    return query_string(encode_query(form, field="form")) if form is not None else None


# -- method, headers, body -------------------------------------------------------------------
def _method(raw: object) -> str:
    method = raw.upper() if isinstance(raw, str) else ""
    if method not in METHODS:
        raise InvalidRequest(f"method must be one of {', '.join(METHODS)}.", code="invalid_method")
    return method


def _headers(raw: object) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequest("headers must be an object of header names to text.", code="invalid_headers")
    headers: dict[str, str] = {}
    for name, value in raw.items():
        canonical = FORWARDED_REQUEST_HEADERS.get(str(name).lower())
        if canonical is None:
            continue  # not on the allowlist: dropped, never forwarded
        headers[canonical] = _header_value(canonical, value)
    if "Content-Type" in headers:
        headers["Content-Type"] = _lower_media_type(headers["Content-Type"])
    return headers


def _header_value(name: str, value: object) -> str:
    """Jira takes latin-1 single-line values; requests refuses leading blanks. Printable ASCII is safe."""
    if not isinstance(value, str) or len(value) > MAX_HEADER_CHARS or not _HEADER_VALUE.fullmatch(value):
        raise InvalidRequest(
            f"header {name} must be text on one line of printable ASCII, without leading or trailing spaces "
            f"or control characters, at most {MAX_HEADER_CHARS} characters.",
            code="invalid_headers",
        )
    return value


def _lower_media_type(content_type: str) -> str:
    # Media types are case-insensitive; the signer and Jira must agree on whether the body is a form.
    media_type, separator, parameters = content_type.partition(";")
    return media_type.strip().lower() + separator + parameters


def _body(request: dict[str, Any], headers: dict[str, str]) -> bytes | str | None:
    is_form = FORM_CONTENT_TYPE in headers.get("Content-Type", "")
    if "json" in request and "body" in request:
        raise InvalidRequest("Send either 'json' or 'body', not both.", code="invalid_body")
    if "json" in request:
        if is_form:
            raise InvalidRequest(
                "json goes to Jira as JSON, not as a form; send a form body as 'body' (name=value&...).",
                code="invalid_body",
            )
        headers.setdefault("Content-Type", "application/json")
        data: bytes | str = _json_bytes(request["json"])
    elif "body" in request:
        data = _text_body(request["body"])
    else:
        return None
    _check_size(len(data.encode() if isinstance(data, str) else data))
    # Form bodies are signed, as text; JSON and other bodies are never part of the signature.
    if isinstance(data, str) and not is_form:
        return data.encode()
    if isinstance(data, str):
        _refuse_oauth_form_parameters(data)
    return data


def _json_bytes(value: object) -> bytes:
    try:
        return json.dumps(value, allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError):
        raise InvalidRequest(
            "json must be a JSON value without NaN or Infinity, not nested too deeply.", code="invalid_body"
        ) from None


def _text_body(body: object) -> str:
    if not isinstance(body, str):
        raise InvalidRequest("body must be a string; send JSON values as 'json'.", code="invalid_body")
    if _SURROGATE.search(body):
        raise _surrogate_error("body", "invalid_body")
    return body


def _refuse_oauth_form_parameters(form: str) -> None:
    # A form body's parameters are signed with the OAuth ones: Jira would see two oauth_token values.
    for name, _ in parse_qsl(form, keep_blank_values=True):
        if name.lower().startswith("oauth_"):
            raise _oauth_parameter_error(name, "The form body")


def _check_size(size: int) -> None:
    if size > MAX_BODY_BYTES:
        raise BrokerError(
            f"The request body is {size} bytes; the proxy takes at most {MAX_BODY_BYTES} bytes. For large uploads "
            "such as attachments, get a signature from the sign endpoint and send the request yourself.",
            code="body_too_large",
            status=413,
        )


# -- the sign endpoint's url ------------------------------------------------------------------
def _url_not_allowed(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="url_not_allowed")


def _url_under_base(url: object, base_url: str) -> str:
    """The URL, if it lies under the team's base_url (same scheme, host, port, context path)."""
    if not isinstance(url, str):
        raise _url_not_allowed("url must be an absolute URL under the team's Jira base URL.")
    if not url.isascii() or _CONTROL.search(url) or " " in url:
        raise _url_not_allowed(
            "url must be ASCII, as it goes on the wire: percent-encode spaces and non-ASCII characters "
            "(%20, %C3%A9), and send no control characters."
        )
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed '[' of an IPv6 host
        raise _url_not_allowed("url is not a valid absolute URL.") from None
    base = urlsplit(base_url)
    same_origin = (parts.scheme.lower(), parts.netloc.lower()) == (base.scheme.lower(), base.netloc.lower())
    path = parts.path or "/"
    under = path == base.path or path.startswith(base.path.rstrip("/") + "/")
    if not same_origin or not under or parts.fragment:
        raise _url_not_allowed(f"url must lie under the team's Jira base URL {base_url}.")
    check_path("/" + path[len(base.path) :].lstrip("/") if base.path else path)
    _check_url_query(parts.query)
    return url


def _check_url_query(query: str) -> None:
    if not _URL_QUERY.fullmatch(query):
        raise InvalidRequest(
            "url's query must be URL-encoded (name=value&name2=value2), with spaces, quotes and other reserved "
            "characters as %XX escapes.",
            code="invalid_query",
        )
    for name, _ in parse_qsl(query, keep_blank_values=True):
        if name.lower().startswith("oauth_"):
            raise _oauth_parameter_error(name, "url's query")
