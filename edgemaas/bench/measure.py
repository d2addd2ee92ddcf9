"""Start a server's worker in a fresh, isolated interpreter and read its timings.

`python -I -S -B`: no environment variables of Python's, no site-packages, no script folder on the path, no bytecode
written (Lambda's /var/task is read-only, so every cold start there runs whatever bytecode the package carries and
compiles the rest). Cold start is the parent's clock just before the process starts to the worker's clock at its
first result (both wall clock, same machine).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgemaas.bench.results import ServerResult, Stats
from edgemaas.bench.servers import Server
from edgemaas.bench.worker import MARKER

WORKER = Path(__file__).with_name("worker.py")
TIMEOUT_S = 900


class WorkerFailed(RuntimeError):
    pass


def command(config: dict[str, Any]) -> list[str]:
    return [sys.executable, "-I", "-S", "-B", str(WORKER), json.dumps(config)]


def environment(server: Server) -> dict[str, str]:
    """A small environment: the server's own variables and what any process needs, nothing of the caller's."""
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    return {**base, **server.env}


def run_once(server: Server, requests: int, warmup: int) -> dict[str, Any]:
    """One fresh process: cold start, then `requests` warm requests (after `warmup` uncounted ones)."""
    config = {**server.config, "requests": requests, "warmup": warmup}
    with tempfile.TemporaryFile() as errors:
        started = time.time()
        try:
            done = subprocess.run(command(config), stdout=subprocess.PIPE, stderr=errors, text=True,
                                  env=environment(server), timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise WorkerFailed(f"no result within {TIMEOUT_S} s") from None
        result = _parse(done.stdout, done.returncode, errors)
    result["cold_start_ms"] = (result["first_result"] - started) * 1000
    result["spawn_ms"] = (result["started"] - started) * 1000  # interpreter start until the worker's first line
    return result


def throughput(server: Server, workers: int, requests: int) -> float:
    """Requests per second with `workers` processes serving `requests` each, started together once all are warm."""
    config = {**server.config, "throughput": requests}
    processes, sinks = [], []
    try:
        for _ in range(workers):
            sink = tempfile.TemporaryFile()
            sinks.append(sink)
            processes.append(subprocess.Popen(command(config), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                              stderr=sink, text=True, env=environment(server)))
        for process in processes:  # the handler prints its init line before READY
            for line in process.stdout:
                if line.strip() == "READY":
                    break
            else:
                process.wait()
                raise WorkerFailed(_failure(process.returncode, sinks[processes.index(process)]))
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        results = []
        for process, sink in zip(processes, sinks):
            out, _ = process.communicate(timeout=TIMEOUT_S)
            results.append(_parse(out, process.returncode, sink))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for sink in sinks:
            sink.close()
    span = max(r["end"] for r in results) - min(r["begin"] for r in results)
    return sum(r["requests"] for r in results) / span if span > 0 else float("nan")


def _parse(stdout: str, code: int, errors: Any) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith(MARKER)]
    if code != 0 or not lines:
        raise WorkerFailed(_failure(code, errors))
    return json.loads(lines[-1][len(MARKER):])


def _failure(code: int | None, errors: Any) -> str:
    errors.seek(0)
    tail = errors.read().decode(errors="replace").strip().splitlines()[-6:]
    return f"the worker exited with code {code}: " + " | ".join(tail)


def summarize(server: Server, runs: list[dict[str, Any]], failure: str | None, rps: float | None) -> ServerResult:
    """The runs of one server folded into its record: medians of cold starts and phases, pooled warm samples."""
    if not runs:
        return server.record(status="failed", note=failure or "no run completed")
    phases: dict[str, float] = {}
    for key in runs[0]["phases"]:
        phases[key] = statistics.median(r["phases"][key] for r in runs)
    phases["spawn_ms"] = statistics.median(r["spawn_ms"] for r in runs)
    phases["first_request_ms"] = statistics.median(r["first_request_ms"] for r in runs)
    cold = [r["cold_start_ms"] for r in runs]
    modules = third_party({m for r in runs for m in r.get("modules", [])})
    return server.record(
        status="measured", note=f"{len(runs)} runs; failed later: {failure}" if failure else "",
        cold_start_ms=cold, cold_start_median_ms=statistics.median(cold), phases_ms=phases,
        warm=Stats.of([x for r in runs for x in r.get("warm_ms", [])]),
        call=Stats.of([x for r in runs for x in r.get("call_ms", [])]),
        raw=Stats.of([x for r in runs for x in r.get("raw_ms", [])]),
        throughput_rps=rps, peak_rss_mb=max(r["peak_rss_mb"] for r in runs),
        third_party_modules=modules)


# Named first when a server imports them: what decides its start-up cost.
RUNTIMES = ("tensorflow", "tf_keras", "keras", "onnxruntime", "ai_edge_litert", "tflite_runtime", "numpy")


def third_party(modules: set[str]) -> list[str]:
    """Top-level modules outside the standard library, the runtimes first; private and generated ones (autograph
    files, import hooks) left out."""
    public = {m for m in modules - set(sys.stdlib_module_names) if m.isidentifier() and not m.startswith("_")}
    return [m for m in RUNTIMES if m in public] + sorted(public - set(RUNTIMES))
