"""``make audit``: pip-audit on the Lambda's pinned requirements, saying plainly what it could not check.

pip-audit skips (and still exits 0 on) any pin its vulnerability service does not know. A
skipped pin is not a clean one, so this prints how many pins were really audited. It fails on
any known vulnerability; with ``AUDIT_STRICT=1`` it also fails when a pin could not be audited.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    pip_audit = Path(sys.executable).parent / "pip-audit"
    # The Lambda's own pins and the runtime's boto3 it runs on (not bundled, still what the code uses).
    pins = ["-r", str(ROOT / "requirements.txt"), "-r", str(ROOT / "requirements-lambda-runtime.txt")]
    command = [str(pip_audit), *pins, "-f", "json", "--progress-spinner", "off"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        print(done.stdout + done.stderr)
        return done.returncode or 1
    dependencies = report.get("dependencies", [])
    skipped = [d for d in dependencies if d.get("skip_reason")]
    vulnerable = [d for d in dependencies if d.get("vulns")]
    for dep in vulnerable:
        ids = ", ".join(v["id"] for v in dep["vulns"])
        print(f"VULNERABLE {dep['name']} {dep['version']}: {ids}")
    audited = len(dependencies) - len(skipped)
    print(f"pip-audit: {audited} of {len(dependencies)} pinned packages audited, {len(vulnerable)} vulnerable.")
    if skipped:
        names = ", ".join(f"{d['name']} {d.get('version', '')}".strip() for d in skipped)
        print(f"NOT AUDITED ({len(skipped)}): the vulnerability service does not know these versions: {names}")
    if vulnerable:
        return 1
    if skipped and os.environ.get("AUDIT_STRICT") == "1":
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
