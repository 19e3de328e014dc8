"""What operations people see: one log line per request, the authorizer's decision, and metrics.

Every HTTP request through the API function ends in one structured log line (``"request"``)
and, in a Lambda, one set of CloudWatch metrics (EMF, flushed by the same middleware):

- the route *template* (``/connect/{token}``, never the path, which holds link tokens), method,
  status, the broker's error code (``X-Broker-Error``), latency in ms, the team (from the path
  parameters), the API key's *name* (from the authorizer), and API Gateway's request id, which
  also becomes every log line's ``correlation_id`` while the request runs;
- for the calls to Jira this request made (:func:`jira_call`, :func:`jira_reading`, recorded
  by :class:`chalicelib.oauth1.JiraClient`): how many, the last status, the summed latency,
  and the kind of the last failure (``timeout``, ``unreachable``, ``tls``, ``bad_response``,
  ``oauth_problem``).

Never a token, user secret, link path, query string or body: only the fields above are read.

Metrics (namespace ``JiraOAuthBroker``, every set has ``service=jira-oauth-broker``):

- service only: ``Requests``, ``Errors``, ``ProxiedCalls``, ``JiraLatency`` (ms, one value per
  call), ``JiraErrors`` (all kinds: the template's alarm watches this one), ``Reauthorizations``,
  ``ConnectionsMade``, ``TokenRefreshes`` (OAuth 2.0 refreshes that reached Jira and succeeded);
- ``route`` and ``route``+``code`` (``code`` is ``none`` without an error): ``Requests``, ``Errors``;
- ``kind``: ``JiraErrors``.

They are printed to stdout (EMF) only in a Lambda, or wherever ``POWERTOOLS_METRICS_DISABLED=false``
asks for them; ``POWERTOOLS_METRICS_DISABLED=true`` silences them in a Lambda too. Tests and
``chalice local`` print none unless asked.

Example::

    app.register_middleware(observability.per_request, "http")    # app.py, outside broker_envelope
    observability.authorizer_decision("allow", record)             # api_key_auth
    observability.count("ConnectionsMade")                         # anywhere within a request
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from .logs import SERVICE, logger

if TYPE_CHECKING:  # chalice is there at run time; Powertools Metrics is imported when metrics are emitted
    from aws_lambda_powertools.metrics import EphemeralMetrics
    from chalice import Response
    from chalice.app import Request

NAMESPACE = "JiraOAuthBroker"
ERROR_HEADER = "X-Broker-Error"
PROXY_ROUTE = "/v1/teams/{team}/users/{user}/jira/proxy"
# Broker error codes of a failed exchange with Jira, and the JiraErrors kind each one is.
JIRA_ERROR_KINDS = {
    "jira_timeout": "timeout",
    "jira_unreachable": "unreachable",
    "jira_tls_error": "tls",
    "jira_bad_response": "bad_response",
}
OAUTH_PROBLEM = "oauth_problem"
_CODE = re.compile(r"[a-z0-9_]{1,64}")  # a broker error code; anything else is logged as "other"
_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")  # a team id (chalicelib.urls), else not logged
_Answer = TypeVar("_Answer")


@dataclass
class _JiraCall:
    """One call to Jira: its status (when it answered), its latency, its failure kind."""

    started: float = field(default_factory=time.perf_counter)
    status: int | None = None
    ms: float = 0.0
    error: str | None = None
    sent: bool = True  # False: refused before connecting (the request's budget was spent)

    def answered(self, response: _Answer) -> _Answer:
        """Record Jira's status; returns the response unchanged."""
        self.status = getattr(response, "status_code", None)
        return response


@dataclass
class _Seen:
    """What one HTTP request did: the calls to Jira and the counted events."""

    jira: list[_JiraCall] = field(default_factory=list)
    problem: str | None = None
    counts: Counter[str] = field(default_factory=Counter)


_seen: ContextVar[_Seen | None] = ContextVar("observed_request", default=None)


