"""``make test-artifact``: the deployment package, unpacked and run as Lambda runs it.

Starts moto and the fake Jira on loopback (in this, the dev, interpreter), stores the broker's
table, the stage's KMS key (``alias/jira-oauth-broker-<stage>``: it seals the stored tokens) and
three API keys (valid, team-scoped, revoked), unpacks ``deployment.zip`` into a temp dir and
runs ``scripts/artifact_driver.py`` in the clean runtime interpreter (``.venv-lambda``: python3.11
with only the runtime's boto3) with the stage's environment variables, fake credentials and
``AWS_ENDPOINT_URL``. The driver calls both handlers with API Gateway's events, and plays API
Gateway from the packaged template next to the zip (``sam.json``): its resources (routing), binary
media types (base64 both ways) and Gateway Responses.

Example::

    python -m scripts.artifact --zip out/dev/template/deployment.zip --stage dev \
        --runtime-python .venv-lambda/bin/python
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chalicelib.apikeys import save_api_key
from chalicelib.store import Store, token_hash
from scripts.local_aws import FAKE_CREDENTIALS, ROOT, create_kms_key, create_table, start_moto, use_fake_credentials
from tests.fakejira import FAKE_PNG, FakeJira

DRIVER = ROOT / "scripts" / "artifact_driver.py"
CONSUMER_KEY = "jira-oauth-broker"
API_KEY = "jb_artifact-key-000000000000000000000000000000"
SCOPED_KEY = "jb_artifact-acme-00000000000000000000000000000"
REVOKED_KEY = "jb_artifact-revoked-0000000000000000000000000000"


def stage_environment(stage: str, table: str, secret_prefix: str) -> dict[str, str]:
    """The stage's environment variables from .chalice/config.json, made to reach loopback services."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    env = {**config.get("environment_variables", {}), **config["stages"][stage].get("environment_variables", {})}
    env.update(
        BROKER_TABLE=table,
        BROKER_SECRET_PREFIX=secret_prefix,
        BROKER_ALLOW_HTTP_JIRA="true",  # the fake Jira is http on loopback
        BROKER_ALLOW_PRIVATE_NETWORKS="true",
    )
    env.pop("BROKER_PUBLIC_URL", None)  # learnt from API Gateway's requestContext, as deployed
    return env


def lambda_environment(stage: str, function: str, endpoint: str, table: str, prefix: str) -> dict[str, str]:
    """What a Lambda process sees: the runtime's variables, the stage's, fake credentials; nothing of ours."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "LAMBDA_TASK_ROOT": "/var/task",
        "PYTHONDONTWRITEBYTECODE": "1",  # the code directory is read-only: nothing compiled is kept
        **FAKE_CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint,
        **stage_environment(stage, table, prefix),
    }


@contextmanager
def unpacked(zip_path: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="task-") as work:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(work)
        yield Path(work)


@contextmanager
def local_services(table: str, stage: str = "dev") -> Iterator[dict[str, Any]]:
    """moto with the table, the stage's KMS key and the API keys; the fake Jira whose Application Link has a new key."""
    use_fake_credentials()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    moto, endpoint = start_moto()
    try:
        dynamodb = boto3.client("dynamodb", endpoint_url=endpoint)
        create_table(dynamodb, table)
        create_kms_key(boto3.client("kms", endpoint_url=endpoint), stage)  # the packaged app's tokens_kms_key
        store = Store(table, client=dynamodb)
        save_api_key(store, API_KEY, name="artifact")
        save_api_key(store, SCOPED_KEY, name="artifact-acme", team="acme")
        revoked = save_api_key(store, REVOKED_KEY, name="artifact-revoked")
        store.put_api_key(token_hash(REVOKED_KEY), {**revoked, "revoked": True})
        with FakeJira(context_path="/jira") as jira:
            jira.add_consumer(CONSUMER_KEY, public_pem)
            jira.add_user("alice", display_name="Alice Example", email="alice@example.com")
            jira.add_user("carol", display_name="Carol Example")
            yield {
                "endpoint": endpoint,
                "jira": jira,
                "jira_base_url": jira.base_url,
                "consumer_key": CONSUMER_KEY,
                "private_pem": private_pem,
                "api_key": API_KEY,
                "scoped_key": SCOPED_KEY,
                "revoked_key": REVOKED_KEY,
            }
    finally:
        moto.stop()


def api_gateway_config(template: Path) -> dict[str, Any]:
    """What API Gateway knows from the packaged template: resources and their methods, binary media types,
    Gateway Responses (as written in the SAM API)."""
    api = json.loads(template.read_text())["Resources"]["RestAPI"]["Properties"]
    definition = api["DefinitionBody"]
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    return {
        "resources": {
            path: sorted(m.upper() for m in spec if m in methods) for path, spec in definition["paths"].items()
        },
        "binary_media_types": definition.get("x-amazon-apigateway-binary-media-types", []),
        "gateway_responses": api["GatewayResponses"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zip", type=Path, required=True)
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--runtime-python", required=True, help="the clean python3.11 (.venv-lambda/bin/python)")
    args = parser.parse_args(argv)
    args.runtime_python = os.path.abspath(args.runtime_python)  # not resolve(): the venv's python is a symlink
    table, prefix = f"jira-oauth-broker-{args.stage}-artifact", f"jira-oauth-broker/{args.stage}-artifact"
    version = subprocess.run(
        [args.runtime_python, "-c", "import sys, boto3; print(sys.version.split()[0], boto3.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    size = args.zip.stat().st_size
    print(f"test-artifact: {args.zip} ({size / 1e6:.1f} MB), runtime python/boto3 {version}", flush=True)
    with (
        local_services(table, args.stage) as services,
        unpacked(args.zip) as task_root,
        tempfile.TemporaryDirectory() as work,
    ):
        config = {k: v for k, v in services.items() if k not in {"jira", "endpoint"}}
        config.update(api_gateway_config(args.zip.parent / "sam.json"))
        config["fake_png"] = base64.b64encode(FAKE_PNG).decode()
        config_file = Path(work) / "config.json"
        config_file.write_text(json.dumps(config))
        env = lambda_environment(args.stage, f"jira-oauth-broker-{args.stage}", services["endpoint"], table, prefix)
        # -B: nothing written next to the code (read-only in Lambda); -s: no user site-packages.
        command = [args.runtime_python, "-B", "-s", str(DRIVER), str(task_root), str(config_file)]
        return subprocess.run(command, env=env, cwd=work, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
