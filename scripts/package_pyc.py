"""Add precompiled bytecode to the package ``chalice package`` wrote: ``python -m scripts.package_pyc ZIP``.

``chalice package`` ships no ``.pyc``, and Lambda's code directory (``/var/task``) is read-only, so
without them every cold start compiles every module it imports (about 850 ms for this app vs about
290 ms with bytecode). Timestamp-based ``.pyc`` would not help: the zip stores 1980-era times and
unpacking sets new ones, so they would be stale at once. Hash-based ones in ``unchecked-hash`` mode
are used as they are, whatever the file times (the zip is immutable once deployed).

The interpreter running this script compiles the bytecode, so it must be the runtime's version
(python3.11, as ``runtime`` in the template): it refuses any other. ``--runtime 3.12`` names another
expected version (``scripts/runtime_compare.py`` builds a package per runtime). The zip is rewritten in
place, entries in a stable order with fixed times, so the same sources give the same bytes.
"""

from __future__ import annotations

import compileall
import py_compile
import sys
import tempfile
import zipfile
from pathlib import Path

RUNTIME = (3, 11)
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def add_bytecode(zip_path: Path, runtime: tuple[int, int] = RUNTIME) -> tuple[int, int]:
    """Rewrite ``zip_path`` with ``__pycache__/*.cpython-3XY.pyc`` (``runtime``'s; 311) beside every module.

    Returns the sizes before/after. Refuses unless this interpreter is ``runtime``'s version.
    """
    if sys.version_info[:2] != runtime:
        raise SystemExit(
            f"compile with python{runtime[0]}.{runtime[1]} (the Lambda runtime), not {sys.version.split()[0]}"
        )
    before = zip_path.stat().st_size
    with tempfile.TemporaryDirectory() as work:
        tree = Path(work) / "tree"
        modes: dict[str, int] = {}
        with zipfile.ZipFile(zip_path) as source:
            for info in source.infolist():
                modes[info.filename] = info.external_attr
            source.extractall(tree)
        ok = compileall.compile_dir(
            str(tree),
            quiet=2,
            workers=0,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            stripdir=str(tree),  # tracebacks name the module's path in the package, not this temp dir
            prependdir="/var/task",
        )
        if not ok:
            raise SystemExit("compileall failed on the package's sources")
        rebuilt = Path(work) / "deployment.zip"
        with zipfile.ZipFile(rebuilt, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as target:
            for path in sorted(p for p in tree.rglob("*") if p.is_file()):
                name = path.relative_to(tree).as_posix()
                info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = modes.get(name, 0o644 << 16)
                target.writestr(info, path.read_bytes())
        rebuilt.replace(zip_path)
    return before, zip_path.stat().st_size


def main(argv: list[str]) -> int:
    runtime = RUNTIME
    if len(argv) == 3 and argv[0] == "--runtime" and argv[1].replace(".", "", 1).isdigit() and "." in argv[1]:
        major, minor = argv[1].split(".")
        runtime, argv = (int(major), int(minor)), argv[2:]
    if len(argv) != 1:
        print(
            "usage: python -m scripts.package_pyc [--runtime 3.11] out/STAGE/template/deployment.zip", file=sys.stderr
        )
        return 2
    before, after = add_bytecode(Path(argv[0]), runtime)
    print(f"{argv[0]}: hash-based .pyc added ({before / 1e6:.1f} MB -> {after / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
