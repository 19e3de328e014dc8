"""Unmodified Jira client libraries, pointed at the broker's per-user site, work as against Jira itself.

One real local stack (``make run``'s runner: chalice local and its moto) and one fake Jira serve every test.
Team ``acme`` uses OAuth 1.0a (the broker's key pair, as in the README's walk-through), team ``beta`` OAuth 2.0
(the fake's incoming link); users connect through the real connect flow, a browser played by ``requests``.
Each library gets ``<broker>/v1/teams/<team>/users/<user>/jira/site`` as its Jira and the service API key as
its personal access token:

- pycontribs ``jira``: ``JIRA(server=site, token_auth=key)``;
- ``atlassian-python-api``: ``Jira(url=site, token=key)``;
- jira.js 4 under Node (``tests/js/``, installed by ``npm ci`` on first use; skipped without node or npm):
  ``new Version2Client({host: site, authentication: {personalAccessToken: key}})``.

Each one reads, creates, pages through a search, edits through the ``self`` link Jira handed it, attaches a file
and downloads it again, with every link it got pointing at the broker, never at Jira. Each broker error (not
connected, revoked, Jira down, a forbidden path) reaches it as the HTTP error it raises for Jira's own, with the
broker's code in it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from atlassian import Jira
from jira import JIRA, JIRAError
from jira.resources import Issue

from tests.fakejira import FAKE_PNG, FakeJira, demo_user
from tests.localstack import ROOT, LocalStack, local_stack

API_KEY = "jb_client-library-tests-000000000000000000"
WRONG_KEY = "jb_no-such-key-000000000000000000000000000"
CONSUMER_KEY = "jira-oauth-broker"
CLIENT_ID, CLIENT_SECRET = "client-libraries", "s3cret-of-the-client-library-link-000000000"
OAUTH1, OAUTH2, GONE = "acme", "beta", "gone"  # GONE: an OAuth 1.0a team whose Jira has stopped
TEAMS = pytest.mark.parametrize("team", [OAUTH1, OAUTH2], ids=["oauth1", "oauth2"])
JS = ROOT / "tests" / "js"
SERVLET = "/plugins/servlet/oauth/access-token"
TEXT = "Notes made through the broker ✓\n".encode()


@dataclass
class Broker:
    """The running stack, the fake Jira behind it, and how to reach a user's site."""

    stack: LocalStack
    fake: FakeJira

    def site(self, team: str, user: str = "alice") -> str:
        return f"{self.stack.url}/v1/teams/{team}/users/{user}/jira/site"

    def connect(self, team: str, user: str, jira: FakeJira | None = None) -> None:
        """The connect flow as a user goes through it: the link, Continue, Allow in Jira, back to the broker."""
        jira = jira or self.fake
        answer = self.stack.api("POST", f"/v1/teams/{team}/users/{user}/jira/connect-link", json={})
        assert answer.status_code == 201, answer.text
        browser = requests.Session()
        started = browser.post(
            answer.json()["url"], headers={"Sec-Fetch-Site": "same-origin"}, allow_redirects=False, timeout=30
        )
        assert started.status_code in (302, 303), started.text
        allow = started.headers["Location"]
        if "/rest/oauth2/latest/authorize" in allow:
            back = jira.oauth2_approve(allow, user)
        else:
            jira.add_user(user, **demo_user(user))  # as the Allow page makes a name it does not know
            back = jira.approve(parse_qs(urlsplit(allow).query)["oauth_token"][0], user)
        done = browser.get(back, allow_redirects=False, timeout=30)
        assert done.status_code == 200, done.text

    def revoke(self, team: str, user: str) -> None:
        """The user revokes the broker's access in Jira (OAuth 1.0a: Jira's next answer says token_revoked)."""
        if team == OAUTH2:
            assert self.fake.revoke_oauth2_grant(user) == 1
        else:
            self.fake.fail_next("token_revoked")

    def paths(self, method: str) -> list[str]:
        """The paths (context path included, no query) of the requests Jira got with this method, in order."""
        return [request.path for request in self.fake.requests if request.method == method]


