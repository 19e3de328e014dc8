"""jira-oauth-broker: routes and wiring only. The work happens in chalicelib/."""

from __future__ import annotations

from collections.abc import Callable

from chalice import AuthResponse, Chalice, ConvertToMiddleware, Response
from chalice.app import Request

from chalicelib import browser, connect, integrations, pages, proxy, setup, signin
from chalicelib.apikeys import bearer_token, lookup
from chalicelib.config import load_settings
from chalicelib.deadline import start_request
from chalicelib.errors import StorageUnavailable
from chalicelib.links import CONNECT, SETUP
from chalicelib.local_boot import prepare_chalice_local
from chalicelib.logs import logger
from chalicelib.resources import store_for
from chalicelib.responses import empty_response, json_response, passthrough_response, redirect
from chalicelib.urls import origin_of, with_query
from chalicelib.web import (
    check_same_origin,
    cookie_header,
    envelope_chalice_errors,
    json_body,
    link_page_route,
    page_route,
    query_param,
    remember_public_url,
    service_route,
)

# configure_logs=False: Powertools' Logger owns logging, or every line prints twice.
app = Chalice(app_name="jira-oauth-broker", configure_logs=False)
app.register_middleware(ConvertToMiddleware(logger.inject_lambda_context))
service = service_route(app)
prepare_chalice_local()  # plain `chalice local`: its AWS stand-in, table and key; a no-op anywhere else


@app.middleware("http")
def broker_envelope(event: Request, get_response: Callable[[Request], Response]) -> Response:
    """Every request: learn the public URL it came in on; give Chalice's own errors the broker's envelope."""
    remember_public_url(event)
    with start_request(load_settings().request_budget_seconds):  # every Jira call of this request fits in it
        return envelope_chalice_errors(get_response(event))


# Binary answers the proxy passes through (base64 through API Gateway); the caller's Accept must match.
app.api.binary_types.extend(["application/pdf", "application/gzip", "application/x-zip-compressed", "image/svg+xml"])

FORM = ["application/x-www-form-urlencoded", "application/json", "multipart/form-data", "text/plain"]


@app.authorizer(ttl_seconds=60)
def api_key_auth(auth_request):  # type: ignore[no-untyped-def]
    """``Authorization: Bearer <key>``: allow with the key's team scope, deny (403), or neither (503).

    A header that is no Bearer key (``Authorization: jb_...``) is refused like a missing one: 401,
    whose message shows ``Authorization: Bearer <key>``, not 403 "key not valid".
    """
    if bearer_token(auth_request.token) is None:
        # API Gateway's only way to a 401 from a Lambda authorizer: raise exactly "Unauthorized"
        # (its UNAUTHORIZED Gateway Response in infra/; scripts/chalice_local.py does the same locally).
        raise Exception("Unauthorized")
    try:
        record = lookup(store_for(load_settings()), auth_request.token)
    except StorageUnavailable:
        # Fail closed with an answer. No output is an invalid authorizer answer: API Gateway then
        # answers its AUTHORIZER_CONFIGURATION_ERROR response (503 authorizer_unavailable in infra/),
        # as it would for a raise, and Chalice's test client and chalice local answer it too
        # instead of crashing or dropping the connection. Never a deny: the key may be valid.
        return None
    if record is None:
        return AuthResponse(routes=[], principal_id="anonymous")
    return AuthResponse(routes=["*"], principal_id=record["name"], context={"team": record.get("team") or ""})


# -- the team's Jira integration ---------------------------------------------------
@app.route("/v1/teams/{team}/jira", methods=["PUT"], authorizer=api_key_auth)
@service
def put_jira(team: str) -> Response:
    status, body = integrations.put_integration(team, json_body(app.current_request))
    return json_response(body, status)


@app.route("/v1/teams/{team}/jira", methods=["GET"], authorizer=api_key_auth)
@service
def get_jira(team: str) -> Response:
    return json_response(integrations.get_integration(team))


