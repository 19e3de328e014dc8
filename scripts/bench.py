"""``make bench``: what acting as a user costs, measured in one run.

Prints:

(a) the broker's signing cost per request (oauthlib with the loaded key, as
    the proxy and the sign endpoint do it), as a ratio to one raw RSA-2048
    PKCS#1 v1.5 SHA-1 signature made with cryptography; target <= 2;
(b) the p50 latency of a proxied call through the local stack (chalice local
    on an embedded moto, to the fake Jira), the p50 of a direct signed request
    to the same fake Jira, and their ratio;
(c) the AWS API calls per proxied call, counted by a forwarding proxy in front
    of moto, per operation.

Everything runs on loopback; request loops are bounded in count.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import boto3
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from requests_oauthlib import OAuth1

from chalicelib.apikeys import save_api_key
from chalicelib.oauth1 import JiraClient
from chalicelib.store import Store
from scripts.local_aws import create_table, start_moto, use_fake_credentials
from scripts.run_local import TABLE, start_chalice_local
from tests.fakejira import FakeJira
from tests.localstack import free_port

API_KEY = "jb_bench-key-00000000000000000000000000000000"
CONSUMER_KEY = "jira-oauth-broker"
SIGN_ROUNDS = 2000
CALLS = 300
WARMUP = 30


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


def main() -> int:
    use_fake_credentials()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )

    broker_sign, raw_sign, ratio = signing_ratio(key)

    moto, endpoint = start_moto()
    forwarder = CountingForwarder(endpoint)
    threading.Thread(target=forwarder.serve_forever, daemon=True).start()
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint)
    create_table(dynamodb, TABLE)
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
            figures = _measure(broker, jira, dynamodb, key, forwarder)
        finally:
            child.terminate()
            child.wait(timeout=10)
            forwarder.shutdown()
            moto.stop()
    _report(broker_sign, raw_sign, ratio, *figures)
    return 0 if ratio <= 2 else 1


def _measure(
    broker: str, jira: FakeJira, dynamodb: Any, key: rsa.RSAPrivateKey, forwarder: CountingForwarder
) -> tuple[float, float, Counter[str]]:
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

    item = dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "TEAM#acme"}, "sk": {"S": "USER#alice"}})["Item"]
    session = requests.Session()
    auth = OAuth1(
        CONSUMER_KEY,
        signature_method="RSA-SHA1",
        rsa_key=key,
        resource_owner_key=item["access_token"]["S"],
        resource_owner_secret=item["token_secret"]["S"],
    )

    def direct() -> requests.Response:
        return session.get(f"{jira.base_url}/rest/api/2/myself", auth=auth, timeout=30)

    _p50(direct, WARMUP)
    direct_p50 = _p50(direct, CALLS)
    return proxied_p50, direct_p50, aws_calls


def _report(
    broker_sign: float, raw_sign: float, ratio: float, proxied: float, direct: float, aws_calls: Counter[str]
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
    detail = ", ".join(f"{op} {n:.2f}" for op, n in per_call.items()) or "none"
    print(f"(c) AWS API calls per proxied call: {total:.2f} ({detail}) [{CALLS} calls]")


if __name__ == "__main__":
    sys.exit(main())
