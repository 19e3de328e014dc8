"""The README's walk-through, executed as written.

The ``sh`` blocks of the section "Walk-through: connect a team and a user with curl" each carry an HTML
comment before them: ``<!-- walkthrough -->`` (run it) or ``<!-- walkthrough: broker -->`` (the
``BROKER_API_KEY=... make run`` block: the test starts ``python -m scripts.run_local`` with that key itself,
without make). The others run in order in one bash session (``set -euo pipefail``), in a scratch copy of the
project directory (``.venv`` and ``tests`` linked, so ``.local/`` files stay out of the repository), with
``PORT`` and ``JIRA_PORT`` set to free loopback ports: the README writes ``${PORT:-8000}`` and
``${JIRA_PORT:-8090}``, so nothing is rewritten. The fake Jira is started by its own block, as a background
job of the session, exactly as a reader starts it.

Every full-line comment in a block is an example answer: what the command before it prints. A ``json`` block
right after an ``sh`` block is the answer of that block's last command. The test parses what each block
really printed into answers (JSON values, or lines of text) and compares them with the documented ones:
the same number of answers, the same keys (``...`` in an object allows more keys, ``...`` as a value or in a
string allows anything from there on), equal numbers, booleans and plain strings, and timestamps in the same
format. Ports 8000 and 8090 in documented answers stand for the test's ports.

Finally the blocks of step 1 run again, as the README says a reader may: the fake Jira must pick up the new
public key by itself. Only loopback is ever addressed.
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.oauth1 import SIGNATURE_RSA
from requests_oauthlib import OAuth1

from tests.conftest import CONSUMER_KEY, public_pem
from tests.fakejira import FakeJira
from tests.localstack import free_port, local_stack

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SECTION = "## Walk-through: connect a team and a user with curl"
MARKER = re.compile(r"<!--\s*walkthrough(?::\s*(\w+))?\s*-->")
FENCE = re.compile(r"```(\w*)\s*")
BROKER_BLOCK = re.compile(r"BROKER_API_KEY=(\S+) make run")
LOOPBACK = {"127.0.0.1", "localhost", "[::1]"}
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)")
# Sentinels for "..." in documented JSON: more members in this object / any value here.
MORE = "\u2026more"
ANY = "\u2026any"
BLOCK_TIMEOUT = 60


class Text(str):
    """An answer that is a line of text, not JSON."""


@dataclass
class Block:
    kind: str  # "run" or "broker"
    code: str
    line: int  # the README line of its opening fence
    heading: str  # the "### ..." (or "## ...") heading it sits under
    answers: list[str] = field(default_factory=list)

    def where(self) -> str:
        return f"README.md line {self.line} ({self.heading})"


# -- reading the README ------------------------------------------------------------------------------
def walkthrough_blocks(text: str) -> list[Block]:
    """The walk-through's sh blocks in order, with their documented answers; every sh block must be marked."""
    lines = text.splitlines()
    start = lines.index(SECTION)
    end = next((n for n in range(start + 1, len(lines)) if lines[n].startswith("## ")), len(lines))
    blocks: list[Block] = []
    marker: str | None = None
    heading = SECTION
    after_block = False  # only blank lines since the last sh block closed
    n = start + 1
    while n < end:
        line = lines[n]
        fence = FENCE.fullmatch(line)
        if line.startswith("#"):
            heading, marker, after_block = line, None, False
        elif MARKER.fullmatch(line.strip()):
            match = MARKER.fullmatch(line.strip())
            assert match is not None
            marker, after_block = match.group(1) or "run", False
        elif fence:
            close = next(m for m in range(n + 1, end) if lines[m].strip() == "```")
            body = lines[n + 1 : close]
            if fence.group(1) == "sh":
                assert marker in ("run", "broker"), (
                    f"README.md line {n + 1}: every sh block of the walk-through needs <!-- walkthrough --> "
                    "(or <!-- walkthrough: broker --> for the make run block) on the line before it"
                )
                blocks.append(Block(marker, "\n".join(body) + "\n", n + 1, heading, comment_answers(body)))
                after_block = True
            elif fence.group(1) == "json" and after_block and blocks:
                blocks[-1].answers.append("\n".join(body))
                after_block = False
            else:
                after_block = False
            marker = None
            n = close
        elif line.strip():
            marker, after_block = None, False
        n += 1
    return blocks


