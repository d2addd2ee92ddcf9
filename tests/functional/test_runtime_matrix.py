"""Issue 14: every Lambda Python runtime and architecture gets wheels whose ELF files fit its glibc, the model is
loaded with the runtime release that ships, and a model that release cannot load falls back to the other format.
(The python3.11 package's local invoke through awslambdaric: tests/integration/test_runtime_matrix_invoke.py.)

The per-target wheels come from PyPI through `pip install --platform` into the packager's cache (first run: about
two minutes of downloads; later runs read the cache).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

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
    from ai_edge_litert import schema_py_generated as schema

    code = _rewrite_op_version(source, dest, lambda codes: codes[0], version)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return names[max(code.builtinCode, code.deprecatedBuiltinCode)]


def _rewrite_op_version(source: Path, dest: Path, pick: Callable[[list], Any], version: int) -> Any:
    """Copy a TFLite variant to `dest` with the operator code `pick` chooses claiming `version`; that code."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    shutil.copytree(source, dest)
    manifest = read_manifest(dest)
    model_file = dest / manifest.model.file
    model = schema.ModelT.InitFromPackedBuf(model_file.read_bytes(), 0)
    code = pick(model.operatorCodes)
    code.version = version
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    model_file.write_bytes(bytes(builder.Output()))
    manifest.model.sha256, manifest.model.size_bytes = sha256_file(model_file), model_file.stat().st_size
    manifest.save(dest)
    return code


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


def _with_op_named(source: Path, dest: Path, op: str, version: int) -> None:
    """A copy of a TFLite variant whose `op` operator code claims `version`."""
    from ai_edge_litert import schema_py_generated as schema

    wanted = getattr(schema.BuiltinOperator, op)
    _rewrite_op_version(source, dest, lambda codes: next(
        c for c in codes if max(c.builtinCode, c.deprecatedBuiltinCode) == wanted), version)


def test_an_op_version_only_the_newer_runtime_knows_ships_tflite_on_al2023_and_onnx_on_al2(
        trained: Workspace, tmp_path: Path) -> None:
    """SOFTMAX version 4 (measured: ai-edge-litert 2.3.0 registers it, 1.4.0 does not), as a newer converter would
    write it: the python3.12 package ships the TFLite model as it is; the python3.11 one notices at package time,
    by running the model with ai-edge-litert 1.4.0, and ships the ONNX sibling, saying why."""
    models = tmp_path / "build" / "cnn"
    _with_op_named(trained.variant_dir("cnn", "tflite-int8"), models / "tflite-int8", "SOFTMAX", 4)
    shutil.copytree(trained.variant_dir("cnn", "onnx-float32"), models / "onnx-float32")

    newer = package_lambda(models / "tflite-int8", tmp_path / "py312", trained.cache(), "3.12", "x86_64", "zip")
    assert (newer.variant, newer.fallback) == ("tflite-int8", "")
    assert newer.load_check is not None and newer.load_check["ok"] and newer.load_check["executed"]

    older = package_lambda(models / "tflite-int8", tmp_path / "py311", trained.cache(), "3.11", "x86_64", "zip")
    assert older.variant == "onnx-float32" and older.requirements == ["numpy==1.26.4", "onnxruntime==1.16.3"]
    assert older.fallback == ("ai-edge-litert==1.4.0 cannot load tflite-int8: it does not know op SOFTMAX version 4; "
                              "shipping onnx-float32 instead")
    assert older.warnings == [older.fallback]
    assert older.load_check is not None and older.load_check["ok"] and older.load_check["backend"] == "onnxruntime"
    assert older.glibc is not None and older.glibc["ok"] and older.glibc["target_glibc"] == "2.26"

    shutil.rmtree(models / "onnx-float32")
    with pytest.raises(UserError, match="it does not know op SOFTMAX version 4. No onnx variant was built beside it "
                                        "to fall back to; package for Python 3.12 or later"):
        package_lambda(models / "tflite-int8", tmp_path / "refused", trained.cache(), "3.10", "x86_64", "zip")
    assert not (tmp_path / "refused" / "package.json").exists()


