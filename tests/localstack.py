"""`make run`'s runner (embedded moto + real `chalice local`) on a free port, for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
# The ports of the stacks running now: apikeys_cli talks to the latest one's AWS, not to whichever
# make run another test (or a person) runs on this machine.
_started: list[int] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalStack:
    """The running stack: its URL, the runner process, its (redacted) output and its AWS endpoint
    (``moto``: the embedded moto's, or the ``AWS_ENDPOINT_URL`` it was given)."""

    url: str
    process: subprocess.Popen[str]
    log_path: Path
    api_key: str
    moto: str = ""

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def output(self) -> str:
        return self.log_path.read_text()

    def api(self, method: str, path: str, key: str | None = "", **kwargs: Any) -> requests.Response:
        """Call the API with the stack's key (``key=None``: no Authorization header; a string: that key)."""
        key = self.api_key if key == "" else key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)


@contextmanager
def local_stack(
    log_path: Path, api_key: str, *, aws_endpoint: str | None = None, **env_extra: str
) -> Iterator[LocalStack]:
    """Start ``python -m scripts.run_local`` with a fresh environment; stop it (Ctrl-C, then kill) after.

    The test's own ``AWS_*`` and ``BROKER_*`` variables are not passed on; ``aws_endpoint`` (or
    ``AWS_ENDPOINT_URL`` in ``env_extra``) makes the runner use that endpoint instead of its own moto.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BROKER_"))}
    if aws_endpoint:
        env["AWS_ENDPOINT_URL"] = aws_endpoint
    env.update(PORT=str(port), BROKER_API_KEY=api_key, **env_extra)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "scripts.run_local"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    stack = LocalStack(f"http://127.0.0.1:{port}", process, log_path, api_key)
    _started.append(port)
    try:
        _wait_until_up(stack)
        match = re.search(r"(?:moto|AWS) at (https?://[^\s;]+);", stack.output())
        stack.moto = match.group(1) if match else ""
        yield stack
    finally:
        _stop(process)
        _started.remove(port)


def _wait_until_up(stack: LocalStack) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if stack.process.poll() is not None:
            raise AssertionError(f"the runner exited early:\n{stack.output()}")
        try:
            if requests.get(stack.url + "/health", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise AssertionError(f"chalice local did not come up:\n{stack.output()}")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def apikeys_cli(*args: str, port: int | None = None) -> str:
    """``python -m scripts.apikeys ARGS --stage local --port PORT``, as an operator runs it (it finds make
    run's AWS by the port; default: the latest stack's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BROKER_"))}
    port = port or (_started[-1] if _started else None)
    where = ["--port", str(port)] if port else []
    done = subprocess.run(
        [sys.executable, "-m", "scripts.apikeys", *args, "--stage", "local", *where],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout
