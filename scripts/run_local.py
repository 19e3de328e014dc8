"""``make run``: the broker on this machine, on an embedded moto, served by ``chalice local``.

Starts moto (DynamoDB and Secrets Manager), creates the table from infra/,
registers the service API key (``BROKER_API_KEY``, or a new one printed
once), then runs ``chalice local`` as a child process. Its output passes
through the broker's redaction, because chalice local's access log prints
full paths: connect-link tokens and ``oauth_token``/``oauth_verifier``.
Ctrl-C stops everything it started.

With ``AWS_ENDPOINT_URL`` set (a moto server, LocalStack, or a fault-injecting
proxy in front of one), no moto is started: the table (created if missing), the
API key and the app all use that endpoint. Credentials are always fake ones, so
the local stage never acts on a real AWS account.

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

from chalicelib.apikeys import new_api_key, save_api_key
from chalicelib.logs import redact
from chalicelib.store import Store
from scripts.local_aws import create_table, start_moto, use_fake_credentials

ROOT = Path(__file__).resolve().parent.parent
TABLE = "jira-oauth-broker-local"
ENDPOINT_FILE = ROOT / ".local" / "moto-endpoint"


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


def _record_endpoint(endpoint: str) -> str:
    """Tell ``python -m scripts.apikeys --stage local`` where AWS is; returns what was written.

    The pid makes the content this runner's own, even when two runners share one endpoint.
    """
    content = f"{endpoint}\n# written by scripts.run_local, pid {os.getpid()}\n"
    ENDPOINT_FILE.parent.mkdir(exist_ok=True)
    ENDPOINT_FILE.write_text(content)
    return content


def _forget_endpoint(written: str) -> None:
    """Remove the endpoint file only if it is still ours: a runner started later may have replaced it."""
    try:
        if ENDPOINT_FILE.read_text() == written:
            ENDPOINT_FILE.unlink()
    except FileNotFoundError:
        pass


def _aws_endpoint() -> tuple[Any, str, str]:
    """(the embedded moto server or None, the endpoint, what serves it: "moto" or "AWS")."""
    external = os.environ.get("AWS_ENDPOINT_URL", "").strip()
    if external:
        print(f"jira-oauth-broker: AWS_ENDPOINT_URL is set: using {external}, no embedded moto", flush=True)
        return None, external, "AWS"
    server, endpoint = start_moto()
    return server, endpoint, "moto"


def _register_api_key(endpoint: str) -> None:
    key = os.environ.get("BROKER_API_KEY", "").strip()
    generated = not key
    key = key or new_api_key()
    store = Store(TABLE, client=boto3.client("dynamodb", endpoint_url=endpoint))
    save_api_key(store, key, name="local")
    if generated:
        print(f"Service API key (shown once; set BROKER_API_KEY to choose your own):\n  {key}", flush=True)
    else:
        print("Service API key: taken from BROKER_API_KEY", flush=True)


def main() -> int:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    # Stop on Ctrl-C and on SIGTERM, even when started with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    use_fake_credentials()
    server, endpoint, served_by = _aws_endpoint()
    os.environ["AWS_ENDPOINT_URL"] = endpoint  # chalice local inherits it
    written = _record_endpoint(endpoint)
    try:
        create_table(boto3.client("dynamodb", endpoint_url=endpoint), TABLE, exist_ok=server is None)
        _register_api_key(endpoint)
        env = {k: v for k, v in os.environ.items() if k != "BROKER_API_KEY"}  # the app never needs it
        env.setdefault("BROKER_PUBLIC_URL", f"http://{host}:{port}")
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
        _forget_endpoint(written)
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
