"""Compression that pays: the gate's choice under each objective, its Lambda cost per 1M requests and p50 against
the float32 model's, and the layers kept in float, on the built-in models and two larger Keras models built here
(a MobileNetV2 (alpha 0.35, 96x96, random weights) and a ResNet-8 (32x32, random weights); parity is their metric).

Every model is compressed once (post-training variants only: TF-MOT fine-tuning is out of this benchmark's time);
the three objectives re-gate the same measured rows, so their ratios come from one run, side by side.

    .venv/bin/python benchmarks/compression_cost.py [--workdir DIR] [--models cnn mobilenetv2 ...] [--json PATH]

The load average (os.getloadavg) before and after the run is recorded with the results: the machine is shared.

Goals: the shipped variant's cost per 1M requests <= float32's on every model, <= 0.7x on the two larger ones; the
shipped variant never slower than float32 unless the objective is `smallest`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BUILTINS = ("linear", "cnn", "rnn", "nlp", "attention")
LARGER = ("mobilenetv2", "resnet8")
VARIANTS = ["tflite-float32", "tflite-float16", "tflite-dynamic", "tflite-int8", "tflite-int16x8",
            "onnx-float32", "onnx-float16", "onnx-dynamic", "onnx-qdq"]
OBJECTIVES = ("cost", "fastest", "smallest")
LARGE_COST_GOAL = 0.7


def compress_larger(name: str, workdir: Path) -> dict[str, Any]:
    import numpy as np

    from edgemaas.compress.bench_models import build_larger
    from edgemaas.isolate import run_isolated
    from edgemaas.pipeline import compress_file
    from edgemaas.spec import Spec
    from edgemaas.workspace import Workspace

    folder = workdir / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.keras"
    info = run_isolated(build_larger, name, str(path), timeout=900)
    rng = np.random.default_rng(0)
    np.save(folder / f"{name}-calibration.npy", rng.random((64, *info["shape"]), dtype=np.float32))
    np.save(folder / f"{name}-eval.npy", rng.random((200, *info["shape"]), dtype=np.float32))
    spec = Spec.model_validate({"name": name, "model": {"path": str(path)}, "compress": {"variants": VARIANTS}},
                               strict=False)
    card = compress_file(path, Workspace(workdir / "ws"), name=name, calibration_data=folder / f"{name}-calibration.npy",
                         eval_data=folder / f"{name}-eval.npy", spec=spec, report=lambda m: print(f"  {name}: {m}"))
    return {"card": card, "params": info["params"]}


def compress_builtin(name: str, workdir: Path) -> dict[str, Any]:
    from edgemaas.pipeline import compress_spec
    from edgemaas.resources import builtin_specs_dir
    from edgemaas.spec import load_spec
    from edgemaas.workspace import Workspace

    spec = load_spec(builtin_specs_dir() / f"{name}.yaml")
    spec.compress.variants = list(VARIANTS)
    card = compress_spec(spec, Workspace(workdir / "ws"), report=lambda m: print(f"  {name}: {m}"))
    return {"card": card, "params": None}


def regate(card: dict[str, Any], objective: str) -> dict[str, Any]:
    """The gate under `objective` on the measured rows of `card` (a copy): per format, chosen row and float row."""
    from edgemaas.compress.records import ReportCard, VariantStatus
    from edgemaas.compress.run import gate_variants, measurably_slower
    from edgemaas.spec import GateSection

    typed = ReportCard.from_dict(json.loads(json.dumps(card)))
    rows = [r for r in typed.variants if r.measured and r.status not in (VariantStatus.FAILED, VariantStatus.SKIPPED)]
    for row in rows:
        row.status, row.reason = VariantStatus.MEASURED, ""
    gate = GateSection(max_metric_drop=typed.gate.max_metric_drop or 1.0, objective=objective)
    labelled = typed.metric_source.value == "labels"
    selection = gate_variants(rows, gate, typed.task if typed.task in ("classification", "regression")
                              else "classification", labelled, "keras-float32")
    by_name = {r.variant: r for r in rows}
    out = {}
    for fmt, chosen in selection.chosen.items():
        row, base = by_name.get(chosen), by_name.get(f"{fmt}-float32")
        if row is None or base is None:
            continue
        cost = lambda r: ((r.extra.get("lambda") or {}).get("x86_64") or {}).get("cost_per_million")  # noqa: E731
        out[fmt] = {"variant": chosen, "p50_ms": row.latency_p50_ms, "float_p50_ms": base.latency_p50_ms,
                    "cost": cost(row), "float_cost": cost(base),
                    "memory_mb": ((row.extra.get("lambda") or {}).get("x86_64") or {}).get("memory_mb"),
                    "billed_ms": ((row.extra.get("lambda") or {}).get("x86_64") or {}).get("billed_ms"),
                    "float_billed_ms": ((base.extra.get("lambda") or {}).get("x86_64") or {}).get("billed_ms"),
                    "float_memory_mb": ((base.extra.get("lambda") or {}).get("x86_64") or {}).get("memory_mb"),
                    "kept_float": row.extra.get("kept_float") or [],
                    "size": row.size_bytes, "float_size": base.size_bytes,
                    "measurably_slower": row is not base and row.latency_p50_ms is not None
                    and base.latency_p50_ms is not None and measurably_slower(row, base)}
    return out


def versions() -> dict[str, str]:
    found = {}
    for name in ("tensorflow", "ai-edge-litert", "onnxruntime", "tf2onnx"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "-"
    return found


def markdown(results: dict[str, Any], machine: str, when: str, load: str = "") -> str:
    lines = [f"Measured {when} on {machine}; {', '.join(f'{k} {v}' for k, v in versions().items())}"
             + (f"; load average {load}" if load else "") + ". One run; "
             "ratios are side by side in that run. Cost: x86_64 Lambda $ per 1M requests at the cheapest memory "
             "(edgemaas/compress/prices.json), from single-thread p50 on this CPU, not on Lambda.", "",
             "| model | params | objective | tflite ships | cost vs float32 | p50 vs float32 | onnx ships | "
             "cost vs float32 | p50 vs float32 | kept in float |",
             "|---|---:|---|---|---:|---:|---|---:|---:|---|"]
    for name, result in results.items():
        if "error" in result:
            lines.append(f"| {name} | - | - | failed: {result['error'][:80]} | | | | | | |")
            continue
        for objective in OBJECTIVES:
            cells = [name, f"{result['params']:,}" if result.get("params") else "-", objective]
            kept = []
            for fmt in ("tflite", "onnx"):
                pick = result["objectives"][objective].get(fmt)
                if not pick:
                    cells += ["-", "-", "-"]
                    continue
                cost_ratio = pick["cost"] / pick["float_cost"] if pick["cost"] and pick["float_cost"] else None
                p50_ratio = pick["p50_ms"] / pick["float_p50_ms"] if pick["p50_ms"] and pick["float_p50_ms"] else None
                cells += [f"{pick['variant']} ({pick['memory_mb']} MB)",
                          f"{cost_ratio:.3f}× (${pick['cost']:.4f} vs ${pick['float_cost']:.4f})"
                          if cost_ratio else "-",
                          f"{p50_ratio:.2f}× ({pick['p50_ms']:.3g} vs {pick['float_p50_ms']:.3g} ms)"
                          if p50_ratio else "-"]
                kept += pick["kept_float"]
            cells.append(", ".join(kept) or "-")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goals(results: dict[str, Any]) -> list[str]:
    lines = []
    for name, result in results.items():
        if "error" in result:
            continue
        for objective in ("cost", "fastest"):
            for fmt, pick in result["objectives"][objective].items():
                if pick["cost"] and pick["float_cost"]:
                    ratio = pick["cost"] / pick["float_cost"]
                    target = LARGE_COST_GOAL if name in LARGER and objective == "cost" else 1.0
                    met = "met" if ratio <= target + 1e-9 else "MISSED"
                    lines.append(f"{name} {objective} {fmt}: cost {ratio:.3f}x float32 (goal <= {target}): {met}")
                if pick.get("measurably_slower"):
                    lines.append(f"{name} {objective} {fmt}: slower than float32: MISSED")
                elif pick["p50_ms"] and pick["float_p50_ms"] and pick["p50_ms"] > pick["float_p50_ms"]:
                    lines.append(f"{name} {objective} {fmt}: p50 {pick['p50_ms'] / pick['float_p50_ms']:.3f}x "
                                 "float32's, within the measurement's noise (95% intervals overlap): met")
    return lines


def main(argv: list[str] | None = None) -> int:
    from edgemaas.compress.latency import cpu_info, describe_cpu
    from edgemaas.fsutil import atomic_write_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("dist/bench-cost"))
    parser.add_argument("--models", nargs="*", default=list(BUILTINS + LARGER))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    load_before = [round(x, 2) for x in os.getloadavg()]
    results: dict[str, Any] = {}
    for name in args.models:
        print(f"{name}: compressing", flush=True)
        try:
            made = compress_larger(name, args.workdir) if name in LARGER else compress_builtin(name, args.workdir)
        except Exception as exc:  # noqa: BLE001 - one model's failure is a row of the table, not the end
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        results[name] = {"params": made["params"], "objectives": {o: regate(made["card"], o) for o in OBJECTIVES}}
        # After every model: a long run that is stopped still leaves what it measured.
        atomic_write_json(args.json or args.workdir / "compression_cost.json", {"partial": True, "results": results})
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = describe_cpu(cpu_info())
    load_after = [round(x, 2) for x in os.getloadavg()]
    load = f"{' '.join(map(str, load_before))} before, {' '.join(map(str, load_after))} after (1, 5, 15 min)"
    text = markdown(results, machine, when, load)
    print(text)
    print("\n".join(goals(results)))
    atomic_write_json(args.json or args.workdir / "compression_cost.json",
                      {"when": when, "machine": machine, "versions": versions(), "load_average": load,
                       "results": results, "goals": goals(results)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
