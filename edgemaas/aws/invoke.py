"""Invoke a deployed alias: once (RequestResponse, optionally with the log tail), or a JSONL batch in parallel."""

from __future__ import annotations

import base64
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from botocore.exceptions import ClientError

from edgemaas.errors import UserError
from edgemaas.fsutil import atomic_path
from edgemaas.aws import Aws
from edgemaas.aws.errors import error_code, retryable, translate, with_retries

RETRY_BASE_DELAY = 0.5  # seconds; doubled on each retry (with jitter)


@dataclass
class InvokeResult:
    payload: Any
    function_error: str | None
    logs: str
    version: str | None

    @property
    def error_message(self) -> str | None:
        """The failure a caller should see: an unhandled error, or the handler's rejection of the request."""
        if self.function_error:
            if isinstance(self.payload, dict):
                return f"{self.payload.get('errorType', self.function_error)}: {self.payload.get('errorMessage')}"
            return str(self.payload)
        if isinstance(self.payload, dict) and isinstance(self.payload.get("error"), dict):
            return f"the function rejected the request: {self.payload['error'].get('message')}"
        return None


def invoke_client(aws: Aws) -> Any:
    """A Lambda client without botocore's own retries: ours back off and are counted per line."""
    from botocore.config import Config

    config = Config(retries={"total_max_attempts": 1}, read_timeout=900, connect_timeout=10,
                    max_pool_connections=64)
    return aws.session.client("lambda", region_name=aws.region, config=config)


def check_deployed(client: Any, function: str, stage: str) -> str:
    """The version the alias points at; a clear UserError when the function or the stage is not there."""
    try:
        return client.get_alias(FunctionName=function, Name=stage)["FunctionVersion"]
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
    try:
        aliases = [a["Name"] for a in client.list_aliases(FunctionName=function).get("Aliases", [])]
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        region = client.meta.region_name
        raise UserError(f"{function} is not deployed in {region}; deploy it first (edgemaas deploy NAME --stage "
                        f"{stage}), or pass --region / --function-name") from None
    stages = ", ".join(aliases) if aliases else "none"
    raise UserError(f"{function} has no stage {stage!r} (its stages: {stages}); deploy with --stage {stage}")


def invoke_attempts() -> int:
    """Attempts per invoke: AWS_MAX_ATTEMPTS when set (as for every other call), else 5."""
    try:
        return max(1, int(os.environ.get("AWS_MAX_ATTEMPTS", "5")))
    except ValueError:
        return 5


def invoke(client: Any, function: str, stage: str, event: Any, logs: bool = False, attempts: int | None = None,
           base_delay: float | None = None) -> InvokeResult:
    """One synchronous invoke of function:stage, retried on throttling and 5xx."""
    attempts = attempts or invoke_attempts()
    kwargs: dict[str, Any] = {"FunctionName": function, "Qualifier": stage, "InvocationType": "RequestResponse",
                              "Payload": json.dumps(event).encode()}
    if logs:
        kwargs["LogType"] = "Tail"
    response = with_retries(lambda: client.invoke(**kwargs), attempts=attempts,
                            base_delay=RETRY_BASE_DELAY if base_delay is None else base_delay)
    body = response["Payload"].read()
    try:
        payload = json.loads(body) if body else None
    except json.JSONDecodeError:
        payload = body.decode(errors="replace")
    tail = base64.b64decode(response["LogResult"]).decode(errors="replace") if response.get("LogResult") else ""
    return InvokeResult(payload, response.get("FunctionError"), tail, response.get("ExecutedVersion"))


# ----------------------------------------------------------------------------------------------------------- batch

@dataclass
class BatchSummary:
    total: int
    skipped: int  # answered by an earlier run
    succeeded: int
    failed: int
    output: Path


def _key(line_number: int, event: Any) -> str:
    """Lines are matched across runs by their "id" field when they have one, else by line number."""
    if isinstance(event, dict) and "id" in event:
        return f"id:{json.dumps(event['id'], sort_keys=True)}"
    return f"line:{line_number}"


def read_batch(path: Path) -> Iterator[tuple[int, str, Any]]:
    """(line number, key, event) for each non-blank line; a line that is not JSON is refused with its number."""
    with path.open() as lines:
        for number, text in enumerate(lines, 1):
            if not text.strip():
                continue
            try:
                event = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            yield number, _key(number, event), event


def _answered(output: Path) -> dict[str, dict]:
    """Lines an earlier run answered (errors are not answers: they are tried again)."""
    done: dict[str, dict] = {}
    if not output.exists():
        return done
    for text in output.read_text().splitlines():
        try:
            row = json.loads(text)
        except json.JSONDecodeError:
            continue  # a line cut short by an interrupted run
        if isinstance(row, dict) and "key" in row:
            done[row["key"]] = row  # the latest answer for a line wins
    return {k: v for k, v in done.items() if "error" not in v}


def run_batch(client: Any, function: str, stage: str, source: Path, output: Path, concurrency: int = 4,
              attempts: int | None = None, progress: Callable[[int, int], None] | None = None,
              advance: Callable[[bool], None] | None = None) -> BatchSummary:
    """Invoke function:stage once per line of source (JSONL) with at most `concurrency` in flight.

    Each answer is appended to output as soon as it arrives ({"line", "id"?, "key", "response"} or, for a failed
    line, "error" instead of / beside "response"), so an interrupted run loses nothing; at the end output is
    rewritten in input order, one line per input. A re-run skips the lines already answered."""
    lines = list(read_batch(source))
    keys = [key for _, key, _ in lines]
    if len(set(keys)) != len(keys):
        duplicate = next(k for k in keys if keys.count(k) > 1)
        raise UserError(f"{source}: two lines share {duplicate.replace('id:', 'the id ')}; ids must be unique")
    answered = _answered(output)
    todo = [(n, k, e) for n, k, e in lines if k not in answered]
    if progress:
        progress(len(lines), len(lines) - len(todo))
    lock = threading.Lock()
    results: dict[str, dict] = dict(answered)
    counts = {"ok": 0, "failed": 0}
    output.parent.mkdir(parents=True, exist_ok=True)

    def one(number: int, key: str, event: Any) -> dict:
        row: dict[str, Any] = {"line": number, "key": key}
        if isinstance(event, dict) and "id" in event:
            row["id"] = event["id"]
            event = {k: v for k, v in event.items() if k != "id"}  # the id is ours, not the function's
        try:
            result = invoke(client, function, stage, event, attempts=attempts)
        except ClientError as exc:
            error = translate(exc)
            row["error"] = str(error) if error else str(exc)
            row["retryable"] = retryable(exc)
            return row
        except Exception as exc:  # a connection reset, a timeout: recorded, the batch goes on
            row["error"] = f"{type(exc).__name__}: {exc}"
            return row
        row["response"] = result.payload
        if result.error_message:
            row["error"] = result.error_message
        return row

    with output.open("a") as sink, ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(one, *line) for line in todo]
        for future in as_completed(futures):
            row = future.result()
            with lock:
                sink.write(json.dumps(row) + "\n")
                sink.flush()
                results[row["key"]] = row
                counts["failed" if "error" in row else "ok"] += 1
            if advance:
                advance("error" not in row)
    with atomic_path(output) as tmp, tmp.open("w") as final:
        for _, key, _ in lines:
            if key in results:
                final.write(json.dumps(results[key]) + "\n")
    return BatchSummary(len(lines), len(lines) - len(todo), counts["ok"], counts["failed"], output)
