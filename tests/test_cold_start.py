"""What keeps Lambda's cold starts short: the bytecode the package ships, and what app.py imports.

``make bench`` measures the cold starts themselves; these tests guard their causes.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

from scripts.package_pyc import add_bytecode

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("cryptography", "oauthlib", "requests", "jwt", "chalicelib.pages", "chalicelib.proxy", "chalicelib.web")


def test_importing_app_loads_only_what_the_authorizer_needs() -> None:
    """The authorizer's Lambda imports app.py: no route's modules may come with it."""
    code = f"import sys; import app; print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"app.py imports {done.stdout.strip()} at import time"


def test_bytecode_is_added_beside_every_module_and_needs_no_file_times(tmp_path: Path) -> None:
    package = tmp_path / "deployment.zip"
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("app.py", "VALUE = 42\n")
        archive.writestr("chalicelib/__init__.py", "")
        archive.writestr("chalicelib/thing.py", "def f():\n    return 1\n")
        archive.writestr("data.json", "{}")
    add_bytecode(package)
    tag = sys.implementation.cache_tag
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
        pyc = archive.read(f"__pycache__/app.{tag}.pyc")
    assert {f"chalicelib/__pycache__/thing.{tag}.pyc", f"chalicelib/__pycache__/__init__.{tag}.pyc"} <= names
    assert {"app.py", "data.json"} <= names
    # PEP 552 flags: bit 0 hash-based, bit 1 check_source; unchecked-hash is 0b01.
    assert int.from_bytes(pyc[4:8], "little") == 0b01
    assert pyc[:4] == importlib.util.MAGIC_NUMBER
