"""Lambda zips: contents, determinism, size limits, cross-platform wheels and their errors."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from edgemaas.errors import UserError
from edgemaas.packaging import dependencies, lambda_zip
from edgemaas.packaging.lambda_zip import package_lambda
from edgemaas.runtime.manifest import sha256_file
from edgemaas.workspace import Workspace


def test_zip_holds_handler_runtime_model_and_only_the_runtime_it_needs(packaged_cnn: Path) -> None:
    with zipfile.ZipFile(packaged_cnn) as archive:
        names = archive.namelist()
    assert names == sorted(names)
    for required in ("handler.py", "edgemaas/__init__.py", "edgemaas/runtime/model.py", "model/model.tflite",
                     "model/manifest.json", "numpy/__init__.py", "ai_edge_litert/interpreter.py"):
        assert required in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    top_level = {n.split("/")[0] for n in names}
    assert not {"tensorflow", "onnxruntime", "tf_keras", "edgemaas/cli.py"} & top_level
    assert not [n for n in names if n.startswith("edgemaas/") and not n.startswith("edgemaas/runtime/")
                and n != "edgemaas/__init__.py"]
    assert any(n.startswith("numpy.libs/") for n in names)  # numpy's bundled BLAS must ship


def test_zip_is_deterministic(trained: Workspace, packaged_cnn: Path, tmp_path: Path) -> None:
    again = package_lambda(trained.variant_dir("cnn", "tflite-int8"), tmp_path, trained.cache())
    assert sha256_file(Path(again.zip_path)) == sha256_file(packaged_cnn)
    with zipfile.ZipFile(again.zip_path) as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_package_json_records_sizes(packaged_cnn: Path) -> None:
    import json

    record = json.loads((packaged_cnn.parent / "package.json").read_text())
    assert record["zipped_bytes"] == packaged_cnn.stat().st_size
    assert record["zipped_bytes"] < record["unzipped_bytes"] < lambda_zip.UNZIPPED_LIMIT
    assert record["handler"] == "handler.handler" and record["variant"] == "tflite-int8"


def test_over_the_unzipped_limit_is_refused_with_what_to_do(trained: Workspace, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lambda_zip, "UNZIPPED_LIMIT", 10 * lambda_zip.MB)
    with pytest.raises(UserError, match=r"unzips to \d+ MB; Lambda allows 10 MB including layers. Ship a smaller"):
        package_lambda(trained.variant_dir("cnn", "tflite-int8"), tmp_path, trained.cache())
    assert not (tmp_path / "function.zip").exists()


def test_arm64_and_python_312_wheels(trained: Workspace, tmp_path: Path) -> None:
    package = package_lambda(trained.variant_dir("cnn", "tflite-int8"), tmp_path, trained.cache(),
                             python_version="3.12", arch="arm64")
    with zipfile.ZipFile(package.zip_path) as archive:
        extensions = [n for n in archive.namelist() if n.endswith(".so") and "_multiarray_umath" in n]
    assert extensions and all("cpython-312-aarch64" in n for n in extensions)
    assert package.warnings == []  # Python 3.12 runs on Amazon Linux 2023, whose glibc is new enough


def test_python_311_warns_about_amazon_linux_2(packaged_cnn: Path) -> None:
    import json

    warnings = json.loads((packaged_cnn.parent / "package.json").read_text())["warnings"]
    assert any("Amazon Linux 2" in w and "--python-version 3.12" in w for w in warnings)


def test_runtime_without_wheels_fails_with_alternatives(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        dependencies.install(["tflite-runtime==2.14.0"], "3.12", "x86_64", tmp_path)
    message = str(caught.value)
    assert message.startswith("tflite-runtime==2.14.0 has no wheel for Python 3.12 on x86_64 Linux")
    assert "ai-edge-litert for .tflite, onnxruntime for .onnx" in message
    assert not list((tmp_path / "lambda-deps").glob("*"))  # nothing half-installed left behind


def test_unreadable_model_is_refused_at_package_time(trained: Workspace, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "variant"
    shutil.copytree(trained.variant_dir("cnn", "tflite-int8"), copy)
    (copy / "model.tflite").write_bytes(b"garbage")
    with pytest.raises(UserError, match="the runtime cannot load this model: .* does not match its manifest"):
        package_lambda(copy, tmp_path / "out", trained.cache())
