"""`compress`: the gate's choice and rejections, from rows of measurements (the measuring is in tests/functional)."""

from __future__ import annotations

from edgemaas.compress import run as compressing
from edgemaas.compress.passes import KERAS_ROOT
from edgemaas.spec import GateSection


def rows(*specs: tuple[str, str, float, int, float]) -> list[dict]:
    return [{"variant": v, "format": f, "status": "measured", "metric_drop": drop, "size_bytes": size,
             "gzip_bytes": size, "latency_p50_ms": ms, "reason": ""} for v, f, drop, size, ms in specs]


def test_gate_rejects_over_budget_and_picks_smallest_or_fastest() -> None:
    table = rows(("tflite-float32", "tflite", 0.0, 100, 1.0), ("tflite-int8", "tflite", 0.5, 30, 2.0),
                 ("tflite-pruned-int8", "tflite", 3.0, 10, 0.5), ("onnx-float32", "onnx", 0.0, 90, 0.3))
    smallest = compressing.choose(table, GateSection(max_metric_drop=1.0, objective="smallest"), "classification", True,
                                 KERAS_ROOT)
    assert smallest["chosen"] == {"tflite": "tflite-int8", "onnx": "onnx-float32"}
    assert table[2]["status"] == "rejected"
    assert table[2]["reason"] == "metric drop 3.00 accuracy points exceeds the budget of 1.0 accuracy points"
    fastest = compressing.choose(rows(*[(r["variant"], r["format"], r["metric_drop"], r["size_bytes"],
                                         r["latency_p50_ms"]) for r in table]),
                                 GateSection(max_metric_drop=1.0, objective="fastest"), "classification", True,
                                 KERAS_ROOT)
    assert fastest["chosen"]["tflite"] == "tflite-float32"


def test_when_nothing_passes_the_float_model_ships_and_says_so() -> None:
    table = rows(("tflite-float32", "tflite", 2.0, 100, 1.0), ("tflite-int8", "tflite", 5.0, 30, 2.0))
    gate = compressing.choose(table, GateSection(max_metric_drop=1.0), "regression", True, KERAS_ROOT)
    assert gate["chosen"]["tflite"] == "tflite-float32" and gate["fallback"] == ["tflite"]
    assert all(row["status"] == "rejected" for row in table)
    assert "% of RMSE" in table[1]["reason"]
