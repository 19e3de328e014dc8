"""jira-oauth-broker: routes and wiring only. The work happens in chalicelib/.

Importing this module is the cold start of both Lambda functions, and the authorizer
(``api_key_auth``, the same module) needs only chalice, boto3 and the API key lookup. So each
route imports its chalicelib modules inside the view, on its first call, and the route
decorators from ``chalicelib.web`` are applied then too (:func:`_web`): nothing at the top of
this file may import cryptography, oauthlib, requests or the pages. ``make bench`` measures it.
"""

from __future__ import annotations

import functools
import gc
import os
from collections.abc import Callable
from typing import Any

if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    gc.disable()  # a cold start collects no garbage until its first answer: see _cold_start_over

from chalice import AuthResponse, Chalice, ConvertToMiddleware, Response
from chalice.app import Request

from chalicelib import observability
from chalicelib.apikeys import bearer_token, lookup
from chalicelib.config import load_settings
from chalicelib.errors import StorageUnavailable
from chalicelib.links import CONNECT, SETUP
from chalicelib.local_boot import prepare_chalice_local
from chalicelib.logs import logger
from chalicelib.responses import empty_response, json_response, passthrough_response, redirect
from chalicelib.store import Store

View = Callable[..., Response]


def _web(name: str, *args: Any) -> Callable[[View], View]:
    """The route decorator ``chalicelib.web.<name>`` (made with ``args``, if any), applied on the view's first call."""

    def decorate(view: View) -> View:
        decorated: list[View] = []

        @functools.wraps(view)
        def call(**params: str) -> Response:
            if not decorated:
                from chalicelib import web

                make = getattr(web, name)
                decorated.append(make(*args)(view) if args else make(view))
            return decorated[0](**params)

        return call

    return decorate


# configure_logs=False: Powertools' Logger owns logging, or every line prints twice.
app = Chalice(app_name="jira-oauth-broker", configure_logs=False)
app.register_middleware(ConvertToMiddleware(logger.inject_lambda_context))
app.register_middleware(observability.per_request, "http")  # one log line and the metrics per request
service = _web("service_route", app)  # API routes: ids checked, the key's team scope, errors as JSON
page_route = _web("page_route")  # browser pages: errors as pages
prepare_chalice_local()  # plain `chalice local`: its AWS stand-in, table and key; a no-op anywhere else


@app.middleware("http")
def broker_envelope(event: Request, get_response: Callable[[Request], Response]) -> Response:
    """Every request: learn the public URL it came in on; give Chalice's own errors the broker's envelope;
    answer bytes (every answer goes base64 through API Gateway: see ``binary_types`` below)."""
    from chalicelib.deadline import start_request
    from chalicelib.responses import as_bytes, default_accept
    from chalicelib.web import envelope_chalice_errors, remember_public_url

    remember_public_url(event)
    default_accept(event)  # no Accept: */* (with */* binary, Chalice would answer 400 without one)
    try:
        with start_request(load_settings().request_budget_seconds):  # every Jira call of this request fits in it
            return as_bytes(envelope_chalice_errors(get_response(event)))
    finally:
        _cold_start_over()


# Every media type is binary: API Gateway base64-decodes every answer whatever the caller's Accept (it looks
# only at the first value), and Chalice base64-encodes every answer, so Jira's attachments and avatars reach
# clients sending "Accept: application/json, */*" or none as bytes. Request bodies arrive base64 (raw_body
# decodes them). Costs a third more Lambda payload, nothing on the wire: README "Binary answers".
app.api.binary_types = ["*/*"]

FORM = ["application/x-www-form-urlencoded", "application/json", "multipart/form-data", "text/plain"]


@app.authorizer(ttl_seconds=60)
def api_key_auth(auth_request):  # type: ignore[no-untyped-def]
    """``Authorization: Bearer <key>``: allow with the key's team scope, deny (403), or neither (503).

    A header that is no Bearer key (``Authorization: jb_...``) is refused like a missing one: 401,
    whose message shows ``Authorization: Bearer <key>``, not 403 "key not valid".
    """
    try:
        return _check_key(auth_request.token, auth_request.method_arn)
    finally:
        _cold_start_over()


