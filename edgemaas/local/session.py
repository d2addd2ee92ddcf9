"""Invoke a Lambda package locally: one event after another through the runtime client process, measured,
with Lambda's timeout, memory, payload limits and cold starts after a crash."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemaas.local.errors import LocalLambdaError
from edgemaas.local.process import RuntimeProcess, exit_reason
from edgemaas.local.runtime_api import MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, Invocation
from edgemaas.local.runtime_client import probe_python, runtime_client_dir
from edgemaas.local.unzip import check_handler, prepare_layers, prepare_package

# Lambda gives the init phase 10 s (on-demand); we add the invoke timeout
# because Lambda re-runs a slow init inside the first invoke.
_INIT_LIMIT_S = 10.0
_POLL_S = 0.01  # How often we check the process for death, OOM and timeout.
_ACCOUNT_ID = "000000000000"
_LAMBDA_PATH = "/usr/local/bin:/usr/bin:/bin"  # Lambda's PATH, without /var/lang/bin.


@dataclass(frozen=True)
class InvokeResult:
    """The outcome of one invoke, shaped like Lambda's Invoke response and REPORT line."""

    request_id: str
    payload: Any  # Parsed JSON response, or the raw text if not JSON.
    function_error: str | None  # None on success, else "Unhandled" (X-Amz-Function-Error).
    error_message: str | None  # "ErrorType: message", or "Task timed out after N seconds".
    init_duration_ms: float | None  # Only on cold invokes (first invoke of a process).
    duration_ms: float
    max_memory_used_mb: int
    logs: str  # stdout+stderr of the function during this invoke (cold: including init).
    memory_size_mb: int = 512  # Configured memory; only needed for report_line().

    def report_line(self) -> str:
        """Return the REPORT line Lambda would log for this invoke."""
        billed = max(1, math.ceil(self.duration_ms))  # Lambda bills in 1 ms steps.
        line = (
            f"REPORT RequestId: {self.request_id} Duration: {self.duration_ms:.2f} ms "
            f"Billed Duration: {billed} ms Memory Size: {self.memory_size_mb} MB "
            f"Max Memory Used: {self.max_memory_used_mb} MB"
        )
        if self.init_duration_ms is not None:
            line += f" Init Duration: {self.init_duration_ms:.2f} ms"
        return line


@dataclass(frozen=True)
class _Config:
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    function_arn: str
    memory_mb: int
    timeout_s: float

    def new_session(self) -> RuntimeProcess:
        return RuntimeProcess(self.cmd, self.env, self.cwd, self.function_arn, self.timeout_s)


def _error_text(body: Any) -> str:
    """'ErrorType: message' from a runtime error body."""
    if isinstance(body, dict):
        etype, message = body.get("errorType") or "", body.get("errorMessage") or ""
        return f"{etype}: {message}" if etype and message else str(etype or message)
    return str(body)


def _parse_payload(data: bytes) -> Any:
    text = data.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _platform_error(rid: str, etype: str, message: str) -> dict[str, str]:
    """Error payload Lambda itself produces when the runtime cannot answer."""
    return {"errorType": etype, "errorMessage": f"RequestId: {rid} Error: {message}"}


class _Failure(Exception):
    """Internal: the invoke ended without a response from the runtime."""

    def __init__(self, payload: dict[str, str], message: str) -> None:
        super().__init__(message)
        self.payload, self.message = payload, message


def _watch(session: RuntimeProcess, cfg: _Config, until: threading.Event, deadline: float,
           rid: str, on_timeout: str) -> None:
    """Wait for ``until``; raise _Failure on runtime death, OOM or deadline."""
    limit_kb = cfg.memory_mb * 1024
    while not until.wait(_POLL_S):
        if not session.alive():
            if until.is_set():  # It answered just before exiting.
                return
            reason = f"Runtime exited with error: {exit_reason(session.proc.returncode)}"
            raise _Failure(_platform_error(rid, "Runtime.ExitError", reason),
                           f"Runtime.ExitError: {reason}")
        if session.rss_kb() > limit_kb:
            session.kill()
            reason = "Runtime exited with error: signal: killed"
            raise _Failure(_platform_error(rid, "Runtime.OutOfMemory", reason),
                           f"Runtime.OutOfMemory: {reason}")
        if time.monotonic() > deadline:
            session.kill()
            raise _Failure(_platform_error(rid, "Sandbox.Timedout", on_timeout), on_timeout)


