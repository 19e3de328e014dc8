"""``make run``: the broker on this machine, on an embedded moto, served by ``chalice local``.

Starts moto (DynamoDB, Secrets Manager and KMS), creates the table from infra/
and the KMS key that seals stored tokens (``alias/jira-oauth-broker-local``),
registers the service API key (``BROKER_API_KEY``, or a new one printed
once), then runs ``chalice local`` as a child process. Its output passes
through the broker's redaction, because chalice local's access log prints
full paths: connect-link tokens and ``oauth_token``/``oauth_verifier``.
Ctrl-C stops everything it started.

With ``AWS_ENDPOINT_URL`` set (a moto server, LocalStack, or a fault-injecting
proxy in front of one), no moto is started: the table and the KMS key (each
created if missing), the API key and the app all use that endpoint. Credentials
are always fake ones, so the local stage never acts on a real AWS account.

A port already in use (another ``make run``?) is refused at once, starting nothing. While it
runs, the runner owns ``.local/<PORT>.endpoint`` (its AWS endpoint and pid), where
``python -m scripts.apikeys --stage local [--port PORT]`` and a plain ``chalice local --stage local``
find its moto; it is removed when the runner stops.

Environment: ``PORT`` (8000), ``HOST`` (127.0.0.1), ``BROKER_API_KEY``, ``AWS_ENDPOINT_URL``,
``BROKER_PUBLIC_URL`` (default ``http://HOST:PORT``), and any other ``BROKER_*`` setting.

Example::

    AWS_ENDPOINT_URL=http://127.0.0.1:4566 python -m scripts.run_local
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import boto3

from chalicelib.local_boot import RUNNER_MARK
from chalicelib.logs import redact
from scripts.local_aws import (
    LOCAL_TABLE,
    claim_endpoint_file,
    create_kms_key,
    create_table,
    endpoint_file,
    next_free_port,
    port_in_use,
    register_api_key,
    release_endpoint_file,
    running_endpoints,
    show_api_key,
    start_moto,
    use_fake_credentials,
)

ROOT = Path(__file__).resolve().parent.parent
TABLE = LOCAL_TABLE


def _pump(stream: IO[str], out: IO[str]) -> None:
    for line in stream:
        out.write(redact(line))
        out.flush()


def start_chalice_local(host: str, port: int, env: dict[str, str], out: IO[str]) -> subprocess.Popen[str]:
    """Run ``chalice local`` (stage local) as a child; its output goes to ``out``, redacted."""
    # chalice's own CLI, with TCP_NODELAY set (see scripts/chalice_local.py).
    chalice = [sys.executable, "-m", "scripts.chalice_local"]
    command = [*chalice, "local", "--host", host, "--port", str(port), "--stage", "local", "--no-autoreload"]
    child = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    assert child.stdout is not None
    threading.Thread(target=_pump, args=(child.stdout, out), daemon=True).start()
    return child


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _port_taken(host: str, port: int) -> bool:
    """Say so on one line if ``port`` is in use or owned by another running ``make run``."""
    if not port_in_use(host, port) and port not in running_endpoints():
        return False
    print(
        f"port {port} on {host} is in use (another make run?); choose another with "
        f"PORT={next_free_port(host, port)} make run",
        file=sys.stderr,
        flush=True,
    )
    return True


def _aws_endpoint() -> tuple[Any, str, str]:
    """(the embedded moto server or None, the endpoint, what serves it: "moto" or "AWS")."""
    external = os.environ.get("AWS_ENDPOINT_URL", "").strip()
    if external:
        print(f"jira-oauth-broker: AWS_ENDPOINT_URL is set: using {external}, no embedded moto", flush=True)
        return None, external, "AWS"
    server, endpoint = start_moto()
    return server, endpoint, "moto"


def main() -> int:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    if _port_taken(host, port):  # before anything starts: the other instance's state stays as it is
        return 1
    # Stop on Ctrl-C and on SIGTERM, even when started with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    use_fake_credentials()
    server, endpoint, served_by = _aws_endpoint()
    state = endpoint_file(port)
    written = claim_endpoint_file(state, endpoint)
    if written is None:  # another runner claimed the port in the meantime
        if server is not None:
            server.stop()
        _port_taken(host, port)
        return 1
    os.environ["AWS_ENDPOINT_URL"] = endpoint  # chalice local inherits it
    try:
        create_table(boto3.client("dynamodb", endpoint_url=endpoint), TABLE, exist_ok=server is None)
        create_kms_key(boto3.client("kms", endpoint_url=endpoint), "local", exist_ok=server is None)
        show_api_key(register_api_key(endpoint, TABLE))
        env = {k: v for k, v in os.environ.items() if k != "BROKER_API_KEY"}  # the app never needs it
        env.setdefault("BROKER_PUBLIC_URL", f"http://{host}:{port}")
        env[RUNNER_MARK] = "1"  # the app's own chalice-local set-up (chalicelib/local_boot.py) is done here
        child = start_chalice_local(host, port, env, sys.stdout)
        print(f"jira-oauth-broker: {served_by} at {endpoint}; serving http://{host}:{port} (Ctrl-C stops)", flush=True)
        try:
            return child.wait()
        except KeyboardInterrupt:
            child.terminate()
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
            return 0
    finally:
        release_endpoint_file(state, written)
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
