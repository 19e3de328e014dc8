"""The fake Jira's REST routes for client libraries (tests/fakejira_rest.py) answer as Jira 9 does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tests.fakejira import FAKE_PNG, FakeJira

CLIENT_ID, CLIENT_SECRET, REDIRECT = "rest-tests", "rest-tests-secret", "http://127.0.0.1:9/cb"


@pytest.fixture(params=[False, True], ids=["modelled", "echo"])
def fake(request: pytest.FixtureRequest) -> Iterator[FakeJira]:
    with FakeJira(context_path="/jira", echo=request.param) as jira:
        jira.add_oauth2_client(CLIENT_ID, CLIENT_SECRET, REDIRECT)
        yield jira


@pytest.fixture
def modelled() -> Iterator[FakeJira]:
    """A fake as ``python -m tests.fakejira`` runs it: Jira's answers, no echo."""
    with FakeJira(context_path="/jira", echo=False) as jira:
        jira.add_oauth2_client(CLIENT_ID, CLIENT_SECRET, REDIRECT)
        yield jira


def _bearer(fake: FakeJira, user: str = "alice") -> dict[str, str]:
    """An OAuth 2.0 access token for ``user``, got as a client gets one (authorize, Allow, token)."""
    query = {"client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code", "scope": "READ WRITE"}
    back = fake.oauth2_approve(f"{fake.base_url}/rest/oauth2/latest/authorize?{urlencode(query)}", user)
    code = parse_qs(urlsplit(back).query)["code"][0]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    token = requests.post(
        f"{fake.base_url}/rest/oauth2/latest/token",
        data={**form, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        timeout=5,
    )
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def _put(fake: FakeJira, auth: dict[str, str], key: str, body: dict[str, Any]) -> requests.Response:
    return requests.put(f"{fake.base_url}/rest/api/2/issue/{key}", json=body, headers=auth, timeout=5)


def test_an_issue_is_edited_with_204_and_refused_field_by_field(modelled: FakeJira) -> None:
    fake, auth = modelled, _bearer(modelled)
    edited = _put(fake, auth, "ABC-1", {"fields": {"summary": "Renamed"}, "update": {"labels": [{"add": "x"}]}})
    assert edited.status_code == 204 and edited.content == b"" and "Content-Type" not in edited.headers
    issue = requests.get(f"{fake.base_url}/rest/api/2/issue/10000", headers=auth, timeout=5).json()
    assert issue["fields"]["summary"] == "Renamed" and issue["fields"]["labels"] == ["x"]
    assert issue["fields"]["updated"] >= issue["fields"]["created"]
    _put(fake, auth, "10000", {"update": {"labels": [{"remove": "x"}, {"add": "y"}], "summary": [{"set": "Again"}]}})
    issue = requests.get(f"{fake.base_url}/rest/api/2/issue/ABC-1", headers=auth, timeout=5).json()
    assert issue["fields"]["summary"] == "Again" and issue["fields"]["labels"] == ["y"]

    refused = _put(fake, auth, "ABC-1", {"fields": {"summary": "", "resolution": {"name": "Done"}, "labels": ["a b"]}})
    assert refused.status_code == 400
    assert refused.json()["errors"] == {
        "summary": "You must specify a summary of the issue.",
        "resolution": "Field 'resolution' cannot be set. It is not on the appropriate screen, or unknown.",
        "labels": "The label 'a b' contains spaces.",
    }
    assert _put(fake, auth, "ABC-99", {"fields": {"summary": "x"}}).status_code == 404
    unchanged = requests.get(f"{fake.base_url}/rest/api/2/issue/ABC-1", headers=auth, timeout=5).json()
    assert unchanged["fields"]["summary"] == "Again"


def test_an_echoing_fake_keeps_echoing_updates(fake: FakeJira) -> None:
    """Tests written against the echo (tests/test_proxy.py) read a PUT's method, path and body back."""
    for body in ({}, {"fields": {"summary": "x"}}):
        answer = _put(fake, _bearer(fake), "ABC-1", body)
        if fake.echo:
            assert answer.status_code == 200 and answer.json()["method"] == "PUT", body
        else:
            assert answer.status_code == 204, body


def test_attachments_are_typed_linked_and_downloaded(fake: FakeJira) -> None:
    auth = {**_bearer(fake), "X-Atlassian-Token": "no-check"}
    files = [
        ("file", ("diagram.png", FAKE_PNG, "application/octet-stream")),  # pycontribs jira types every file so
        ("file", ("release notes.txt", b"hello\n")),  # no type at all
    ]
    added = requests.post(f"{fake.base_url}/rest/api/2/issue/ABC-1/attachments", files=files, headers=auth, timeout=5)
    assert added.status_code == 200, added.text
    picture, notes = added.json()
    site = fake.base_url
    assert picture["mimeType"] == "image/png" and notes["mimeType"] == "text/plain"
    assert picture["content"] == f"{site}/secure/attachment/{picture['id']}/diagram.png"
    assert picture["thumbnail"] == f"{site}/secure/thumbnail/{picture['id']}/_thumb_{picture['id']}.png"
    assert notes["content"] == f"{site}/secure/attachment/{notes['id']}/release%20notes.txt"
    assert "thumbnail" not in notes

    described = requests.get(f"{site}/rest/api/2/attachment/{picture['id']}", headers=auth, timeout=5)
    assert described.status_code == 200 and described.json()["content"] == picture["content"]
    missing = requests.get(f"{site}/rest/api/2/attachment/99999", headers=auth, timeout=5)
    assert missing.status_code == 404 and missing.json()["errorMessages"]

    got = requests.get(picture["content"], headers=auth, timeout=5)
    assert got.status_code == 200 and got.content == FAKE_PNG and got.headers["Content-Type"] == "image/png"
    assert got.headers["Content-Disposition"] == "inline; filename*=UTF-8''diagram.png"
    text = requests.get(notes["content"], headers=auth, timeout=5)
    assert text.content == b"hello\n" and text.headers["Content-Type"] == "text/plain;charset=UTF-8"
    assert requests.get(picture["thumbnail"], headers=auth, timeout=5).content == FAKE_PNG
    assert requests.get(f"{site}/secure/attachment/{picture['id']}/", headers=auth, timeout=5).status_code == 200
    assert requests.get(f"{site}/secure/attachment/99999/x.png", headers=auth, timeout=5).status_code == 404
    assert requests.get(f"{site}/secure/thumbnail/{notes['id']}/x.png", headers=auth, timeout=5).status_code == 404
    anonymous = requests.get(picture["content"], timeout=5)
    assert anonymous.status_code == 401 and anonymous.json()["errorMessages"]


def test_the_field_list_has_jiras_system_fields(fake: FakeJira) -> None:
    fields = requests.get(f"{fake.base_url}/rest/api/2/field", headers=_bearer(fake), timeout=5).json()
    by_id = {field["id"]: field for field in fields}
    assert by_id["summary"] == {
        "id": "summary",
        "name": "Summary",
        "custom": False,
        "orderable": True,
        "navigable": True,
        "searchable": True,
        "clauseNames": ["summary"],
        "schema": {"type": "string", "system": "summary"},
    }
    assert by_id["issuekey"]["clauseNames"] == ["id", "issue", "issuekey", "key"] and "schema" not in by_id["issuekey"]
    assert by_id["labels"]["schema"] == {"type": "array", "system": "labels", "items": "string"}
