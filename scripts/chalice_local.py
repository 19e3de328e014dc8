"""``chalice local``, behaving like the deployed API Gateway in two ways that matter to callers.

1. TCP_NODELAY on its connections. chalice local writes a response's headers and
   body in separate sends; without TCP_NODELAY a client that keeps its connection
   open (requests.Session, most bots) waits ~40 ms per call on Nagle's algorithm
   plus delayed ACK (measured here: 44 ms instead of 2 ms).
2. API Gateway's own answers (no API key, a refused key, an unknown route, an
   authorizer that could not decide) in the broker's error envelope, rendered from the
   Gateway Responses in ``infra/resources.json``, the same ones deployment installs.
   chalice local's imitation would answer ``{"message": "Unauthorized"}`` and, for an
   unknown route, echo the caller's Authorization header back in the body.
3. An authorizer that raises gets an answer, as deployed: ``Exception("Unauthorized")`` is
   API Gateway's 401 (its UNAUTHORIZED response), anything else its authorizer error
   response; chalice local would drop the connection, Chalice's test client would raise.
4. A listen backlog of 128, not Python's default 5: a burst of new connections (a chat
   bot fanning out, 20 callbacks at once) would otherwise see dropped SYNs and 1 s retries.
5. The access log redacted (``chalicelib.logs.redact``): it prints full paths, connect-link
   tokens and ``oauth_token``/``oauth_verifier`` included.
6. Greedy path variables: a route whose last segment is ``{name+}`` (the transparent Jira site,
   ``.../jira/site/{proxy+}``) matches one or more remaining segments, which arrive joined with
   ``/`` and percent-decoded once in ``pathParameters[name]``, as API Gateway sends them. Chalice's
   router knows only one-segment ``{name}`` (aws/chalice#2012, still open, would add them).

:func:`emulate_api_gateway` applies them to chalice's classes, which chalice local and
Chalice's test client (``chalice.test.Client``, same ``LocalGateway``) share. Importing
this module applies them; a plain ``chalice local`` (any stage) applies them too
(``chalicelib/local_boot.py``). Everything else is chalice's own CLI, unchanged:
``python -m scripts.chalice_local local --host 127.0.0.1 --port 8000 --stage local --no-autoreload``
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from chalice.cli import main
from chalice.local import (
    ChaliceRequestHandler,
    InvalidAuthorizerError,
    LocalAuthPair,
    LocalGatewayAuthorizer,
    LocalGatewayException,
    MatchResult,
    NotAuthorizedError,
    RouteMatcher,
    ThreadedHTTPServer,
)

from chalicelib.logs import redact
from scripts.local_aws import TEMPLATE


def gateway_responses() -> dict[str, dict[str, Any]]:
    """The template's Gateway Responses by ResponseType, each as API Gateway holds it.

    They live in the SAM API's ``GatewayResponses`` (``Resources.RestAPI.Properties``), headers under
    ``ResponseParameters.Headers``; each comes back with ``ResponseType``, ``StatusCode`` (when set),
    ``ResponseTemplates`` and ``ResponseParameters`` keyed ``gatewayresponse.header.<name>``.
    """
    api = json.loads(TEMPLATE.read_text())["Resources"]["RestAPI"]["Properties"]
    responses: dict[str, dict[str, Any]] = {}
    for kind, response in api["GatewayResponses"].items():
        headers = response.get("ResponseParameters", {}).get("Headers", {})
        props: dict[str, Any] = {
            "ResponseType": kind,
            "ResponseParameters": {f"gatewayresponse.header.{name}": value for name, value in headers.items()},
            "ResponseTemplates": response["ResponseTemplates"],
        }
        if "StatusCode" in response:
            props["StatusCode"] = str(response["StatusCode"])
        responses[kind] = props
    return responses


def response_type(error: LocalGatewayException) -> str:
    """Which Gateway Response API Gateway would send for chalice local's error."""
    kind = (error.headers or {}).get("x-amzn-ErrorType", "")
    if error.CODE == 401:
        return "UNAUTHORIZED"
    if error.CODE == 403 and kind == "AccessDeniedException":
        return "ACCESS_DENIED"
    if error.CODE == 403:
        return "MISSING_AUTHENTICATION_TOKEN"  # chalice local's answer for an unknown route
    if kind == "AuthorizerConfigurationException":
        return "AUTHORIZER_CONFIGURATION_ERROR"  # the authorizer raised or gave no policy
    return "AUTHORIZER_FAILURE"


def render(error: LocalGatewayException) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body API Gateway would send, from the template's Gateway Response."""
    responses = gateway_responses()
    kind = response_type(error)
    # Like API Gateway: a type the template does not customise falls back to DEFAULT_4XX/5XX.
    props = responses.get(kind) or responses["DEFAULT_5XX" if error.CODE >= 500 else "DEFAULT_4XX"]
    headers = {"Content-Type": "application/json"}
    for name, value in props.get("ResponseParameters", {}).items():
        headers[name.removeprefix("gatewayresponse.header.")] = value.strip("'")
    status = int(props.get("StatusCode") or error.CODE)
    return status, headers, props["ResponseTemplates"]["application/json"].encode()


