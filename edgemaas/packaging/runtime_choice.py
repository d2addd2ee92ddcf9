"""`--runtime auto`: serve a model with LiteRT or ONNX Runtime, whichever measures faster here, and say why.

Each candidate (the gate's TFLite choice and its ONNX choice) runs in fresh processes that import only the shipped
runtime: cold start (import + model load + first answer) and warm single-sample latency on held-out samples. The
runs are interleaved so machine noise hits both alike. The score is what a serverless function pays: one cold start
amortised over `REQUESTS_PER_COLD_START` warm requests. The choice and its figures are recorded in the chosen
variant's manifest (`provenance.runtime_choice`) and reused while both candidates' files are unchanged.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgemaas.errors import UserError
from edgemaas.runtime import read_manifest
from edgemaas.workspace import Workspace

COLD_RUNS = 3
WARM_REQUESTS = 300
REQUESTS_PER_COLD_START = 100  # a Lambda execution environment typically serves many requests between cold starts
FORMATS = ("tflite", "onnx")

# Runs in a fresh interpreter: only the shipped runtime (numpy + one inference runtime) is imported.
_PROBE = r"""
import json, sys, time
started = time.perf_counter()
from edgemaas.runtime import load_model
import numpy as np
model = load_model(sys.argv[1], num_threads=1)
with np.load(sys.argv[2], allow_pickle=False) as data:
    samples = data["x_test"][:64]
model.predict(samples[:1].tolist())
cold_ms = (time.perf_counter() - started) * 1000
warm = []
for i in range(int(sys.argv[3])):
    sample = samples[i % len(samples):i % len(samples) + 1].tolist()
    t = time.perf_counter()
    model.predict(sample)
    warm.append((time.perf_counter() - t) * 1000)
warm.sort()
print(json.dumps({"cold_ms": cold_ms, "warm_p50_ms": warm[len(warm) // 2], "backend": model.backend.name}))
"""


def choose_runtime(ws: Workspace, name: str, candidates: dict[str, Path]) -> tuple[str, dict[str, Any]]:
    """Pick the format to ship among `candidates` (format -> variant dir) and return it with the recorded reason."""
    if not candidates:
        raise UserError(f"{name}: no TFLite or ONNX variant was built to choose a runtime from; run "
                        f"`edgemaas compress {name}`")
    shas = {fmt: read_manifest(path).model.sha256 for fmt, path in candidates.items()}
    previous = _previous_choice(candidates, shas)
    if previous is not None:
        return previous["format"], previous
    if len(candidates) == 1:
        (fmt, path), = candidates.items()
        choice = {"format": fmt, "variant": path.name, "why": f"only a {fmt} variant was built", "candidates": {},
                  "sha256": shas}
    else:
        measured = _measure(candidates, ws.data_file(name))
        scores = {fmt: m["cold_ms"] + REQUESTS_PER_COLD_START * m["warm_p50_ms"] for fmt, m in measured.items()}
        fmt = min(scores, key=scores.get)
        other = next(f for f in scores if f != fmt)
        why = (f"{candidates[fmt].name} on {measured[fmt]['backend']}: cold start {measured[fmt]['cold_ms']:.0f} ms, "
               f"warm p50 {measured[fmt]['warm_p50_ms']:.3f} ms against {candidates[other].name} on "
               f"{measured[other]['backend']}: {measured[other]['cold_ms']:.0f} ms, "
               f"{measured[other]['warm_p50_ms']:.3f} ms (score: cold start + {REQUESTS_PER_COLD_START} warm "
               f"requests, {scores[fmt]:.0f} vs {scores[other]:.0f} ms)")
        choice = {"format": fmt, "variant": candidates[fmt].name, "why": why, "candidates": measured,
                  "sha256": shas, "score_rule": f"cold_ms + {REQUESTS_PER_COLD_START} * warm_p50_ms"}
    manifest = read_manifest(candidates[choice["format"]])
    manifest.provenance["runtime_choice"] = choice
    manifest.save(candidates[choice["format"]])
    return choice["format"], choice


def _previous_choice(candidates: dict[str, Path], shas: dict[str, str]) -> dict[str, Any] | None:
    for path in candidates.values():
        recorded = read_manifest(path).provenance.get("runtime_choice")
        if recorded and recorded.get("sha256") == shas:
            return recorded
    return None


def _measure(candidates: dict[str, Path], data_file: Path) -> dict[str, dict[str, Any]]:
    runs: dict[str, list[dict[str, Any]]] = {fmt: [] for fmt in candidates}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for _ in range(COLD_RUNS):  # interleaved: noise hits every candidate alike
        for fmt, path in candidates.items():
            done = subprocess.run([sys.executable, "-c", _PROBE, str(path), str(data_file), str(WARM_REQUESTS)],
                                  capture_output=True, text=True, env=env, timeout=300)
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise UserError(f"{path}: measuring its runtime failed: {tail}")
            runs[fmt].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {fmt: {"cold_ms": round(statistics.median(r["cold_ms"] for r in rs), 2),
                  "warm_p50_ms": round(statistics.median(r["warm_p50_ms"] for r in rs), 4),
                  "backend": rs[0]["backend"], "cold_runs": COLD_RUNS, "warm_requests": WARM_REQUESTS}
            for fmt, rs in runs.items()}