def comment_answers(body: list[str]) -> list[str]:
    """Each run of full-line comments is one documented answer ("# " taken off)."""
    answers: list[list[str]] = []
    in_comment = False
    for line in body:
        stripped = line.strip()
        if stripped.startswith("#"):
            text = stripped[1:].removeprefix(" ")
            if in_comment:
                answers[-1].append(text)
            else:
                answers.append([text])
            in_comment = True
        else:
            in_comment = False
    return ["\n".join(answer) for answer in answers]


def documented(answer: str, ports: dict[str, int]) -> Any:
    """A documented answer as a value to compare: JSON (with "..." sentinels), a number, or Text."""
    for default, port in ports.items():
        answer = answer.replace(f"127.0.0.1:{default}", f"127.0.0.1:{port}")
    text = answer.strip()
    if text.startswith(("{", "[")):
        try:
            return json.loads(_with_ellipses(text))
        except ValueError as error:
            raise AssertionError(f"a documented answer is not JSON (with ...): {error}\n{text}") from None
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return Text(text)


def _with_ellipses(text: str) -> str:
    """Documented JSON with ``...`` outside strings turned into sentinels json can parse."""
    out: list[str] = []
    stack: list[str] = []
    last = ""
    n = 0
    while n < len(text):
        char = text[n]
        if char == '"':
            end = n + 1
            while text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append(text[n : end + 1])
            n, last = end + 1, '"'
            continue
        if text.startswith("...", n):
            member = bool(stack) and stack[-1] == "{" and last in ("{", ",")
            out.append(f'"{MORE}": true' if member else f'"{ANY}"')
            n, last = n + 3, "."
            continue
        if char in "{[":
            stack.append(char)
        elif char in "}]":
            stack.pop()
        if not char.isspace():
            last = char
        out.append(char)
        n += 1
    return "".join(out)


# -- what a block printed ----------------------------------------------------------------------------
def printed_answers(output: str) -> list[Any]:
    """A block's output as answers: JSON values (curl prints them without a newline) or lines of text."""
    decoder = json.JSONDecoder()
    answers: list[Any] = []
    n = 0
    while n < len(output):
        if output[n].isspace():
            n += 1
            continue
        if output[n] in '{["0123456789':
            try:
                value, n = decoder.raw_decode(output, n)
            except ValueError:
                pass
            else:
                answers.append(value)
                continue
        end = output.find("\n", n)
        end = len(output) if end < 0 else end
        answers.append(Text(output[n:end].rstrip()))
        n = end
    return answers


def mismatches(doc: Any, got: Any, where: str = "answer") -> list[str]:
    """How what was printed differs from what the README documents (empty: it matches)."""
    if doc == ANY:
        return []
    if isinstance(doc, dict):
        if not isinstance(got, dict):
            return [f"{where}: documented an object, printed {_short(got)}"]
        keys = set(doc) - {MORE}
        problems = []
        if keys - set(got):
            problems.append(f"{where}: documented keys not printed: {sorted(keys - set(got))}")
        if MORE not in doc and set(got) - keys:
            problems.append(f"{where}: printed keys not documented (add them, or '...'): {sorted(set(got) - keys)}")
        for key in sorted(keys & set(got)):
            problems += mismatches(doc[key], got[key], f"{where}.{key}")
        return problems
    if isinstance(doc, list):
        if not isinstance(got, list):
            return [f"{where}: documented a list, printed {_short(got)}"]
        items = [item for item in doc if item != ANY]
        if len(got) < len(items) or (len(items) == len(doc) and len(got) != len(items)):
            return [
                f"{where}: documented {len(items)} item(s){' or more' if len(items) < len(doc) else ''}, "
                f"printed {len(got)}"
            ]
        problems = []
        for n, item in enumerate(items):
            problems += mismatches(item, got[n], f"{where}[{n}]")
        return problems
    if isinstance(doc, str):
        if not isinstance(got, str) or isinstance(doc, Text) != isinstance(got, Text):
            return [f"{where}: documented {doc!r}, printed {_short(got)}"]
        if "..." in doc:
            prefix = doc.split("...", 1)[0]
            return [] if got.startswith(prefix) else [f"{where}: documented {doc!r}, printed {got!r}"]
        if TIMESTAMP.fullmatch(doc):
            return [] if TIMESTAMP.fullmatch(got) else [f"{where}: documented a timestamp {doc!r}, printed {got!r}"]
        return [] if doc == got else [f"{where}: documented {doc!r}, printed {got!r}"]
    if type(doc) is not type(got) or doc != got:
        return [f"{where}: documented {doc!r}, printed {_short(got)}"]
    return []