def _check_key(token: str, method_arn: str) -> AuthResponse | dict[str, Any] | None:
    if bearer_token(token) is None:
        # API Gateway's only way to a 401 from a Lambda authorizer: raise exactly "Unauthorized"
        # (its UNAUTHORIZED Gateway Response in infra/; scripts/chalice_local.py does the same locally).
        observability.authorizer_decision("no_key")
        raise Exception("Unauthorized")
    try:
        record = lookup(Store(load_settings().table_name), token)
    except StorageUnavailable:
        # Fail closed with an answer. No output is an invalid authorizer answer: API Gateway then
        # answers its AUTHORIZER_CONFIGURATION_ERROR response (503 authorizer_unavailable in infra/),
        # as it would for a raise, and Chalice's test client and chalice local answer it too
        # instead of crashing or dropping the connection. Never a deny: the key may be valid.
        observability.authorizer_decision("unavailable")
        return None
    if record is None:
        observability.authorizer_decision("deny")
        return _deny_everything(method_arn)
    observability.authorizer_decision("allow", record)
    return AuthResponse(routes=["*"], principal_id=record["name"], context={"team": record.get("team") or ""})


def _deny_everything(method_arn: str) -> dict[str, Any]:
    """An explicit Deny of every route of this API stage (API Gateway caches the answer per key for 60 s).

    Chalice's own deny, ``AuthResponse(routes=[])``, is an Allow of no resource; an explicit Deny
    leaves API Gateway nothing to interpret (aws/chalice#1619 reports the empty Allow letting calls through).
    """
    api_and_stage = "/".join(method_arn.split("/")[:2])  # arn:aws:execute-api:REGION:ACCOUNT:API/STAGE
    statement = {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": [f"{api_and_stage}/*/*"]}
    return {"principalId": "anonymous", "policyDocument": {"Version": "2012-10-17", "Statement": [statement]}}


# -- the team's Jira integration ---------------------------------------------------
@app.route("/v1/teams/{team}/jira", methods=["PUT"], authorizer=api_key_auth)
@service
def put_jira(team: str) -> Response:
    from chalicelib import integrations

    status, body = integrations.put_integration(team, _json_body())
    return json_response(body, status)


@app.route("/v1/teams/{team}/jira", methods=["GET"], authorizer=api_key_auth)
@service
def get_jira(team: str) -> Response:
    from chalicelib import integrations

    return json_response(integrations.get_integration(team))


@app.route("/v1/teams/{team}/jira", methods=["DELETE"], authorizer=api_key_auth)
@service
def delete_jira(team: str) -> Response:
    from chalicelib import integrations

    integrations.delete_integration(team)
    return empty_response()


@app.route("/v1/teams/{team}/jira/key-pair", methods=["POST"], authorizer=api_key_auth)
@service
def create_key_pair(team: str) -> Response:
    from chalicelib import integrations

    return json_response(integrations.create_key_pair(team, _json_body()), 201)


# -- users -----------------------------------------------------------------------------
@app.route("/v1/teams/{team}/users/{user}/jira/connect-link", methods=["POST"], authorizer=api_key_auth)
@service
def create_connect_link(team: str, user: str) -> Response:
    from chalicelib import connect

    return json_response(connect.create_link(team, user, _json_body()), 201)


@app.route("/v1/teams/{team}/users/{user}/jira", methods=["GET"], authorizer=api_key_auth)
@service
def get_connection(team: str, user: str) -> Response:
    from chalicelib import connect

    return json_response(connect.get_connection(team, user))


@app.route("/v1/teams/{team}/users/{user}/jira", methods=["DELETE"], authorizer=api_key_auth)
@service
def delete_connection(team: str, user: str) -> Response:
    from chalicelib import connect

    connect.delete_connection(team, user)
    return empty_response()


# -- acting as the user -------------------------------------------------------------------
@app.route("/v1/teams/{team}/users/{user}/jira/proxy", methods=["POST"], authorizer=api_key_auth)
@service
def proxy_call(team: str, user: str) -> Response:
    from chalicelib import proxy

    upstream = proxy.proxy_call(team, user, _json_body())
    return passthrough_response(upstream.status, upstream.headers, upstream.body)


@app.route("/v1/teams/{team}/users/{user}/jira/sign", methods=["POST"], authorizer=api_key_auth)
@service
def sign(team: str, user: str) -> Response:
    from chalicelib import proxy

    return json_response(proxy.sign(team, user, _json_body()))


# The transparent endpoint: a Jira per user, for unmodified Jira client libraries. Chalice's router has no
# greedy parameters: deployed, API Gateway matches {proxy+} and puts the rest in pathParameters; under
# chalice local and the test client, scripts/chalice_local.py teaches chalice's route matcher the same.
SITE_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]


@app.route(
    "/v1/teams/{team}/users/{user}/jira/site/{proxy+}",
    methods=SITE_METHODS,
    content_types=["*/*"],
    authorizer=api_key_auth,
)
@_web("site_route", app)
def jira_site(team: str, user: str) -> Response:
    from chalicelib import transparent

    request = app.current_request
    assert request is not None  # Chalice sets it for every HTTP invocation
    upstream = transparent.site_call(team, user, (request.uri_params or {}).get("proxy", ""), request)
    return passthrough_response(upstream.status, upstream.headers, upstream.body)


