"""Render ``infra/resources.json`` for one stage: the merge template ``make package`` hands to chalice.

Beside the template's resources it declares the path parameter of each greedy route (``{proxy+}``) in the
API's swagger: Chalice declares only its ``{name}`` view arguments, and API Gateway's import expects
every path variable of a path declared, ``{proxy+}``'s ``proxy`` included. The routes come from
``app.app.routes``, so the declarations follow the code. Chalice's merge (``TemplateDeepMerger``) merges
dictionaries and *replaces* lists, so each method gets its whole parameter list, the ``{name}`` ones
included, in path order.

``python -m scripts.infra --stage prod out/prod/merge.json``
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from scripts.local_aws import TEMPLATE

STAGES = ("dev", "prod")
# API Gateway's path variables: {name} (one segment) and, last, the greedy {name+}.
_PATH_VARIABLE = re.compile(r"\{(\w+)\+?\}")


def path_parameters(path: str) -> list[dict[str, Any]]:
    """The swagger parameters API Gateway needs for ``path``: every variable, greedy or not, in order."""
    return [{"name": name, "in": "path", "required": True, "type": "string"} for name in _PATH_VARIABLE.findall(path)]


def greedy_paths(routes: Mapping[str, Iterable[str]]) -> dict[str, dict[str, Any]]:
    """Swagger ``paths`` entries for the routes with a greedy variable: each method's full parameter list."""
    return {
        path: {method.lower(): {"parameters": path_parameters(path)} for method in methods}
        for path, methods in routes.items()
        if path.endswith("+}")
    }


def app_routes() -> dict[str, list[str]]:
    """The app's routes and their methods (importing app.py runs no AWS call; chalice package imports it too)."""
    from app import app

    return {path: list(methods) for path, methods in app.routes.items()}


def render(
    stage: str, template: Path = TEMPLATE, routes: Mapping[str, Iterable[str]] | None = None
) -> dict[str, object]:
    """The template with its Stage parameter pinned to ``stage`` (so prod gets deletion protection), and the
    greedy routes' path parameters in the API's definition."""
    if stage not in STAGES:
        raise SystemExit(f"stage must be one of {', '.join(STAGES)}")
    data = json.loads(template.read_text())
    data["Parameters"]["Stage"]["Default"] = stage
    definition = data["Resources"]["RestAPI"]["Properties"].setdefault("DefinitionBody", {})
    paths = greedy_paths(app_routes() if routes is None else routes)
    if paths:
        definition.setdefault("paths", {}).update(paths)
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