def _setup_oauth1(stack: LocalStack, jira: FakeJira, team: str) -> None:
    """The walk-through's OAuth 1.0a setup: the broker makes the key pair, the admin pastes the public key."""
    pair = stack.api("POST", f"/v1/teams/{team}/jira/key-pair", json={})
    assert pair.status_code == 201, pair.text
    jira.add_consumer(CONSUMER_KEY, pair.json()["public_key"])
    body = {"base_url": jira.base_url, "consumer_key": CONSUMER_KEY}
    answer = stack.api("PUT", f"/v1/teams/{team}/jira", json=body)
    assert answer.status_code == 201, answer.text


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with (
        FakeJira(context_path="/jira", echo=False) as fake,
        local_stack(tmp_path_factory.mktemp("clients") / "run_local.log", API_KEY) as stack,
    ):
        _setup_oauth1(stack, fake, OAUTH1)
        fake.add_oauth2_client(CLIENT_ID, CLIENT_SECRET, stack.url + "/oauth2/callback")
        body = {"auth": "oauth2", "base_url": fake.base_url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        answer = stack.api("PUT", f"/v1/teams/{OAUTH2}/jira", json=body)
        assert answer.status_code == 201, answer.text
        ready = Broker(stack, fake)
        for team in (OAUTH1, OAUTH2):
            ready.connect(team, "alice")
        yield ready


@pytest.fixture(scope="module")
def gone(broker: Broker) -> str:
    """Team GONE's site for alice, who connected while its Jira ran; the Jira has stopped since."""
    with FakeJira(context_path="/jira", echo=False) as other:
        _setup_oauth1(broker.stack, other, GONE)
        broker.connect(GONE, "alice", other)
    return broker.site(GONE)


def _fake_origin(broker: Broker) -> str:
    return broker.fake.base_url.rsplit("/jira", 1)[0]


def _assert_on_the_broker(broker: Broker, site: str, *links: str) -> None:
    for link in links:
        assert link.startswith(site + "/"), (link, site)
        assert _fake_origin(broker) not in link


def _assert_no_jira_link(broker: Broker, document: Any) -> None:
    """Nothing in a JSON answer points at Jira itself (the port of the fake included)."""
    text = json.dumps(document)
    assert _fake_origin(broker) not in text, text
    assert f":{urlsplit(broker.fake.base_url).port}/" not in text


# ---------------------------------------------------------------- pycontribs jira


def _pycontribs(site: str, key: str = API_KEY, **options: Any) -> JIRA:
    return JIRA(server=site, token_auth=key, timeout=30, max_retries=0, **options)


@TEAMS
def test_pycontribs_jira_reads_creates_pages_edits_and_attaches(broker: Broker, team: str) -> None:
    site = broker.site(team)
    jira = _pycontribs(site, default_batch_sizes={Issue: 1})  # a search fetches one issue per page

    info = jira.server_info()
    assert info["versionNumbers"] == [9, 12, 2] and info["deploymentType"] == "Server"
    assert info["baseUrl"] == site  # Jira's own base URL, pointed back through the broker
    me = jira.myself()
    assert me["name"] == "alice"

    summary = f"Made by pycontribs jira ({team})"
    issue = jira.create_issue(fields={"project": {"key": "ABC"}, "summary": summary, "issuetype": {"name": "Task"}})
    assert issue.key.startswith("ABC-") and issue.fields.summary == summary
    assert issue.fields.reporter.name == "alice"
    _assert_on_the_broker(broker, site, issue.self, *issue.raw["fields"]["reporter"]["avatarUrls"].values())
    assert issue.self == f"{site}/rest/api/2/issue/{issue.id}"
    _assert_no_jira_link(broker, issue.raw)

    jql = "project = ABC ORDER BY key"
    first = jira.search_issues(jql, maxResults=1)
    assert len(first) == 1 and first.startAt == 0 and first.maxResults == 1 and first.total >= 3
    searches = len(broker.paths("GET"))
    every = jira.search_issues(jql, maxResults=False)  # the library walks the pages itself
    keys = [found.key for found in every]
    assert len(keys) == first.total == len(set(keys)) and issue.key in keys and keys[0] == first[0].key
    search_pages = [path for path in broker.paths("GET")[searches:] if path.endswith("/rest/api/2/search")]
    assert len(search_pages) == first.total  # one request per issue: the pages were fetched one by one

    issue.update(fields={"summary": f"Renamed by pycontribs jira ({team})"}, update={"labels": [{"add": "broker"}]})
    assert broker.paths("PUT")[-1] == f"/jira/rest/api/2/issue/{issue.id}"  # the self link, followed
    assert issue.fields.summary == f"Renamed by pycontribs jira ({team})" and issue.fields.labels == ["broker"]
    assert jira.issue(issue.key).fields.summary == f"Renamed by pycontribs jira ({team})"

    picture = jira.add_attachment(issue=issue, attachment=io.BytesIO(FAKE_PNG), filename="diagram.png")
    assert picture.size == len(FAKE_PNG) and picture.mimeType == "image/png"
    _assert_on_the_broker(broker, site, picture.self, picture.content, picture.thumbnail)
    assert picture.content == f"{site}/secure/attachment/{picture.id}/diagram.png"
    assert picture.get() == FAKE_PNG  # the bytes, through the rewritten content link
    notes = jira.add_attachment(issue=issue.key, attachment=io.BytesIO(TEXT), filename="release notes.txt")
    assert notes.mimeType == "text/plain"
    assert notes.content == f"{site}/secure/attachment/{notes.id}/release%20notes.txt"
    assert notes.get() == TEXT
    assert broker.paths("GET")[-1] == f"/jira/secure/attachment/{notes.id}/release%20notes.txt"  # as Jira wrote it
    again = jira.attachment(picture.id)
    assert again.content == picture.content and again.thumbnail == picture.thumbnail
    assert [found.id for found in jira.issue(issue.key).fields.attachment] == [picture.id, notes.id]


def test_pycontribs_jira_gets_redirects_to_the_broker(broker: Broker) -> None:
    """A Location under Jira's base URL comes back under the user's site (the library would follow it)."""
    site = broker.site(OAUTH1)
    jira = _pycontribs(site)
    moved = jira._session.get(f"{site}/rest/fake/status/302", allow_redirects=False)
    assert moved.status_code == 302 and moved.headers["Location"] == f"{site}/rest/api/2/myself"
    assert jira._session.get(f"{site}/rest/fake/status/302").json()["name"] == "alice"  # followed, on the broker


def _jira_error(call: Callable[[], object]) -> JIRAError:
    with pytest.raises(JIRAError) as caught:
        call()
    return caught.value


@TEAMS
def test_pycontribs_jira_raises_the_brokers_errors(broker: Broker, gone: str, team: str) -> None:
    site = broker.site(team)
    missing = _jira_error(lambda: _pycontribs(broker.site(team, "nobody")))
    assert missing.status_code == 404 and "not_connected: " in str(missing)
    wrong = _jira_error(lambda: _pycontribs(site, WRONG_KEY))
    assert wrong.status_code == 403 and "forbidden: " in str(wrong)

    broker.connect(team, "rita-py")
    jira = _pycontribs(broker.site(team, "rita-py"))
    broker.revoke(team, "rita-py")
    revoked = _jira_error(jira.myself)
    assert revoked.status_code == 401 and "reauthorization_required: " in str(revoked)

    down = _jira_error(lambda: _pycontribs(gone))
    assert down.status_code == 502 and "jira_unreachable: " in str(down)

    jira = _pycontribs(site)
    for path in ("/rest/api/2/../../..", "/rest/%2e%2e"):  # requests drops the first '..'s; the second stays
        refused = _jira_error(lambda path=path: jira._session.post(f"{site}{path}{SERVLET}"))
        assert refused.status_code == 400 and "invalid_path: " in str(refused), path


# ---------------------------------------------------------------- atlassian-python-api


def _atlassian(site: str, key: str = API_KEY) -> Jira:
    return Jira(url=site, token=key, timeout=30)


@TEAMS
def test_atlassian_python_api_reads_creates_pages_edits_and_attaches(broker: Broker, team: str, tmp_path: Path) -> None:
    site = broker.site(team)
    jira = _atlassian(site)

    info = jira.get_server_info()
    assert info["versionNumbers"] == [9, 12, 2] and info["baseUrl"] == site
    assert jira.myself()["name"] == "alice"

    summary = f"Made by atlassian-python-api ({team})"
    created = jira.issue_create({"project": {"key": "ABC"}, "summary": summary, "issuetype": {"name": "Task"}})
    assert created["key"].startswith("ABC-")
    assert created["self"] == f"{site}/rest/api/2/issue/{created['id']}"
    _assert_on_the_broker(broker, site, created["self"])

    jql = "project = ABC ORDER BY key"
    first = jira.jql(jql, start=0, limit=1)
    total = first["total"]
    assert total >= 3 and first["startAt"] == 0 and first["maxResults"] == 1 and len(first["issues"]) == 1
    keys = [issue["key"] for start in range(total) for issue in jira.jql(jql, start=start, limit=1)["issues"]]
    assert len(keys) == len(set(keys)) == total and created["key"] in keys
    _assert_no_jira_link(broker, first)

    renamed = f"Renamed by atlassian-python-api ({team})"
    jira.put(created["self"], data={"fields": {"summary": renamed}}, absolute=True)  # through the self link
    assert broker.paths("PUT")[-1] == f"/jira/rest/api/2/issue/{created['id']}"
    jira.update_issue_field(created["key"], {"labels": ["broker", "atlassian"]})
    fields = jira.issue(created["key"])["fields"]
    assert fields["summary"] == renamed and fields["labels"] == ["broker", "atlassian"]

    picture = tmp_path / "chart.png"
    picture.write_bytes(FAKE_PNG)
    (attached,) = jira.add_attachment(created["key"], str(picture))
    assert attached["filename"] == "chart.png" and attached["mimeType"] == "image/png"
    _assert_on_the_broker(broker, site, attached["self"], attached["content"], attached["thumbnail"])
    assert jira.get_attachment_content(attached["id"]) == FAKE_PNG  # its JSON, then the content link
    notes = tmp_path / "notes.txt"
    notes.write_bytes(TEXT)
    (text,) = jira.add_attachment(created["key"], str(notes))
    assert jira.get_attachment_content(text["id"]) == TEXT
    assert [found["id"] for found in jira.issue(created["key"])["fields"]["attachment"]] == [
        attached["id"],
        text["id"],
    ]


def _http_error(call: Callable[[], object]) -> requests.HTTPError:
    with pytest.raises(requests.HTTPError) as caught:
        call()
    return caught.value


def _status(error: requests.HTTPError) -> int | None:
    return error.response.status_code if error.response is not None else None


@TEAMS
def test_atlassian_python_api_raises_the_brokers_errors(broker: Broker, gone: str, team: str) -> None:
    site = broker.site(team)
    missing = _http_error(_atlassian(broker.site(team, "nobody")).myself)
    assert _status(missing) == 404 and "not_connected: " in str(missing)
    wrong = _http_error(_atlassian(site, WRONG_KEY).myself)
    assert _status(wrong) == 403 and "forbidden: " in str(wrong)
    anonymous = _http_error(Jira(url=site, timeout=30).myself)  # no key: API Gateway's 401, plain application/json
    assert _status(anonymous) == 401 and anonymous.response is not None
    assert anonymous.response.headers["X-Broker-Error"] == "unauthorized" and str(anonymous) == "Unauthorized (401)"

    down = _http_error(_atlassian(gone).myself)
    assert _status(down) == 502 and "jira_unreachable: " in str(down)

    jira = _atlassian(site)
    for path in ("rest/api/2/../../../plugins/servlet/oauth/access-token", "rest/%2e%2e/plugins/servlet/oauth/x"):
        refused = _http_error(lambda path=path: jira.post(path))
        assert _status(refused) == 400 and "invalid_path: " in str(refused), path

    broker.connect(team, "rita-at")
    jira = _atlassian(broker.site(team, "rita-at"))
    broker.revoke(team, "rita-at")
    revoked = _http_error(jira.myself)
    assert _status(revoked) == 401 and revoked.response is not None
    assert revoked.response.headers["X-Broker-Error"] == "reauthorization_required"
    # atlassian-python-api reads a 401's body only when its Content-Type is exactly Jira's
    # "application/json;charset=UTF-8"; otherwise its exception says "Unauthorized (401)" and nothing more.
    assert revoked.response.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert "reauthorization_required: " in str(revoked), (str(revoked), revoked.response.headers["Content-Type"])


# ---------------------------------------------------------------- jira.js (Node)


@pytest.fixture(scope="module")
def node() -> str:
    """Node with jira.js installed in tests/js/node_modules from tests/js/package-lock.json (npm ci, once)."""
    found = shutil.which("node")
    if found is None:
        pytest.skip("node is not installed: the jira.js tests need Node.js 18 or later with npm")
    wanted = json.loads((JS / "package.json").read_text())["dependencies"]["jira.js"]
    installed = JS / "node_modules" / "jira.js" / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != wanted:
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip(f"npm is not installed: jira.js {wanted} cannot be installed into tests/js/node_modules")
        try:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=JS,
                capture_output=True,
                text=True,
                timeout=300,
                env={**os.environ, "npm_config_update_notifier": "false"},
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"npm ci did not install jira.js {wanted} within 5 minutes (is the npm registry reachable?)")
        if done.returncode != 0:
            pytest.skip(f"npm ci could not install jira.js {wanted} from the npm registry: {done.stderr[-600:]}")
    return found


