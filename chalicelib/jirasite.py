"""One team's Jira site over HTTP: what OAuth 1.0a and OAuth 2.0 clients share.

A :class:`JiraSite` prepares requests under the base URL (context path included), sends
them within one total deadline per call (:mod:`chalicelib.deadline`), reads capped bodies,
and reads the two answers every setup needs: ``serverInfo`` and JSON objects. How a request
is authorized is its subclasses' business (:class:`chalicelib.oauth1.JiraClient` signs,
:class:`chalicelib.oauth2.JiraOAuth2Client` sends a Bearer token).

Example::

    site = JiraSite("https://jira.example.com/jira", timeout=(4, 8), deadline=10)
    site.server_info()["version"]     # "9.12.2"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from . import observability
from .deadline import Deadline, deadline_of
from .errors import BrokerError, JiraBadResponse, JiraRejected
from .jirahttp import read_capped, session_for, timed_out, translating

SERVER_INFO_PATH = "/rest/api/2/serverInfo"
MYSELF_PATH = "/rest/api/2/myself"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class UserRequest:
    """A request to send as a user: ``path`` is relative to the base URL and may carry an encoded query."""

    method: str
    path: str
    body: bytes | str | None = None
    headers: dict[str, str] | None = None


class JiraSite:
    """HTTP to one Jira under a total deadline per call; failures become broker errors naming the host.

    ``timeout`` is ``requests``' per-operation (connect, read) timeout; ``deadline`` is the
    most seconds one call may take in all, body included (default: the two timeouts added),
    or less when the current request's budget (:func:`chalicelib.deadline.start_request`) ends sooner.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: tuple[float, float],
        deadline: float | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.deadline = deadline if deadline is not None else timeout[0] + timeout[1]
        self.session = session or session_for(base_url)

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc

    def prepare_plain(
        self, method: str, path: str, *, data: bytes | str | None = None, headers: dict[str, str] | None = None
    ) -> requests.PreparedRequest:
        """The request as it goes on the wire, unauthorized: ``path`` may carry an encoded query."""
        return self.session.prepare_request(requests.Request(method, self.base_url + path, data=data, headers=headers))

    def send_prepared(self, prepared: requests.PreparedRequest, *, stream: bool = False) -> requests.Response:
        """Send a prepared request within one total deadline; failures become broker errors naming the host.

        The deadline covers the body too: read here, or with ``stream`` by :meth:`read_body`. A
        streamed response keeps it armed until the body is read to its end or the response is
        closed, and at the latest until it passes (see :mod:`chalicelib.deadline`).
        """
        call = Deadline(self.deadline)
        if call.remaining() <= 0:
            raise observability.jira_failed(timed_out(self.host, call))  # the budget is spent: do not even connect
        with observability.jira_call() as seen, translating(self.host, call, self.timeout):
            with call.running():
                response = self.session.send(
                    prepared, timeout=call.cap(self.timeout), allow_redirects=False, stream=stream
                )
        seen.answered(response)
        return response

    def read_body(self, response: requests.Response, limit: int) -> bytes:
        """A streamed response's body, read within the deadline of the call that sent it.

        Raises :class:`JiraBadResponse` ``response_too_large`` past ``limit`` bytes, ``jira_bad_response``
        when Jira stops part-way, and :class:`JiraTimeout` when the deadline passes. Closes the response.
        """
        call = deadline_of(response)
        try:
            with observability.jira_reading(), translating(self.host, call, self.timeout, reading=True):
                return read_capped(response, limit, self.host)
        finally:
            response.close()
            if call is not None:
                call.close()

    def server_info(self) -> dict[str, Any]:
        """``GET /rest/api/2/serverInfo``, which Jira answers without authentication."""
        prepared = self.prepare_plain("GET", SERVER_INFO_PATH, headers={"Accept": "application/json"})
        response = self.send_prepared(prepared)
        if response.status_code != 200:
            raise JiraBadResponse(f"{self.host} answered HTTP {response.status_code} for {SERVER_INFO_PATH}.")
        return self.json_object(response, SERVER_INFO_PATH)

    def json_object(self, response: requests.Response, path: str) -> dict[str, Any]:
        """The JSON object Jira answered ``path`` with, or :class:`JiraBadResponse` naming what came instead."""
        # Jira sometimes answers 200 with an empty body when authentication failed (JRA-41559).
        reason = response.headers.get("X-Seraph-LoginReason", "")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            hint = " (Jira reports AUTHENTICATED_FAILED)" if "FAILED" in reason else ""
            raise JiraBadResponse(f"{self.host} answered {path} without a JSON object{hint}.")
        return body


def jira_user_of(me: dict[str, Any]) -> dict[str, Any]:
    """Who a token belongs to, from ``/rest/api/2/myself``: the fields the broker keeps."""
    return {
        "name": me.get("name"),
        "key": me.get("key"),
        "display_name": me.get("displayName"),
        "email": me.get("emailAddress"),
    }


def unexpected_status(host: str, path: str, response: requests.Response) -> BrokerError:
    """An answer the broker has no meaning for: a 404 (wrong base URL), a redirect, anything else."""
    status = response.status_code
    if status == 404:
        return JiraRejected(
            f"{host} answered 404 for {path}. Check that base_url is Jira's base URL, including any "
            "context path (such as https://host/jira), and that OAuth is enabled.",
            code="jira_oauth_not_found",
        )
    if status in (301, 302, 303, 307, 308):
        target = urlsplit(response.headers.get("Location", "")).netloc or "another address"
        return JiraRejected(
            f"{host} redirected {path} to {target}. Use the address Jira redirects to as base_url "
            "(often https instead of http, or a different host or context path).",
            code="jira_redirected",
        )
    return JiraBadResponse(f"{host} answered HTTP {status} for {path}, which the broker did not expect.")