def _short(value: Any) -> str:
    return repr(value[:300]) if isinstance(value, str) else json.dumps(value)[:300]


# -- the bash session --------------------------------------------------------------------------------
class Session:
    """One bash process reading blocks from a pipe, as a terminal reads what a reader pastes."""

    def __init__(self, cwd: Path, env: dict[str, str], scratch: Path) -> None:
        self.scratch = scratch
        self.stderr_path = scratch / "bash.stderr"
        self._count = 0
        with self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                ["bash", "--noprofile", "--norc"],
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,  # its background jobs (the fake Jira) share its process group
            )
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()
        self._send("set -euo pipefail\n")

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text)
        self.process.stdin.flush()

    def run(self, block: Block) -> str:
        """Source the block (stdin from /dev/null, so no command eats the session's input); its output."""
        self._count += 1
        script = self.scratch / f"block-{self._count:02d}-line-{block.line}.sh"
        script.write_text(block.code)
        done = f"@@walkthrough-done-{secrets.token_hex(4)}@@"
        self._send(f"source {shlex.quote(str(script))} < /dev/null\nprintf '\\n%s\\n' {done}\n")
        lines: list[str] = []
        deadline = time.monotonic() + BLOCK_TIMEOUT
        while True:
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                # The background fake Jira holds stdout open: a shell that stopped shows by its exit, not EOF.
                if not self.alive():
                    line = None
                elif time.monotonic() > deadline:
                    raise AssertionError(
                        f"{block.where()}: no end after {BLOCK_TIMEOUT} s{self._report(lines)}"
                    ) from None
                else:
                    continue
            if line is None:
                raise AssertionError(f"{block.where()}: the shell stopped (a command failed){self._report(lines)}")
            if line.rstrip("\n") == done:
                return "".join(lines).removesuffix("\n")
            lines.append(line)

    def _report(self, lines: list[str]) -> str:
        errors = self.stderr_path.read_text()[-3000:]
        return f"\n--- printed:\n{''.join(lines)[-3000:]}\n--- stderr:\n{errors}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """End the session and its background jobs (the fake Jira): its own process group only."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _wait_for_port(port: int, session: Session, block: Block) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert session.alive(), f"{block.where()}: the shell stopped{session._report([])}"
        time.sleep(0.1)
    raise AssertionError(f"{block.where()}: nothing listens on port {port}{session._report([])}")


def _project_copy(scratch: Path) -> Path:
    """A directory that looks like the project to the walk-through: .venv and tests linked, nothing else."""
    project = scratch / "project"
    project.mkdir()
    (project / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    (project / "tests").symlink_to(ROOT / "tests", target_is_directory=True)
    return project


def _session_env(port: int, jira_port: int) -> dict[str, str]:
    """The test's environment without AWS/broker settings or proxies (loopback only), plus the two ports."""
    proxies = {"http_proxy", "https_proxy", "all_proxy", "ftp_proxy"}
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "BROKER_")) and name.lower() not in proxies
    }
    env.update(PORT=str(port), JIRA_PORT=str(jira_port), NO_PROXY="*", no_proxy="*")
    return env


# -- the test ----------------------------------------------------------------------------------------
def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    started = time.monotonic()
    run_walkthrough(README.read_text(), tmp_path)
    assert time.monotonic() - started < 90