def test_an_onnx_opset_too_new_for_onnxruntime_1_16_falls_back_to_tflite(trained: Workspace,
                                                                         tmp_path: Path) -> None:
    """onnxruntime 1.16.3 (Amazon Linux 2) supports ai.onnx up to opset 19; 1.32 (installed here) runs opset 20."""
    import onnx

    models = tmp_path / "build" / "cnn"
    shutil.copytree(trained.variant_dir("cnn", "onnx-float32"), models / "onnx-float32")
    shutil.copytree(trained.variant_dir("cnn", "tflite-int8"), models / "tflite-int8")
    manifest = read_manifest(models / "onnx-float32")
    model_file = models / "onnx-float32" / manifest.model.file
    model = onnx.load(str(model_file))
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 20
    onnx.save(model, str(model_file))
    manifest.model.sha256, manifest.model.size_bytes = sha256_file(model_file), model_file.stat().st_size
    manifest.save(models / "onnx-float32")

    package = package_lambda(models / "onnx-float32", tmp_path / "lambda", trained.cache(), "3.11", "x86_64", "zip")
    assert package.variant == "tflite-int8" and package.requirements == ["numpy==1.26.4", "ai-edge-litert==1.4.0"]
    assert package.fallback == ("onnxruntime==1.16.3 cannot load onnx-float32: it does not know ai.onnx opset 20 (it "
                                "supports up to 19); shipping tflite-int8 instead")
    assert package.load_check is not None and package.load_check["ok"]


def test_a_copied_workspace_packages_into_its_own_folder(trained: Workspace, tmp_path: Path) -> None:
    """A record copied with its workspace names the original's zip: it is made again here, not reused."""
    first = package_lambda(trained.variant_dir("cnn", "tflite-int8"), tmp_path / "a" / "lambda", trained.cache(),
                           "3.11", "x86_64", "zip")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    copied = package_lambda(trained.variant_dir("cnn", "tflite-int8"), tmp_path / "b" / "lambda", trained.cache(),
                            "3.11", "x86_64", "zip")
    assert not copied.reused and copied.zip_path == str(tmp_path / "b" / "lambda" / "function.zip")
    assert copied.sha256 == first.sha256  # the same inputs make the same bytes
    again = package_lambda(trained.variant_dir("cnn", "tflite-int8"), tmp_path / "b" / "lambda", trained.cache(),
                           "3.11", "x86_64", "zip")
    assert again.reused and again.zip_path == copied.zip_path


@pytest.mark.parametrize("python", ["3.10", "3.12", "3.13"])
def test_the_target_python_runs_the_shipped_wheels_at_package_time(python: str, trained: Workspace,
                                                                   tmp_path: Path) -> None:
    """With an interpreter of the target's Python here (PATH, pyenv or uv), the load check runs the package's own
    runtime files, as they unzip, with it; and the package carries that Python's bytecode."""
    import zipfile

    from edgemaas.packaging.awslambda.bytecode import target_python
    from edgemaas.packaging.awslambda.loadcheck import host_arch

    if target_python(python) is None:
        pytest.fail(f"no Python {python} here to run the shipped wheels with: install it (pyenv install {python}, "
                    f"or uv python install {python})")
    arch = host_arch()
    package = package_lambda(trained.variant_dir("cnn", "tflite-int8"), tmp_path / "lambda", trained.cache(),
                             python, arch, "zip")
    assert package.load_check is not None and package.load_check["ok"] and package.load_check["exact_wheels"]
    assert package.load_check["ran_with"] == f"Python {python} {arch}: {', '.join(package.requirements)}"
    assert package.warnings == []  # no "no Python here to precompile bytecode" either
    tag = f"cpython-{python.replace('.', '')}.pyc"
    with zipfile.ZipFile(package.zip_path) as archive:
        assert any(name.startswith("numpy/") and name.endswith(tag) for name in archive.namelist())
