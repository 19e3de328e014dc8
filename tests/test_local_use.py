"""Local use as people type it: plain ``chalice local`` (stage local and the default stage), ``make run``'s
runner on another AWS endpoint and on a busy port, an ``Authorization`` header without ``Bearer ``, and
the packaged runtime never importing moto. Real chalice CLI, real moto servers, real HTTP on loopback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from scripts.local_aws import FAKE_CREDENTIALS, endpoint_file, kms_alias, start_moto
from tests.conftest import CONSUMER_KEY, Broker, public_pem
from tests.fakejira import FakeJira
from tests.localstack import ROOT, apikeys_cli, free_port, local_stack

CHALICE = str(Path(sys.executable).with_name("chalice"))  # the venv's chalice CLI, as a person runs it
API_KEY = "jb_local-use-key-00000000000000000000000000"
BUSY = re.compile(
    r"^port (\d+) on 127\.0\.0\.1 is in use \(another make run\?\); choose another with PORT=\d+ make run$"
)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BROKER_", "CHALICE_"))}
    return {**env, **extra}


@contextmanager
def _chalice_local(log: Path, *args: str, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    with log.open("w") as out:
        process = subprocess.Popen(
            [CHALICE, "local", *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_for_health(url: str, process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError(log.read_text())


def _printed_key(log: Path) -> str:
    keys = re.findall(r"shown once[^\n]*\n\s+(jb_\S+)", log.read_text())
    assert keys, log.read_text()
    return keys[-1]  # autoreload may have started a new worker (a new moto, a new key)


def _interrupt(process: subprocess.Popen[str], url: str) -> int:
    """Ctrl-C, as in a terminal (the whole process group); the server must end and free its port."""
    os.killpg(process.pid, signal.SIGINT)
    code = process.wait(timeout=15)
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/health", timeout=2)
    return code


def _connect_alice(url: str, key: str, team: str, jira: FakeJira, private_pem: str) -> None:
    """Set ``team`` up, then connect alice through the browser pages and Jira's Allow page; proxy as her."""
    auth = {"Authorization": f"Bearer {key}"}
    body = {"base_url": jira.base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem, "user": "alice"}
    setup = requests.put(f"{url}/v1/teams/{team}/jira", json=body, headers=auth, timeout=30)
    assert setup.status_code == 201, setup.text
    browser = requests.Session()
    page = browser.get(setup.json()["connect_url"], timeout=15)
    assert page.status_code == 200 and "Continue to Jira" in page.text
    action = re.search(r'<form method=post action="([^"]+)"', page.text)
    assert action and action.group(1).startswith(url + "/connect/"), page.text  # the public URL is this port's
    to_jira = browser.post(action.group(1), allow_redirects=False, headers={"Origin": "null"}, timeout=15)
    assert to_jira.status_code == 303, to_jira.text
    allow = browser.get(to_jira.headers["Location"], timeout=15)
    token = re.search(r'name="oauth_token" value="([^"]+)"', allow.text)
    assert token, allow.text
    approve = {"oauth_token": token.group(1), "username": "alice", "decision": "approve"}
    back = browser.post(to_jira.headers["Location"].split("?")[0], data=approve, allow_redirects=False, timeout=15)
    assert back.headers["Location"].startswith(url + "/oauth/callback?")
    done = browser.get(back.headers["Location"], timeout=15)
    assert done.status_code == 200 and "Connected as Alice Example" in done.text
    proxied = requests.post(
        f"{url}/v1/teams/{team}/users/alice/jira/proxy",
        json={"method": "GET", "path": "/rest/api/2/myself"},
        headers=auth,
        timeout=30,
    )
    assert proxied.status_code == 200 and proxied.json()["name"] == "alice", proxied.text