@app.route("/v1/teams/{team}/jira", methods=["DELETE"], authorizer=api_key_auth)
@service
def delete_jira(team: str) -> Response:
    integrations.delete_integration(team)
    return empty_response()


@app.route("/v1/teams/{team}/jira/key-pair", methods=["POST"], authorizer=api_key_auth)
@service
def create_key_pair(team: str) -> Response:
    return json_response(integrations.create_key_pair(team, json_body(app.current_request)), 201)


# -- users -----------------------------------------------------------------------------
@app.route("/v1/teams/{team}/users/{user}/jira/connect-link", methods=["POST"], authorizer=api_key_auth)
@service
def create_connect_link(team: str, user: str) -> Response:
    return json_response(connect.create_link(team, user, json_body(app.current_request)), 201)


@app.route("/v1/teams/{team}/users/{user}/jira", methods=["GET"], authorizer=api_key_auth)
@service
def get_connection(team: str, user: str) -> Response:
    return json_response(connect.get_connection(team, user))


@app.route("/v1/teams/{team}/users/{user}/jira", methods=["DELETE"], authorizer=api_key_auth)
@service
def delete_connection(team: str, user: str) -> Response:
    connect.delete_connection(team, user)
    return empty_response()


# -- acting as the user -------------------------------------------------------------------
@app.route("/v1/teams/{team}/users/{user}/jira/proxy", methods=["POST"], authorizer=api_key_auth)
@service
def proxy_call(team: str, user: str) -> Response:
    upstream = proxy.proxy_call(team, user, json_body(app.current_request))
    return passthrough_response(upstream.status, upstream.headers, upstream.body, app.api.binary_types)


@app.route("/v1/teams/{team}/users/{user}/jira/sign", methods=["POST"], authorizer=api_key_auth)
@service
def sign(team: str, user: str) -> Response:
    return json_response(proxy.sign(team, user, json_body(app.current_request)))


# -- browser pages -------------------------------------------------------------------
@app.route("/connect/{token}", methods=["GET"], content_types=FORM)
@link_page_route(CONNECT)
def view_connect_link(token: str) -> Response:
    link = connect.check_link(token)
    return pages.connect_page(
        host=link.host,
        team=link.claims.team,
        user=link.claims.user,
        action=f"{load_settings().public_url}/connect/{token}",  # absolute: API Gateway adds a stage path
        jira_origin=origin_of(link.integration["base_url"]),
    )


@app.route("/connect/{token}", methods=["POST"], content_types=FORM)
@link_page_route(CONNECT)
def start_connect(token: str) -> Response:
    request = app.current_request
    check_same_origin(request)
    settings = load_settings()
    started = signin.start(token, browser.read(cookie_header(request), settings), settings)
    return redirect(started.authorize_url, headers={"Set-Cookie": browser.set_cookie(started.browser_id, settings)})


@app.route("/oauth/callback", methods=["GET"], content_types=FORM)
@page_route
def oauth_callback() -> Response:
    request = app.current_request
    outcome = signin.finish(
        query_param(request, "oauth_token"),
        query_param(request, "oauth_verifier"),
        browser.read(cookie_header(request), load_settings()),
    )
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
    return json_response(setup.create_link(team, json_body(app.current_request)), 201)


@app.route("/setup/{token}", methods=["GET"], content_types=FORM)
@link_page_route(SETUP)
def view_setup_link(token: str) -> Response:
    return setup.show(token, app.current_request)


@app.route("/setup/{token}", methods=["POST"], content_types=FORM)
@link_page_route(SETUP)
def submit_setup(token: str) -> Response:
    return setup.submit(token, app.current_request)


# -- end of setup pages ----------------------------------------------------------------------


@app.route("/health", methods=["GET"])
def health() -> Response:
    return json_response({"status": "ok", "stage": load_settings().stage})
