"""The serving benchmark's run: every (model, server) started fresh, timed to its first answer, then driven at each
concurrency in turn, its process tree's RSS sampled throughout (servers.py, loadgen.py, serving.py)."""

from __future__ import annotations

import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgemaas.edge_entry.cli import BATCH_INPUT_VALUES, DEFAULT_MAX_BATCH
from edgemaas.errors import UserError
from edgemaas.workspace import Workspace
from edgemaas.bench.mobilenet import NAME as MOBILENET, SHAPE as MOBILENET_SHAPE, make_mobilenet
from edgemaas.bench.run import cpu_name
from edgemaas.bench.serving import (REPO, SERVERS, RssSampler, ServerSpec, drive, ensure_venv, installed_bytes,
                                    package_version, runtime_pins, start_server, stop_server, wait_first_answer)

BUILTINS = ("linear", "cnn", "rnn", "nlp")
DEFAULT_MODELS = (*BUILTINS, MOBILENET)
CONCURRENCIES = (1, 8, 32)
MB = 1024 * 1024

Report = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def model_inputs(ws: Workspace, model: str) -> tuple[Path, Any, bool]:
    """(variant folder, one raw sample, whether the sample is text) for a model key: a built-in (its LiteRT
    float32 variant), `<built-in>-onnx` (its ONNX float32 variant) or `mobilenet` (made here)."""
    from edgemaas.pipeline import smoke_event
    from edgemaas.runtime import read_manifest

    if model == MOBILENET:
        folder = make_mobilenet(ws.dist / "bench" / "models" / MOBILENET / "tflite-float32")
        sample = np.random.default_rng(0).random(MOBILENET_SHAPE).round(4).tolist()
        return folder, sample, False
    name, _, runtime = model.partition("-")
    variant = "onnx-float32" if runtime == "onnx" else "tflite-float32"
    folder = ws.variant_dir(name, variant)
    if not (folder / "manifest.json").exists():
        raise UserError(f"{model}: no {variant} in {ws.model_dir(name)}; run `edgemaas build {name}` first")
    sample = smoke_event(ws, name, samples=1)["inputs"][0]
    text = read_manifest(folder).preprocessing[0].get("kind") == "text"
    return folder, sample, text


def run_serving(ws: Workspace, models: Sequence[str] = DEFAULT_MODELS, servers: Sequence[str] | None = None,
                concurrencies: Sequence[int] = CONCURRENCIES, requests: int = 1000, warmup: int = 100,
                venv_root: Path | None = None, report: Report = _quiet) -> dict[str, Any]:
    """Measure every server in `servers` (ids of serving.SERVERS; default all) on every model; the result dict."""
    specs = [s for s in SERVERS if servers is None or s.server in servers]
    unknown = set(servers or ()) - {s.server for s in SERVERS}
    if unknown or not specs:
        raise UserError(f"unknown server(s) {', '.join(sorted(unknown)) or '(none given)'}; choose from "
                        f"{', '.join(s.server for s in SERVERS)}")
    venv_root = venv_root or REPO / "build" / "peers"
    inputs = {model: model_inputs(ws, model) for model in models}  # a model that is not built: before any install
    venvs = {s.venv: ensure_venv(venv_root, s.venv, s.package, report) for s in specs}
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    logs = Path(tempfile.mkdtemp(prefix="edgemaas-serving-"))
    for turn, model in enumerate(models):
        folder, sample, text = inputs[model]
        order = specs[turn % len(specs):] + specs[:turn % len(specs)]  # rotated: no server always goes first
        for spec in order:
            report(f"{model} · {spec.server}")
            rows.extend(_measure(spec, venvs[spec.venv], model, folder, sample, text, concurrencies, requests,
                                 warmup, logs))
    rows.sort(key=lambda r: (list(models).index(r["model"]), [s.server for s in specs].index(r["server"]),
                             r["concurrency"]))
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "load_average_before": round(load_before[0], 2),
                    "load_average_after": round(os.getloadavg()[0], 2)},
        "versions": {**{s.server: package_version(venvs[s.venv], s.package) for s in specs},
                     "runtimes": " ".join(runtime_pins())},
        "installed_mb": {s.server: round(installed_bytes(venvs[s.venv], s.package is None) / MB, 1) for s in specs},
        "settings": {"requests": requests, "warmup": warmup, "concurrencies": list(concurrencies),
                     "max_batch": 32, "max_wait_ms": 2.0, "logs": str(logs),
                     "our_max_batch": f"{DEFAULT_MAX_BATCH}, halved while a batch would hold more than "
                                      f"{BATCH_INPUT_VALUES} input values"},
        "models": list(models),
        "rows": rows,
    }


def _measure(spec: ServerSpec, venv: Path, model: str, folder: Path, sample: Any, text: bool,
             concurrencies: Sequence[int], requests: int, warmup: int, logs: Path) -> list[dict[str, Any]]:
    base = {"server": spec.server, "model": model, "batching": spec.batching}
    began = time.monotonic()
    running = start_server(spec, venv, folder, sample, text, logs)
    sampler = RssSampler(running.process.pid)
    rows = []
    try:
        start_s = wait_first_answer(running, began)
        for concurrency in concurrencies:
            sampler.reset()
            result = drive(running, concurrency, requests, warmup)
            rows.append({**base, "concurrency": concurrency, "requests": result["requests"],
                         "errors": result["errors"], "rps": result["rps"], "p50_ms": result["p50_ms"],
                         "p90_ms": result["p90_ms"], "p99_ms": result["p99_ms"],
                         "rss_mb": round(sampler.peak / MB, 1), "start_s": round(start_s, 3),
                         "error_samples": result["error_samples"]})
    except UserError as exc:
        done = {r["concurrency"] for r in rows}
        rows.extend({**base, "concurrency": c, "requests": requests, "errors": requests, "rps": 0.0,
                     "p50_ms": None, "p90_ms": None, "p99_ms": None, "rss_mb": round(sampler.peak / MB, 1),
                     "start_s": None, "error_samples": [str(exc)[:500]]} for c in concurrencies if c not in done)
    finally:
        sampler.stop()
        stop_server(running)
    return rows
