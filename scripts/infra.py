"""Render ``infra/resources.json`` for one stage: the merge template ``make package`` hands to chalice.

``python -m scripts.infra --stage prod out/prod/merge.json``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scripts.local_aws import TEMPLATE

STAGES = ("dev", "prod")


def render(stage: str, template: Path = TEMPLATE) -> dict[str, object]:
    """The template with its Stage parameter pinned to ``stage`` (so prod gets deletion protection)."""
    if stage not in STAGES:
        raise SystemExit(f"stage must be one of {', '.join(STAGES)}")
    data = json.loads(template.read_text())
    data["Parameters"]["Stage"]["Default"] = stage
    return dict(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", required=True, choices=STAGES)
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(render(args.stage), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