def _jira_js(node: str, mode: str, site: str, key: str = API_KEY) -> Any:
    done = subprocess.run(
        [node, str(JS / "client.cjs"), mode, site, key], capture_output=True, text=True, timeout=60, cwd=JS
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@TEAMS
def test_jira_js_gets_myself_and_creates_an_issue(broker: Broker, node: str, team: str) -> None:
    site = broker.site(team)
    used = _jira_js(node, "use", site)
    assert used["myself"]["name"] == "alice"
    created, issue = used["created"], used["issue"]
    assert created["key"].startswith("ABC-") and created["self"] == f"{site}/rest/api/2/issue/{created['id']}"
    assert issue["fields"]["summary"] == "Made by jira.js through the broker"
    assert issue["fields"]["reporter"]["name"] == "alice"
    _assert_no_jira_link(broker, used)


def _assert_thrown(outcome: dict[str, Any], status: int, code: str) -> None:
    """jira.js throws an HttpException whose response carries the body, as it does for Jira's own errors."""
    assert outcome.get("thrown") == "HttpException", outcome
    assert outcome["status"] == status, outcome
    assert outcome["data"]["errorMessages"][0].startswith(f"{code}: "), outcome
    assert outcome["data"]["error"]["code"] == code


@TEAMS
def test_jira_js_raises_the_brokers_errors(broker: Broker, gone: str, node: str, team: str) -> None:
    nobody = _jira_js(node, "fail", broker.site(team, "nobody"))
    _assert_thrown(nobody["myself"], 404, "not_connected")
    _assert_thrown(_jira_js(node, "fail", broker.site(team))["servlet"], 400, "invalid_path")
    _assert_thrown(_jira_js(node, "fail", broker.site(team), WRONG_KEY)["myself"], 403, "forbidden")
    _assert_thrown(_jira_js(node, "fail", gone)["myself"], 502, "jira_unreachable")
    broker.connect(team, "rita-js")
    broker.revoke(team, "rita-js")
    _assert_thrown(_jira_js(node, "fail", broker.site(team, "rita-js"))["myself"], 401, "reauthorization_required")
