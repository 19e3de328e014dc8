"""Reading Jira's OAuth Problem Reports: from the body, from WWW-Authenticate, or both."""

from __future__ import annotations

import requests

from chalicelib.oauth1 import clock_skew, parse_problem


def _response(status: int, body: str, header: str | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body.encode()
    if header:
        response.headers["WWW-Authenticate"] = header
    return response


def test_problem_from_the_header_only() -> None:
    header = 'OAuth realm="http%3A%2F%2Fjira%2Fjira", oauth_problem="consumer_key_unknown"'
    problem = parse_problem(_response(401, "<html>Unauthorized</html>", header))
    assert problem is not None and problem.problem == "consumer_key_unknown" and problem.status == 401
    assert problem.fields["realm"] == "http://jira/jira"


def test_problem_from_the_body_only_with_extra_fields() -> None:
    problem = parse_problem(_response(400, "oauth_problem=timestamp_refused&oauth_acceptable_timestamps=100-700"))
    assert problem is not None and problem.problem == "timestamp_refused"
    assert clock_skew(problem, now=100) == 300


def test_no_problem() -> None:
    assert parse_problem(_response(500, "Internal Server Error")) is None
    assert parse_problem(_response(401, "", 'Basic realm="x"')) is None
