"""Settings, read from the environment at call time.

Chalice's test client patches the stage's environment variables only while a
request runs, and ``chalice local`` copies them in before ``app.py`` is
imported, so nothing here may be read at import time.

Example::

    settings = load_settings()
    settings.table_name      # "jira-oauth-broker-local"
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from dataclasses import dataclass

LOCAL_STAGE = "local"
DEFAULT_LOCAL_URL = "http://127.0.0.1:8000"

# The URL the current request came in on (API Gateway's domain and stage), for when
# BROKER_PUBLIC_URL is not configured. The API's own endpoint cannot be written into the
# function's environment by CloudFormation: the API already depends on the function.
request_public_url: ContextVar[str | None] = ContextVar("request_public_url", default=None)


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    return raw in {"1", "true", "yes", "on"}


def _csv(name: str) -> tuple[str, ...]:
    raw = os.environ.get(name, "")
    return tuple(item.strip().rstrip("/") for item in raw.split(",") if item.strip())


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


@dataclass(frozen=True)
class Settings:
    """Everything the broker can be configured with.

    Attributes:
        stage: ``local``, ``dev`` or ``prod`` (``BROKER_STAGE``).
        table_name: the DynamoDB table (``BROKER_TABLE``).
        secret_prefix: prefix of every Secrets Manager name (``BROKER_SECRET_PREFIX``).
        secrets_kms_key: the KMS key new secrets are encrypted with (``BROKER_SECRETS_KMS_KEY``;
            empty: Secrets Manager's default key).
        tokens_kms_key: the KMS key that seals connection tokens before they are stored
            (chalicelib/sealing.py): ``BROKER_TOKENS_KMS_KEY``, else ``BROKER_SECRETS_KMS_KEY``
            (deployed: the stack's BrokerKey), else ``alias/jira-oauth-broker-<stage>``. Values
            sealed under one key do not open under another: changing it means users connect again.
        public_url: the broker's own public base URL, used for connect links
            and the OAuth callback (``BROKER_PUBLIC_URL``; when empty, the URL
            the request came in on: API Gateway's domain and stage).
        return_to_origins: origins a connect link may send the browser back to
            (``BROKER_RETURN_TO_ORIGINS``, comma-separated).
        allow_http_jira: accept ``http://`` Jira URLs (``BROKER_ALLOW_HTTP_JIRA``;
            on by default only in the local stage).
        allow_private_networks: accept Jira hosts on loopback, link-local or
            private addresses (``BROKER_ALLOW_PRIVATE_NETWORKS``; on by default
            only in the local stage).
        jira_connect_timeout / jira_read_timeout: seconds per socket operation on a call to Jira
            (connecting; each read), defaults 4 s and 8 s.
        jira_call_seconds: the most one call to Jira may take in all, body included
            (``BROKER_JIRA_CALL_SECONDS``, default 10).
        request_budget_seconds: the most all of one HTTP request's calls to Jira may take together
            (``BROKER_REQUEST_BUDGET_SECONDS``, default 24): API Gateway ends requests at 29 s and
            the Lambda timeout is 28 s; the rest is for the broker's DynamoDB and Secrets Manager work.
    """

    stage: str
    table_name: str
    secret_prefix: str
    secrets_kms_key: str
    tokens_kms_key: str
    public_url: str
    return_to_origins: tuple[str, ...]
    allow_http_jira: bool
    allow_private_networks: bool
    jira_connect_timeout: float
    jira_read_timeout: float
    jira_call_seconds: float
    request_budget_seconds: float

    @property
    def is_local(self) -> bool:
        return self.stage == LOCAL_STAGE

    @property
    def callback_url(self) -> str:
        return f"{self.public_url}/oauth/callback"

    @property
    def oauth2_redirect_uri(self) -> str:
        """The redirect URL an OAuth 2.0 incoming link in Jira must hold, exactly."""
        return f"{self.public_url}/oauth2/callback"

    @property
    def jira_timeout(self) -> tuple[float, float]:
        return (self.jira_connect_timeout, self.jira_read_timeout)


def _public_url() -> str:
    configured = os.environ.get("BROKER_PUBLIC_URL", "").strip()
    return (configured or request_public_url.get() or DEFAULT_LOCAL_URL).rstrip("/")


def _tokens_kms_key(stage: str) -> str:
    for name in ("BROKER_TOKENS_KMS_KEY", "BROKER_SECRETS_KMS_KEY"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return f"alias/jira-oauth-broker-{stage}"


def load_settings() -> Settings:
    """Read the settings from ``os.environ`` now."""
    stage = os.environ.get("BROKER_STAGE", LOCAL_STAGE).strip() or LOCAL_STAGE
    is_local = stage == LOCAL_STAGE
    return Settings(
        stage=stage,
        table_name=os.environ.get("BROKER_TABLE", "jira-oauth-broker-local"),
        secret_prefix=os.environ.get("BROKER_SECRET_PREFIX", f"jira-oauth-broker/{stage}").rstrip("/"),
        secrets_kms_key=os.environ.get("BROKER_SECRETS_KMS_KEY", "").strip(),
        tokens_kms_key=_tokens_kms_key(stage),
        public_url=_public_url(),
        return_to_origins=_csv("BROKER_RETURN_TO_ORIGINS"),
        allow_http_jira=_flag("BROKER_ALLOW_HTTP_JIRA", is_local),
        allow_private_networks=_flag("BROKER_ALLOW_PRIVATE_NETWORKS", is_local),
        jira_connect_timeout=_float("BROKER_JIRA_CONNECT_TIMEOUT", 4.0),
        jira_read_timeout=_float("BROKER_JIRA_READ_TIMEOUT", 8.0),
        jira_call_seconds=_float("BROKER_JIRA_CALL_SECONDS", 10.0),
        request_budget_seconds=_float("BROKER_REQUEST_BUDGET_SECONDS", 24.0),
    )
