"""Drive the unpacked deployment package as Lambda does: ``handler(event, context)``, nothing else.

Runs inside the clean runtime interpreter (``.venv-lambda``: python3.11 and the runtime's boto3,
nothing of the dev venv), started by ``scripts/artifact.py``, which also starts moto and the fake
Jira and passes their addresses in a JSON file. Standard library only, besides the package.

Usage (by scripts/artifact.py)::

    .venv-lambda/bin/python -B -s scripts/artifact_driver.py TASK_ROOT CONFIG.json

API Gateway itself is played by :class:`ApiGateway`, from the packaged template (``sam.json``): it
routes a path to its resource (``{proxy+}`` takes one or more segments) and decodes ``pathParameters``;
it base64-encodes a request body whose Content-Type matches the API's binary media types (``*/*``:
every body, ``isBase64Encoded: true``); it decodes a base64 answer when the caller's first Accept value
matches them (``*/*``: any Accept, or none); it answers a path no resource matches with its
MISSING_AUTHENTICATION_TOKEN Gateway Response, without calling a function.

Each check prints one line; the last line is ``artifact: N passed, N failed``, and the exit
status is 1 when any failed.
"""

from __future__ import annotations

import base64
import fnmatch
import http.client
import json
import re
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

DOMAIN = "abc123defg.execute-api.us-east-1.amazonaws.com"
STAGE = "api"
ACCOUNT = "123456789012"
API_ID = "abc123defg"
PUBLIC_URL = f"https://{DOMAIN}/{STAGE}"
SITE_ROUTE = "/v1/teams/{team}/users/{user}/jira/site/{proxy+}"
SITE = "/v1/teams/acme/users/alice/jira/site"
SITE_PARAMS = {"team": "acme", "user": "alice"}