def run_walkthrough(readme: str, tmp_path: Path) -> None:
    """Run the walk-through of this README text; AssertionError naming the block and the difference."""
    blocks = walkthrough_blocks(readme)
    assert len(blocks) >= 8, f"the walk-through lost its blocks: {[block.where() for block in blocks]}"
    broker, *steps = blocks
    assert broker.kind == "broker" and all(block.kind == "run" for block in steps), [b.kind for b in blocks]
    key_match = BROKER_BLOCK.fullmatch(broker.code.strip())
    assert key_match, f"{broker.where()}: expected 'BROKER_API_KEY=<key> make run', found {broker.code!r}"
    for block in blocks:
        hosts = {urlsplit(url).netloc.rsplit(":", 1)[0] for url in re.findall(r"https?://[^\s'\"$/]+", block.code)}
        assert hosts <= LOOPBACK, f"{block.where()}: the walk-through may only address loopback, found {hosts}"

    scratch = tmp_path / "session"
    scratch.mkdir()
    project = _project_copy(tmp_path)
    jira_port = free_port()
    with local_stack(tmp_path / "run_local.log", key_match.group(1)) as stack:
        port = urlsplit(stack.url).port
        assert port is not None
        ports = {"8000": port, "8090": jira_port}
        session = Session(project, _session_env(port, jira_port), scratch)
        try:
            problems: list[str] = []
            for block in steps:
                problems += _run_and_compare(session, block, ports, jira_port)
            assert not problems, "the README's example answers differ from what the walk-through printed:\n" + (
                "\n".join(problems)
            )

            # "To go through it again, start at step 1": a new key pair, which the fake Jira picks up.
            again = [
                block for block in steps if block.heading.startswith("### 1.") and "tests.fakejira" not in block.code
            ]
            assert len(again) >= 2, [block.where() for block in again]
            for block in again:
                problems += _run_and_compare(session, block, ports, jira_port)
            assert not problems, "going through step 1 again:\n" + "\n".join(problems)
        finally:
            session.close()
    assert (project / ".local" / "public.pem").is_file()  # written where the README says, in the scratch copy


def _run_and_compare(session: Session, block: Block, ports: dict[str, int], jira_port: int) -> list[str]:
    output = session.run(block)
    if "tests.fakejira" in block.code:
        _wait_for_port(jira_port, session, block)
    printed = printed_answers(output)
    expected = [documented(answer, ports) for answer in block.answers]
    if len(printed) != len(expected):
        return [
            f"{block.where()}: {len(expected)} documented answer(s), {len(printed)} printed "
            f"(every command that prints needs its example answer as a comment below it):\n{output[:2000]}"
        ]
    problems = []
    for n, (doc, got) in enumerate(zip(expected, printed, strict=True)):
        problems += [f"{block.where()}: {problem}" for problem in mismatches(doc, got, f"answer {n + 1}")]
    return problems


# -- the parts of the checker itself -----------------------------------------------------------------
def test_the_checker_reads_ellipses_and_compares_shapes() -> None:
    doc = documented('{"a": "x...", "b": [{"c": 1, ...}, ...], "t": "2026-11-29T02:04:18Z", ...}', {})
    assert mismatches(doc, {"a": "xyz", "b": [{"c": 1, "d": 2}, {}], "t": "2027-01-01T00:00:00Z", "e": 0}) == []
    assert mismatches(doc, {"a": "y", "b": [], "t": "soon"}) == [
        "answer.a: documented 'x...', printed 'y'",
        "answer.b: documented 1 item(s) or more, printed 0",
        "answer.t: documented a timestamp '2026-11-29T02:04:18Z', printed 'soon'",
    ]
    closed = documented('{"url": "http://127.0.0.1:8000/x", "n": 3600}', {"8000": 1234})
    assert mismatches(closed, {"url": "http://127.0.0.1:1234/x", "n": 3600}) == []
    assert mismatches(closed, {"url": "http://127.0.0.1:1234/x", "n": 60, "more": 1}) == [
        "answer: printed keys not documented (add them, or '...'): ['more']",
        "answer.n: documented 3600, printed 60",
    ]
    assert printed_answers('{"a": 1}{"b": 2}204\n<h1>Done\n') == [{"a": 1}, {"b": 2}, 204, "<h1>Done"]
    assert mismatches(documented("<h1>Done", {}), printed_answers("<h1>Done\n")[0]) == []


def test_an_unmarked_sh_block_in_the_walkthrough_fails() -> None:
    text = f"{SECTION}\n\n<!-- walkthrough: broker -->\n```sh\nmake run\n```\n\n```sh\ncurl -sS $B/health\n```\n"
    with pytest.raises(AssertionError, match="needs <!-- walkthrough -->"):
        walkthrough_blocks(text)


