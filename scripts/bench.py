"""``make bench``: what acting as a user costs, measured in one run.

Prints:

(a) the broker's signing cost per request (oauthlib with the loaded key, as
    the proxy and the sign endpoint do it), as a ratio to one raw RSA-2048
    PKCS#1 v1.5 SHA-1 signature made with cryptography; target <= 2;
(b) the p50 latency of a proxied call through the local stack (chalice local
    on an embedded moto, to the fake Jira), the p50 of the same call through the
    transparent per-user endpoint (``.../jira/site/rest/api/2/myself``, its JSON links
    rewritten), the p50 of a direct signed request to the same fake Jira, and the ratios;
(c) the AWS API calls per proxied call, counted by a forwarding proxy in front
    of moto, per operation;
(d) cold starts of the deployment package (``--zip``, as ``make package`` builds it), unpacked
    and run in fresh processes of the clean runtime interpreter (``--runtime-python``,
    .venv-lambda) with no bytecode but what the zip ships (scripts/coldstart.py): the API
    function importing its handler and answering its first proxied call, and the authorizer
    importing its handler and answering its first key check, each as a ratio to a fresh process
    that imports the runtime's boto3 and makes one DynamoDB GetItem on the same moto (median of
    COLD_RUNS each, interleaved); targets <= 1.5 and <= 1.15; and the zip's size (target <= 10 MB).

Everything runs on loopback; request loops are bounded in count.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from requests_oauthlib import OAuth1

from chalicelib.apikeys import save_api_key
from chalicelib.connection_tokens import ConnectionTokens
from chalicelib.oauth1 import JiraClient
from chalicelib.sealing import Sealer
from chalicelib.store import Store
from scripts.artifact import lambda_environment, unpacked
from scripts.artifact_driver import http_event, token_event
from scripts.local_aws import ROOT, create_kms_key, create_table, kms_alias, start_moto, use_fake_credentials
from scripts.run_local import TABLE, start_chalice_local
from tests.fakejira import FakeJira
from tests.localstack import free_port

API_KEY = "jb_bench-key-00000000000000000000000000000000"
CONSUMER_KEY = "jira-oauth-broker"
SIGN_ROUNDS = 2000
CALLS = 300
WARMUP = 30
COLD_RUNS = 9
COLD_TARGETS = {"api": 1.5, "authorizer": 1.15}
ZIP_TARGET_MB = 10.0


# -- (a) signing ---------------------------------------------------------------------------
def _median_seconds(action: Callable[[], object], rounds: int) -> float:
    for _ in range(rounds // 20):
        action()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def signing_ratio(key: rsa.RSAPrivateKey) -> tuple[float, float, float]:
    jira = JiraClient("http://127.0.0.1:8090/jira", CONSUMER_KEY, key, timeout=(1, 1))
    url = "http://127.0.0.1:8090/jira/rest/api/2/search?jql=project%20%3D%20ABC&maxResults=50"
    base_string = (
        b"GET&http%3A%2F%2F127.0.0.1%3A8090%2Fjira%2Frest%2Fapi%2F2%2Fsearch&jql%3Dproject%2520%253D%2520ABC"
        b"%26maxResults%3D50%26oauth_consumer_key%3Djira-oauth-broker%26oauth_nonce%3D1234567890123456789"
        b"%26oauth_signature_method%3DRSA-SHA1%26oauth_timestamp%3D1795918506%26oauth_token%3D"
        b"abcdefabcdefabcdefabcdefabcdef12%26oauth_version%3D1.0"
    )
    raw = _median_seconds(lambda: key.sign(base_string, padding.PKCS1v15(), hashes.SHA1()), SIGN_ROUNDS)  # noqa: S303
    broker = _median_seconds(lambda: jira.authorization("a" * 32, "b" * 32, "GET", url), SIGN_ROUNDS)
    return broker, raw, broker / raw


# -- (c) counting AWS calls -------------------------------------------------------------------
class CountingForwarder(ThreadingHTTPServer):
    """Forwards AWS API calls to moto and counts them by operation (X-Amz-Target)."""

    daemon_threads = True

    def __init__(self, target: str) -> None:
        self.target = urlsplit(target)
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ForwardHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self, operation: str) -> None:
        with self.lock:
            self.calls[operation] += 1

    def take(self) -> Counter[str]:
        with self.lock:
            taken, self.calls = self.calls, Counter()
        return taken


class _ForwardHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # or boto3's kept-alive connection waits ~40 ms per call
    server: CountingForwarder

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        target = self.headers.get("X-Amz-Target") or self.headers.get("Authorization", "").split("/")[3:4]
        self.server.count(str(target).split(".")[-1])
        upstream = HTTPConnection(self.server.target.hostname or "127.0.0.1", self.server.target.port, timeout=10)
        upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in {"content-length", "transfer-encoding", "connection"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        upstream.close()

    do_GET = do_PUT = do_DELETE = do_POST

    def log_message(self, *_: Any) -> None:
        return


# -- (b) the local stack ------------------------------------------------------------------------
def _wait_for(url: str, deadline_seconds: float = 60) -> None:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def _p50(action: Callable[[], requests.Response], calls: int) -> float:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        response = action()
        samples.append(time.perf_counter() - start)
        if response.status_code != 200:
            raise SystemExit(f"unexpected answer {response.status_code}: {response.text[:300]}")
    return statistics.median(samples)


def _connect_alice(broker: str, jira: FakeJira, private_pem: str) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    setup = requests.put(
        f"{broker}/v1/teams/acme/jira",
        json={"base_url": jira.base_url, "consumer_key": CONSUMER_KEY, "private_key": private_pem, "user": "alice"},
        headers=auth,
        timeout=30,
    )
    setup.raise_for_status()
    browser = requests.Session()  # the callback completes only in the browser that clicked Continue
    to_jira = browser.post(setup.json()["connect_url"], allow_redirects=False, timeout=30)
    token = to_jira.headers["Location"].split("oauth_token=")[1]
    browser.get(jira.approve(token, "alice"), timeout=30).raise_for_status()


@dataclass
class BenchStack:
    """The local stack the figures are taken on: chalice local's URL, the fake Jira, moto and its counter."""

    broker: str
    jira: FakeJira
    dynamodb: Any
    forwarder: CountingForwarder
    endpoint: str


