"""Issue 14: every Lambda Python runtime and architecture gets wheels whose ELF files fit its glibc, the model is
loaded with the runtime release that ships, and a model that release cannot load falls back to the other format.
(The python3.11 package's local invoke through awslambdaric: tests/integration/test_runtime_matrix_invoke.py.)

The per-target wheels come from PyPI through `pip install --platform` into the packager's cache (first run: about
two minutes of downloads; later runs read the cache).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgemaas.errors import UserError
from edgemaas.packaging.awslambda.lambda_zip import package_lambda
from edgemaas.packaging.common import dependencies
from edgemaas.packaging.common.glibc import check_tree
from edgemaas.packaging.common.matrix import ELF_MACHINE, LAMBDA_OS, matrix, plan
from edgemaas.runtime import read_manifest
from edgemaas.runtime.manifest import sha256_file
from edgemaas.workspace import Workspace

pytestmark = pytest.mark.models("cnn")

TARGETS = sorted({(p.python, p.arch, p.requirements) for p in matrix() if p.ships})


@pytest.mark.parametrize("python, arch, requirements", TARGETS,
                         ids=[f"py{py}-{arch}-{reqs[-1]}" for py, arch, reqs in TARGETS])
def test_every_wheel_of_every_target_needs_no_newer_glibc_than_its_runtime(
        python: str, arch: str, requirements: tuple[str, ...], trained: Workspace) -> None:
    deps = dependencies.install(list(requirements), python, arch, trained.cache())
    allowed = LAMBDA_OS[python].glibc
    check = check_tree(deps, allowed, f"python{python} {arch}")
    assert check.files >= 3  # numpy's extension modules and the runtime's libraries were read
    assert check.machines == [ELF_MACHINE[arch]]
    assert check.ok, check.problem()
    assert check.needed is not None and check.needed <= allowed


def test_arm64_on_amazon_linux_2_ships_onnx_with_a_message(trained: Workspace, tmp_path: Path) -> None:
    assert plan("3.11", "arm64", "tflite").ships == "onnx"
    package = package_lambda(trained.variant_dir("cnn", "tflite-int8"), tmp_path / "lambda", trained.cache(),
                             "3.11", "arm64", "zip")
    assert package.model_format == "onnx" and package.variant == "onnx-float32"
    assert package.requirements == ["numpy==1.26.4", "onnxruntime==1.16.3"]
    assert package.fallback.startswith("tflite-int8 not shipped: no TFLite interpreter wheel loads on Amazon Linux 2 "
                                       "arm64") and package.fallback in package.warnings
    assert package.glibc is not None and package.glibc["ok"] and package.glibc["machines"] == ["EM_AARCH64"]
    assert package.load_check is not None and package.load_check["ok"]
    assert package.load_check["executed"] and not package.load_check["exact_wheels"]  # same release, this machine


def _with_op_version(source: Path, dest: Path, version: int) -> str:
    """A copy of a TFLite variant whose first operator claims `version` (too new for any runtime); its op name."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    shutil.copytree(source, dest)
    manifest = read_manifest(dest)
    model_file = dest / manifest.model.file
    model = schema.ModelT.InitFromPackedBuf(model_file.read_bytes(), 0)
    code = model.operatorCodes[0]
    code.version = version
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    model_file.write_bytes(bytes(builder.Output()))
    manifest.model.sha256, manifest.model.size_bytes = sha256_file(model_file), model_file.stat().st_size
    manifest.save(dest)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return names[max(code.builtinCode, code.deprecatedBuiltinCode)]


def test_op_version_too_new_for_the_shipped_runtime_falls_back_to_onnx(trained: Workspace, tmp_path: Path) -> None:
    models = tmp_path / "build" / "cnn"
    op = _with_op_version(trained.variant_dir("cnn", "tflite-int8"), models / "tflite-int8", 99)
    shutil.copytree(trained.variant_dir("cnn", "onnx-float32"), models / "onnx-float32")
    package = package_lambda(models / "tflite-int8", tmp_path / "lambda", trained.cache(), "3.11", "x86_64", "zip")
    assert package.variant == "onnx-float32" and package.requirements == ["numpy==1.26.4", "onnxruntime==1.16.3"]
    assert package.fallback == (f"ai-edge-litert==1.4.0 cannot load tflite-int8: it does not know op {op} version "
                                "99; shipping onnx-float32 instead")
    assert package.fallback in package.warnings and package.load_check and package.load_check["ok"]

    shutil.rmtree(models / "onnx-float32")  # nothing else fits: refused, naming the op and its version
    with pytest.raises(UserError, match=f"does not know op {op} version 99. No onnx variant was built"):
        package_lambda(models / "tflite-int8", tmp_path / "refused", trained.cache(), "3.11", "x86_64", "zip")
    assert not (tmp_path / "refused" / "package.json").exists()