# -- recording, from anywhere inside a request (no-ops outside one) ----------------------------
def count(metric: str, value: int = 1) -> None:
    """Add to a service-level count metric (``Reauthorizations``, ``ConnectionsMade``) of this request."""
    seen = _seen.get()
    if seen is not None:
        seen.counts[metric] += value


@contextmanager
def jira_call() -> Iterator[_JiraCall]:
    """Time one call to Jira; ``answered(response)`` records its status, a broker error its kind."""
    call = _JiraCall()
    try:
        yield call
    except Exception as error:
        call.error = JIRA_ERROR_KINDS.get(getattr(error, "code", ""), call.error)
        raise
    finally:
        call.ms = (time.perf_counter() - call.started) * 1000
        seen = _seen.get()
        if seen is not None:
            seen.jira.append(call)


@contextmanager
def jira_reading() -> Iterator[None]:
    """Reading a streamed body: its time joins the latest call's; a failure is that call's."""
    seen = _seen.get()
    started = time.perf_counter()
    try:
        yield
    except Exception as error:
        kind = JIRA_ERROR_KINDS.get(getattr(error, "code", ""))
        if kind and seen is not None and seen.jira:
            seen.jira[-1].error = kind
        raise
    finally:
        if seen is not None and seen.jira:
            seen.jira[-1].ms += (time.perf_counter() - started) * 1000


def jira_failed(error: _Answer) -> _Answer:
    """Record a Jira failure raised before any connection (the request's budget spent); returns ``error``."""
    seen = _seen.get()
    kind = JIRA_ERROR_KINDS.get(getattr(error, "code", ""))
    if seen is not None and kind:
        seen.jira.append(_JiraCall(error=kind, sent=False))
    return error


def jira_problem(problem: _Answer) -> _Answer:
    """Record an OAuth problem Jira reported (``oauth_problem``) for the latest call; returns it."""
    seen = _seen.get()
    if seen is not None:
        seen.problem = str(getattr(problem, "problem", "") or "")[:64] or None
        if seen.jira:
            seen.jira[-1].error = OAUTH_PROBLEM
    return problem


# -- the per-request middleware -----------------------------------------------------------------
def per_request(event: Request, get_response: Callable[[Request], Response]) -> Response:
    """Chalice HTTP middleware: correlate the request's log lines, then log it and emit its metrics."""
    context = event.context or {}
    request_id = context.get("requestId") or getattr(event.lambda_context, "aws_request_id", None)
    request_id = str(request_id or uuid.uuid4())
    seen = _Seen()
    token = _seen.set(seen)
    logger.thread_safe_append_keys(correlation_id=request_id)
    started = time.perf_counter()
    response: Response | None = None
    try:
        response = get_response(event)
        return response
    finally:
        ms = (time.perf_counter() - started) * 1000
        try:
            _finish(event, response, seen, ms, request_id)
        except Exception:  # noqa: BLE001 - observing must never break an answer
            logger.exception("request not observed")
        finally:
            logger.thread_safe_remove_keys(["correlation_id"])
            _seen.reset(token)


def _finish(event: Request, response: Response | None, seen: _Seen, ms: float, request_id: str) -> None:
    context = event.context or {}
    route = str(context.get("resourcePath") or "unknown")
    status = response.status_code if response is not None else 500  # an exception: Chalice answers 500
    headers = {k.lower(): v for k, v in ((response.headers or {}) if response is not None else {}).items()}
    raw_code = headers.get(ERROR_HEADER.lower())
    code: str | None = None
    if isinstance(raw_code, str) and raw_code:
        code = raw_code if _CODE.fullmatch(raw_code) else "other"
    if code is None and status >= 500:
        code = "internal_error"
    line: dict[str, Any] = {
        "route": route,
        "method": event.method,
        "status": status,
        "code": code,
        "latency_ms": round(ms, 1),
        "request_id": request_id,
    }
    team = _team(event)
    if team:
        line["team"] = team
    key_name = (context.get("authorizer") or {}).get("principalId")
    if key_name:
        line["key_name"] = str(key_name)[:128]
    if seen.jira:
        line["jira_calls"] = len(seen.jira)
        line["jira_status"] = next((c.status for c in reversed(seen.jira) if c.status is not None), None)
        line["jira_latency_ms"] = round(sum(c.ms for c in seen.jira), 1)
        errors = [c.error for c in seen.jira if c.error]
        if errors:
            line["jira_error"] = errors[-1]
        if seen.problem:
            line["jira_problem"] = seen.problem
    (logger.warning if status >= 500 else logger.info)("request", extra=line)
    if metrics_wanted():
        _emit(route, code, seen)