def _init_failure(session: RuntimeProcess, rid: str, cfg: _Config, failure: _Failure | None
                  ) -> InvokeResult:
    """Result for an invoke whose process never asked for it (init crashed / hung)."""
    session.wait_exit(timeout=2.0)  # Let it finish writing its traceback.
    api = session.api
    ended = api.init_error_at or time.monotonic()
    if api.init_error is not None:  # Runtime posted the error itself (import error, ...).
        payload = _parse_payload(api.init_error)
        message = _error_text(payload)
    elif failure is not None:
        payload, message = failure.payload, failure.message
    else:
        reason = f"Runtime exited with error: {exit_reason(session.proc.returncode)}"
        payload = _platform_error(rid, "Runtime.ExitError", reason)
        message = f"Runtime.ExitError: {reason}"
    return InvokeResult(
        request_id=rid, payload=payload, function_error="Unhandled", error_message=message,
        init_duration_ms=(ended - session.started) * 1000, duration_ms=0.0,
        max_memory_used_mb=math.ceil(session.peak_kb / 1024), logs=session.output.text(0),
        memory_size_mb=cfg.memory_mb)


def _invoke_once(session: RuntimeProcess, cfg: _Config, body: bytes) -> InvokeResult | None:
    """Send one event to the session's process. None = warm process died before taking it."""
    rid = str(uuid.uuid4())
    cold = session.served == 0
    inv = Invocation(rid, body)
    session.api.submit(inv)
    try:
        init_deadline = time.monotonic() + _INIT_LIMIT_S + cfg.timeout_s
        _watch(session, cfg, inv.handed_out, init_deadline, rid,
               f"Task timed out after {cfg.timeout_s:.2f} seconds (still initialising; "
               f"Lambda allows {_INIT_LIMIT_S:.0f} s of init plus the function timeout)")
    except _Failure as failure:
        if not cold:
            return None
        session.kill()
        return _init_failure(session, rid, cfg, failure)

    session.served += 1
    init_ms = (session.api.first_next - session.started) * 1000 if cold else None
    timeout_msg = f"Task timed out after {cfg.timeout_s:.2f} seconds"
    log_from = 0 if cold else inv.log_start  # Cold invokes also show the init output.
    try:
        _watch(session, cfg, inv.done, inv.start + cfg.timeout_s, rid, timeout_msg)
    except _Failure as failure:
        # Lambda reports exactly the timeout as the duration of a timed-out invoke.
        elapsed = cfg.timeout_s if failure.message == timeout_msg else time.monotonic() - inv.start
        session.kill()
        session.wait_exit(timeout=2.0)
        return InvokeResult(
            request_id=rid, payload=failure.payload, function_error="Unhandled",
            error_message=failure.message, init_duration_ms=init_ms,
            duration_ms=elapsed * 1000, max_memory_used_mb=math.ceil(session.peak_kb / 1024),
            logs=session.output.text(log_from), memory_size_mb=cfg.memory_mb)

    if inv.kind == "too-large":
        payload: Any = {"errorType": "Function.ResponseSizeTooLarge",
                        "errorMessage": "Response payload size exceeded maximum allowed "
                                        f"payload size ({MAX_RESPONSE_BYTES} bytes)."}
    else:
        payload = _parse_payload(inv.result)
    failed = inv.kind != "response"
    return InvokeResult(
        request_id=rid, payload=payload, function_error="Unhandled" if failed else None,
        error_message=_error_text(payload) if failed else None, init_duration_ms=init_ms,
        duration_ms=(inv.end - inv.start) * 1000, max_memory_used_mb=session.peak_mb(),
        logs=session.output.text(log_from, inv.log_end), memory_size_mb=cfg.memory_mb)


def _encode_event(index: int, event: Any) -> bytes:
    """JSON-encode an event; bytes are sent verbatim (already-encoded payloads)."""
    if isinstance(event, (bytes, bytearray)):
        body = bytes(event)
    else:
        try:
            body = json.dumps(event).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise LocalLambdaError(f"event #{index} is not JSON-serialisable: {exc}") from exc
    if len(body) > MAX_REQUEST_BYTES:
        # Lambda's Invoke API refuses it before any runtime sees it (RequestTooLargeException, HTTP 413).
        raise LocalLambdaError(
            f"event #{index} is {len(body)} bytes; Lambda refuses synchronous invoke requests over "
            f"{MAX_REQUEST_BYTES} bytes (RequestTooLargeException: Request must be smaller than "
            f"{MAX_REQUEST_BYTES} bytes for the InvokeFunction operation)")
    return body


