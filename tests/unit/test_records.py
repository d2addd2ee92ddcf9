"""edgemaas.compress.records: typed report card and selection, with the JSON on disk unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgemaas.compress.records import (MetricSource, Objective, ReportCard, Selection, VariantResult, VariantStatus,
                                       load_selection, save_selection)
from edgemaas.errors import UserError

SELECTION = {"max_metric_drop": 1.0, "objective": "smallest", "size": "gzip",
             "chosen": {"onnx": "onnx-float32", "tflite": "tflite-int8"}, "default": "tflite-int8", "fallback": [],
             "unit": "accuracy points"}


def _row(variant: str, status: str, **measured: Any) -> dict[str, Any]:
    row = {"variant": variant, "format": variant.split("-")[0], "parent": "keras-float32", "status": status,
           "reason": "", "metric_value": None, "metric_drop": None, "size_bytes": None, "gzip_bytes": None,
           "size_ratio": None, "gzip_ratio": None, "sparsity": None, "parity_max_abs": None, "latency_p50_ms": None,
           "runtime": None, "notes": []}
    row.update(measured)
    return row


def _card() -> dict[str, Any]:
    """A card as compress_model writes it (same keys, same order)."""
    return {
        "model": "cnn", "task": "classification", "metric": "accuracy", "higher_is_better": True,
        "metric_source": "labels", "eval_data": "held-out split", "drop_unit": "accuracy points",
        "reference": {"variant": "keras-float32", "metric_value": 0.99, "size_bytes": 180000, "gzip_bytes": 160000},
        "gate": dict(SELECTION),
        "variants": [_row("tflite-int8", "chosen", metric_value=0.99, metric_drop=0.0, size_bytes=21864,
                          gzip_bytes=17000, size_ratio=0.37, gzip_ratio=0.36, sparsity=0.0, parity_max_abs=0.004,
                          latency_p50_ms=0.01, runtime="ai-edge-litert", notes=["warnings: x"]),
                     _row("tflite-int16x8", "failed", reason="ConverterError"),
                     _row("onnx-float16", "skipped", reason="onnxconverter-common is not installed")],
        "created": "2026-11-28T17:00:00Z", "edgemaas_version": "0.1.0",
    }


def test_card_round_trips_to_the_same_json() -> None:
    data = _card()
    card = ReportCard.from_dict(data)
    assert json.dumps(card.to_dict(), indent=2) == json.dumps(data, indent=2)  # same keys, same order
    assert card.metric_source is MetricSource.LABELS and card.gate.objective is Objective.SMALLEST
    assert [r.status for r in card.variants] == [VariantStatus.CHOSEN, VariantStatus.FAILED, VariantStatus.SKIPPED]
    assert card.row("tflite-int8").size_bytes == 21864 and card.row("nope") is None
    assert card.rows_by_name()["tflite-int16x8"].reason == "ConverterError"
    assert card.reference.gzip_bytes == 160000


def test_statuses_are_enums_that_read_as_their_text() -> None:
    row = VariantResult.from_dict(_row("onnx-qdq", "rejected"))
    assert row.status is VariantStatus.REJECTED and row.status == "rejected" and str(row.status) == "rejected"
    assert json.dumps(row.to_dict()["status"]) == '"rejected"'
    with pytest.raises(ValueError, match="unknown VariantStatus 'exploded'"):
        VariantResult.from_dict(_row("onnx-qdq", "exploded"))


def test_unknown_keys_survive_and_missing_ones_get_defaults() -> None:
    data = {**_card(), "future_field": {"x": 1}}
    data["variants"][0]["energy_mj"] = 3.5
    again = ReportCard.from_dict(data).to_dict()
    assert again["future_field"] == {"x": 1} and again["variants"][0]["energy_mj"] == 3.5
    partial = ReportCard.from_dict({"reference": {"metric_value": 0.5}, "gate": {"max_metric_drop": 1.0}})
    assert partial.model == "?" and partial.higher_is_better and partial.variants == []
    assert partial.gate.chosen == {} and partial.gate.fallback == [] and partial.gate.default is None


def test_selection_variant_for_a_format() -> None:
    selection = Selection.from_dict(SELECTION)
    assert selection.variant_for("onnx") == "onnx-float32" and selection.variant_for() == "tflite-int8"
    fallback = Selection.from_dict({**SELECTION, "chosen": {"tflite": None}, "default": "tflite-float32"})
    assert fallback.variant_for("tflite") == "tflite-float32" and fallback.variant_for("onnx") == "tflite-float32"


def test_selection_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "cnn" / "selection.json"
    assert load_selection(path) is None
    save_selection(path, Selection.from_dict(SELECTION))
    assert json.loads(path.read_text()) == SELECTION
    assert path.read_text() == json.dumps(SELECTION, indent=2) + "\n"  # as compress always wrote it
    assert load_selection(path) == Selection.from_dict(SELECTION)
    assert [p.name for p in path.parent.iterdir()] == ["selection.json"]


def test_a_corrupt_selection_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "selection.json"
    path.write_text('{"chosen": ')
    with pytest.raises(UserError, match="is not a selection edgemaas wrote"):
        load_selection(path)
    path.write_text("[1, 2]")
    with pytest.raises(UserError, match="not a JSON object"):
        load_selection(path)