class FakeContext:
    """The attributes of Lambda's context object that the app (Powertools' Logger, Chalice) reads."""

    def __init__(self, function_name: str, memory_mb: int = 1024, timeout_seconds: float = 28) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{function_name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "2026/11/29/[$LATEST]0123456789abcdef"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# -- events as API Gateway (REST API, Lambda proxy, payload 1.0) sends them -----------------------
def token_event(token: str | None, method: str = "GET", path: str = "/v1/teams/acme/jira") -> dict[str, Any]:
    """A TOKEN authorizer's event; API Gateway sends no event at all when the header is missing."""
    return {
        "type": "TOKEN",
        "authorizationToken": token or "",
        "methodArn": f"arn:aws:execute-api:us-east-1:{ACCOUNT}:{API_ID}/{STAGE}/{method}{path}",
    }


def http_event(
    method: str,
    path: str,
    resource: str,
    params: dict[str, str] | None = None,
    *,
    headers: dict[str, str] | None = None,
    query: dict[str, str | list[str]] | None = None,
    body: str | bytes | None = None,
    base64_body: bool = False,
    authorizer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The event API Gateway sends: ``params`` and ``query`` values decoded, as API Gateway decodes them
    (a query name with several values: all in ``multiValueQueryStringParameters``, the last in
    ``queryStringParameters``); an empty body is no body."""
    sent = {
        "Host": DOMAIN,
        "User-Agent": "artifact-driver",
        "X-Forwarded-For": "203.0.113.9",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
        **(headers or {}),
    }
    raw = body.encode() if isinstance(body, str) else body
    raw = raw or None
    multi = {k: v if isinstance(v, list) else [v] for k, v in query.items()} if query else None
    context: dict[str, Any] = {
        "resourceId": "abc123",
        "resourcePath": resource,
        "httpMethod": method,
        "extendedRequestId": "Abc123=",
        "requestTime": "29/Nov/2026:14:00:00 +0000",
        "path": f"/{STAGE}{path}",
        "accountId": ACCOUNT,
        "protocol": "HTTP/1.1",
        "stage": STAGE,
        "domainPrefix": DOMAIN.split(".")[0],
        "requestTimeEpoch": int(time.time() * 1000),
        "requestId": str(uuid.uuid4()),
        "identity": {"sourceIp": "203.0.113.9", "userAgent": "artifact-driver"},
        "domainName": DOMAIN,
        "apiId": API_ID,
    }
    if authorizer is not None:
        context["authorizer"] = authorizer
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": sent,
        "multiValueHeaders": {name: [value] for name, value in sent.items()},
        "queryStringParameters": {k: v[-1] for k, v in multi.items()} if multi else None,
        "multiValueQueryStringParameters": multi,
        "pathParameters": params or None,
        "stageVariables": None,
        "requestContext": context,
        "body": None if raw is None else (base64.b64encode(raw).decode() if base64_body else raw.decode()),
        "isBase64Encoded": raw is not None and base64_body,
    }


# -- API Gateway around the function, from the packaged template --------------------------------
def media_type_matches(value: str, patterns: list[str]) -> bool:
    """``value`` (one media type, maybe with parameters; "" for none) against binary media types
    (``*/*``, ``image/*``, ``image/png``)."""
    kind = value.split(";")[0].strip().lower()
    for pattern in (p.lower() for p in patterns):
        major, _, _ = pattern.partition("/")
        if pattern == "*/*" or pattern == kind or (pattern.endswith("/*") and kind.startswith(major + "/")):
            return True
    return False


class ApiGateway:
    """What API Gateway (REST API, Lambda proxy) does around the function: see the module's docstring."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.resources: dict[str, list[str]] = config["resources"]
        self.binary_media_types: list[str] = config["binary_media_types"]
        self.gateway_responses: dict[str, Any] = config["gateway_responses"]

    def route(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        """The resource and decoded ``pathParameters`` for ``method path``; None: no resource has the method.

        At each segment a fixed name beats ``{name}``, which beats the greedy ``{name+}`` (one or more segments).
        """
        segments = path.strip("/").split("/") if path.strip("/") else []
        best: tuple[tuple[int, ...], str, dict[str, str]] | None = None
        for resource, methods in self.resources.items():
            if method not in methods:
                continue
            found = self._match(resource.strip("/").split("/") if resource.strip("/") else [], segments)
            if found is not None and (best is None or found[0] < best[0]):
                best = (found[0], resource, found[1])
        return None if best is None else (best[1], best[2])

    @staticmethod
    def _match(template: list[str], segments: list[str]) -> tuple[tuple[int, ...], dict[str, str]] | None:
        rank: list[int] = []
        params: dict[str, str] = {}
        for index, part in enumerate(template):
            if part.startswith("{") and part.endswith("+}"):
                rest = segments[index:]
                if index != len(template) - 1 or not rest or not "/".join(rest):
                    return None
                params[part[1:-2]] = unquote("/".join(rest))
                return (*rank, 2), params
            if index >= len(segments):
                return None
            if part.startswith("{") and part.endswith("}"):
                params[part[1:-1]] = unquote(segments[index])
                rank.append(1)
            elif part == segments[index]:
                rank.append(0)
            else:
                return None
        return (tuple(rank), params) if len(template) == len(segments) else None

    def encodes_request(self, content_type: str | None) -> bool:
        """Whether a request body reaches the function base64-encoded (``isBase64Encoded: true``)."""
        return media_type_matches(content_type or "", self.binary_media_types)

    def decodes_answer(self, accept: str | None) -> bool:
        """Whether a base64 answer reaches the caller decoded: the FIRST Accept value decides."""
        return media_type_matches((accept or "").split(",")[0], self.binary_media_types)

    def received(self, answer: dict[str, Any], accept: str | None) -> bytes:
        """The body bytes the caller receives for the function's ``answer``."""
        body = str(answer.get("body") or "")
        if answer.get("isBase64Encoded") and self.decodes_answer(accept):
            return base64.b64decode(body)
        return body.encode()  # base64 text, when API Gateway does not decode it

    def not_routed(self) -> tuple[int, dict[str, str], bytes]:
        """API Gateway's answer to a path with no resource (its 403 "Missing Authentication Token")."""
        response = self.gateway_responses["MISSING_AUTHENTICATION_TOKEN"]
        headers = {k: v.strip("'") for k, v in response["ResponseParameters"]["Headers"].items()}
        return int(response["StatusCode"]), headers, response["ResponseTemplates"]["application/json"].encode()


# -- what API Gateway requires of the answers ---------------------------------------------------
def check_proxy_answer(answer: Any) -> None:
    """A Lambda proxy answer API Gateway accepts (else it answers 502 "Malformed Lambda proxy response")."""
    assert isinstance(answer, dict), f"answer is {type(answer).__name__}, not a dict"
    allowed = {"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"}
    assert set(answer) <= allowed, f"unexpected keys {sorted(set(answer) - allowed)}"
    assert type(answer.get("statusCode")) is int, f"statusCode {answer.get('statusCode')!r}"
    headers = answer.get("headers", {})
    assert isinstance(headers, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()), (
        f"headers must map str to str: {headers!r}"
    )
    multi = answer.get("multiValueHeaders", {})
    assert isinstance(multi, dict), "multiValueHeaders must be a dict"
    for name, values in multi.items():
        assert isinstance(values, list) and all(isinstance(v, str) for v in values), f"multiValueHeaders[{name}]"
    assert isinstance(answer.get("body", ""), str), f"body is {type(answer.get('body')).__name__}, not str"
    assert isinstance(answer.get("isBase64Encoded", False), bool), "isBase64Encoded must be a bool"
    if answer.get("isBase64Encoded"):
        base64.b64decode(answer["body"], validate=True)


def header(answer: dict[str, Any], name: str) -> str | None:
    for key, value in answer.get("headers", {}).items():
        if key.lower() == name.lower():
            return str(value)
    for key, values in answer.get("multiValueHeaders", {}).items():
        if key.lower() == name.lower() and values:
            return str(values[0])
    return None


def body_bytes(answer: dict[str, Any]) -> bytes:
    body = answer.get("body") or ""
    return base64.b64decode(body) if answer.get("isBase64Encoded") else body.encode()


def body_json(answer: dict[str, Any]) -> Any:
    return json.loads(body_bytes(answer))


def check_policy(policy: Any, method_arn: str) -> bool:
    """The authorizer's answer has API Gateway's shape; returns whether it allows ``method_arn``."""
    assert isinstance(policy, dict), f"authorizer answer is {type(policy).__name__}"
    assert isinstance(policy.get("principalId"), str) and policy["principalId"], "principalId"
    document = policy.get("policyDocument")
    assert isinstance(document, dict) and document.get("Version") == "2012-10-17", "policyDocument.Version"
    statements = document.get("Statement")
    assert isinstance(statements, list) and statements, "policyDocument.Statement"
    allowed = denied = False
    for statement in statements:
        assert statement.get("Effect") in ("Allow", "Deny"), f"Effect {statement.get('Effect')!r}"
        assert statement.get("Action") == "execute-api:Invoke", f"Action {statement.get('Action')!r}"
        resources = statement.get("Resource")
        resources = [resources] if isinstance(resources, str) else resources
        assert isinstance(resources, list) and all(isinstance(r, str) for r in resources), "Resource"
        matched = any(fnmatch.fnmatchcase(method_arn, pattern) for pattern in resources)
        allowed |= matched and statement["Effect"] == "Allow"
        denied |= matched and statement["Effect"] == "Deny"
    context = policy.get("context", {})
    assert isinstance(context, dict), "context must be a dict"
    for key, value in context.items():
        assert isinstance(value, str | int | float | bool), f"context[{key}] must be a string, number or boolean"
    return allowed and not denied


# -- the run -----------------------------------------------------------------------------------
# The Accept values the checks try: none, browsers', Jira client libraries' ("application/json, */*").
ACCEPTS = ("*/*", "image/png", "application/json, image/png", "application/json, */*", "application/json", None)


class Driver:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.api_key = config["api_key"]
        self.passed = 0
        self.failed = 0
        import app as handler_module  # what Lambda's "app.app" and "app.api_key_auth" name

        self.api_handler = handler_module.app
        self.authorizer = handler_module.api_key_auth
        self.gateway = ApiGateway(config)
        self.fake_png = base64.b64decode(config["fake_png"])

    def check(self, name: str, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception:  # noqa: BLE001 - one failed check must not hide the others
            self.failed += 1
            print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
        else:
            self.passed += 1
            print(f"ok   {name}", flush=True)

    # the two functions
    def authorize(self, token: str | None, method: str, path: str) -> tuple[dict[str, Any], bool]:
        event = token_event(token, method, path)
        policy = self.authorizer(event, FakeContext("jira-oauth-broker-dev-api_key_auth", 256, 5))
        return policy, check_policy(policy, event["methodArn"])

    def call(
        self, method: str, path: str, resource: str, params: dict[str, str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """One API request: the authorizer first when the route needs it (as API Gateway does), then the API.

        ``resource`` and ``params`` are what API Gateway's router makes of ``path`` (checked); the body is
        base64 when the API's binary media types match its Content-Type (``*/*``: always).
        """
        routed = self.gateway.route(method, urlsplit(path).path)
        assert routed == (resource, params or {}), f"API Gateway routes {method} {path} to {routed}"
        token = kwargs.pop("token", None)
        if token is not None:
            policy, allowed = self.authorize(token, method, path)
            assert allowed, f"authorizer refused {method} {path}"
            kwargs["authorizer"] = {"principalId": policy["principalId"], **policy.get("context", {})}
        content_type = {k.lower(): v for k, v in (kwargs.get("headers") or {}).items()}.get("content-type")
        event = http_event(
            method, path, resource, params, base64_body=self.gateway.encodes_request(content_type), **kwargs
        )
        if event["body"] is not None:
            assert event["isBase64Encoded"] is True, "with */* binary, API Gateway sends every body base64"
        answer = self.api_handler(event, FakeContext("jira-oauth-broker-dev"))
        check_proxy_answer(answer)
        # Chalice encodes every answer (*/* binary), and API Gateway decodes every one: consistent.
        assert answer.get("isBase64Encoded") is True, f"an answer API Gateway would not decode: {answer}"
        return dict(answer)

    def service(self, method: str, path: str, resource: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
        headers.update(kwargs.pop("headers", {}))
        raw = json.dumps(body) if body is not None else None
        return self.call(method, path, resource, token=headers["Authorization"], headers=headers, body=raw, **kwargs)

    def run(self) -> int:
        state: dict[str, Any] = {}
        self.check("health", self.health)
        self.check("authorizer: a valid key is allowed, with its team scope in the context", self.authorizer_allows)
        self.check("authorizer: an unknown key is denied", lambda: self.authorizer_denies("jb_" + "x" * 43))
        self.check("authorizer: a revoked key is denied", lambda: self.authorizer_denies(self.config["revoked_key"]))
        self.check("authorizer: no Bearer key raises Unauthorized (API Gateway's 401)", self.authorizer_401)
        self.check("key pair (POST)", self.key_pair)
        self.check("integration setup (PUT, base64 request body)", lambda: self.setup(state))
        self.check("connect link (POST)", lambda: state.update(link=self.connect_link()))
        self.check("connect page (GET): form action on API Gateway's domain and stage", lambda: self.page(state))
        self.check("Continue (POST): 303 to Jira and the browser cookie", lambda: self.continue_(state))
        self.check("Jira's Allow, then the callback with the cookie: connected", lambda: self.callback(state))
        for accept in ACCEPTS:
            self.check(f"proxy, JSON answer, Accept {accept!r}", lambda a=accept: self.proxy_json(a))  # type: ignore[misc]
            self.check(f"proxy, binary answer, Accept {accept!r}", lambda a=accept: self.proxy_binary(a))  # type: ignore[misc]
        self.check("site {proxy+}: GET rest/api/2/myself, the user's JSON", self.site_myself)
        self.check("site {proxy+}: GET with a repeated query, links moved to the site", self.site_query)
        self.check("site {proxy+}: POST a JSON body (base64 from API Gateway), 201", self.site_post)
        self.check("site {proxy+}: %40 in the path reaches Jira decoded once", self.site_decoded)
        for accept in ACCEPTS:
            self.check(f"site {{proxy+}}: binary answer, Accept {accept!r}", lambda a=accept: self.site_binary(a))  # type: ignore[misc]
        self.check("site {proxy+}: nothing after site/ is no route (API Gateway's 404 not_found)", self.site_empty)
        self.check("sign (POST)", self.sign)
        self.check("setup page (GET, then a multipart POST with a key file, base64 body)", self.setup_page)
        print(f"artifact: {self.passed} passed, {self.failed} failed", flush=True)
        return 1 if self.failed else 0

    # the checks
    def health(self) -> None:
        answer = self.call("GET", "/health", "/health")
        assert answer["statusCode"] == 200 and body_json(answer)["status"] == "ok", answer

    def authorizer_allows(self) -> None:
        policy, allowed = self.authorize(f"Bearer {self.api_key}", "GET", "/v1/teams/acme/jira")
        assert allowed and policy["principalId"] == "artifact", policy
        assert policy["context"] == {"team": ""}, policy
        scoped, allowed = self.authorize(f"Bearer {self.config['scoped_key']}", "GET", "/v1/teams/acme/jira")
        assert allowed and scoped["context"] == {"team": "acme"}, scoped

    def authorizer_denies(self, key: str) -> None:
        """An explicit Deny of the whole stage (the answer is cached per key, for every route)."""
        for method, path in (("GET", "/v1/teams/acme/jira"), ("POST", "/v1/teams/acme/users/alice/jira/proxy")):
            policy, allowed = self.authorize(f"Bearer {key}", method, path)
            assert not allowed, policy
            statements = policy["policyDocument"]["Statement"]
            assert any(s["Effect"] == "Deny" for s in statements), f"no explicit Deny: {policy}"

    def authorizer_401(self) -> None:
        for token in (self.api_key, "Basic abc", None):
            try:
                self.authorize(token, "GET", "/v1/teams/acme/jira")
            except Exception as error:  # noqa: BLE001 - exactly what API Gateway sees
                assert str(error) == "Unauthorized", error
            else:
                raise AssertionError(f"{token!r} was not refused with Unauthorized")

    def key_pair(self) -> None:
        answer = self.service(
            "POST", "/v1/teams/keys/jira/key-pair", "/v1/teams/{team}/jira/key-pair", {}, params={"team": "keys"}
        )
        assert answer["statusCode"] == 201, answer
        assert body_json(answer)["public_key"].startswith("-----BEGIN PUBLIC KEY-----"), answer

    def setup(self, state: dict[str, Any]) -> None:
        body = {
            "base_url": self.config["jira_base_url"],
            "consumer_key": self.config["consumer_key"],
            "private_key": self.config["private_pem"],
            "user": "alice",
        }
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
        answer = self.call(
            "PUT",
            "/v1/teams/acme/jira",
            "/v1/teams/{team}/jira",
            {"team": "acme"},
            token=headers["Authorization"],
            headers=headers,
            body=json.dumps(body),
        )
        assert answer["statusCode"] == 201, answer
        created = body_json(answer)
        assert created["connect_url"].startswith(f"{PUBLIC_URL}/connect/"), created["connect_url"]
        assert "private_key" not in created

    def connect_link(self) -> str:
        path = "/v1/teams/acme/users/alice/jira/connect-link"
        answer = self.service(
            "POST",
            path,
            "/v1/teams/{team}/users/{user}/jira/connect-link",
            {},
            params={"team": "acme", "user": "alice"},
        )
        assert answer["statusCode"] == 201, answer
        url = str(body_json(answer)["url"])
        assert url.startswith(f"{PUBLIC_URL}/connect/"), url
        return url

    def page(self, state: dict[str, Any]) -> None:
        token = state["link"].rsplit("/", 1)[1]
        answer = self.call(
            "GET", f"/connect/{token}", "/connect/{token}", {"token": token}, headers={"Accept": "text/html"}
        )
        assert answer["statusCode"] == 200, answer
        assert (header(answer, "Content-Type") or "").startswith("text/html"), answer["headers"]
        html = body_bytes(answer).decode()
        action = re.search(r'<form[^>]*action="([^"]+)"', html)
        assert action and action.group(1) == f"{PUBLIC_URL}/connect/{token}", action and action.group(1)

    def continue_(self, state: dict[str, Any]) -> None:
        token = state["link"].rsplit("/", 1)[1]
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": f"https://{DOMAIN}",
            "Sec-Fetch-Site": "same-origin",
        }
        answer = self.call("POST", f"/connect/{token}", "/connect/{token}", {"token": token}, headers=headers, body="")
        assert answer["statusCode"] == 303, answer
        location = header(answer, "Location") or ""
        assert location.startswith(self.config["jira_base_url"] + "/plugins/servlet/oauth/authorize?"), location
        cookie = header(answer, "Set-Cookie") or ""
        assert "HttpOnly" in cookie and "Secure" in cookie, cookie
        state["cookie"] = cookie.split(";", 1)[0]
        state["request_token"] = parse_qs(urlsplit(location).query)["oauth_token"][0]

    def callback(self, state: dict[str, Any]) -> None:
        back = allow_in_jira(self.config["jira_base_url"], state["request_token"], "alice")
        assert back.startswith(f"{PUBLIC_URL}/oauth/callback?"), back
        query = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
        answer = self.call(
            "GET", "/oauth/callback", "/oauth/callback", headers={"Cookie": state["cookie"]}, query=query
        )
        assert answer["statusCode"] == 200, answer
        assert "Connected as Alice Example" in body_bytes(answer).decode(), body_bytes(answer)[:300]

    def _proxy(self, path: str, accept: str | None) -> dict[str, Any]:
        headers = {"Accept": accept} if accept is not None else {}
        resource = "/v1/teams/{team}/users/{user}/jira/proxy"
        return self.service(
            "POST",
            "/v1/teams/acme/users/alice/jira/proxy",
            resource,
            {"method": "GET", "path": path},
            params={"team": "acme", "user": "alice"},
            headers=headers,
        )

    def proxy_json(self, accept: str | None) -> None:
        answer = self._proxy("/rest/api/2/myself", accept)
        assert answer["statusCode"] == 200, answer
        assert json.loads(self.gateway.received(answer, accept))["name"] == "alice", answer

    def proxy_binary(self, accept: str | None) -> None:
        """Jira's bytes, exactly, whatever the Accept: API Gateway decodes every answer (*/* binary)."""
        answer = self._proxy("/rest/fake/binary", accept)
        assert answer["statusCode"] == 200, answer
        assert header(answer, "Content-Type") == "image/png", answer["headers"]
        assert self.gateway.received(answer, accept) == self.fake_png, self.gateway.received(answer, accept)[:16]

    # the transparent site: events exactly as API Gateway sends them for .../site/{proxy+}
    def _site(self, method: str, rest: str, accept: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """``rest``: the path after ``site/`` as sent (percent-encoded); ``proxy`` is it decoded."""
        headers = {"Accept": accept} if accept is not None else {}
        headers.update(kwargs.pop("headers", {}))
        params = {**SITE_PARAMS, "proxy": unquote(rest)}
        return self.service(method, f"{SITE}/{rest}", SITE_ROUTE, params=params, headers=headers, **kwargs)

    def site_myself(self) -> None:
        accept = "application/json, */*"
        answer = self._site("GET", "rest/api/2/myself", accept)
        assert answer["statusCode"] == 200, answer
        me = json.loads(self.gateway.received(answer, accept))
        assert me["name"] == "alice" and me["displayName"] == "Alice Example", me

    def site_query(self) -> None:
        accept = "application/json"
        query: dict[str, str | list[str]] = {"jql": "project = ABC ORDER BY key", "fields": ["summary", "status"]}
        answer = self._site("GET", "rest/api/2/search", accept, query=query)
        assert answer["statusCode"] == 200, answer
        found = json.loads(self.gateway.received(answer, accept))
        assert found["total"] >= 1 and found["issues"], found
        assert found["query"] == {"jql": ["project = ABC ORDER BY key"], "fields": ["summary", "status"]}, found
        for issue in found["issues"]:
            assert issue["self"].startswith(f"{PUBLIC_URL}{SITE}/rest/api/2/issue/"), issue["self"]
        assert self.config["jira_base_url"] not in json.dumps(found)

    def site_post(self) -> None:
        fields = {"project": {"key": "ABC"}, "issuetype": {"name": "Task"}, "summary": "Filed through the site"}
        answer = self._site("POST", "rest/api/2/issue", "application/json, */*", body={"fields": fields})
        assert answer["statusCode"] == 201, answer
        created = json.loads(self.gateway.received(answer, "application/json, */*"))
        assert created["key"].startswith("ABC-") and created["self"].startswith(f"{PUBLIC_URL}{SITE}/"), created

    def site_decoded(self) -> None:
        answer = self._site("GET", "rest/api/2/thing/bob%40example.com", "application/json")
        assert answer["statusCode"] == 200, answer
        echo = json.loads(self.gateway.received(answer, "application/json"))
        assert echo["path"] == "/rest/api/2/thing/bob@example.com", echo  # not %2540: decoded once

    def site_binary(self, accept: str | None) -> None:
        answer = self._site("GET", "rest/fake/binary", accept)
        assert answer["statusCode"] == 200 and header(answer, "Content-Type") == "image/png", answer
        assert self.gateway.received(answer, accept) == self.fake_png, self.gateway.received(answer, accept)[:16]

    def site_empty(self) -> None:
        """{proxy+} needs a segment: API Gateway matches no resource and calls neither function."""
        for method, path in (("GET", SITE), ("GET", f"{SITE}/"), ("POST", f"{SITE}/"), ("OPTIONS", f"{SITE}/x")):
            assert self.gateway.route(method, path) is None, (method, path, self.gateway.route(method, path))
        status, headers, body = self.gateway.not_routed()
        error = json.loads(body)
        assert status == 404 and headers["X-Broker-Error"] == "not_found" and error["error"]["code"] == "not_found"
        assert error["errorMessages"] == [f"not_found: {error['error']['message']}"] and error["errors"] == {}
        # The router is the one that routes the site: one segment and more.
        assert self.gateway.route("GET", f"{SITE}/x") == (SITE_ROUTE, {**SITE_PARAMS, "proxy": "x"})

    def sign(self) -> None:
        url = self.config["jira_base_url"] + "/rest/api/2/myself"
        path = "/v1/teams/acme/users/alice/jira/sign"
        answer = self.service(
            "POST",
            path,
            "/v1/teams/{team}/users/{user}/jira/sign",
            {"method": "GET", "url": url},
            params={"team": "acme", "user": "alice"},
        )
        assert answer["statusCode"] == 200, answer
        signed = body_json(answer)["authorization"]
        assert signed.startswith("OAuth ") and 'oauth_signature_method="RSA-SHA1"' in signed, signed
        status, data = jira_get(url, signed)
        assert status == 200 and json.loads(data)["name"] == "alice", (status, data[:200])

    def setup_page(self) -> None:
        answer = self.service(
            "POST",
            "/v1/teams/globex/jira/setup-link",
            "/v1/teams/{team}/jira/setup-link",
            {"user": "carol"},
            params={"team": "globex"},
        )
        assert answer["statusCode"] == 201, answer
        url = body_json(answer)["url"]
        assert url.startswith(f"{PUBLIC_URL}/setup/"), url
        token = url.rsplit("/", 1)[1]
        page = self.call("GET", f"/setup/{token}", "/setup/{token}", {"token": token}, headers={"Accept": "text/html"})
        assert page["statusCode"] == 200, page
        html = body_bytes(page).decode()
        csrf = re.search(r'name=csrf_token value="([^"]+)"', html)
        assert csrf, "no CSRF field on the setup page"
        assert f'action="{PUBLIC_URL}/setup/{token}"' in html, "the setup form's action is not on API Gateway's URL"
        cookie = (header(page, "Set-Cookie") or "").split(";", 1)[0]
        assert cookie, page["headers"]
        fields = {
            "csrf_token": csrf.group(1),
            "action": "verify",
            "base_url": self.config["jira_base_url"],
            "consumer_key": self.config["consumer_key"],
        }
        body, content_type = multipart(fields, ("private_key_file", "broker.pem", self.config["private_pem"].encode()))
        headers = {
            "Content-Type": content_type,
            "Cookie": cookie,
            "Origin": f"https://{DOMAIN}",
            "Sec-Fetch-Site": "same-origin",
        }
        done = self.call("POST", f"/setup/{token}", "/setup/{token}", {"token": token}, headers=headers, body=body)
        assert done["statusCode"] == 303, (done["statusCode"], body_bytes(done)[:400])
        location = header(done, "Location") or ""
        assert location.startswith(self.config["jira_base_url"] + "/plugins/servlet/oauth/authorize?"), location


def multipart(fields: dict[str, str], file: tuple[str, str, bytes]) -> tuple[bytes, str]:
    boundary = "----artifact" + uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    name, filename, data = file
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        f"Content-Type: application/x-pem-file\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def allow_in_jira(base_url: str, request_token: str, username: str) -> str:
    """Click Allow on the fake Jira's page, as the user; returns where Jira sends the browser back."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    form = urlencode({"oauth_token": request_token, "username": username, "decision": "approve"})
    connection.request(
        "POST",
        f"{parts.path}/plugins/servlet/oauth/authorize",
        body=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    answer = connection.getresponse()
    answer.read()
    connection.close()
    assert answer.status == 302, answer.status
    return str(answer.getheader("Location"))


def jira_get(url: str, authorization: str) -> tuple[int, bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    connection.request("GET", parts.path, headers={"Authorization": authorization, "Accept": "application/json"})
    answer = connection.getresponse()
    data = answer.read()
    connection.close()
    return answer.status, data


def main(argv: list[str]) -> int:
    task_root, config_file = argv
    sys.path[0] = task_root  # Lambda puts the code directory (/var/task) first on sys.path
    with open(config_file) as handle:
        config = json.load(handle)
    return Driver(config).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
