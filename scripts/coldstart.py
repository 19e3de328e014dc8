"""One cold start, timed in a fresh runtime interpreter (``make bench`` runs it many times).

    .venv-lambda/bin/python -B -s scripts/coldstart.py baseline|api|authorizer TASK_ROOT EVENT.json

Prints ``{"seconds": ..., "cpu_seconds": ...}``: wall-clock and CPU time from before the first import to
the first answer (CPU time is steadier on a busy machine; it leaves out waiting for moto and Jira).

- ``baseline``: import the runtime's boto3 and make one DynamoDB GetItem (EVENT: table and key);
- ``api``: import ``app`` (the handler ``app.app``) and answer EVENT, an API Gateway event;
- ``authorizer``: import ``app`` (the handler ``app.api_key_auth``) and answer EVENT, a TOKEN event.

Only ``sys``, ``json`` and ``time`` are imported before the clock starts, for all three alike.
The task root comes first on ``sys.path``, as ``/var/task`` does in Lambda; ``-B`` keeps the
directory as read-only as Lambda's: only the bytecode the package ships is used.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


class _Context:
    function_name = "jira-oauth-broker-bench"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:jira-oauth-broker-bench"
    memory_limit_in_mb = 1024
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    log_group_name = "/aws/lambda/jira-oauth-broker-bench"
    log_stream_name = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 28_000


def main(kind: str, task_root: str, event_file: str) -> int:
    with open(event_file) as handle:
        event: dict[str, Any] = json.load(handle)
    # The task root first, as /var/task in Lambda; the baseline has none: only the runtime's boto3.
    sys.path[0:1] = [] if kind == "baseline" else [task_root]
    start, cpu_start = time.perf_counter(), time.process_time()
    if kind == "baseline":
        import boto3

        boto3.client("dynamodb").get_item(TableName=event["table"], Key=event["key"])
        ok = True
    elif kind == "api":
        import app

        answer = app.app(event, _Context())
        ok = answer["statusCode"] == 200
    elif kind == "authorizer":
        import app

        policy = app.api_key_auth(event, _Context())
        ok = any(s["Effect"] == "Allow" and s["Resource"] for s in policy["policyDocument"]["Statement"])
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
