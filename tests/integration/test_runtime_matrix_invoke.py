"""Issue 14: the python3.11 Lambda package ships the Amazon Linux 2 wheels (glibc <= 2.26), records its checks, and
its local invoke through awslambdaric (a clean `python -S` process) is served by exactly those wheels."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from edgemaas.local import invoke_local
from edgemaas.packaging.awslambda.lambda_zip import package_lambda
from edgemaas.packaging.common.glibc import parse_version
from edgemaas.pipeline import smoke_event
from edgemaas.workspace import Workspace

pytestmark = pytest.mark.models("cnn")


def test_python311_package_ships_al2_wheels_and_invokes_with_them(trained: Workspace, tmp_path: Path) -> None:
    package = package_lambda(trained.variant_dir("cnn", "tflite-int8"), tmp_path / "lambda", trained.cache(),
                             "3.11", "x86_64", "zip")
    assert package.requirements == ["numpy==1.26.4", "ai-edge-litert==1.4.0"]
    assert package.warnings == [] and package.fallback == ""
    assert package.glibc is not None and package.glibc["ok"] and package.glibc["target_glibc"] == "2.26"
    assert parse_version(package.glibc["needed"]) <= (2, 26)
    assert package.load_check == {"ok": True, "executed": True, "exact_wheels": True, "backend": "ai-edge-litert",
                                  "ran_with": "Python 3.11 x86_64: numpy==1.26.4, ai-edge-litert==1.4.0",
                                  "error": "", "failed_at": ""}
    recorded = json.loads((tmp_path / "lambda" / "package.json").read_text())
    assert recorded["glibc"] == package.glibc and recorded["load_check"] == package.load_check
    with zipfile.ZipFile(package.zip_path) as archive:
        names = set(archive.namelist())
    assert "numpy-1.26.4.dist-info/METADATA" in names and "ai_edge_litert-1.4.0.dist-info/METADATA" in names
    # awslambdaric runs the handler with -S: the zip's numpy 1.26.4 and ai-edge-litert 1.4.0 are the only ones it
    # can import, so an answer means the AL2 wheels served it.
    result = invoke_local(Path(package.zip_path), [smoke_event(trained, "cnn")])[0]
    assert result.function_error is None, result.error_message
    assert "label" in result.payload["predictions"][0], result.payload
    assert "backend ai-edge-litert" in result.logs
