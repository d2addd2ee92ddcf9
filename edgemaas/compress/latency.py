"""Latency worth deciding on: every variant timed in fresh processes, interleaved, with a Lambda function's threads.

Why this way: a runtime timed in the process that just converted or evaluated something runs with warm caches, a
grown heap and whatever threads the last library left; and two variants timed minutes apart on a shared machine
see different neighbours. So each round starts one fresh process per variant, in an order that alternates between
rounds (A B C, then C B A), and the p50 pools every round's samples.

Why the number of samples is enough: the 95% confidence interval of a median from n samples lies between the order
statistics n/2 -+ 1.96 sqrt(n)/2 (distribution-free). Rounds go on until every variant's interval is within
TARGET_RELATIVE_CI of its p50 (or MAX_ROUNDS is reached, and the interval then says how sure the number is).

Threads: a Lambda function at or below 1,769 MB has at most one vCPU, so variants are timed with one thread (what
the cost model assumes). The CPU's model and int8 instructions are recorded with every measurement.
"""

from __future__ import annotations

import math
import platform
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgemaas.errors import StageFailed

LAMBDA_THREADS = 1
RUNS_PER_PROCESS = 100
WARMUP_RUNS = 10
MIN_ROUNDS = 2  # one A-B-C and one C-B-A round: order effects cancel
MAX_ROUNDS = 6
TARGET_RELATIVE_CI = 0.03  # 95% CI half-width of the p50 within 3% of it
# /proc/cpuinfo flags that speed up int8 inference: x86 VNNI (AVX-512 or AVX), AMX; ARM dot product and int8 matmul.
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def cpu_info() -> dict[str, Any]:
    """The CPU this process runs on: model name, architecture and the int8 instructions it has."""
    model, flags = "", set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    machine = platform.machine()
    return {"model": model or platform.processor() or "unknown", "arch": machine,
            "int8": [f for f in INT8_FLAGS if f in flags], "cores": _cores()}


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def describe_cpu(info: dict[str, Any]) -> str:
    names = {"avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI", "amx_int8": "AMX-INT8", "asimddp": "ARM dotprod",
             "i8mm": "ARM i8mm"}
    int8 = ", ".join(names.get(f, f) for f in info.get("int8") or []) or "no int8 dot-product instructions"
    return f"{info.get('model', '?')} ({info.get('arch', '?')}; {int8})"


def target_differs(info: dict[str, Any], arch: str) -> str:
    """A warning when the measuring CPU is not the target's kind ("" when it is)."""
    measured = "arm64" if info.get("arch") in ("aarch64", "arm64") else "x86_64"
    if measured == arch:
        return ""
    return (f"measured on {describe_cpu(info)}, not on {arch}: {arch} costs assume the same latency, which int8 "
            "variants in particular may not have there")


def peak_rss_kb() -> int:
    """This process's peak RSS (kB). VmHWM, not getrusage's ru_maxrss: a process started by fork + exec carries
    its parent's high-water mark in ru_maxrss (measured: every variant read 131.8 MB, the parent's), while VmHWM
    belongs to the new address space."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def median_ci(samples: np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """Distribution-free 95% confidence interval of the median (order statistics)."""
    ordered = np.sort(np.asarray(samples, dtype=np.float64))
    n = len(ordered)
    half = z * math.sqrt(n) / 2
    lo, hi = max(0, int(math.floor(n / 2 - half))), min(n - 1, int(math.ceil(n / 2 + half)))
    return float(ordered[lo]), float(ordered[hi])


def time_variant(variant_dir: str, input_path: str, threads: int, runs: int, warmup: int,
                 order: list[str] | None = None) -> dict[str, Any]:
    """Job for a fresh process: load the variant with `threads`, time `runs` single-request inferences (ms).

    Without `order`, `input_path` is a .npy batch and a request is its first sample; with it, a .npz holding one
    request's array per input name (a model with several inputs or dynamic shapes), fed in that order."""
    from edgemaas.runtime import load_model

    model = load_model(variant_dir, num_threads=threads)
    if order is None:
        feed, run = [np.load(input_path)[:1]], model.infer
    else:
        with np.load(input_path, allow_pickle=False) as data:
            feed = [data[name] for name in order]
        run = model.run_tensors  # every input by position, every output: what a tensor-form request runs
    for _ in range(warmup):  # the first invocations allocate and pick kernels
        run(feed)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        run(feed)
        timings.append((time.perf_counter() - start) * 1000.0)
    return {"timings_ms": timings, "peak_rss_mb": round(peak_rss_kb() / 1024.0, 1), "backend": model.backend.name,
            "cpu": cpu_info()}


def measure(variants: dict[str, Path], input_path: Path, threads: int = LAMBDA_THREADS, timeout: float = 300,
            runs: int = RUNS_PER_PROCESS, min_rounds: int = MIN_ROUNDS, max_rounds: int = MAX_ROUNDS,
            target: float = TARGET_RELATIVE_CI, order: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """p50 latency of each variant (name -> folder), interleaved across fresh processes. A variant whose process
    fails gets {"error": ...} and is not timed again. `order`: `input_path` is a named feed (see time_variant)."""
    from edgemaas.isolate import run_isolated

    samples: dict[str, list[float]] = {name: [] for name in variants}
    extra: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    rounds = 0
    names = list(variants)
    while rounds < max_rounds:
        for name in (names if rounds % 2 == 0 else names[::-1]):
            if name in errors:
                continue
            try:
                result = run_isolated(time_variant, str(variants[name]), str(input_path), threads, runs, WARMUP_RUNS,
                                      order, timeout=timeout)
            except StageFailed as exc:
                errors[name] = str(exc).splitlines()[0][:300]
                continue
            samples[name] += result["timings_ms"]
            info = extra.setdefault(name, {"peak_rss_mb": 0.0, "process_p50s_ms": []})
            info["process_p50s_ms"].append(round(float(np.median(result["timings_ms"])), 6))
            info["peak_rss_mb"] = max(info["peak_rss_mb"], result["peak_rss_mb"])
            info["cpu"], info["backend"] = result["cpu"], result["backend"]
        rounds += 1
        if rounds >= min_rounds and all(_relative_ci(s) <= target for n, s in samples.items() if n not in errors):
            break
    out: dict[str, dict[str, Any]] = {}
    for name, values in samples.items():
        if name in errors or not values:
            out[name] = {"error": errors.get(name, "no samples")}
            continue
        lo, hi = median_ci(np.array(values))
        out[name] = {"p50_ms": float(np.median(values)), "ci95_ms": [lo, hi], "samples": len(values),
                     "processes": rounds, "threads": threads, **extra[name]}
    return out


def _relative_ci(values: list[float]) -> float:
    if not values:
        return math.inf
    lo, hi = median_ci(np.array(values))
    p50 = float(np.median(values))
    return (hi - lo) / 2 / p50 if p50 > 0 else math.inf


def record_timings(rows: list[Any], measured: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Put `measure`'s results on the report card's rows (VariantResult, by variant name): the p50 replaces the
    in-process one, the rest goes to extra["latency"] (the cost model reads peak_rss_mb there). Returns the CPU
    that measured them."""
    machine = None
    for row in rows:
        result = measured.get(row.variant)
        if not result:
            continue
        if "error" in result:
            row.notes.append(f"latency: timing in a fresh process failed ({result['error']})"
                             + ("; p50 from the evaluation process" if row.latency_p50_ms is not None else ""))
            continue
        row.latency_p50_ms = result["p50_ms"]
        machine = result.pop("cpu", None) or machine
        row.extra["latency"] = result
    return machine