@contextmanager
def connected_stack(key: rsa.RSAPrivateKey) -> Iterator[BenchStack]:
    """moto (behind a counting forwarder), the table and an API key, chalice local, the fake Jira with
    ``key``'s Application Link, and alice connected; all stopped on exit."""
    use_fake_credentials()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    moto, endpoint = start_moto()
    forwarder = CountingForwarder(endpoint)
    threading.Thread(target=forwarder.serve_forever, daemon=True).start()
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint)
    create_table(dynamodb, TABLE)
    create_kms_key(boto3.client("kms", endpoint_url=endpoint), "local")
    save_api_key(Store(TABLE, client=dynamodb), API_KEY, name="bench")
    port = free_port()
    broker = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AWS_ENDPOINT_URL": forwarder.url, "BROKER_PUBLIC_URL": broker}
    with open(os.devnull, "w") as quiet, FakeJira(context_path="/jira") as jira:
        child = start_chalice_local("127.0.0.1", port, env, quiet)
        try:
            _wait_for(f"{broker}/health")
            jira.add_consumer(CONSUMER_KEY, public_pem)
            jira.add_user("alice", display_name="Alice Example")
            _connect_alice(broker, jira, private_pem)
            yield BenchStack(broker, jira, dynamodb, forwarder, endpoint)
        finally:
            child.terminate()
            child.wait(timeout=10)
            forwarder.shutdown()
            moto.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="make bench: the proxy's speed figures and the package's cold starts")
    parser.add_argument("--zip", type=Path, help="the deployment package (out/dev/template/deployment.zip)")
    parser.add_argument("--runtime-python", help="the clean runtime interpreter (.venv-lambda/bin/python)")
    args = parser.parse_args(argv)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    broker_sign, raw_sign, ratio = signing_ratio(key)
    with connected_stack(key) as stack:
        figures = _measure(stack.broker, stack.jira, stack.dynamodb, key, stack.forwarder)
        cold = None
        if args.zip and args.runtime_python:  # (d), against the same moto, Jira and connected user
            cold = cold_starts(args.zip, os.path.abspath(args.runtime_python), stack.endpoint)
    _report(broker_sign, raw_sign, ratio, *figures)
    if cold is None:
        print("(d) cold starts: skipped (make bench passes --zip and --runtime-python)")
    else:
        _report_cold(cold)
    return 0 if ratio <= 2 else 1


