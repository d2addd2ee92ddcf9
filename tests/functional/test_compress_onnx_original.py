"""An ONNX float32 file you bring is a row of its own report card: the float32 model its ONNX variants are timed and
priced against (so 'never slower than float32' applies to them), and the one that ships when none is cheaper."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemaas.compress.records import VariantResult, VariantStatus
from edgemaas.compress.run import measurably_slower
from edgemaas.pipeline import compress_file
from edgemaas.workspace import Workspace
from tests.unit.test_importing import tiny_onnx


def test_an_onnx_file_you_bring_is_the_float32_row_its_variants_are_gated_against(tmp_path: Path) -> None:
    source = tiny_onnx(tmp_path / "tiny.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32))
    card = compress_file(source, Workspace(tmp_path / "ws"), calibration_data=tmp_path / "x.npy")
    rows = {row["variant"]: VariantResult.from_dict(row) for row in card["variants"]}
    original = rows["onnx-original"]
    assert original.metric_drop == 0.0 and original.size_bytes == source.stat().st_size
    assert original.status in (VariantStatus.CHOSEN, VariantStatus.PASSED)
    for name in ("onnx-original", "onnx-float16", "onnx-dynamic", "onnx-qdq"):
        row = rows[name]
        assert row.latency_p50_ms and row.extra["latency"]["samples"] > 0, name
        assert row.extra["lambda"]["x86_64"]["cost_per_million"] > 0, name
        if measurably_slower(row, original):
            assert row.status is VariantStatus.REJECTED and row.reason.startswith("slower than onnx-original")
    priced = card["gate"]["lambda"]["formats"]["onnx"]
    assert priced["float_variant"] == "onnx-original" and priced["variant"] == card["gate"]["chosen"]["onnx"]
    assert not measurably_slower(rows[card["gate"]["chosen"]["onnx"]], original)
    assert rows["onnx-float16"].size_ratio == rows["onnx-float16"].size_bytes / original.size_bytes
