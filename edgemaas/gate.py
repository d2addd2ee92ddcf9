"""The accuracy gate: of the variants within the metric budget, ship the smallest (or fastest)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .convert import VariantResult
from .runtime import Manifest
from .spec import GateSection


def choose(task: str, float_manifest: Manifest, results: list[VariantResult], gate: GateSection) -> dict[str, Any]:
    unit = "accuracy points" if task == "classification" else "% of RMSE"
    candidates, passing = [], []
    for result in results:
        row: dict[str, Any] = {"variant": result.variant}
        if not result.ok:
            row.update(status="failed", reason=result.error)
        else:
            m = result.manifest
            drop = m.metrics["metric_drop"]
            row.update(size_bytes=m.model.size_bytes, metric_drop=drop, latency_p50_ms=m.metrics["latency_p50_ms"],
                       held_out=m.metrics["held_out"])
            if drop <= gate.max_metric_drop:
                row["status"] = "passed"
                passing.append(row)
            else:
                row.update(status="rejected", reason=f"metric drop {drop:.2f} {unit} exceeds the budget of "
                                                     f"{gate.max_metric_drop} {unit}")
        candidates.append(row)
    key = "size_bytes" if gate.objective == "smallest" else "latency_p50_ms"
    if passing:
        best = min(passing, key=lambda r: r[key])
        best["status"] = "chosen"
        reason = f"{gate.objective} variant within {gate.max_metric_drop} {unit} of the float model"
        chosen = best["variant"]
    else:
        # Nothing passed: ship float32 TFLite if it converted (it is the float model, only portable).
        chosen = next((r.variant for r in results if r.ok and r.variant.endswith("float32")), None)
        reason = "NO VARIANT PASSED THE GATE: shipping the float model"
    return {"chosen": chosen, "reason": reason, "objective": gate.objective,
            "max_metric_drop": gate.max_metric_drop, "unit": unit, "candidates": candidates}


def save_selection(path: Path, selection: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(selection, indent=2) + "\n")
    os.replace(tmp, path)


def load_selection(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
