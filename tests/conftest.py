"""Shared fixtures: moto for AWS, a fake Jira on loopback, keys, API keys and a Chalice test client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from chalice.test import Client
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from moto import mock_aws

from chalicelib import apikeys, aws, resources, sealing
from chalicelib.apikeys import save_api_key
from chalicelib.store import Store
from scripts.chalice_local import emulate_api_gateway
from scripts.local_aws import FAKE_CREDENTIALS, create_kms_key, create_table
from tests.fakejira import FakeJira

# Chalice's test client shares chalice local's gateway classes: give it API Gateway's own answers
# (the envelope, the 401 for a header without 'Bearer ') as make run and a deployment do.
emulate_api_gateway()

TABLE = "jira-oauth-broker-local"
PUBLIC_URL = "http://broker.test"
API_KEY = "jb_test-key-for-every-team-000000000000000"
ACME_KEY = "jb_test-key-only-for-acme-00000000000000000"
CONSUMER_KEY = "jira-oauth-broker"


def _pem(key: rsa.RSAPrivateKey, fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def key_secret_name(key: rsa.RSAPrivateKey, team: str = "acme") -> str:
    """Where the broker keeps ``key`` for ``team``: each key under its own name."""
    from chalicelib.keys import KeyVault, fingerprint

    return KeyVault("jira-oauth-broker/local").key_name(team, fingerprint(key))


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def private_pem(rsa_key: rsa.RSAPrivateKey) -> str:
    return _pem(rsa_key)


@pytest.fixture(scope="session")
def pkcs1_pem(rsa_key: rsa.RSAPrivateKey) -> str:
    return _pem(rsa_key, serialization.PrivateFormat.TraditionalOpenSSL)


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("BROKER_STAGE", "local")
    monkeypatch.setenv("BROKER_TABLE", TABLE)
    monkeypatch.setenv("BROKER_SECRET_PREFIX", "jira-oauth-broker/local")
    monkeypatch.setenv("BROKER_PUBLIC_URL", PUBLIC_URL)
    monkeypatch.setenv("BROKER_RETURN_TO_ORIGINS", "https://chat.example.com")
    monkeypatch.setenv("BROKER_JIRA_CONNECT_TIMEOUT", "2")
    monkeypatch.setenv("BROKER_JIRA_READ_TIMEOUT", "2")


@pytest.fixture
def aws_mock(settings_env: None) -> Iterator[None]:
    """A fresh moto account per test, with the broker's table, its KMS key and two API keys."""
    aws.reset_clients()
    resources.forget_cached_signers()
    apikeys.forget_cached_keys()
    sealing.forget_cached_sealers()
    with mock_aws():
        create_table(boto3.client("dynamodb"), TABLE)
        create_kms_key(boto3.client("kms"), "local")  # alias/jira-oauth-broker-local: seals stored tokens
        store = Store(TABLE)
        save_api_key(store, API_KEY, name="all-teams")
        save_api_key(store, ACME_KEY, name="acme-bot", team="acme")
        yield
    aws.reset_clients()
    resources.forget_cached_signers()
    sealing.forget_cached_sealers()


@pytest.fixture
def store(aws_mock: None) -> Store:
    return Store(TABLE)


@pytest.fixture
def jira(rsa_key: rsa.RSAPrivateKey) -> Iterator[FakeJira]:
    with FakeJira(context_path="/jira") as fake:
        fake.add_consumer(CONSUMER_KEY, public_pem(rsa_key))
        fake.add_user("alice", key="JIRAUSER10100", display_name="Alice Example", email="alice@example.com")
        fake.add_user("bob", key="JIRAUSER10200", display_name="Bob <Builder>", email="bob@example.com")
        yield fake


@pytest.fixture
def other_jira(rsa_key: rsa.RSAPrivateKey) -> Iterator[FakeJira]:
    """A second Jira site with the same Application Link, for a team that moves."""
    with FakeJira(context_path="/other") as fake:
        fake.add_consumer(CONSUMER_KEY, public_pem(rsa_key))
        fake.add_user("alice", display_name="Alice on the other Jira")
        yield fake


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def error_code(self) -> str | None:
        return self.headers.get("X-Broker-Error")


class Broker:
    """The app through Chalice's test client (authorizer included), speaking like a service or a browser.

    As a browser it keeps cookies, as a browser would: :meth:`other_browser` is someone else's.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.cookies: dict[str, str] = {}

    def other_browser(self) -> Broker:
        """The same broker, seen from another browser (no cookies of this one)."""
        return Broker(self.client)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = API_KEY,
        raw: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = {"Content-Type": "application/json", **(headers or {})}
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        data = raw if raw is not None else (json.dumps(body) if body is not None else "")
        response = self.client.http.request(method, path, headers=sent, body=data.encode())
        return Answer(response.status_code, dict(response.headers), response.body)

    def browser(self, method: str, url_or_path: str, headers: dict[str, str] | None = None) -> Answer:
        parts = urlsplit(url_or_path)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        form = {"Content-Type": "application/x-www-form-urlencoded"} if method == "POST" else {}
        jar = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        sent = {**form, **jar, **(headers or {})}
        response = self.client.http.request(method, path, headers=sent, body=b"")
        answer = Answer(response.status_code, dict(response.headers), response.body)
        self.keep_cookies(answer)
        return answer

    def keep_cookies(self, answer: Answer) -> None:
        set_cookie = answer.headers.get("Set-Cookie") or answer.headers.get("set-cookie")
        if set_cookie:
            name, _, rest = set_cookie.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]

    # -- conveniences --------------------------------------------------------
    def setup(self, jira: FakeJira, private_pem: str, team: str = "acme", **extra: Any) -> Answer:
        body = {"base_url": jira.base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem, **extra}
        return self.call("PUT", f"/v1/teams/{team}/jira", body)

    def connect_link(self, team: str = "acme", user: str = "alice", **body: Any) -> str:
        answer = self.call("POST", f"/v1/teams/{team}/users/{user}/jira/connect-link", body)
        assert answer.status == 201, answer.body
        return str(answer.json["url"])

    def click_continue(self, link: str) -> Answer:
        return self.browser("POST", link, headers={"Sec-Fetch-Site": "same-origin"})

    def start_dance(self, link: str) -> str:
        """Click Continue; return the request token Jira issued."""
        answer = self.click_continue(link)
        assert answer.status in (302, 303), answer.body
        return request_token_of(answer.headers["Location"])


def assert_page(answer: Answer, status: int, code: str | None, *words: str) -> None:
    """An HTML page with this status and ``X-Broker-Error`` (None: no error), naming every one of ``words``."""
    assert answer.status == status, answer.body
    assert answer.headers["Content-Type"].startswith("text/html")
    assert answer.error_code == code
    for word in words:
        assert word in answer.text, (word, answer.text)


def request_token_of(authorize_url: str) -> str:
    return parse_qs(urlsplit(authorize_url).query)["oauth_token"][0]


@pytest.fixture
def broker(aws_mock: None) -> Iterator[Broker]:
    from app import app

    with Client(app, stage_name="local") as client:
        yield Broker(client)


@pytest.fixture
def connected(broker: Broker, jira: FakeJira, private_pem: str) -> Broker:
    """Team acme set up, and alice connected."""
    assert broker.setup(jira, private_pem).status == 201
    link = broker.connect_link()
    rt = broker.start_dance(link)
    answer = broker.browser("GET", jira.approve(rt, "alice"))
    assert answer.status == 200, answer.body
    return broker
