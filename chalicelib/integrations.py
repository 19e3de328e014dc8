"""A team's Jira integration: set up (proved against Jira first), read, replace, delete.

Example::

    status, body = put_integration("acme", {"base_url": ..., "consumer_key": ..., "private_key": ...})
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from . import clock, connect
from .config import Settings, load_settings
from .errors import BrokerError, InvalidRequest
from .keys import ALLOWED_GENERATED_BITS, KeyVault, fingerprint, generate_private_key, parse_private_key, public_pem
from .logs import logger
from .oauth1 import JiraClient, JiraOAuthError
from .problems import explain_setup_problem
from .resources import require_integration, store_for, team_key, vault_for
from .urls import check_jira_destination, normalize_base_url, validate_id

_CONSUMER_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


# -- reading the request ---------------------------------------------------------
def _required_string(body: dict[str, Any], name: str) -> Any:
    if name not in body or body[name] in (None, ""):
        raise InvalidRequest(f"The field '{name}' is required.", code="missing_field", details={"field": name})
    return body[name]


def _consumer_key(raw: object) -> str:
    if not isinstance(raw, str) or not _CONSUMER_KEY.match(raw):
        raise InvalidRequest(
            "consumer_key must be the Application Link's consumer key: 1 to 255 printable characters, no spaces.",
            code="invalid_consumer_key",
        )
    return raw


def _choose_key(
    body: dict[str, Any], team: str, vault: KeyVault, existing: dict[str, Any] | None
) -> tuple[rsa.RSAPrivateKey, bool]:
    """The key to use, and whether it is the team's pending generated key."""
    if body.get("private_key") not in (None, ""):
        return parse_private_key(body["private_key"]), False
    pending = vault.pending_key(team)
    if pending is not None:
        return pending, True
    if existing is not None:
        return team_key(vault, team, existing), False
    raise InvalidRequest(
        f"Send private_key, or first let the broker make a key pair with POST /v1/teams/{team}/jira/key-pair "
        "and paste its public key into Jira's Application Link.",
        code="private_key_required",
    )


# -- proving the configuration against Jira -----------------------------------------
def _prove(jira: JiraClient, consumer_key: str, settings: Settings) -> None:
    try:
        jira.request_token(settings.callback_url)
    except JiraOAuthError as error:
        raise explain_setup_problem(error, jira) from None


def _server_info(jira: JiraClient) -> tuple[dict[str, Any], list[dict[str, str]]]:
    try:
        info = jira.server_info()
    except BrokerError as error:
        return {}, [
            {"code": "server_info_unavailable", "message": f"Could not read Jira's server info: {error.message}"}
        ]
    server = {
        "base_url": info.get("baseUrl"),
        "version": info.get("version"),
        "version_numbers": info.get("versionNumbers"),
        "deployment_type": info.get("deploymentType"),
        "server_title": info.get("serverTitle"),
    }
    reported = str(info.get("baseUrl") or "").rstrip("/")
    warnings = []
    if reported and reported.lower() != jira.base_url.lower():
        warnings.append(
            {
                "code": "base_url_mismatch",
                "message": f"Jira says its base URL is {reported}, but base_url is {jira.base_url}. Links and "
                "signatures can break when they differ; consider using Jira's own base URL.",
            }
        )
    return {k: v for k, v in server.items() if v is not None}, warnings


# -- the routes' work ------------------------------------------------------------
def put_integration(team: str, body: dict[str, Any], settings: Settings | None = None) -> tuple[int, dict[str, Any]]:
    """Validate, prove against Jira, then store. Returns (201 created | 200 replaced, integration)."""
    settings = settings or load_settings()
    store, vault = store_for(settings), vault_for(settings)
    base_url = normalize_base_url(_required_string(body, "base_url"))
    consumer_key = _consumer_key(_required_string(body, "consumer_key"))
    user = validate_id("user", body["user"]) if body.get("user") not in (None, "") else None
    existing = store.get_integration(team)
    key, from_pending = _choose_key(body, team, vault, existing)
    check_jira_destination(base_url, settings)

    jira = JiraClient(base_url, consumer_key, key, timeout=settings.jira_timeout)
    _prove(jira, consumer_key, settings)
    server, warnings = _server_info(jira)

    vault.put_team_key(team, key)
    if from_pending:
        vault.delete_pending_key(team)
    now = clock.now()
    same_link = existing is not None and (existing["base_url"], existing["consumer_key"]) == (base_url, consumer_key)
    if existing is not None and not same_link:
        dropped = store.delete_team_connections(team)
        logger.info("integration target changed; connections dropped", extra={"team": team, "dropped": dropped})
    integration = {
        "team": team,
        "base_url": base_url,
        "consumer_key": consumer_key,
        "public_key": public_pem(key),
        "public_key_fingerprint": fingerprint(key),
        "revision": existing["revision"] if same_link and existing else secrets.token_hex(8),
        "server": server,
        "warnings": warnings,
        "created_at": existing["created_at"] if existing else now,
        "updated_at": now,
    }
    store.put_integration(team, integration)
    logger.info("integration saved", extra={"team": team, "jira_host": jira.host, "is_new": existing is None})
    result = represent(integration)
    if user is not None:
        link = connect.create_link(team, user, {}, settings)
        result["connect_url"], result["connect_url_expires_at"] = link["url"], link["expires_at"]
    return (200 if existing else 201), result


def represent(integration: dict[str, Any]) -> dict[str, Any]:
    """The integration as callers see it: never the private key."""
    return {
        "team": integration["team"],
        "base_url": integration["base_url"],
        "consumer_key": integration["consumer_key"],
        "public_key": integration["public_key"],
        "public_key_fingerprint": integration["public_key_fingerprint"],
        "jira": integration.get("server", {}),
        "warnings": integration.get("warnings", []),
        "created_at": clock.iso(integration["created_at"]),
        "updated_at": clock.iso(integration["updated_at"]),
    }


def get_integration(team: str, settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or load_settings()
    return represent(require_integration(store_for(settings), team))


def delete_integration(team: str, settings: Settings | None = None) -> None:
    """Delete the team's secrets, config and every user connection. Idempotent."""
    settings = settings or load_settings()
    removed = store_for(settings).delete_team(team)
    vault_for(settings).delete_team(team)
    logger.info("integration deleted", extra={"team": team, "items_removed": removed})


def create_key_pair(team: str, body: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Generate a key pair; keep the private half as the team's pending key; show the public half."""
    settings = settings or load_settings()
    bits = body.get("bits", 2048)
    if isinstance(bits, bool) or bits not in ALLOWED_GENERATED_BITS:
        raise InvalidRequest("bits must be 2048, 3072 or 4096.", code="invalid_bits")
    key = generate_private_key(bits)
    vault_for(settings).put_pending_key(team, key)
    logger.info("key pair generated", extra={"team": team, "bits": bits})
    return {
        "public_key": public_pem(key),
        "public_key_fingerprint": fingerprint(key),
        "bits": bits,
        "next_step": f"Paste public_key into Jira's Application Link (incoming authentication), then "
        f"PUT /v1/teams/{team}/jira with base_url and consumer_key and no private_key.",
    }
