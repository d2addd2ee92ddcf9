"""Lambda zips: contents, determinism, size limits, cross-platform wheels and their errors."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from edgemaas.errors import UserError
from edgemaas.packaging.common import dependencies
from edgemaas.packaging.awslambda import lambda_zip
from edgemaas.packaging.awslambda.lambda_zip import package_lambda
from edgemaas.runtime.manifest import sha256_file
from edgemaas.workspace import Workspace

pytestmark = pytest.mark.models("cnn", "linear", "rnn")  # the built-ins `trained` holds here


def test_zip_holds_handler_runtime_model_and_only_the_runtime_it_needs(packaged_cnn: Path) -> None:
    with zipfile.ZipFile(packaged_cnn) as archive:
        names = archive.namelist()
    assert names == sorted(names)
    for required in ("handler.py", "edgemaas/__init__.py", "edgemaas/runtime/model.py", "model/model.tflite",
                     "model/manifest.json", "numpy/__init__.py", "ai_edge_litert/interpreter.py"):
        assert required in names
    # Bytecode ships (Lambda's code folders are read-only): one unchecked-hash .pyc (PEP 552, valid whatever the
    # zip's fixed timestamps) per module, for the target Python, and no other kind.
    tag = sys.implementation.cache_tag
    pycs = [n for n in names if n.endswith(".pyc")]
    assert "__pycache__/handler.{}.pyc".format(tag) in pycs and f"numpy/__pycache__/__init__.{tag}.pyc" in pycs
    assert all(n.endswith(f".{tag}.pyc") and "/__pycache__/" in f"/{n}" for n in pycs)
    with zipfile.ZipFile(packaged_cnn) as archive:
        assert {int.from_bytes(archive.read(n)[4:8], "little") for n in pycs} == {1}  # hash-based, unchecked
    modules = {n for n in names if n.endswith(".py")}
    assert len(pycs) >= 0.9 * len(modules)
    top_level = {n.split("/")[0] for n in names}
    assert not {"tensorflow", "onnxruntime", "tf_keras", "edgemaas/cli.py"} & top_level
    assert not [n for n in names if n.startswith("edgemaas/") and not n.startswith("edgemaas/runtime/")
                and n not in ("edgemaas/__init__.py", f"edgemaas/__pycache__/__init__.{tag}.pyc")]
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
    assert not [w for w in package.warnings if "glibc" in w]  # Amazon Linux 2023's glibc is new enough
    # Bytecode is made by the target Python: without a Python 3.12 here, the package says so and ships none.
    from edgemaas.packaging.awslambda.bytecode import target_python

    with zipfile.ZipFile(package.zip_path) as archive:
        pycs = [n for n in archive.namelist() if n.endswith(".pyc")]
    if target_python("3.12") is None:
        assert pycs == [] and any(w.startswith("no Python 3.12 here to precompile bytecode") for w in package.warnings)
    else:
        assert pycs and all(n.endswith(".cpython-312.pyc") for n in pycs)


def test_python_311_package_fits_amazon_linux_2_without_a_warning(packaged_cnn: Path) -> None:
    # Issue 14 replaced the old "needs glibc 2.27, use --python-version 3.12" warning with wheels that fit.
    import json

    record = json.loads((packaged_cnn.parent / "package.json").read_text())
    if record["python_version"] in ("3.10", "3.11"):
        assert not any("Amazon Linux 2" in w for w in record["warnings"])
        assert record["glibc"]["ok"] and record["glibc"]["target_glibc"] == "2.26"


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


def test_zip_is_slim_but_keeps_licences_and_shared_libraries(packaged_cnn: Path) -> None:
    with zipfile.ZipFile(packaged_cnn) as archive:
        names = archive.namelist()
    assert not [n for n in names if "/tests/" in n or n.endswith(".pyi")]
    assert not [n for n in names if n.endswith(".dist-info/RECORD")]
    assert any(".dist-info/" in n and "LICENSE" in n.upper() for n in names)
    assert not [n for n in names if n.startswith(("ai_edge_litert/tools/", "ai_edge_litert/vendors/"))]
    assert "ai_edge_litert/libLiteRtWebGpuAccelerator.so" not in names
    assert [n for n in names if n.startswith("numpy.libs/") and ".so" in n]


def test_layer_layout_and_local_invoke_with_the_layer(trained: Workspace, tmp_path: Path) -> None:
    from edgemaas.local import invoke_local

    package = package_lambda(trained.variant_dir("cnn", "tflite-int8"), tmp_path / "cnn", trained.cache(),
                             layout="layer", layers_dir=tmp_path / "layers")
    assert package.layout == "layer" and package.zipped_bytes < 1024 * 1024
    with zipfile.ZipFile(package.zip_path) as archive:
        assert not [n for n in archive.namelist() if n.startswith(("numpy", "ai_edge_litert"))]
    layer = Path(package.layer["zip_path"])
    assert layer.name == "edgemaas-litert-py311-x86_64.zip" and package.layer["zipped_bytes"] < 40 * lambda_zip.MB
    with zipfile.ZipFile(layer) as archive:
        assert all(n.startswith("python/") for n in archive.namelist())
    image = [[0, 0, 5, 13, 9, 1, 0, 0]] * 8
    (alone,) = invoke_local(Path(package.zip_path), [{"inputs": [image]}])
    assert alone.function_error == "Unhandled" and "No module named 'numpy'" in alone.error_message
    (with_layer,) = invoke_local(Path(package.zip_path), [{"inputs": [image]}], layers=[layer])
    assert with_layer.function_error is None and with_layer.payload["predictions"]
    # A second model of the same runtime shares the layer, unchanged.
    other = package_lambda(trained.variant_dir("rnn", "tflite-int8"), tmp_path / "rnn", trained.cache(),
                           layout="layer", layers_dir=tmp_path / "layers")
    assert other.layer["sha256"] == package.layer["sha256"]


def test_a_second_package_with_nothing_changed_is_reused(trained: Workspace, tmp_path: Path) -> None:
    first = package_lambda(trained.variant_dir("linear", "tflite-float32"), tmp_path, trained.cache())
    mtime = Path(first.zip_path).stat().st_mtime_ns
    again = package_lambda(trained.variant_dir("linear", "tflite-float32"), tmp_path, trained.cache())
    assert again.reused and not first.reused
    assert Path(again.zip_path).stat().st_mtime_ns == mtime and again.sha256 == first.sha256
    changed = package_lambda(trained.variant_dir("linear", "tflite-float32"), tmp_path, trained.cache(),
                             memory_mb=1024)
    assert not changed.reused


def padded_model(trained: Workspace, tmp_path: Path, megabytes: int) -> Path:
    """A real model made large: incompressible bytes after the flatbuffer, which LiteRT ignores."""
    import json
    import os
    import shutil

    from edgemaas.runtime.manifest import sha256_file

    variant = tmp_path / f"padded-{megabytes}"
    shutil.copytree(trained.variant_dir("cnn", "tflite-int8"), variant)
    with open(variant / "model.tflite", "ab") as handle:
        for _ in range(megabytes):
            handle.write(os.urandom(lambda_zip.MB))
    manifest = json.loads((variant / "manifest.json").read_text())
    manifest["model"].update(sha256=sha256_file(variant / "model.tflite"),
                             size_bytes=(variant / "model.tflite").stat().st_size)
    (variant / "manifest.json").write_text(json.dumps(manifest))
    return variant


@pytest.mark.parametrize("megabytes, layout, why", [
    (40, "layer", "over the 50 MB direct upload"),
    (200, "image", "over Lambda's 250 MB for code and layers"),
])
def test_auto_layout_with_large_generated_models(trained: Workspace, tmp_path: Path, megabytes: int, layout: str,
                                                 why: str) -> None:
    package = package_lambda(padded_model(trained, tmp_path, megabytes), tmp_path / "lambda", trained.cache(),
                             layout="auto", layers_dir=tmp_path / "layers")
    assert package.layout == layout
    assert why in package.layout_reason


def test_image_layout_writes_a_complete_build_context(trained: Workspace, tmp_path: Path) -> None:
    import subprocess
    import sys

    from edgemaas.packaging.awslambda.image import missing_copy_sources

    package = package_lambda(trained.variant_dir("cnn", "tflite-int8"), tmp_path / "lambda", trained.cache(),
                             python_version="3.12", arch="arm64", layout="image")
    context = Path(package.image_context)
    dockerfile = (context / "Dockerfile").read_text()
    assert "FROM --platform=linux/arm64 public.ecr.aws/lambda/python:3.12" in dockerfile
    assert 'CMD ["handler.handler"]' in dockerfile
    assert missing_copy_sources(context) == []
    assert (context / "model" / "model.tflite").exists() and (context / "edgemaas" / "runtime" / "model.py").exists()
    requirements = (context / "requirements.txt").read_text().split()
    assert [r.split("==")[0] for r in requirements] == ["numpy", "ai-edge-litert"]
    # The requirements resolve to wheels for the image's platform (what `pip install` in the Dockerfile will do).
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                           "--implementation", "cp", "--python-version", "3.12", "--platform",
                           "manylinux_2_27_aarch64", "--platform", "manylinux2014_aarch64", "--platform",
                           "manylinux_2_28_aarch64", "-d", str(tmp_path / "wheels"), "-r",
                           str(context / "requirements.txt")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "wheels").glob("*aarch64*.whl"))) == 2