# -- (d) cold starts of the deployment package --------------------------------------------------
@dataclass
class ColdStarts:
    zip_bytes: int
    runtime: str
    seconds: dict[str, list[float]]
    cpu_seconds: dict[str, list[float]]

    def median(self, kind: str, cpu: bool = False) -> float:
        return statistics.median((self.cpu_seconds if cpu else self.seconds)[kind])

    def ratio(self, kind: str, cpu: bool = False) -> float:
        return self.median(kind, cpu) / self.median("baseline", cpu)


def cold_starts(zip_path: Path, runtime_python: str, endpoint: str) -> ColdStarts:
    """COLD_RUNS fresh processes each of the baseline, the API function and the authorizer, interleaved."""
    events = {
        "baseline": {"table": TABLE, "key": {"pk": {"S": "TEAM#acme"}, "sk": {"S": "USER#alice"}}},
        "api": http_event(
            "POST",
            "/v1/teams/acme/users/alice/jira/proxy",
            "/v1/teams/{team}/users/{user}/jira/proxy",
            {"team": "acme", "user": "alice"},
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
            body=json.dumps({"method": "GET", "path": "/rest/api/2/myself"}),
            authorizer={"principalId": "bench", "team": ""},
        ),
        "authorizer": token_event(f"Bearer {API_KEY}", "POST", "/v1/teams/acme/users/alice/jira/proxy"),
    }
    env = lambda_environment("dev", "jira-oauth-broker-bench", endpoint, TABLE, "jira-oauth-broker/local")
    env["BROKER_TOKENS_KMS_KEY"] = kms_alias("local")  # alice's tokens were sealed by the local stage's chalice local
    version = subprocess.run(
        [
            runtime_python,
            "-c",
            "import sys, boto3; print(f'python {sys.version.split()[0]}, boto3 {boto3.__version__}')",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    seconds: dict[str, list[float]] = {kind: [] for kind in events}
    cpu_seconds: dict[str, list[float]] = {kind: [] for kind in events}
    with unpacked(zip_path) as task_root, tempfile.TemporaryDirectory() as work:
        files = {}
        for kind, event in events.items():
            files[kind] = Path(work) / f"{kind}.json"
            files[kind].write_text(json.dumps(event))
        script = str(ROOT / "scripts" / "coldstart.py")
        for _ in range(COLD_RUNS):
            for kind in events:
                command = [runtime_python, "-B", "-s", script, kind, str(task_root), str(files[kind])]
                done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise SystemExit(f"cold start {kind} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
                timed = json.loads(done.stdout.strip().splitlines()[-1])
                seconds[kind].append(timed["seconds"])
                cpu_seconds[kind].append(timed["cpu_seconds"])
    return ColdStarts(zip_path.stat().st_size, version, seconds, cpu_seconds)


def _report_cold(cold: ColdStarts) -> None:
    def verdict(value: float, target: float, unit: str = "") -> str:
        return f"target <= {target:g}{unit}: {'met' if value <= target else 'MISSED'}"

    size_mb = cold.zip_bytes / 1e6
    print(
        f"(d) cold starts of the package ({cold.runtime}; median of {COLD_RUNS} fresh processes each, "
        f"wall clock, CPU time in brackets): baseline (import boto3, one GetItem) "
        f"{cold.median('baseline') * 1e3:.0f} ms [{cold.median('baseline', cpu=True) * 1e3:.0f} ms]"
    )
    for kind, label in (("api", "API function, first proxied call"), ("authorizer", "authorizer, first key check")):
        ratio = cold.ratio(kind)
        print(
            f"    {label}: {cold.median(kind) * 1e3:.0f} ms [{cold.median(kind, cpu=True) * 1e3:.0f} ms], "
            f"ratio {ratio:.2f} [{cold.ratio(kind, cpu=True):.2f}] ({verdict(ratio, COLD_TARGETS[kind])})"
        )
    print(f"    deployment.zip: {size_mb:.1f} MB ({verdict(size_mb, ZIP_TARGET_MB, ' MB')})")


def _measure(
    broker: str, jira: FakeJira, dynamodb: Any, key: rsa.RSAPrivateKey, forwarder: CountingForwarder
) -> tuple[float, float, float, Counter[str]]:
    # A kept-alive connection, as a bot's client keeps one (the local stack sets TCP_NODELAY).
    proxy_url = f"{broker}/v1/teams/acme/users/alice/jira/proxy"
    body = {"method": "GET", "path": "/rest/api/2/myself"}
    client = requests.Session()
    client.headers["Authorization"] = f"Bearer {API_KEY}"

    def proxied() -> requests.Response:
        return client.post(proxy_url, json=body, timeout=30)

    _p50(proxied, WARMUP)
    forwarder.take()
    proxied_p50 = _p50(proxied, CALLS)
    aws_calls = forwarder.take()

    site_url = f"{broker}/v1/teams/acme/users/alice/jira/site/rest/api/2/myself"

    def transparent() -> requests.Response:
        return client.get(site_url, timeout=30)

    _p50(transparent, WARMUP)
    transparent_p50 = _p50(transparent, CALLS)

    # The user's tokens, opened as the broker opens them (sealed in the item with the local KMS key).
    kms = boto3.client("kms", endpoint_url=forwarder.url)
    tokens = ConnectionTokens(Store(TABLE, client=dynamodb), Sealer(kms_alias("local"), client=kms))
    item = tokens.read("acme", "alice")
    assert item is not None
    opened = tokens.open("acme", "alice", item)
    session = requests.Session()
    auth = OAuth1(
        CONSUMER_KEY,
        signature_method="RSA-SHA1",
        rsa_key=key,
        resource_owner_key=opened["access_token"],
        resource_owner_secret=opened["token_secret"],
    )

    def direct() -> requests.Response:
        return session.get(f"{jira.base_url}/rest/api/2/myself", auth=auth, timeout=30)

    _p50(direct, WARMUP)
    direct_p50 = _p50(direct, CALLS)
    return proxied_p50, transparent_p50, direct_p50, aws_calls


def _report(
    broker_sign: float,
    raw_sign: float,
    ratio: float,
    proxied: float,
    transparent: float,
    direct: float,
    aws_calls: Counter[str],
) -> None:
    per_call = {op: count / CALLS for op, count in sorted(aws_calls.items())}
    total = sum(aws_calls.values()) / CALLS
    print("jira-oauth-broker benchmark")
    print(
        f"(a) signing: {broker_sign * 1e3:.3f} ms per request vs raw RSA-2048 PKCS#1 v1.5 SHA-1 "
        f"{raw_sign * 1e3:.3f} ms: ratio {ratio:.2f} (target <= 2) [{SIGN_ROUNDS} rounds, median]"
    )
    print(
        f"(b) p50 proxied call through chalice local: {proxied * 1e3:.2f} ms; direct signed request: "
        f"{direct * 1e3:.2f} ms; ratio {proxied / direct:.1f} [{CALLS} calls each]"
    )
    print(
        f"    p50 transparent call (.../jira/site/rest/api/2/myself): {transparent * 1e3:.2f} ms, "
        f"{transparent / proxied:.2f}x the envelope proxy's; ratio to direct {transparent / direct:.1f}"
    )
    detail = ", ".join(f"{op} {n:.2f}" for op, n in per_call.items()) or "none"
    print(f"(c) AWS API calls per proxied call: {total:.2f} ({detail}) [{CALLS} calls]")


if __name__ == "__main__":
    sys.exit(main())
