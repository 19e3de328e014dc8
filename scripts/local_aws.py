"""The local stand-in for AWS: an embedded moto server and the broker's table on it.

The table comes from ``infra/resources.json``, the template deployment uses,
so local runs and tests use the very table CloudFormation creates.

Example::

    server, endpoint = start_moto()
    create_table(boto3.client("dynamodb", endpoint_url=endpoint), "jira-oauth-broker-local")
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

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


def create_table(client: Any, table_name: str, template: Path = TEMPLATE) -> None:
    """Create ``table_name`` with the template's keys, billing mode and TTL; wait until it is active."""
    props = table_properties(template)
    client.create_table(
        TableName=table_name,
        AttributeDefinitions=props["AttributeDefinitions"],
        KeySchema=props["KeySchema"],
        BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"),
    )
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


def start_moto(host: str = "127.0.0.1") -> tuple[Any, str]:
    """Start moto's server on a free loopback port, quietly. Returns (server, endpoint URL)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
    server.start()
    bound_host, port = server.get_host_and_port()
    return server, f"http://{bound_host}:{port}"
