"""Plain ``chalice local``: what it needs before the app serves, done when app.py is imported.

``chalice local --stage local`` gets a whole broker with no other command and no AWS account:
fake credentials, an AWS stand-in (``AWS_ENDPOINT_URL`` if set; else the moto of a running
``make run``; else an embedded moto in this process), the table, the KMS key that seals the
stored tokens, a service API key printed once, and the public URL of the port it serves.
``chalice local`` in another stage (``dev``, its default) says which AWS account's table it
uses, or refuses at start when botocore finds no credentials. Every stage gets
scripts/chalice_local.py's API Gateway manners (the error envelope, 401 for a header that is
no Bearer key, TCP_NODELAY, a redacted access log).

Nothing happens anywhere else: not in a Lambda, not under pytest or Chalice's test client, not
under ``chalice package`` or ``make run`` (its runner did all of it already). The local-only
work lives in scripts/ (never packaged) and moto is imported only there, only on that path.

Example (app.py)::

    prepare_chalice_local()   # a no-op unless this process is `chalice local`
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import boto3

from .config import load_settings

# Set by scripts/run_local.py for its chalice local: AWS, the table and the key are ready.
RUNNER_MARK = "BROKER_LOCAL_RUNNER"
_standin: list[Any] = []  # the embedded moto server, kept referenced while the process runs


def chalice_local_args(argv: list[str]) -> dict[str, Any] | None:
    """``{"host", "port"}`` when ``argv`` is chalice's CLI running ``local``; else None."""
    if not argv or Path(argv[0]).name != "chalice" or os.environ.get("AWS_CHALICE_CLI_MODE") != "true":
        return None
    args, command = {"host": "127.0.0.1", "port": 8000}, None
    words = iter(argv[1:])
    for word in words:
        name, has_value, value = word.partition("=")
        if name in {"--host", "--port", "--stage", "--project-dir"}:
            value = value if has_value else next(words, "")
            if name in {"--host", "--port"} and command == "local":
                args[name[2:]] = int(value) if name == "--port" and value.isdigit() else value
        elif not word.startswith("-") and command is None:
            command = word
    return args if command == "local" else None


def prepare_chalice_local(argv: list[str] | None = None) -> None:
    """Get ``chalice local`` ready to serve (see the module's docstring); a no-op anywhere else."""
    if "pytest" in sys.modules or os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or os.environ.get(RUNNER_MARK):
        return
    args = chalice_local_args(sys.argv if argv is None else argv)
    if args is None:
        return
    settings = load_settings()  # chalice local copied the stage's environment_variables in already
    if settings.is_local:
        _serve_locally(args["host"], args["port"], settings.table_name, settings.stage)
    else:
        _check_aws_credentials(settings.stage, settings.table_name)
    from scripts.chalice_local import emulate_api_gateway  # a checkout's scripts/: chalice local runs in it

    emulate_api_gateway()  # in every stage: the envelope, the 401, TCP_NODELAY, a redacted access log


def _serve_locally(host: str, port: int, table: str, stage: str) -> None:
    from scripts import local_aws  # a checkout's scripts/ (never packaged); moto is imported only there

    if local_aws.port_in_use(host, port):
        _stop(f"port {port} on {host} is in use; choose another with --port {local_aws.next_free_port(host, port)}")
    local_aws.use_fake_credentials()  # whatever the shell holds: the local stage never reaches a real account
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "").strip()
    if endpoint:
        what = "AWS_ENDPOINT_URL"
    elif running := local_aws.running_endpoints():
        runner_port = port if port in running else max(running)
        endpoint, what = running[runner_port], f"the moto of make run on port {runner_port}"
    else:
        server, endpoint = local_aws.start_moto()
        _standin.append(server)
        what = "an embedded moto (its data is gone when chalice local stops or reloads)"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    # A URL for people to open, not an address to bind: a server listening on all interfaces is reached at 127.0.0.1.
    public_host = "127.0.0.1" if host in {"0.0.0.0", ""} else host  # noqa: S104  # nosec B104
    url = os.environ.setdefault("BROKER_PUBLIC_URL", f"http://{public_host}:{port}")
    print(f"jira-oauth-broker: local stage on {what} at {endpoint}, fake credentials; serving {url}", flush=True)
    local_aws.create_table(boto3.client("dynamodb", endpoint_url=endpoint), table, exist_ok=True)
    local_aws.create_kms_key(boto3.client("kms", endpoint_url=endpoint), stage, exist_ok=True)
    # Named apart from make run's "local" key: both may live on one moto (scripts.apikeys list tells them apart).
    local_aws.show_api_key(local_aws.register_api_key(endpoint, table, name=f"chalice-local-{port}"))


def _check_aws_credentials(stage: str, table: str) -> None:
    import botocore.session
    from botocore.credentials import create_credential_resolver
    from botocore.exceptions import BotoCoreError

    instead = "for a local broker without AWS run `chalice local --stage local` (or `make run`)"
    try:
        resolver = create_credential_resolver(botocore.session.get_session())
        # No network at start: the instance and container metadata endpoints are not asked.
        for provider in ("iam-role", "container-role"):
            resolver.remove(provider)
        credentials = resolver.load_credentials()
    except BotoCoreError as error:
        _stop(f"stage {stage}: AWS credentials could not be read ({error}); {instead}")
    if credentials is None:
        _stop(f"stage {stage} needs AWS credentials and none were found; {instead}")
    # The region the app's clients use (chalicelib/aws.py), not the profile's.
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    via = f" at {os.environ['AWS_ENDPOINT_URL']}" if os.environ.get("AWS_ENDPOINT_URL") else ""
    print(
        f"jira-oauth-broker: stage {stage} uses the AWS account of your credentials ({credentials.method}){via}: "
        f"table {table}, region {region}",
        flush=True,
    )


def _stop(message: str) -> NoReturn:
    """Say why on one line and end chalice local with a non-zero status, without a traceback.

    The app is imported on a server thread, so an exception would only end that thread. With
    autoreload (chalice's default) this is the worker: its parent would restart nothing and exit 0,
    so the parent, checked to be the same ``chalice local`` command line, is ended as well.
    """
    print(f"jira-oauth-broker: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    if os.environ.get("CHALICE_WORKER"):
        parent = os.getppid()
        try:
            same = Path(f"/proc/{parent}/cmdline").read_bytes() == Path("/proc/self/cmdline").read_bytes()
        except OSError:
            same = False
        if same:
            os.kill(parent, signal.SIGTERM)
    os._exit(2)
