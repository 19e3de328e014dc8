"""Route plumbing shared by app.py: errors to envelopes or pages, ids, team scope, JSON bodies.

Example::

    @app.route("/v1/teams/{team}/jira", methods=["GET"], authorizer=api_key_auth)
    @service_route(app)
    def get_jira(team):
        return json_response(integrations.get_integration(team))
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from chalice import Chalice, Response
from chalice.app import Request

from . import aws
from .config import load_settings, request_public_url
from .connect import describe_link
from .errors import BrokerError, Forbidden, StorageUnavailable
from .json_input import parse_json_object
from .links import CONNECT
from .logs import logger
from .pages import Who, error_page
from .responses import error_response, retry_headers
from .urls import validate_id

View = Callable[..., Response]


def _unexpected(error: Exception) -> BrokerError:
    """The broker error for an exception no view turned into one: AWS trouble (503, 409) or 500."""
    known = aws.as_broker_error(error)
    if known is not None:
        # AWS's error code and operation tell an operator what failed; request data never reaches the log.
        logger.warning("AWS could not serve a request", extra={**aws.trouble_details(error), "answer": known.code})
        return known
    # Log the type and traceback; the message of a library error is not echoed to anyone.
    logger.exception("unexpected error", extra={"error_type": type(error).__name__})
    return BrokerError()


def remember_public_url(request: Request) -> None:
    """API Gateway says which domain and stage the request came in on (the broker's public URL)."""
    context = request.context or {}
    domain, stage = context.get("domainName"), context.get("stage")
    if domain and stage and domain != "localhost":
        request_public_url.set(f"https://{domain}/{stage}")


def service_route(app: Chalice, *, jira_shaped: bool = False) -> Callable[[View], View]:
    """For API routes: validate ``team``/``user`` ids, enforce the key's team scope, answer errors as JSON
    (``jira_shaped``: with Jira's ``errorMessages`` too, see :func:`site_route`)."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapper(**params: str) -> Response:
            try:
                for kind in ("team", "user"):
                    if kind in params:
                        params[kind] = validate_id(kind, params[kind])
                _check_team_scope(app.current_request, params.get("team"))
                return view(**params)
            except BrokerError as error:
                return error_response(error, jira_shaped=jira_shaped)
            except Exception as error:  # noqa: BLE001 - the envelope must hold for every failure
                return error_response(_unexpected(error), jira_shaped=jira_shaped)

        return wrapper

    return decorate


def site_route(app: Chalice) -> Callable[[View], View]:
    """For the transparent Jira endpoint: a service route whose errors also carry Jira's error shape."""
    return service_route(app, jira_shaped=True)


def page_route(view: View) -> View:
    """For browser routes: answer errors as an HTML page naming what went wrong."""
    return _error_pages(view, link_kind=None)


def link_page_route(kind: str) -> Callable[[View], View]:
    """For ``/connect/{token}`` and ``/setup/{token}``: error pages also name whose link it was."""
    return functools.partial(_error_pages, link_kind=kind)


def _error_pages(view: View, link_kind: str | None) -> View:
    @functools.wraps(view)
    def wrapper(**params: str) -> Response:
        try:
            return view(**params)
        except BrokerError as error:
            # Naming whose link it was reads storage again: not while storage is in trouble.
            trouble = isinstance(error, StorageUnavailable)
            who = describe_link(params["token"], link_kind) if link_kind and not trouble else None
            return _page_for(error, who=who, kind=link_kind or CONNECT)
        except Exception as error:  # noqa: BLE001 - a page must answer every failure
            return _page_for(_unexpected(error), who=None, kind=link_kind or CONNECT)

    return wrapper


def _page_for(error: BrokerError, *, who: Who | None, kind: str) -> Response:
    page = error_page(error, who=who, kind=kind)
    page.headers.update(retry_headers(error))
    return page


def _required(request: Request | None) -> Request:
    # Chalice sets current_request for every HTTP invocation; None would be a wiring bug.
    if request is None:
        raise BrokerError("No HTTP request is in progress.")
    return request


def _check_team_scope(request: Request | None, team: str | None) -> None:
    context = _required(request).context or {}
    scope = (context.get("authorizer") or {}).get("team") or ""
    if team is not None and scope and scope != team:
        raise Forbidden(
            f"This API key is limited to team {scope}; it may not act on team {team}.", code="team_forbidden"
        )


def json_body(request: Request | None) -> dict[str, Any]:
    """The request's JSON object; an empty body counts as ``{}``."""
    raw = _required(request).raw_body
    if not raw or not raw.strip():
        return {}
    # UTF-8 only, at most 32 levels deep, no NaN or lone surrogates: each a 400, never a 500 later.
    return parse_json_object(raw)


def check_same_origin(request: Request | None) -> None:
    """Refuse a cross-site POST of the Continue button.

    Someone could otherwise make a victim's browser submit the attacker's own
    connect link without ever showing the page that names whose account it
    is. The page's ``Referrer-Policy: no-referrer`` makes browsers send
    ``Origin: null`` on the form POST, so ``Sec-Fetch-Site`` is the reliable signal.
    """
    headers = _required(request).headers
    site = (headers.get("sec-fetch-site") or "").lower()
    origin = headers.get("origin")
    public = urlsplit(load_settings().public_url)
    own_origin = f"{public.scheme}://{public.netloc}".lower()
    if site in {"cross-site", "same-site"} or (origin and origin != "null" and origin.lower() != own_origin):
        raise Forbidden(
            "This button was submitted from another site, so the broker did not start a connection.",
            code="cross_site_request",
        )


def query_param(request: Request | None, name: str) -> str | None:
    params = _required(request).query_params
    value = params.get(name) if params else None
    return str(value) if value is not None else None


def cookie_header(request: Request | None) -> str | None:
    """The request's ``Cookie`` header (API Gateway REST passes it as one header)."""
    return _required(request).headers.get("cookie")


_CHALICE_HINTS = {
    "method_not_allowed": "Check the method against the broker's README.",
    "unsupported_media_type": "Send JSON with 'Content-Type: application/json' (browser forms: "
    "application/x-www-form-urlencoded).",
    "bad_request": "Check the request against the broker's README.",
}


def envelope_chalice_errors(response: Response) -> Response:
    """Chalice answers some errors itself as ``{"Code", "Message"}`` (405, 415, 400); give them the
    broker's envelope and ``X-Broker-Error``."""
    body = response.body
    if response.status_code < 400 or not isinstance(body, dict) or set(body) != {"Code", "Message"}:
        return response
    code = re.sub(r"(?<!^)(?=[A-Z])", "_", str(body["Code"]).removesuffix("Error")).lower()
    message = f"{str(body['Message']).rstrip('.')}. {_CHALICE_HINTS.get(code, '')}".strip()
    error = BrokerError(message, code=code, status=response.status_code)
    converted = error_response(error)
    for name, value in (response.headers or {}).items():
        converted.headers.setdefault(name, value)
    return converted