# -- browser pages -------------------------------------------------------------------
@app.route("/connect/{token}", methods=["GET"], content_types=FORM)
@_web("link_page_route", CONNECT)
def view_connect_link(token: str) -> Response:
    from chalicelib import connect, pages
    from chalicelib.urls import origin_of

    link = connect.check_link(token)
    return pages.connect_page(
        host=link.host,
        team=link.claims.team,
        user=link.claims.user,
        action=f"{load_settings().public_url}/connect/{token}",  # absolute: API Gateway adds a stage path
        jira_origin=origin_of(link.integration["base_url"]),
    )


@app.route("/connect/{token}", methods=["POST"], content_types=FORM)
@_web("link_page_route", CONNECT)
def start_connect(token: str) -> Response:
    from chalicelib import browser, signin
    from chalicelib.web import check_same_origin, cookie_header

    request = app.current_request
    check_same_origin(request)
    settings = load_settings()
    started = signin.start(token, browser.read(cookie_header(request), settings), settings)
    return redirect(started.authorize_url, headers={"Set-Cookie": browser.set_cookie(started.browser_id, settings)})


@app.route("/oauth/callback", methods=["GET"], content_types=FORM)
@page_route
def oauth_callback() -> Response:
    """Jira's redirect back after its OAuth 1.0a Allow page: ``oauth_token`` and ``oauth_verifier``."""
    return _signin_finished("oauth1", ("oauth_token", "oauth_verifier"))


@app.route("/oauth2/callback", methods=["GET"], content_types=FORM)
@page_route
def oauth2_callback() -> Response:
    """Jira's redirect back after its OAuth 2.0 consent page: ``code`` and ``state``, or ``error``."""
    return _signin_finished("oauth2", ("state", "code", "error", "error_description"))


def _signin_finished(auth: str, names: tuple[str, ...]) -> Response:
    from chalicelib import browser, pages, signin
    from chalicelib.urls import with_query
    from chalicelib.web import cookie_header, query_param

    request = app.current_request
    answer = {name: query_param(request, name) for name in names}
    outcome = signin.finish(auth, answer, browser.read(cookie_header(request), load_settings()))
    if outcome.return_to:
        extra = {"jira_error": outcome.error.code} if outcome.result == "error" and outcome.error else {}
        return redirect(with_query(outcome.return_to, jira=outcome.result, **extra))
    who = {"host": outcome.host, "team": outcome.team, "user": outcome.user}
    if outcome.result == "connected":
        name = outcome.jira_user.get("name") or ""
        return pages.connected_page(**who, display_name=outcome.jira_user.get("display_name") or "", jira_name=name)
    if outcome.result == "denied":
        return pages.denied_page(**who)
    assert outcome.error is not None
    return pages.error_page(outcome.error, title="Jira was not connected", who=pages.Who(**who))


# -- setup pages: the admin's setup link (key pair, Application Link, verify, connect) ------
@app.route("/v1/teams/{team}/jira/setup-link", methods=["POST"], authorizer=api_key_auth)
@service
def create_setup_link(team: str) -> Response:
    from chalicelib import setup

    return json_response(setup.create_link(team, _json_body()), 201)


@app.route("/setup/{token}", methods=["GET"], content_types=FORM)
@_web("link_page_route", SETUP)
def view_setup_link(token: str) -> Response:
    from chalicelib import setup

    return setup.show(token, app.current_request)


@app.route("/setup/{token}", methods=["POST"], content_types=FORM)
@_web("link_page_route", SETUP)
def submit_setup(token: str) -> Response:
    from chalicelib import setup

    return setup.submit(token, app.current_request)


# -- end of setup pages ----------------------------------------------------------------------


@app.route("/health", methods=["GET"])
def health() -> Response:
    return json_response({"status": "ok", "stage": load_settings().stage})


def _json_body() -> dict[str, Any]:
    from chalicelib.web import json_body

    return json_body(app.current_request)


def _cold_start_over() -> None:
    """After a Lambda's first answer: freeze what the cold start made and collect garbage again."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


# Last: everything importing this module made lives as long as the process. Frozen, the garbage
# collector never scans it again, so the first request's collections (while botocore parses its
# JSON models, ~1 MB) stay cheap: ~20 ms of the authorizer's cold start (`make bench`).
gc.freeze()
