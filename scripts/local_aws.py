"""The local stand-in for AWS: an embedded moto server, the broker's table, KMS key and API key on it,
and the per-port state file through which ``make run`` tells other commands where it is.

The table comes from ``infra/resources.json``, the template deployment uses,
so local runs and tests use the very table CloudFormation creates. The KMS key
(``alias/jira-oauth-broker-<stage>``, the template's BrokerKeyAlias) seals the stored
connection tokens (chalicelib/sealing.py); it is made by the same KMS calls as anywhere else.

Each ``make run`` owns ``.local/<port>.endpoint`` (its AWS endpoint and pid) while it runs;
``python -m scripts.apikeys --stage local`` and a plain ``chalice local --stage local``
read it (:func:`running_endpoints`).

moto's server handles requests on many threads, and its conditional writes are
not atomic under concurrency (two winners of an ``attribute_not_exists`` PutItem
were seen in about 1 of 30 rounds of 20 writers). DynamoDB's are, so the embedded
server here handles one request at a time.

Example::

    server, endpoint = start_moto()
    create_table(boto3.client("dynamodb", endpoint_url=endpoint), "jira-oauth-broker-local")
    create_kms_key(boto3.client("kms", endpoint_url=endpoint))          # alias/jira-oauth-broker-local
    show_api_key(register_api_key(endpoint, "jira-oauth-broker-local"))   # prints it once
    running_endpoints()                                  # {8000: "http://127.0.0.1:41234"}
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from chalicelib.apikeys import new_api_key, save_api_key
from chalicelib.store import Store

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "infra" / "resources.json"
STATE_DIR = ROOT / ".local"
LOCAL_TABLE = "jira-oauth-broker-local"
TABLE_RESOURCE = "BrokerTable"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def table_properties(template: Path = TEMPLATE) -> dict[str, Any]:
    return dict(json.loads(template.read_text())["Resources"][TABLE_RESOURCE]["Properties"])


def create_table(client: Any, table_name: str, template: Path = TEMPLATE, *, exist_ok: bool = False) -> None:
    """Create ``table_name`` with the template's keys, billing mode and TTL; wait until it is active.

    ``exist_ok``: a table of that name already there (an external moto or LocalStack) is used as it is.
    """
    props = table_properties(template)
    try:
        client.create_table(
            TableName=table_name,
            AttributeDefinitions=props["AttributeDefinitions"],
            KeySchema=props["KeySchema"],
            BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"),
        )
    except ClientError as error:
        if not exist_ok or error.response.get("Error", {}).get("Code") != "ResourceInUseException":
            raise
        client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        return
    client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
        )


def kms_alias(stage: str = "local") -> str:
    """The stage key's alias, as infra/resources.json names it (the app's default ``tokens_kms_key``)."""
    return f"alias/jira-oauth-broker-{stage}"


def create_kms_key(client: Any, stage: str = "local", *, exist_ok: bool = False) -> str:
    """Create a symmetric KMS key with the stage's alias (CreateKey, CreateAlias); return its key id.

    ``exist_ok``: an alias already there (an external moto or LocalStack) is used as it is.
    """
    alias = kms_alias(stage)
    if exist_ok:
        try:
            return str(client.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"])
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "NotFoundException":
                raise
    key_id = str(client.create_key(Description=f"jira-oauth-broker {stage} (local stand-in)")["KeyMetadata"]["KeyId"])
    try:
        client.create_alias(AliasName=alias, TargetKeyId=key_id)
    except ClientError as error:
        if not exist_ok or error.response.get("Error", {}).get("Code") != "AlreadyExistsException":
            raise
        client.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)  # another process made it first
        return str(client.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"])
    return key_id


def use_fake_credentials() -> None:
    """moto accepts any credentials; fake ones make sure no real account is ever touched."""
    os.environ.update(FAKE_CREDENTIALS)
    # A named profile could hold a role to assume, and an unknown one stops boto3 altogether.
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        os.environ.pop(name, None)


def register_api_key(endpoint: str, table: str = LOCAL_TABLE, name: str = "local") -> str | None:
    """Store the service API key (``BROKER_API_KEY``, or a new one) on ``endpoint``, named ``name``.

    Returns the new key, to be shown once, or None when it came from ``BROKER_API_KEY``.
    """
    chosen = os.environ.get("BROKER_API_KEY", "").strip()
    key = chosen or new_api_key()
    save_api_key(Store(table, client=boto3.client("dynamodb", endpoint_url=endpoint)), key, name=name)
    return None if chosen else key


def show_api_key(generated: str | None) -> None:
    """Print the key to the terminal, once. print(), not a logger: a log line is kept, the terminal isn't."""
    if generated:
        print(f"Service API key (shown once; set BROKER_API_KEY to choose your own):\n  {generated}", flush=True)
    else:
        print("Service API key: taken from BROKER_API_KEY", flush=True)