def _child_env(*, task_root: Path, opt: Path, ric_dir: Path, handler: str,
               function_name: str, memory_mb: int, pyver: str,
               env: dict[str, str] | None) -> dict[str, str]:
    """Build the runtime's environment from scratch, like Lambda's (nothing inherited)."""
    overrides = dict(env or {})
    region = overrides.get("AWS_REGION") or overrides.get("AWS_DEFAULT_REGION") or "us-east-1"
    # Same order as Lambda's sys.path: task root, layers, then the runtime client.
    path = [task_root, opt / "python" / "lib" / f"python{pyver}" / "site-packages",
            opt / "python", ric_dir]
    stream = f"{time.strftime('%Y/%m/%d', time.gmtime())}/[$LATEST]{uuid.uuid4().hex}"
    base = {
        "PYTHONPATH": os.pathsep.join(str(p) for p in path if p.is_dir()),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PATH": f"{_LAMBDA_PATH}:{opt / 'bin'}",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "LAMBDA_TASK_ROOT": str(task_root),
        "LAMBDA_RUNTIME_DIR": str(ric_dir),
        "_HANDLER": handler,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{pyver}",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": stream,
    }
    return {**base, **overrides}


def invoke_local(
    package: Path,
    events: list[Any],
    *,
    handler: str = "handler.handler",
    python: str = sys.executable,
    memory_mb: int = 512,
    timeout_s: float = 30.0,
    env: dict[str, str] | None = None,
    layers: Sequence[Path] = (),
    function_name: str = "edgemaas-local",
) -> list[InvokeResult]:
    """Invoke a Lambda package locally with each event, in order, through awslambdaric.

    Events go to one warm process; after a timeout, OOM or crash a fresh process
    (cold start) serves the rest, as on Lambda. ``env`` overrides the runtime's
    environment (except AWS_LAMBDA_RUNTIME_API). Raises LocalLambdaError for setup
    problems; function failures are reported in the results.
    """
    if memory_mb <= 0 or timeout_s <= 0:
        raise LocalLambdaError("memory_mb and timeout_s must be positive")
    bodies = [_encode_event(i, event) for i, event in enumerate(events)]
    ric_dir = runtime_client_dir(python)
    info = probe_python(python)
    pyver = f"{info.major}.{info.minor}"
    with tempfile.TemporaryDirectory(prefix="edgemaas-lambda-") as tmp:
        task_root = prepare_package(Path(package), Path(tmp))
        opt = prepare_layers(layers, Path(tmp))
        layer_paths = [opt / "python", opt / "python" / "lib" / f"python{pyver}" / "site-packages"]
        check_handler(handler, [task_root, *layer_paths], task_root)
        child_env = _child_env(task_root=task_root, opt=opt, ric_dir=ric_dir, handler=handler,
                                function_name=function_name, memory_mb=memory_mb,
                                pyver=pyver, env=env)
        cfg = _Config(
            # -S: no site module, so the dev env's site-packages never reach sys.path.
            cmd=[python, "-S", "-s", "-m", "awslambdaric", handler],
            env=child_env, cwd=task_root,
            function_arn=(f"arn:aws:lambda:{child_env['AWS_REGION']}:{_ACCOUNT_ID}"
                          f":function:{function_name}"),
            memory_mb=memory_mb, timeout_s=timeout_s)
        return _run_events(cfg, bodies)


def _run_events(cfg: _Config, bodies: list[bytes]) -> list[InvokeResult]:
    """Feed events to runtime processes, replacing a process whenever it is gone."""
    results: list[InvokeResult] = []
    session: RuntimeProcess | None = None
    try:
        for body in bodies:
            result = None
            for _attempt in range(2):  # A warm process that died between invokes: retry cold.
                if session is None or not session.alive():
                    if session is not None:
                        session.close()
                    session = cfg.new_session()
                result = _invoke_once(session, cfg, body)
                if result is not None:
                    break
                session.close()
                session = None
            if result is None:
                raise LocalLambdaError("the runtime process keeps exiting between invokes")
            # After a timeout, OOM, crash or init failure the process is gone, and the
            # next event gets a fresh one (cold start), like Lambda's sandbox reset.
            results.append(result)
    finally:
        if session is not None:
            session.close()
    return results
