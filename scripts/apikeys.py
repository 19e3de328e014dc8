"""Manage the broker's service API keys: ``python -m scripts.apikeys create|list|revoke``.

A new key is shown once; only its SHA-256 hash is stored. A revocation takes
effect within the authorizer's cache TTL (60 s: API Gateway's authorizer
cache and the warm container's own).

Examples::

    python -m scripts.apikeys create --name chat-bot --team acme --stage prod
    python -m scripts.apikeys list --stage prod
    python -m scripts.apikeys revoke --id 3f9a1c2b --stage prod

``--stage local`` talks to the AWS endpoint a running ``make run`` uses (its embedded moto, or
the ``AWS_ENDPOINT_URL`` it was started with), found in ``.local/<port>.endpoint``: the one of
``--port PORT``; without it, the only ``make run`` running (or, of several, the one on 8000).
Or set ``AWS_ENDPOINT_URL`` to the address it printed. The local stage always uses fake
credentials, so it never acts on a real AWS account. Deployed stages use the ordinary AWS
credentials and region of your shell.

    python -m scripts.apikeys list --stage local --port 8001
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import boto3

from chalicelib import clock
from chalicelib.apikeys import new_api_key, save_api_key
from chalicelib.errors import InvalidRequest
from chalicelib.store import Store
from chalicelib.urls import validate_id
from scripts.local_aws import running_endpoints, use_fake_credentials

STAGES = ("local", "dev", "prod")
ID_LENGTH = 8  # shown ids are the first characters of the key's hash


def table_for(stage: str) -> str:
    return f"jira-oauth-broker-{stage}"


def store_for(stage: str) -> Store:
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "").strip()
    if stage == "local" and not endpoint:
        endpoint = _running_local_endpoint(None)
    if stage == "local":
        use_fake_credentials()  # whatever the shell holds: the local stage must never reach a real account
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    client = boto3.client("dynamodb", endpoint_url=endpoint or None, region_name=region)
    return Store(table_for(stage), client=client)


DEFAULT_PORT = 8000


def _running_local_endpoint(port: int | None) -> str:
    """The AWS endpoint of the ``make run`` on ``port``; without a port, the only one running, or 8000's."""
    running = running_endpoints()
    if port is not None:
        if port not in running:
            raise SystemExit(f"No make run is running on port {port}: start it with `PORT={port} make run`.")
        return running[port]
    if len(running) == 1:
        return next(iter(running.values()))
    if DEFAULT_PORT in running:
        return running[DEFAULT_PORT]
    if not running:
        raise SystemExit("No local broker found: start it with `make run`, or set AWS_ENDPOINT_URL.")
    ports = ", ".join(str(p) for p in sorted(running))
    raise SystemExit(f"make run is running on ports {ports}: choose one with --port.")


def all_keys(store: Store) -> list[dict[str, Any]]:
    """Every API key record (an operator's listing: a Scan is fine here, never on a request path)."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": store.table_name,
        "FilterExpression": "sk = :sk",
        "ExpressionAttributeValues": {":sk": {"S": "APIKEY"}},
    }
    while True:
        page = store.client.scan(**kwargs)
        for raw in page.get("Items", []):
            key_hash = raw["pk"]["S"].removeprefix("APIKEY#")
            record = store.get_api_key(key_hash) or {}
            items.append({**record, "id": key_hash[:ID_LENGTH], "hash": key_hash})
        if "LastEvaluatedKey" not in page:
            return sorted(items, key=lambda item: item.get("created_at", 0))
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def create(store: Store, name: str, team: str | None) -> str:
    if team is not None:
        try:
            team = validate_id("team", team)
        except InvalidRequest as error:
            raise SystemExit(error.message) from None
    key = new_api_key()
    save_api_key(store, key, name=name, team=team)
    return key


def revoke(store: Store, key_id: str | None, name: str | None) -> list[dict[str, Any]]:
    """Mark the matching keys revoked; returns them. An id must match exactly one key."""
    matches = [
        k for k in all_keys(store) if (key_id and k["hash"].startswith(key_id)) or (name and k.get("name") == name)
    ]
    if key_id and len(matches) > 1:
        raise SystemExit(f"The id {key_id} matches {len(matches)} keys; give more characters of it.")
    for match in matches:
        record = {k: v for k, v in match.items() if k not in {"id", "hash", "pk", "sk"}}
        store.put_api_key(match["hash"], {**record, "revoked": True, "revoked_at": clock.now()})
    return matches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.apikeys", description="Manage the broker's API keys.")
    commands = parser.add_subparsers(dest="command", required=True)
    create_cmd = commands.add_parser("create", help="make a key and show it once")
    create_cmd.add_argument("--name", required=True, help="who uses it, e.g. chat-bot")
    create_cmd.add_argument("--team", help="limit the key to one team")
    commands.add_parser("list", help="list keys (never the keys themselves)")
    revoke_cmd = commands.add_parser("revoke", help="revoke keys by id or name")
    target = revoke_cmd.add_mutually_exclusive_group(required=True)
    target.add_argument("--id", help="the id shown by list")
    target.add_argument("--name", help="revoke every key with this name")
    for command in commands.choices.values():
        command.add_argument("--stage", required=True, choices=STAGES)
        command.add_argument("--port", type=int, help="--stage local: the port of the make run to use")
    args = parser.parse_args(argv)
    if args.stage == "local" and args.port is not None:
        # An explicit port names the make run to use, over any AWS_ENDPOINT_URL of the shell.
        os.environ["AWS_ENDPOINT_URL"] = _running_local_endpoint(args.port)
    store = store_for(args.stage)

    if args.command == "create":
        key = create(store, args.name, args.team)
        scope = f"team {args.team}" if args.team else "every team"
        print(f"Created API key '{args.name}' for {scope} (stage {args.stage}). It is shown only now:\n{key}")
    elif args.command == "list":
        print(f"{'id':<10}{'name':<24}{'team':<20}{'created':<22}status")
        for item in all_keys(store):
            status = "revoked" if item.get("revoked") else "active"
            created = clock.iso(item.get("created_at")) or ""
            print(f"{item['id']:<10}{item.get('name', ''):<24}{item.get('team') or '*':<20}{created:<22}{status}")
    else:
        revoked = revoke(store, args.id, args.name)
        if not revoked:
            print("No key matched.", file=sys.stderr)
            return 1
        for item in revoked:
            print(f"Revoked {item['id']} ({item.get('name', '')}); it stops working within 60 seconds.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
