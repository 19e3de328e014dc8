"""A team's Jira integration: set up (proved against Jira first), read, replace, delete.

Example::

    status, body = put_integration("acme", {"base_url": ..., "consumer_key": ..., "private_key": ...})
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from . import clock, connect
from .acting import Proposal, auth_of, check_auth, scheme_class
from .config import Settings, load_settings
from .dynamo import ConditionFailed
from .errors import BrokerError, Conflict, Gone, InvalidRequest
from .jirasite import JiraSite
from .keys import ALLOWED_GENERATED_BITS, fingerprint, generate_private_key, public_pem
from .logs import logger
from .resources import require_integration, store_for, vault_for
from .store import DELETING, live_integration
from .urls import normalize_base_url, validate_id


# -- reading the request ---------------------------------------------------------
def _required_string(body: dict[str, Any], name: str) -> Any:
    if name not in body or body[name] in (None, ""):
        raise InvalidRequest(f"The field '{name}' is required.", code="missing_field", details={"field": name})
    return body[name]


def _server_info(jira: JiraSite) -> tuple[dict[str, Any], list[dict[str, str]]]:
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
def put_integration(
    team: str, body: dict[str, Any], settings: Settings | None = None, *, complete_link: str | None = None
) -> tuple[int, dict[str, Any]]:
    """Validate, prove against Jira, then store. Returns (201 created | 200 replaced, integration).

    The order keeps every failure harmless (see :func:`_commit`). With ``complete_link``, that
    setup link is completed in the same write, so a used link changes nothing.

    Raises:
        Conflict: 409 ``integration_changed`` when another write of the team's integration won meanwhile.
    """
    settings = settings or load_settings()
    store = store_for(settings)
    base_url = normalize_base_url(_required_string(body, "base_url"))
    auth = check_auth(body.get("auth"))
    user = _optional_user(body.get("user"))
    record = store.get_integration_record(team)  # a half-deleted one too: its version guards the write
    existing = live_integration(record)
    scheme = scheme_class(auth)
    same_auth = existing if existing is not None and auth_of(existing) == auth else None
    proposal = scheme.propose(team, base_url, body, same_auth, settings)
    server, warnings = _server_info(proposal.site)

    now = clock.now()
    # Jira binds tokens to its link (Application Link, or OAuth 2.0 client): the same link keeps the
    # revision and so the connections; another site, link or OAuth version starts a new one.
    same_link = same_auth is not None and scheme.link_of(same_auth) == proposal.link
    integration = {
        "team": team,
        "auth": auth,
        "base_url": base_url,
        **proposal.fields,
        "version": int((record or {}).get("version") or 0) + 1,
        "revision": existing["revision"] if same_link and existing else secrets.token_hex(8),
        "server": server,
        "warnings": warnings,
        "created_at": existing["created_at"] if existing else now,
        "updated_at": now,
    }
    _commit(team, integration, proposal, record, settings, complete_link=complete_link)
    logger.info("integration saved", extra={"team": team, "jira_host": proposal.site.host, "is_new": existing is None})
    result = represent(integration, settings)
    if user is not None:
        link = connect.create_link(team, user, {}, settings)
        result["connect_url"], result["connect_url_expires_at"] = link["url"], link["expires_at"]
    return (200 if existing else 201), result


def _commit(
    team: str,
    integration: dict[str, Any],
    proposal: Proposal,
    record: dict[str, Any] | None,
    settings: Settings,
    *,
    complete_link: str | None,
) -> None:
    """Store a proved integration so that a failure at any step leaves a consistent state.

    1. The credential (private key or client secret) goes to its own secret, named by its
       fingerprint or hash: the one in use is untouched.
    2. The integration is written, conditional on the version read (and completing the setup
       link, if any). Until this step nothing the broker uses has changed; if it fails, the new
       key's secret is removed again (unless the winning write uses the same key).
    3. Then only clean-up, each step safe to fail: the pending key, connections of an older
       revision (never used again anyway: the revision no longer matches), the old credential's secret.
    """
    store, vault = store_for(settings), vault_for(settings)
    integration["key_secret"] = proposal.store_credential()
    expected = int(record.get("version") or 0) if record else None
    try:
        store.save_integration(team, integration, expected_version=expected, complete_link=complete_link)
    except ConditionFailed as error:
        _forget_unused_key(team, integration["key_secret"], settings)
        raise _lost_race(team, error) from None
    except Exception:
        _forget_unused_key(team, integration["key_secret"], settings)
        raise
    # The integration is saved: from here on, only clean-up. Its failure must not turn a done change
    # into an error answer; what it leaves is never used (another revision, a key nothing names).
    for what, step in proposal.after_save:
        _clean_up(team, what, step)
    if record is None or record.get("revision") != integration["revision"] or record.get("status") == DELETING:
        revision = integration["revision"]
        _clean_up(team, "connections of older revisions", lambda: store.delete_connections_not_of(team, revision))
    old_secret = (record or {}).get("key_secret") or (vault.team_key_name(team) if record else None)
    if old_secret and old_secret != integration["key_secret"]:
        _clean_up(team, "replaced credential", lambda: vault.delete_key(old_secret))


def _clean_up(team: str, what: str, step: Callable[[], object]) -> None:
    try:
        step()
    except Exception:  # noqa: BLE001 - logged; the change itself is saved and consistent
        logger.exception("clean-up after an integration write failed", extra={"team": team, "what": what})


def _forget_unused_key(team: str, name: str, settings: Settings) -> None:
    """Undo step 1 after a failed write, unless the integration now in place names that very key."""
    try:
        current = store_for(settings).get_integration_record(team)
        if (current or {}).get("key_secret") != name:
            vault_for(settings).delete_key(name)
    except Exception:  # noqa: BLE001 - the write's own failure is what the caller must hear about
        logger.exception("could not remove an unused key after a failed integration write", extra={"team": team})


def _lost_race(team: str, failed: ConditionFailed) -> BrokerError:
    if failed.step == "link":
        return Gone(f"This setup link was already used: team {team}'s Jira was set up through it.", code="link_used")
    return Conflict(
        f"Team {team}'s Jira integration was changed by another request while this one was checking Jira. "
        f"Read it with GET /v1/teams/{team}/jira, then send your change again if it is still needed.",
        code="integration_changed",
    )


def _optional_user(raw: object) -> str | None:
    if raw in (None, ""):
        return None
    if not isinstance(raw, str):
        raise InvalidRequest("user must be the id of the admin to connect, as a string.", code="invalid_user")
    return validate_id("user", raw)


def represent(integration: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The integration as callers see it: never the private key or client secret."""
    auth = auth_of(integration)
    return {
        "team": integration["team"],
        "auth": auth,
        "base_url": integration["base_url"],
        **scheme_class(auth).describe(integration, settings),
        "jira": integration.get("server", {}),
        "warnings": integration.get("warnings", []),
        "created_at": clock.iso(integration["created_at"]),
        "updated_at": clock.iso(integration["updated_at"]),
    }