# -- the fake Jira, as the walk-through shows it -------------------------------------------------------
@pytest.fixture
def demo_jira(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> Iterator[FakeJira]:
    """The fake as ``python -m tests.fakejira`` runs it: no echo fields, the key read from a file."""
    key_file = tmp_path / "public.pem"
    key_file.write_text(public_pem(rsa_key))
    with FakeJira("/jira", echo=False) as fake:
        fake.watch_public_key_file(CONSUMER_KEY, str(key_file))
        fake.add_user("alice", display_name="Alice Example", email="alice@example.com")
        yield fake


def _connect(jira: FakeJira, key: rsa.RSAPrivateKey, username: str) -> OAuth1:
    """The whole dance, with the Allow page's form as a browser posts it; the access token's auth."""
    auth = OAuth1(CONSUMER_KEY, signature_method=SIGNATURE_RSA, rsa_key=key, callback_uri="http://127.0.0.1:9/cb")
    answer = requests.post(f"{jira.base_url}/plugins/servlet/oauth/request-token", auth=auth, timeout=5)
    token = dict(pair.split("=") for pair in answer.text.split("&"))["oauth_token"]
    page = requests.get(f"{jira.base_url}/plugins/servlet/oauth/authorize", params={"oauth_token": token}, timeout=5)
    assert "Any other name you type becomes a new user" in page.text
    allow = requests.post(
        f"{jira.base_url}/plugins/servlet/oauth/authorize",
        data={"oauth_token": token, "username": username, "decision": "approve"},
        allow_redirects=False,
        timeout=5,
    )
    assert allow.status_code == 302, allow.text
    verifier = allow.headers["Location"].rsplit("oauth_verifier=", 1)[1]
    exchange = OAuth1(
        CONSUMER_KEY, signature_method=SIGNATURE_RSA, rsa_key=key, resource_owner_key=token, verifier=verifier
    )
    answer = requests.post(f"{jira.base_url}/plugins/servlet/oauth/access-token", auth=exchange, timeout=5)
    access = dict(pair.split("=") for pair in answer.text.split("&"))["oauth_token"]
    return OAuth1(CONSUMER_KEY, signature_method=SIGNATURE_RSA, rsa_key=key, resource_owner_key=access)


def test_the_allow_page_takes_any_name(demo_jira: FakeJira, rsa_key: rsa.RSAPrivateKey) -> None:
    auth = _connect(demo_jira, rsa_key, "carol.jones")
    me = requests.get(f"{demo_jira.base_url}/rest/api/2/myself", auth=auth, timeout=5).json()
    assert me["name"] == "carol.jones" and me["displayName"] == "Carol Jones Example"
    assert me["emailAddress"] == "carol.jones@example.com"
    token = "x" * 32
    refused = requests.post(
        f"{demo_jira.base_url}/plugins/servlet/oauth/authorize",
        data={"oauth_token": token, "username": "<script>", "decision": "approve"},
        timeout=5,
    )
    assert refused.status_code == 400 and "Users: alice, carol.jones" in refused.text and "<script>" not in refused.text


def test_search_issue_and_create_are_shaped_like_jira(demo_jira: FakeJira, rsa_key: rsa.RSAPrivateKey) -> None:
    auth = _connect(demo_jira, rsa_key, "bob")
    base = demo_jira.base_url
    rest = f"{base}/rest/api/2"
    found = requests.get(
        f"{rest}/search", params={"jql": "project = ABC ORDER BY key DESC", "maxResults": "1"}, auth=auth, timeout=5
    )
    assert found.status_code == 200 and found.headers["Content-Type"].startswith("application/json")
    page = found.json()
    assert list(page) == ["expand", "startAt", "maxResults", "total", "issues"]
    assert (page["startAt"], page["maxResults"], page["total"]) == (0, 1, 2)
    (issue,) = page["issues"]
    assert issue["key"] == "ABC-2" and issue["self"] == f"{base}/rest/api/2/issue/{issue['id']}"
    fields = issue["fields"]
    assert {"summary", "status", "issuetype", "project", "assignee", "reporter", "created"} <= set(fields)
    assert fields["assignee"]["name"] == fields["reporter"]["name"] == "bob"
    assert fields["project"]["key"] == "ABC" and fields["project"]["self"].startswith(base + "/rest/api/2/project/")
    assert fields["status"]["statusCategory"]["key"] == "indeterminate"

    post = requests.post(
        f"{rest}/search", json={"jql": "key = ABC-1", "fields": ["summary"]}, auth=auth, timeout=5
    ).json()
    assert post["total"] == 1 and post["issues"][0]["fields"] == {"summary": "Set up the Application Link"}
    unknown = requests.get(f"{rest}/search", params={"jql": "project = NOPE"}, auth=auth, timeout=5)
    assert unknown.status_code == 400 and "NOPE" in unknown.json()["errorMessages"][0]

    made = requests.post(
        f"{rest}/issue",
        json={"fields": {"project": {"key": "ABC"}, "summary": "Made", "issuetype": {"name": "Bug"}}},
        auth=auth,
        timeout=5,
    )
    assert made.status_code == 201 and list(made.json()) == ["id", "key", "self"]
    assert made.json()["key"] == "ABC-3" and made.json()["self"] == f"{rest}/issue/{made.json()['id']}"
    got = requests.get(f"{rest}/issue/ABC-3", auth=auth, timeout=5).json()
    assert list(got) == ["expand", "id", "self", "key", "fields"]
    assert got["fields"]["issuetype"]["name"] == "Bug" and got["fields"]["reporter"]["name"] == "bob"
    bad = requests.post(f"{rest}/issue", json={"fields": {"project": {"key": "X"}}}, auth=auth, timeout=5)
    assert bad.status_code == 400 and set(bad.json()["errors"]) == {"project", "issuetype", "summary"}
    missing = requests.get(f"{rest}/issue/ABC-99", auth=auth, timeout=5)
    assert missing.status_code == 404 and missing.json()["errorMessages"]

    no_xsrf = requests.post(f"{rest}/issue/ABC-3/attachments", files={"file": ("a.txt", b"hi")}, auth=auth, timeout=5)
    assert no_xsrf.status_code == 403
    attached = requests.post(
        f"{rest}/issue/ABC-3/attachments",
        files={"file": ("a.bin", b"\x00\xff", "application/octet-stream")},
        headers={"X-Atlassian-Token": "no-check"},
        auth=auth,
        timeout=5,
    )
    assert attached.status_code == 200, attached.text
    (attachment,) = attached.json()
    assert attachment["size"] == 2 and attachment["filename"] == "a.bin" and attachment["author"]["name"] == "bob"


def test_in_process_fakes_keep_the_echo_fields(jira: FakeJira, rsa_key: rsa.RSAPrivateKey) -> None:
    """Tests written against the echo read ``query``/``user``/``method`` from modelled answers too."""
    auth = _connect(jira, rsa_key, "alice")
    page = requests.get(f"{jira.base_url}/rest/api/2/search", params={"jql": "x"}, auth=auth, timeout=5).json()
    assert page["total"] == 2 and page["query"] == {"jql": ["x"]} and page["user"] == "alice"
    echo = requests.put(f"{jira.base_url}/rest/api/2/issue/ABC-1", json={}, auth=auth, timeout=5).json()
    assert echo == {"method": "PUT", "path": "/rest/api/2/issue/ABC-1", "query": {}, "user": "alice", "body": "{}"}


def test_the_key_file_is_read_again_when_it_changes(
    demo_jira: FakeJira, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    auth = OAuth1(CONSUMER_KEY, signature_method=SIGNATURE_RSA, rsa_key=other_rsa_key, callback_uri="oob")
    url = f"{demo_jira.base_url}/plugins/servlet/oauth/request-token"
    assert requests.post(url, auth=auth, timeout=5).status_code == 401
    (tmp_path / "public.pem").write_text("")  # half written: the old key stays
    auth = OAuth1(CONSUMER_KEY, signature_method=SIGNATURE_RSA, rsa_key=rsa_key, callback_uri="oob")
    assert requests.post(url, auth=auth, timeout=5).status_code == 200
    (tmp_path / "public.pem").write_text(public_pem(other_rsa_key))
    auth = OAuth1(CONSUMER_KEY, signature_method=SIGNATURE_RSA, rsa_key=other_rsa_key, callback_uri="oob")
    assert requests.post(url, auth=auth, timeout=5).status_code == 200