def _team(event: Request) -> str | None:
    team = (event.uri_params or {}).get("team")
    if not isinstance(team, str):
        return None
    if "%" in team:  # chalice local passes path parameters still percent-encoded
        team = unquote(team)
    return team if _ID.fullmatch(team) else None


# -- metrics ----------------------------------------------------------------------------------
def metrics_wanted() -> bool:
    """EMF goes to stdout in a Lambda (unless ``POWERTOOLS_METRICS_DISABLED=true``), elsewhere only
    when ``POWERTOOLS_METRICS_DISABLED=false`` asks for it."""
    setting = os.environ.get("POWERTOOLS_METRICS_DISABLED", "").strip().lower()
    if setting in ("false", "0", "no", "off"):
        return True
    if setting in ("true", "1", "yes", "on"):
        return False
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def _metrics() -> EphemeralMetrics:
    from aws_lambda_powertools.metrics import EphemeralMetrics  # not at import: the authorizer never needs it

    return EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)


def _emit(route: str, code: str | None, seen: _Seen) -> None:
    """Flush this request's metrics: one EMF line per dimension set (service; route/code; kind)."""
    from aws_lambda_powertools.metrics import MetricUnit

    failed = 1 if code else 0
    base = _metrics()
    base.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    base.add_metric(name="Errors", unit=MetricUnit.Count, value=failed)
    if route == PROXY_ROUTE and seen.jira:
        base.add_metric(name="ProxiedCalls", unit=MetricUnit.Count, value=1)
    for call in seen.jira:
        if call.sent:
            base.add_metric(name="JiraLatency", unit=MetricUnit.Milliseconds, value=round(call.ms, 1))
    kinds = Counter(call.error for call in seen.jira if call.error)
    if kinds:
        base.add_metric(name="JiraErrors", unit=MetricUnit.Count, value=sum(kinds.values()))
    for name, value in sorted(seen.counts.items()):
        base.add_metric(name=name, unit=MetricUnit.Count, value=value)
    base.flush_metrics()

    by_route = _metrics()
    by_route.add_dimension(name="route", value=route)
    by_route.add_dimensions(service=SERVICE, route=route, code=code or "none")
    by_route.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    by_route.add_metric(name="Errors", unit=MetricUnit.Count, value=failed)
    by_route.flush_metrics()

    for kind, value in sorted(kinds.items()):
        by_kind = _metrics()
        by_kind.add_dimension(name="kind", value=kind)
        by_kind.add_metric(name="JiraErrors", unit=MetricUnit.Count, value=value)
        by_kind.flush_metrics()


# -- the authorizer ---------------------------------------------------------------------------
AUTHORIZER_OUTCOMES = ("allow", "deny", "unavailable", "no_key")


def authorizer_decision(outcome: str, record: dict[str, Any] | None = None) -> None:
    """Log the authorizer's decision: with ``allow``, the key's *name* and team scope (never the key or its hash).

    ``outcome``: ``allow`` (``record`` is the API key's record), ``deny`` (no such key),
    ``unavailable`` (storage did not answer: neither allowed nor denied) or ``no_key`` (no Bearer header).
    """
    line: dict[str, Any] = {"decision": outcome if outcome in AUTHORIZER_OUTCOMES else "other"}
    if outcome == "allow" and record is not None:
        line["key_name"] = str(record.get("name") or "")[:128]
        line["team_scope"] = str(record.get("team") or "") or "*"
    (logger.warning if outcome == "unavailable" else logger.info)("authorizer decision", extra=line)
