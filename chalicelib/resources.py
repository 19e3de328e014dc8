"""Wiring: the store, the key vault, the link signer and a team's Jira client, from settings.

Example::

    store = store_for(settings)
    integration = require_integration(store, "acme")
    jira = jira_for(integration, team_key(vault_for(settings), "acme", integration), settings)
"""

from __future__ import annotations

import threading
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from .config import Settings
from .errors import BrokerError, NotFound
from .keys import KeyVault
from .links import LinkSigner, new_signing_secret
from .oauth1 import JiraClient
from .store import Store

_signers: dict[str, LinkSigner] = {}
_signers_lock = threading.Lock()


def store_for(settings: Settings) -> Store:
    return Store(settings.table_name)


def vault_for(settings: Settings) -> KeyVault:
    return KeyVault(settings.secret_prefix, kms_key=settings.secrets_kms_key)


def link_signer(settings: Settings) -> LinkSigner:
    """The broker's link signer; its key lives in Secrets Manager, made on first use, cached warm."""
    name = f"{settings.secret_prefix}/broker/link-signing-key"
    with _signers_lock:
        signer = _signers.get(name)
    if signer is None:
        secret = vault_for(settings).get_or_create(name, new_signing_secret)
        signer = LinkSigner(secret.encode())
        with _signers_lock:
            _signers[name] = signer
    return signer


def forget_cached_signers() -> None:
    """Tests start a fresh moto per test; drop signers bound to an old one."""
    with _signers_lock:
        _signers.clear()


def integration_not_found(team: str) -> NotFound:
    return NotFound(
        f"Team {team} has no Jira integration. Set it up with PUT /v1/teams/{team}/jira.",
        code="integration_not_found",
    )


def require_integration(store: Store, team: str) -> dict[str, Any]:
    integration = store.get_integration(team)
    if integration is None:
        raise integration_not_found(team)
    return integration


def team_key(vault: KeyVault, team: str, integration: dict[str, Any]) -> rsa.RSAPrivateKey:
    """The key the integration names (by secret and fingerprint), so what signs is what GET shows."""
    key = vault.team_key(team, integration["public_key_fingerprint"], integration.get("key_secret"))
    if key is None:
        raise BrokerError(
            f"Team {team}'s private key is missing from Secrets Manager. Set the integration up again "
            f"with PUT /v1/teams/{team}/jira.",
            code="private_key_missing",
        )
    return key


def jira_for(integration: dict[str, Any], key: rsa.RSAPrivateKey, settings: Settings) -> JiraClient:
    return JiraClient(
        integration["base_url"],
        integration["consumer_key"],
        key,
        timeout=settings.jira_timeout,
        deadline=settings.jira_call_seconds,
    )
