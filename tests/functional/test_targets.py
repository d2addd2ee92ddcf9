"""`package --target`: `--runtime auto` measuring LiteRT against ONNX Runtime, and what phones get (trained cnn)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgemaas.cli import cli
from edgemaas.runtime import read_manifest
from edgemaas.workspace import Workspace
from tests.conftest import MODELS

pytestmark = pytest.mark.models("cnn")  # the built-ins `trained` holds here


def test_runtime_auto_measures_both_runtimes_and_records_why(trained: Workspace, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ws = Workspace(tmp_path)
    shutil.copytree(trained.model_dir("cnn"), ws.model_dir("cnn"))
    monkeypatch.chdir(tmp_path)
    spec = str(MODELS / "cnn.yaml")
    result = CliRunner().invoke(cli, ["package", spec, "--runtime", "auto"])
    assert result.exit_code == 0, result.output
    selection = json.loads(ws.selection_file("cnn").read_text())["chosen"]
    record = json.loads((ws.lambda_dir("cnn") / "package.json").read_text())
    choice = record["runtime_choice"]
    assert set(choice["candidates"]) == {"tflite", "onnx"}
    scores = {fmt: m["cold_ms"] + 100 * m["warm_p50_ms"] for fmt, m in choice["candidates"].items()}
    assert choice["format"] == min(scores, key=scores.get)
    assert record["variant"] == selection[choice["format"]] == choice["variant"]
    assert {m["backend"] for m in choice["candidates"].values()} == {"ai-edge-litert", "onnxruntime"}
    assert f"runtime: {choice['variant']} on " in result.output
    # The reason travels in the shipped manifest.
    with zipfile.ZipFile(record["zip_path"]) as archive:
        shipped = json.loads(archive.read("model/manifest.json"))
    assert shipped["provenance"]["runtime_choice"] == choice
    assert read_manifest(ws.variant_dir("cnn", choice["variant"])).provenance["runtime_choice"] == choice
    # Unchanged candidates: the recorded choice is reused, not measured again, and the package too.
    again = CliRunner().invoke(cli, ["package", spec, "--runtime", "auto"])
    assert again.exit_code == 0, again.output
    assert json.loads((ws.lambda_dir("cnn") / "package.json").read_text())["runtime_choice"] == choice
    assert "unchanged, reusing" in again.output


@pytest.mark.parametrize("platform, qdq_status, expected", [
    ("android", "passed", "onnx-qdq"), ("android", "rejected", "onnx-float32"), ("ios", "passed", "onnx-float32")])
def test_android_gets_static_qdq_when_it_passed_the_gate_ios_float(trained: Workspace, tmp_path: Path, platform: str,
                                                                    qdq_status: str, expected: str) -> None:
    from edgemaas.compress.report import write_report
    from edgemaas.packaging.mobile.target import mobile_variants
    from edgemaas.packaging.sources import Source

    ws = Workspace(tmp_path)
    shutil.copytree(trained.model_dir("cnn"), ws.model_dir("cnn"))
    shutil.copytree(ws.variant_dir("cnn", "onnx-float32"), ws.variant_dir("cnn", "onnx-qdq"))  # stands in for QDQ
    card = json.loads((trained.dist / "cnn" / "report" / "report.json").read_text())
    card["variants"].append({**next(r for r in card["variants"] if r["variant"] == "onnx-float32"),
                             "variant": "onnx-qdq", "status": qdq_status})
    write_report(card, ws.dist / "cnn" / "report")
    tflite, onnx = mobile_variants(Source("cnn", None), ws, platform=platform)
    assert [p.name for p in tflite] == ["tflite-int8", "tflite-float16"]
    assert onnx is not None and onnx.name == expected
