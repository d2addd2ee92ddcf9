"""`edgemaas build` end to end, and the packaged CNN served with no TensorFlow anywhere on its path."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from click.testing import CliRunner

from edgemaas.cli import cli
from edgemaas.local import invoke_local
from tests.conftest import MODELS

# Loads the real handler (and so the model), serves one request, and reports what the process could import.
PROBE = """
import importlib.util, sys
import handler

def probe(event, context):
    response = handler.handler(event, context)
    return {"response": response,
            "tensorflow_importable": importlib.util.find_spec("tensorflow") is not None,
            "loaded": sorted(m for m in ("tensorflow", "keras", "tf_keras", "click", "boto3") if m in sys.modules),
            "path": sys.path}
"""


def test_build_end_to_end(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["build", str(MODELS / "linear.yaml")])
    assert result.exit_code == 0, result.output
    assert "edgemaas build" in result.output and "linear" in result.output
    assert "ok: " in result.output and "ms" in result.output
    selection = json.loads((tmp_path / "build/linear/selection.json").read_text())
    assert selection["default"] == selection["chosen"]["tflite"]
    assert (tmp_path / "build/linear" / selection["default"] / "manifest.json").exists()
    assert (tmp_path / "dist/linear/report/report.md").exists()
    assert (tmp_path / "dist/linear/lambda/function.zip").exists()
    # The other targets, each made and (the edge bundle) run from what was packaged.
    assert "edge, microcontroller and phone targets" in result.output
    flat = " ".join(result.output.split())  # rich wraps cells at the console width
    assert "predict ok:" in flat and "FAILED" not in flat and "refused" not in flat
    for made in ("edge/linear-edge.tar.gz", "mcu/linear_model_data.cc", "android/linear.ort",
                 "android/LinearModel.kt", "ios/LinearModel.swift"):
        assert (tmp_path / "dist/linear" / made).exists(), made
    # A second build reuses the trained and converted model.
    again = CliRunner().invoke(cli, ["build", str(MODELS / "linear.yaml")])
    assert again.exit_code == 0, again.output


def test_cnn_zip_runs_without_tensorflow_on_its_path(packaged_cnn: Path, tmp_path: Path) -> None:
    probed = tmp_path / "probed.zip"
    with zipfile.ZipFile(packaged_cnn) as source, zipfile.ZipFile(probed, "w") as target:
        for item in source.infolist():
            target.writestr(item, source.read(item))
        target.writestr("probe.py", PROBE)
    image = [[0, 0, 5, 13, 9, 1, 0, 0]] * 8
    (result,) = invoke_local(probed, [{"inputs": [image]}], handler="probe.probe")
    assert result.function_error is None, result.error_message
    assert result.payload["tensorflow_importable"] is False
    assert result.payload["loaded"] == []
    assert result.payload["response"]["predictions"][0]["label"] in [str(i) for i in range(10)]
    assert not [p for p in result.payload["path"] if "site-packages" in p]
