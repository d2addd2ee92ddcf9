"""The orchestrator: every server of every model, side by side in one run, interleaved across repetitions."""

from __future__ import annotations

import math
import os
import platform
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, Collection

from edgemaas.errors import UserError
from edgemaas.workspace import Workspace
from edgemaas.bench.goals import evaluate_goals
from edgemaas.bench.measure import WorkerFailed, run_once, summarize, throughput
from edgemaas.bench.results import BenchResult
from edgemaas.bench.servers import plan_servers

VERSIONS = ("numpy", "ai-edge-litert", "onnxruntime", "tensorflow", "tf-keras")
WARMUP = 10  # uncounted requests before the warm samples: first-call allocations are not steady state
WORKERS = 2


def _quiet(_: str) -> None:
    pass


def run_bench(names: list[str], ws: Workspace, *, cold_runs: int = 5, warm_requests: int = 1000,
              report: Callable[[str], None] = _quiet, throughput_requests: int | None = None,
              only: Collection[str] | None = None) -> BenchResult:
    """Measure every server of each model in `names` (built in `ws`) and evaluate the goals.

    Each repetition starts every server once, in a fresh process, in an order rotated from the last, so machine noise
    falls on all of them alike: `cold_runs` cold starts per server, and `warm_requests` warm requests per server
    spread over those processes. The packaged handler is then measured with 2 workers for throughput
    (`throughput_requests` each, default `warm_requests`). `only` keeps the servers with those ids (tensorflow,
    litert-float32, ..., handler, handler-bytecode, floor-litert, floor-ort).
    """
    if not sys.platform.startswith("linux"):  # peak RSS is read from /proc/self/status
        raise UserError("edgemaas bench runs on Linux only (it reads each server's peak memory from /proc)")
    if not names:
        raise UserError("name at least one built model to benchmark")
    if cold_runs < 1 or warm_requests < 1:
        raise UserError(f"cold_runs and warm_requests must be at least 1 (got {cold_runs} and {warm_requests})")
    per_process = math.ceil(warm_requests / cold_runs)
    scratch = Path(tempfile.mkdtemp(prefix="edgemaas-bench-"))
    try:
        plan = plan_servers(list(dict.fromkeys(names)), ws, scratch, report)
        if only is not None:
            plan.servers = [s for s in plan.servers if s.server in only]
            plan.skipped = [s for s in plan.skipped if s.server in only]
        load_before = os.getloadavg()
        runs: dict[int, list[dict]] = {i: [] for i in range(len(plan.servers))}
        failures: dict[int, str] = {}
        order = list(range(len(plan.servers)))
        for repetition in range(cold_runs):
            shift = repetition * max(1, len(order) // cold_runs)
            for i in order[shift % len(order):] + order[:shift % len(order)]:
                server = plan.servers[i]
                if i in failures:
                    continue
                report(f"run {repetition + 1}/{cold_runs}: {server.model or 'floor'} · {server.label}")
                try:
                    runs[i].append(run_once(server, per_process, WARMUP))
                except WorkerFailed as exc:
                    failures[i] = str(exc)
        rates: dict[int, float] = {}
        for i, server in enumerate(plan.servers):
            if server.throughput and i not in failures:
                report(f"throughput: {server.model} · {server.label}, {WORKERS} workers")
                try:
                    rates[i] = throughput(server, WORKERS, throughput_requests or warm_requests)
                except WorkerFailed as exc:
                    failures[i] = f"throughput: {exc}"
        servers = [summarize(s, runs[i], failures.get(i), rates.get(i)) for i, s in enumerate(plan.servers)]
        result = BenchResult(
            date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            machine=machine(load_before, os.getloadavg()), versions=versions(),
            settings={"cold_runs": cold_runs, "warm_requests": warm_requests, "requests_per_process": per_process,
                      "warm_requests_measured": per_process * cold_runs, "warmup_per_process": WARMUP,
                      "throughput_workers": WORKERS, "throughput_requests_per_worker":
                          throughput_requests or warm_requests},
            models=list(dict.fromkeys(names)), servers=servers + plan.skipped, notes=plan.notes)
        result.goals = evaluate_goals(result)
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def machine(load_before: tuple[float, ...], load_after: tuple[float, ...]) -> dict:
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "arch": platform.machine(), "os": platform.platform(),
            "python": platform.python_version(), "load_average_before": round(load_before[0], 2),
            "load_average_after": round(load_after[0], 2)}


def versions() -> dict[str, str]:
    found = {}
    for dist in VERSIONS:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    found["python"] = platform.python_version()
    found["edgemaas"] = _edgemaas_version()
    return found


def _edgemaas_version() -> str:
    from edgemaas import __version__

    return __version__


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (for the machine line of a benchmark)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"