def _has_stage_key(endpoint: str) -> bool:
    """Whether the local stage's KMS key (it seals stored tokens) is on ``endpoint``, by its alias."""
    kms = boto3.client(
        "kms",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return kms.describe_key(KeyId=kms_alias("local"))["KeyMetadata"]["Enabled"] is True


def _team(port: int) -> str:
    # A team of this test's own: with a make run running on this machine, chalice local uses its moto.
    return f"team-{port}"


@pytest.fixture
def jira(rsa_key: rsa.RSAPrivateKey) -> Iterator[FakeJira]:
    with FakeJira(context_path="/jira") as fake:
        fake.add_consumer(CONSUMER_KEY, public_pem(rsa_key))
        fake.add_user("alice", key="JIRAUSER10100", display_name="Alice Example", email="alice@example.com")
        yield fake


# -- plain `chalice local --stage local` ---------------------------------------------------------------------
def test_plain_chalice_local_stage_local_serves_the_whole_broker(
    tmp_path: Path, jira: FakeJira, private_pem: str
) -> None:
    port, log = free_port(), tmp_path / "chalice-local.log"
    url = f"http://127.0.0.1:{port}"
    # --no-autoreload: other work in this checkout (the test suite's own caches) would restart the worker.
    with _chalice_local(log, "--stage", "local", "--port", str(port), "--no-autoreload", env=_clean_env()) as process:
        _wait_for_health(url, process, log)
        key = _printed_key(log)
        started = re.search(
            r"jira-oauth-broker: local stage on .* at (http://127\.0\.0\.1:\d+), fake credentials", log.read_text()
        )
        assert started and _has_stage_key(started.group(1))

        # The key without "Bearer ": 401 naming the expected form; with it but wrong: 403.
        bare = requests.get(f"{url}/v1/teams/{_team(port)}/jira", headers={"Authorization": key}, timeout=10)
        assert bare.status_code == 401 and bare.headers["X-Broker-Error"] == "unauthorized"
        assert "Authorization: Bearer <key>" in bare.json()["error"]["message"] and key not in bare.text
        wrong = requests.get(url + "/v1/teams/x/jira", headers={"Authorization": "Bearer jb_nope"}, timeout=10)
        assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"

        _connect_alice(url, key, _team(port), jira, private_pem)
        assert _interrupt(process, url) is not None
    output = log.read_text()
    assert "Traceback" not in output
    assert "GET /connect/[redacted]" in output and "oauth_token=[redacted]" in output  # the access log
    assert output.count(key) == 1  # printed once, at start


def test_plain_chalice_local_with_autoreload_starts_and_stops(tmp_path: Path) -> None:
    """chalice's default: a reloading parent and a worker; Ctrl-C ends both, the embedded moto with them."""
    port, log = free_port(), tmp_path / "autoreload.log"
    url = f"http://127.0.0.1:{port}"
    with _chalice_local(log, "--stage", "local", "--port", str(port), env=_clean_env()) as process:
        _wait_for_health(url, process, log)
        auth = {"Authorization": f"Bearer {_printed_key(log)}"}
        answer = requests.get(f"{url}/v1/teams/{_team(port)}/jira", headers=auth, timeout=10)
        assert answer.headers["X-Broker-Error"] == "integration_not_found", answer.text
        moto = re.findall(r"at (http://127\.0\.0\.1:\d+), fake credentials", log.read_text())[-1]
        _interrupt(process, url)
    if "embedded moto" in log.read_text():  # (a running make run's moto would have been used instead)
        with pytest.raises(requests.ConnectionError):
            requests.get(moto, timeout=2)


# -- the default stage (dev) -----------------------------------------------------------------------------
def _no_aws_config(tmp_path: Path) -> dict[str, str]:
    empty = tmp_path / "empty-aws-config"
    empty.write_text("")
    return {"AWS_CONFIG_FILE": str(empty), "AWS_SHARED_CREDENTIALS_FILE": str(empty), "HOME": str(tmp_path)}


@pytest.mark.parametrize("reload", [[], ["--no-autoreload"]], ids=["autoreload", "no-autoreload"])
def test_default_stage_without_credentials_refuses_at_start(tmp_path: Path, reload: list[str]) -> None:
    port, log = free_port(), tmp_path / "dev.log"
    started = time.monotonic()
    with _chalice_local(log, "--port", str(port), *reload, env=_clean_env(**_no_aws_config(tmp_path))) as process:
        code = process.wait(timeout=15)
    assert code != 0 and time.monotonic() - started < 15
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines == [
        "jira-oauth-broker: stage dev needs AWS credentials and none were found; "
        "for a local broker without AWS run `chalice local --stage local` (or `make run`)"
    ]


def test_default_stage_with_credentials_says_which_and_serves(tmp_path: Path) -> None:
    server, moto = start_moto()  # loopback, in case anything called AWS: nothing at start may
    fake = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ENDPOINT_URL": moto}
    port, log = free_port(), tmp_path / "dev.log"
    url = f"http://127.0.0.1:{port}"
    env = _clean_env(**_no_aws_config(tmp_path), **fake)
    try:
        with _chalice_local(log, "--port", str(port), "--no-autoreload", env=env) as process:
            _wait_for_health(url, process, log)
            assert requests.get(url + "/health", timeout=5).json()["stage"] == "dev"
            assert (
                f"jira-oauth-broker: stage dev uses the AWS account of your credentials (env) at {moto}: "
                "table jira-oauth-broker-dev, region us-east-1"
            ) in log.read_text()
            _interrupt(process, url)
    finally:
        server.stop()


# -- make run's runner -----------------------------------------------------------------------------------
def test_runner_keeps_its_records_on_the_given_aws_endpoint(
    tmp_path: Path, jira: FakeJira, private_pem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)  # this test's own scan of the moto server
    server, moto = start_moto()
    try:
        with local_stack(tmp_path / "runner.log", API_KEY, aws_endpoint=moto) as stack:
            assert stack.moto == moto and "no embedded moto" in stack.output()
            body = {"base_url": jira.base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem}
            assert stack.api("PUT", "/v1/teams/acme/jira", json=body).status_code == 201
            assert _has_stage_key(moto)
        items = boto3.client("dynamodb", endpoint_url=moto).scan(TableName="jira-oauth-broker-local")["Items"]
        assert {"TEAM#acme"} <= {item["pk"]["S"] for item in items}
        assert any(item["sk"]["S"] == "APIKEY" for item in items)
    finally:
        server.stop()


def test_second_runner_on_the_same_port_refuses_and_changes_nothing(tmp_path: Path) -> None:
    with local_stack(tmp_path / "first.log", API_KEY) as first:
        state = endpoint_file(first.port).read_text()
        started = time.monotonic()
        env = _clean_env(PORT=str(first.port), BROKER_API_KEY="jb_second-runner-key-0000000000000000000")
        second = subprocess.run(
            [sys.executable, "-m", "scripts.run_local"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
        )
        assert second.returncode != 0 and time.monotonic() - started < 10
        assert BUSY.match(second.stderr.strip()) and not second.stdout, second
        assert BUSY.match(second.stderr.strip()).group(1) == str(first.port)  # type: ignore[union-attr]

        assert endpoint_file(first.port).read_text() == state
        assert first.api("GET", "/v1/teams/acme/jira").headers["X-Broker-Error"] == "integration_not_found"
        listed = apikeys_cli("list", port=first.port)
        assert "local" in listed and API_KEY not in listed
        bare = requests.get(f"{first.url}/v1/teams/acme/jira", headers={"Authorization": API_KEY}, timeout=10)
        assert bare.status_code == 401 and "Authorization: Bearer <key>" in bare.json()["error"]["message"]
    assert not endpoint_file(first.port).exists()


# -- Authorization without "Bearer " through Chalice's test client -----------------------------------------------
def test_test_client_answers_401_for_a_key_without_bearer(broker: Broker) -> None:
    # chalice.test.Client would raise the authorizer's Exception("Unauthorized"); scripts.chalice_local
    # makes chalice's LocalGateway, which the test client shares with chalice local, answer API Gateway's 401.
    from scripts.chalice_local import emulate_api_gateway

    emulate_api_gateway()
    bare = broker.call("GET", "/v1/teams/acme/jira", key=None, headers={"Authorization": "jb_no-prefix"})
    assert bare.status == 401 and bare.headers["x-amzn-ErrorType"] == "UnauthorizedException"
    assert broker.call("GET", "/v1/teams/acme/jira", key="jb_wrong").status == 403


# -- what the Lambda runs never imports moto -------------------------------------------------------------
@pytest.mark.parametrize(
    ("stage", "argv", "under_chalice_local"),
    [
        ("dev", ["/var/runtime/bootstrap"], False),  # a Lambda
        ("prod", ["/var/runtime/bootstrap"], False),
        ("local", ["python"], False),
        ("local", ["chalice", "package"], False),
        ("dev", ["chalice", "local"], True),  # needs only the credential check, no stand-in
    ],
)
def test_importing_the_app_never_imports_moto(stage: str, argv: list[str], under_chalice_local: bool) -> None:
    code = (
        f"import sys; sys.argv = {argv!r}; import app; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('moto', 'scripts')))"
    )
    cli = {"AWS_CHALICE_CLI_MODE": "true"} if argv[0] == "chalice" else {}
    env = _clean_env(BROKER_STAGE=stage, **cli, **FAKE_CREDENTIALS)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    imported = done.stdout.strip().splitlines()[-1]
    assert "'moto" not in imported  # what `chalice package` ships has no moto: importing it would fail there
    assert ("'scripts" in imported) == under_chalice_local, imported  # scripts/ is never packaged either