def _send_error_response(self: ChaliceRequestHandler, error: LocalGatewayException) -> None:
    status, headers, body = render(error)
    self._send_http_response(status, headers, body)


_authorize = LocalGatewayAuthorizer.authorize
_log_message = ChaliceRequestHandler.log_message


def _authorize_or_answer(self: LocalGatewayAuthorizer, *args: Any, **kwargs: Any) -> LocalAuthPair:
    """Run the authorizer; if it raises, answer as API Gateway does."""
    try:
        return _authorize(self, *args, **kwargs)
    except LocalGatewayException:
        raise
    except Exception as error:  # noqa: BLE001 - deployed, any exception in the authorizer becomes an answer
        if str(error) == "Unauthorized":  # API Gateway's contract for a Lambda authorizer's 401
            raise NotAuthorizedError(
                {"x-amzn-ErrorType": "UnauthorizedException"}, b'{"message":"Unauthorized"}'
            ) from None
        traceback.print_exc()  # the authorizer's own log line, as CloudWatch would have it
        raise InvalidAuthorizerError(
            {"x-amzn-ErrorType": "AuthorizerConfigurationException"}, b'{"message":null}'
        ) from None


# A route whose last segment is API Gateway's greedy path variable, ``{name+}``.
_GREEDY = re.compile(r"/\{(\w+)\+\}$")
_match_route = RouteMatcher.match_route


def greedy_name(route: str) -> str | None:
    """``proxy`` for ``/a/{b}/c/{proxy+}``; None for a route without a greedy last segment."""
    found = _GREEDY.search(route)
    return found.group(1) if found else None


def _match_route_or_greedy(self: RouteMatcher, url: str) -> MatchResult:
    """chalice's own matching, then a greedy ``{name+}`` route (a wrapper, not a fork: aws/chalice#2012).

    chalice's matcher knows only one-segment ``{name}``: it would match ``{proxy+}`` against exactly one
    segment, under the key ``proxy+``. So it runs first on the routes without a greedy segment (concrete
    routes and ``{name}`` captures win, and their parameters stay as chalice local gives them:
    percent-encoded). Only if none matches, a greedy route matches when its prefix does (same rules) and
    at least one non-empty segment is left, as API Gateway's ``{proxy+}`` needs: the rest, joined with
    ``/`` and percent-decoded once, as API Gateway decodes ``pathParameters``. Nothing left after the
    prefix (``.../site``, ``.../site/``) matches nothing: chalice local's unknown-route answer, which
    :func:`render` turns into the MISSING_AUTHENTICATION_TOKEN Gateway Response, as deployed.
    """
    greedy = [route for route in self.route_urls if greedy_name(route)]
    if not greedy:
        return _match_route(self, url)
    try:
        return _match_route(RouteMatcher([r for r in self.route_urls if r not in greedy]), url)
    except ValueError:
        pass
    parsed = urlparse(url)
    path = parsed.path
    if path != "/" and path.endswith("/"):
        path = path[:-1]  # as chalice does (API Gateway drops a trailing slash)
    parts = path.split("/")
    # The longest prefix first (API Gateway prefers the most specific resource); then chalice's order.
    for route in sorted(greedy, key=lambda r: -r.count("/")):
        prefix = route.split("/")[:-1]
        rest = "/".join(parts[len(prefix) :])
        if len(parts) <= len(prefix) or not rest:
            continue
        captured: dict[str, str] = {}
        for given, wanted in zip(parts, prefix, strict=False):
            if wanted.startswith("{") and wanted.endswith("}"):
                captured[wanted[1:-1]] = given
            elif given != wanted:
                break
        else:
            captured[str(greedy_name(route))] = unquote(rest)
            return MatchResult(route, captured, parse_qs(parsed.query, keep_blank_values=True))
    raise ValueError(f"No matching route found for: {url}")


def _redacted_log_message(self: ChaliceRequestHandler, fmt: str, *args: Any) -> None:
    _log_message(self, "%s", redact(fmt % args))


def emulate_api_gateway() -> None:
    """Make chalice local (and Chalice's test client, for the authorizer) answer as API Gateway does.

    Idempotent: it sets class attributes to this module's functions.
    """
    ChaliceRequestHandler.disable_nagle_algorithm = True
    ThreadedHTTPServer.request_queue_size = 128
    LocalGatewayAuthorizer.authorize = _authorize_or_answer  # type: ignore[method-assign]
    ChaliceRequestHandler._send_error_response = _send_error_response  # type: ignore[method-assign]
    ChaliceRequestHandler.log_message = _redacted_log_message
    RouteMatcher.match_route = _match_route_or_greedy  # type: ignore[method-assign]


emulate_api_gateway()

if __name__ == "__main__":
    sys.argv[0] = "chalice"
    sys.exit(main())
