"""The local stand-in for AWS: an embedded moto server and the broker's table on it.

The table comes from ``infra/resources.json``, the template deployment uses,
so local runs and tests use the very table CloudFormation creates.

moto's server handles requests on many threads, and its conditional writes are
not atomic under concurrency (two winners of an ``attribute_not_exists`` PutItem
were seen in about 1 of 30 rounds of 20 writers). DynamoDB's are, so the embedded
server here handles one request at a time.

Example::

    server, endpoint = start_moto()
    create_table(boto3.client("dynamodb", endpoint_url=endpoint), "jira-oauth-broker-local")
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "resources.json"
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


def use_fake_credentials() -> None:
    """moto accepts any credentials; fake ones make sure no real account is ever touched."""
    os.environ.update(FAKE_CREDENTIALS)


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
