"""Reading a JSON request body: UTF-8, finite numbers, at most 32 levels deep, no lone surrogates.

``json.loads`` alone lets through what breaks later: a body nested a few
thousand levels deep raises RecursionError, ``NaN`` and ``1e999`` are not
JSON, and a ``"\\ud800"`` escape decodes to a lone surrogate that no UTF-8
encoder, URL quoter or signer accepts. Each is refused here, up front, with a
400 ``invalid_json`` saying what to change.

Example::

    body = parse_json_object(b'{"method": "GET", "path": "/rest/api/2/myself"}')
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import InvalidRequest

MAX_JSON_DEPTH = 32  # the deepest route body is a proxied Jira payload, a dozen levels at most
_SURROGATE = re.compile("[\ud800-\udfff]")
# A lone surrogate can only come from a \uD800-\uDFFF escape: the text itself is strict UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _invalid(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_json")


def _too_deep() -> InvalidRequest:
    return _invalid(f"The request body nests objects and arrays more than {MAX_JSON_DEPTH} levels deep; flatten it.")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _invalid(f"The request body holds a number too large for a float ({text[:20]}...); send it as text.")
    return value


def _no_constant(name: str) -> Any:
    raise _invalid(f"The request body holds {name}, which is not JSON; send numbers or null instead.")


def parse_json_object(raw: bytes | str) -> dict[str, Any]:
    """The JSON object in ``raw``; raises 400 ``invalid_json`` for anything else."""
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise _invalid("The request body is not UTF-8 text; send JSON encoded as UTF-8.") from None
    try:
        body = json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise _too_deep() from None
    except ValueError:
        raise _invalid("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object.")
    _check_tree(body, texts=bool(_SURROGATE_ESCAPE.search(text)))
    return body


def _check_tree(body: dict[str, Any], *, texts: bool) -> None:
    """Depth, and (when an escape could have made one) lone surrogates, without recursion."""
    pending: list[tuple[dict[str, Any] | list[Any], int, str]] = [(body, 1, "")]
    while pending:
        node, depth, where = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if texts and isinstance(key, str) and _SURROGATE.search(key):
                raise _surrogate(f"a name in {where or 'the top-level object'}")
            if isinstance(value, dict | list):
                pending.append((value, depth + 1, _at(where, key)))
            elif texts and isinstance(value, str) and _SURROGATE.search(value):
                raise _surrogate(_at(where, key))


def _at(where: str, key: str | int) -> str:
    """A location such as ``query.jql`` or ``fields.labels[2]``; long or odd names are elided."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    name = key if len(key) <= 40 and key.isprintable() else "…"
    return f"{where}.{name}" if where else name


def _surrogate(where: str) -> InvalidRequest:
    return _invalid(
        f"The request body holds a lone surrogate (an unpaired \\ud800-\\udfff escape) in {where}, which is not "
        "text; send valid Unicode."
    )
