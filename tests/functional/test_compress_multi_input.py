"""`edgemaas compress` on models with several inputs or dynamic shapes: data as a .npz keyed by input name, the ONNX
passes that apply measured by parity over every output, the others skipped with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgemaas.cli import cli
from tests.tensor_models import detector_onnx, vad_onnx

MEASURED_OR_SKIPPED = ("chosen", "passed", "rejected", "skipped")


def _vad_feed(path: Path, drop: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"input": rng.standard_normal((4, 512)).astype(np.float32),
              "state": rng.standard_normal((2, 4, 16)).astype(np.float32), "sr": np.array(16000, np.int64)}
    arrays.pop(drop, None)
    np.savez(path, **arrays)
    return path


def _report(root: Path, name: str) -> dict:
    return json.loads((root / "dist" / name / "report" / "report.json").read_text())


def test_a_three_input_model_is_compressed_with_a_feed_per_input_name(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    model = vad_onnx(tmp_path / "vad.onnx")
    feed = _vad_feed(tmp_path / "feed.npz")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["compress", str(model), "--calibration-data", str(feed), "--eval-data",
                                      str(feed)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    card = _report(tmp_path, "vad")
    assert card["metric"] == "output_rmse" and card["metric_source"] == "parity"
    rows = {row["variant"]: row for row in card["variants"]}
    for name in ("onnx-float16", "onnx-dynamic", "onnx-qdq"):
        assert rows[name]["status"] in MEASURED_OR_SKIPPED, rows[name]
        if rows[name]["status"] != "skipped":
            assert rows[name]["metric_value"] >= 0 and rows[name]["size_bytes"] > 0
            assert any("output " in n and "stateN" in n for n in rows[name]["notes"]), rows[name]["notes"]
    assert rows["onnx-float16"]["metric_value"] < 0.01  # half precision barely moves a sigmoid and a tanh
    assert rows["onnx-float32"]["reason"] == "the model you brought is already ONNX float32 (onnx-original)"
    assert rows["tflite-int8"]["status"] == "skipped" and "cannot become TFLite" in rows["tflite-int8"]["reason"]
    markdown = (tmp_path / "dist" / "vad" / "report" / "report.md").read_text()
    for tensor in ("input `input [batch, samples]`", "input `state [2, batch, 16]`", "input `sr []`",
                   "output `output [batch, 1]`", "output `stateN [2, batch, 16]`"):
        assert f"- {tensor}" in markdown


def test_a_dynamic_shape_model_gets_parity_over_both_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = detector_onnx(tmp_path / "detector.onnx")
    np.savez(tmp_path / "images.npz", images=np.random.default_rng(1).standard_normal((3, 3, 32, 48), np.float32))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["compress", str(model), "--calibration-data", str(tmp_path / "images.npz")])
    assert result.exit_code == 0, result.output
    rows = {row["variant"]: row for row in _report(tmp_path, "detector")["variants"]}
    assert {rows[n]["status"] for n in ("onnx-float16", "onnx-dynamic", "onnx-qdq")} <= set(MEASURED_OR_SKIPPED)
    notes = " ".join(rows["onnx-dynamic"]["notes"])
    assert "out_0" in notes and "out_1" in notes


def test_a_feed_missing_an_input_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = vad_onnx(tmp_path / "vad.onnx")
    bad = _vad_feed(tmp_path / "bad.npz", drop="state")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["compress", str(model), "--calibration-data", str(bad)])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"Error: --calibration-data {bad}: missing input(s) state; it holds input, sr, the model takes one array "
        "per input: input, state, sr")
    assert "Traceback" not in result.output
    assert not (tmp_path / "dist" / "vad" / "report").exists()


def test_a_dynamic_width_tflite_file_goes_through_onnx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # TensorFlow builds the .tflite in a child process; this process never imports it.
    code = "import sys; from pathlib import Path; from tests.tensor_models import textline_tflite; " \
           "textline_tflite(Path(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "textline.tflite")], check=True,
                   cwd=Path(__file__).resolve().parents[2], capture_output=True, timeout=300)
    np.savez(tmp_path / "lines.npz", line=np.random.default_rng(2).standard_normal((2, 8, 20, 3), np.float32))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["compress", str(tmp_path / "textline.tflite"), "--calibration-data",
                                      str(tmp_path / "lines.npz")])
    assert result.exit_code == 0, result.output
    rows = {row["variant"]: row for row in _report(tmp_path, "textline")["variants"]}
    assert rows["onnx-float32"]["status"] in MEASURED_OR_SKIPPED[:3]
    assert rows["onnx-float32"]["metric_value"] < 1e-3  # the export itself keeps every output
    assert {rows[n]["status"] for n in ("onnx-float16", "onnx-dynamic", "onnx-qdq")} <= set(MEASURED_OR_SKIPPED)
    assert rows["tflite-int8"]["status"] == "skipped" and rows["tflite-int8"]["reason"]
