"""The deployment package's size and cold start on Lambda's python3.11, 3.12 and 3.13, measured side by side.

    .venv/bin/python -m scripts.runtime_compare [--runtimes 3.11,3.12,3.13] [--passes 2]

Not part of CI or ``make test``: it installs a build venv and a runtime venv per version (pip, slow),
kept under ``out/runtimes/<ver>/`` (git-ignored) and reused while the requirements are unchanged.
For each runtime:

1. builds the package for that runtime: ``chalice package --stage dev`` run by a build venv of that
   Python (chalice picks the Lambda runtime, and the wheels it bundles, from the Python running it),
   then ``scripts/package_pyc.py --runtime <ver>`` run by that same interpreter (hash-based .pyc);
2. makes a clean "Lambda runtime" venv of that Python with only requirements-lambda-runtime.txt
   (boto3/botocore as the runtime provides them), as ``make`` makes ``.venv-lambda``;
3. measures the cold starts as ``make bench`` (d) does, with its own code (``scripts.bench.cold_starts``
   running ``scripts/coldstart.py``): the baseline (import boto3, one GetItem), the API function's first
   proxied call and the authorizer's first key check, median of ``COLD_RUNS`` fresh processes each,
   against one moto, fake Jira and connected user (set up through chalice local, as the bench does).

Each pass measures every runtime once (alternating the order between passes, so a change in the
machine's load is not all charged to one runtime); the table has one row per runtime and pass, wall
clock with CPU time in brackets. Interpreters default to pyenv's; ``--python 3.12=/path/to/python3.12``
names another. Network: pip's package index and loopback only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from scripts.bench import COLD_RUNS, ColdStarts, cold_starts, connected_stack
from scripts.local_aws import ROOT

PYTHONS = {
    "3.11": "/root/.pyenv/versions/3.11.7/bin/python",
    "3.12": "/root/.pyenv/versions/3.12.1/bin/python",
    "3.13": "/root/.pyenv/versions/3.13.0/bin/python",
}
OUT = ROOT / "out" / "runtimes"
RUNTIME_REQUIREMENTS = ROOT / "requirements-lambda-runtime.txt"
BUILD_TOOLS = ("chalice", "wheel")  # pinned as in requirements-dev.txt


@dataclass
class Runtime:
    version: str
    python: str

    @property
    def home(self) -> Path:
        return OUT / self.version

    @property
    def build_python(self) -> Path:
        return self.home / "build" / "bin" / "python"

    @property
    def lambda_python(self) -> Path:
        return self.home / "lambda" / "bin" / "python"

    @property
    def zip_path(self) -> Path:
        return self.home / "deployment.zip"


def _run(command: list[str], what: str, **kwargs: object) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise BuildFailed(
            f"{what} failed (exit {done.returncode}): {' '.join(map(str, command))}\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )


class BuildFailed(Exception):
    pass


def _tool_pins() -> list[str]:
    pins = {}
    for line in (ROOT / "requirements-dev.txt").read_text().splitlines():
        spec = line.split("#")[0].strip()
        name = spec.split("==")[0].strip().lower()
        if name in BUILD_TOOLS:
            pins[name] = spec
    missing = set(BUILD_TOOLS) - set(pins)
    if missing:
        raise SystemExit(f"requirements-dev.txt pins no {', '.join(sorted(missing))}")
    return [pins[name] for name in BUILD_TOOLS]


def _stamped(venv: Path, inputs: list[str]) -> tuple[bool, Path, str]:
    """Whether ``venv`` was installed from exactly ``inputs`` (its stamp holds their digest)."""
    digest = hashlib.sha256("\n".join(inputs).encode()).hexdigest()
    stamp = venv / ".installed"
    return stamp.is_file() and stamp.read_text() == digest, stamp, digest


def build_venv(runtime: Runtime) -> None:
    """A venv of the runtime's Python with the app's requirements (chalice package imports app.py) and chalice."""
    venv = runtime.build_python.parent.parent
    tools = _tool_pins()
    requirements = [ROOT / "requirements.txt", RUNTIME_REQUIREMENTS]
    fresh, stamp, digest = _stamped(venv, [runtime.python, *tools, *(p.read_text() for p in requirements)])
    if fresh:
        return
    print(
        f"  {runtime.version}: installing {venv.relative_to(ROOT)} ({' '.join(tools)} + requirements.txt)", flush=True
    )
    shutil.rmtree(venv, ignore_errors=True)
    _run([runtime.python, "-m", "venv", str(venv)], "venv")
    install = [str(runtime.build_python), "-m", "pip", "install", "-qq", "--disable-pip-version-check"]
    _run([*install, *tools, *(arg for p in requirements for arg in ("-r", str(p)))], "pip install (build venv)")
    stamp.write_text(digest)


def lambda_venv(runtime: Runtime) -> None:
    """As make's .venv-lambda: no pip in it, only the runtime's boto3 (installed by the dev venv's pip)."""
    venv = runtime.lambda_python.parent.parent
    fresh, stamp, digest = _stamped(venv, [runtime.python, RUNTIME_REQUIREMENTS.read_text()])
    if fresh:
        return
    print(f"  {runtime.version}: installing {venv.relative_to(ROOT)} (requirements-lambda-runtime.txt)", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    _run([runtime.python, "-m", "venv", "--without-pip", str(venv)], "venv --without-pip")
    pip = [sys.executable, "-m", "pip", "--python", str(runtime.lambda_python), "install", "-qq"]
    _run([*pip, "--disable-pip-version-check", "-r", str(RUNTIME_REQUIREMENTS)], "pip install (runtime venv)")
    stamp.write_text(digest)


def _without_foreign_bytecode(source: Path, target: Path, version: str) -> None:
    """Copy the zip without other Pythons' .pyc: chalice copies chalicelib/__pycache__ as the working tree has it.

    The dev venv's python3.11 leaves ``*.cpython-311.pyc`` there; ``make package`` (3.11) recompiles them in
    place, but another runtime would ship them unused (~0.16 MB), which a build by that runtime's own dev
    venv would not.
    """
    tag = "cpython-" + version.replace(".", "")
    with zipfile.ZipFile(source) as built, zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as copy:
        for info in built.infolist():
            if not info.filename.endswith(".pyc") or info.filename.endswith(f".{tag}.pyc"):
                copy.writestr(info, built.read(info))


def package(runtime: Runtime) -> None:
    """``chalice package --stage dev`` by the runtime's Python, then its hash-based .pyc."""
    build_venv(runtime)
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    env.pop("AWS_ENDPOINT_URL", None)
    with tempfile.TemporaryDirectory(prefix=f"package-{runtime.version}-") as work:
        chalice = str(runtime.build_python.parent / "chalice")
        _run([chalice, "package", "--stage", "dev", work], "chalice package", cwd=ROOT, env=env)
        template = (Path(work) / "sam.json").read_text()
        if f'"python{runtime.version}"' not in template:
            raise BuildFailed(f"chalice package did not target python{runtime.version} (sam.json)")
        _without_foreign_bytecode(Path(work) / "deployment.zip", runtime.zip_path, runtime.version)
    pyc = [str(runtime.build_python), "-m", "scripts.package_pyc", "--runtime", runtime.version, str(runtime.zip_path)]
    _run(pyc, "scripts.package_pyc", cwd=ROOT)


def prepare(runtime: Runtime) -> str | None:
    """Builds the runtime's package and venvs; returns what failed, if anything."""
    try:
        runtime.home.mkdir(parents=True, exist_ok=True)
        package(runtime)
        lambda_venv(runtime)
    except BuildFailed as failure:
        return str(failure)
    return None


def measure(runtimes: list[Runtime], passes: int) -> list[tuple[int, Runtime, ColdStarts]]:
    """The bench's (d) set-up (moto, table, API key, fake Jira, alice connected), then cold starts per runtime."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    results = []
    with connected_stack(key) as stack:
        for number in range(1, passes + 1):
            for runtime in runtimes if number % 2 else reversed(runtimes):
                print(f"  pass {number}: measuring python{runtime.version}", flush=True)
                cold = cold_starts(runtime.zip_path, str(runtime.lambda_python.absolute()), stack.endpoint)
                results.append((number, runtime, cold))
    return results


def report(results: list[tuple[int, Runtime, ColdStarts]], failures: dict[str, str]) -> None:
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"\nCold starts, median of {COLD_RUNS} fresh processes each, wall clock [CPU time]; ratio to that "
        f"runtime's baseline (import boto3, one GetItem). {os.cpu_count()} CPUs, load average now {load}."
    )
    header = f"{'runtime':<22} {'pass':>4} {'zip MB':>6}  {'baseline ms':>13}  {'API ms (ratio)':>26}  "
    print(header + f"{'authorizer ms (ratio)':>26}")
    for number, runtime, cold in sorted(results, key=lambda row: (row[1].version, row[0])):

        def cell(kind: str, cold: ColdStarts = cold) -> str:
            wall, cpu = cold.median(kind) * 1e3, cold.median(kind, cpu=True) * 1e3
            return f"{wall:.0f} [{cpu:.0f}] ({cold.ratio(kind):.2f} [{cold.ratio(kind, cpu=True):.2f}])"

        base = f"{cold.median('baseline') * 1e3:.0f} [{cold.median('baseline', cpu=True) * 1e3:.0f}]"
        print(
            f"{'python' + runtime.version:<22} {number:>4} {cold.zip_bytes / 1e6:>6.2f}  {base:>13}  "
            f"{cell('api'):>26}  {cell('authorizer'):>26}"
        )
    seen = {runtime.version: cold.runtime for _, runtime, cold in results}
    for version, detail in sorted(seen.items()):
        print(f"  python{version}: {detail}")
    for version, failure in failures.items():
        print(f"python{version}: NOT MEASURED: {failure}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the package's size and cold starts per Lambda Python runtime")
    parser.add_argument("--runtimes", default=",".join(PYTHONS), help="comma-separated, e.g. 3.11,3.12,3.13")
    parser.add_argument("--passes", type=int, default=2, help="measurements of every runtime (default 2)")
    parser.add_argument("--python", action="append", default=[], metavar="VER=PATH", help="another interpreter")
    args = parser.parse_args(argv)
    pythons = dict(PYTHONS)
    pythons.update(dict(item.split("=", 1) for item in args.python))
    runtimes = [Runtime(version, pythons[version]) for version in args.runtimes.split(",")]
    print(f"building packages and venvs under {OUT.relative_to(ROOT)}/", flush=True)
    failures = {}
    for runtime in runtimes:
        failure = prepare(runtime)
        if failure:
            failures[runtime.version] = failure
            print(f"  {runtime.version}: FAILED: {failure}", flush=True)
    ready = [runtime for runtime in runtimes if runtime.version not in failures]
    results = measure(ready, args.passes) if ready else []
    report(results, failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