# -- is a port free; which make run owns which port ----------------------------------------------------
def port_in_use(host: str, port: int) -> bool:
    """Whether a server could not listen on (host, port) now (chalice local reuses addresses, so do we)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def next_free_port(host: str, port: int) -> int:
    """The first free port after ``port`` (to suggest one), or ``port + 1`` if none of the next 20 is."""
    return next((p for p in range(port + 1, port + 21) if not port_in_use(host, p)), port + 1)


def endpoint_file(port: int) -> Path:
    return STATE_DIR / f"{port}.endpoint"


def claim_endpoint_file(path: Path, endpoint: str) -> str | None:
    """Write ``endpoint`` and this process's pid to ``path`` unless a live process owns it; returns what
    was written (for :func:`release_endpoint_file`), or None when another running ``make run`` owns it."""
    content = f"{endpoint}\n# written by scripts.run_local, pid {os.getpid()}\n"
    path.parent.mkdir(exist_ok=True)
    for _ in range(2):
        try:
            # O_EXCL: of two runners started at once, exactly one owns the port's file.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _owner_pid(path)
            if owner is not None and _alive(owner):
                return None
            path.unlink(missing_ok=True)  # left behind by a runner that was killed
            continue
        with os.fdopen(fd, "w") as file:
            file.write(content)
        return content
    return None


def release_endpoint_file(path: Path, written: str) -> None:
    """Remove ``path`` only if it still holds what we wrote."""
    try:
        if path.read_text() == written:
            path.unlink()
    except FileNotFoundError:
        pass


def running_endpoints(state_dir: Path | None = None) -> dict[int, str]:
    """{port: AWS endpoint} of every ``make run`` whose process is alive."""
    found: dict[int, str] = {}
    for path in sorted((state_dir or STATE_DIR).glob("*.endpoint")):
        if not path.stem.isdigit():
            continue
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            continue
        owner = _owner_pid(path)
        if lines and lines[0].strip() and owner is not None and _alive(owner):
            found[int(path.stem)] = lines[0].strip()
    return found


def _owner_pid(path: Path) -> int | None:
    try:
        match = re.search(r"pid (\d+)", path.read_text())
    except FileNotFoundError:
        return None
    return int(match.group(1)) if match else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _OneAtATime:
    """A WSGI app that lets one request at a time into ``app``, body included."""

    def __init__(self, app: WSGIApp) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with self._lock:
            result = self._app(environ, start_response)
            try:
                # Drain inside the lock: a WSGI app may do its work while its body is iterated.
                return [b"".join(result)]
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()


def _serial_moto_server(host: str) -> Any:
    """moto's ThreadedMotoServer, its app wrapped in :class:`_OneAtATime`."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class SerialMotoServer(ThreadedMotoServer):
        # Mirrors ThreadedMotoServer._server_entry (moto 5), with the app wrapped.
        def _server_entry(self) -> None:
            app = _OneAtATime(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    return SerialMotoServer(ip_address=host, port=0, verbose=False)


def start_moto(host: str = "127.0.0.1") -> tuple[Any, str]:
    """Start moto's server on a free loopback port, quietly, handling one request at a time.

    Returns (server, endpoint URL); ``server.stop()`` stops it.
    """
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = _serial_moto_server(host)
    server.start()
    bound_host, port = server.get_host_and_port()
    return server, f"http://{bound_host}:{port}"