def get_integration(team: str, settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or load_settings()
    return represent(require_integration(store_for(settings), team), settings)


def delete_integration(team: str, settings: Settings | None = None) -> None:
    """Delete the team's keys, config and every user connection. Idempotent.

    The integration is first marked ``deleting`` (hidden from every route at once), then its
    keys and connections go, then the item itself. A failure part-way leaves the marked item,
    which still names the key secrets, so deleting again finishes the job; a new setup
    replaces it.
    """
    settings = settings or load_settings()
    store, vault = store_for(settings), vault_for(settings)
    record = store.get_integration_record(team)
    version = int((record or {}).get("version") or 0)
    if record is not None and record.get("status") != DELETING:
        try:
            store.mark_integration_deleting(team, version)
        except ConditionFailed:
            raise _lost_race(team, ConditionFailed("integration")) from None
    vault.delete_team(team, [record["key_secret"]] if record and record.get("key_secret") else [])
    removed = store.delete_team_connections(team)
    if record is not None:
        store.delete_deleting_integration(team, version)
    logger.info("integration deleted", extra={"team": team, "connections_removed": removed})


def create_key_pair(team: str, body: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Generate a key pair; keep the private half as the team's pending key; show the public half."""
    settings = settings or load_settings()
    bits = body.get("bits", 2048)
    if type(bits) is not int or bits not in ALLOWED_GENERATED_BITS:  # not 2048.0, not True
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
