"""A tampered, truncated or garbage model is refused, with the reason, at package time (Lambda zip and edge bundle)
and at run time (the runtime's loader, the Lambda function's init, the edge server's start-up, which must exit
non-zero and never listen).

tampered: one byte flipped; truncated: the first half only. Both no longer match the sha256 in the manifest.
garbage: bytes that are no model at all, with a manifest that matches them (a broken conversion, or a "fixed"
manifest): the sha256 check passes and the inference runtime itself must refuse the file.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgemaas.errors import UserError
from edgemaas.local import invoke_local
from edgemaas.packaging.edge.bundle import package_edge
from edgemaas.packaging.awslambda.lambda_zip import package_lambda
from edgemaas.pipeline import chosen_variant
from edgemaas.runtime import ModelLoadError, load_model
from edgemaas.runtime.manifest import MANIFEST_NAME
from edgemaas.workspace import Workspace
from tests.conftest import REPO

pytestmark = pytest.mark.models("cnn")  # the built-ins `trained` holds here

KINDS = ("tampered", "truncated", "garbage")
SHA_MISMATCH = "does not match its manifest"


def break_model(variant_dir: Path, into: Path, kind: str) -> Path:
    """A copy of variant_dir whose model file is broken in the way `kind` says."""
    copy = into / f"{kind}-{variant_dir.name}"
    shutil.copytree(variant_dir, copy)
    manifest_path = copy / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    model_file = copy / manifest["model"]["file"]
    data = bytearray(model_file.read_bytes())
    if kind == "tampered":
        data[len(data) // 2] ^= 0x01
    elif kind == "truncated":
        del data[len(data) // 2:]
    else:
        data = bytearray(b"".join(hashlib.sha256(i.to_bytes(2, "big")).digest() for i in range(256)))
        manifest["model"].update(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
        manifest_path.write_text(json.dumps(manifest, indent=2))
    model_file.write_bytes(bytes(data))
    return copy


CASES = [pytest.param((kind, fmt), id=f"{kind}-{fmt}") for kind in KINDS for fmt in ("tflite", "onnx")]


@pytest.fixture()
def broken(request: pytest.FixtureRequest, trained: Workspace, tmp_path: Path) -> tuple[Path, str]:
    """(the broken variant folder, the loader's reason for refusing it)."""
    kind, fmt = request.param
    variant_dir = break_model(chosen_variant(trained, "cnn", fmt=fmt), tmp_path, kind)
    with pytest.raises(ModelLoadError) as refused:
        load_model(variant_dir)
    reason = str(refused.value)
    if kind == "garbage":
        runtime = "ai-edge-litert" if fmt == "tflite" else "onnxruntime"
        assert reason.startswith(f"{runtime} cannot load this model: ") and len(reason) > len(runtime) + 30
    else:
        assert SHA_MISMATCH in reason and "the file was modified or truncated; rebuild the package" in reason
    return variant_dir, reason


@pytest.mark.parametrize("broken", CASES, indirect=True)
def test_lambda_package_refuses_it(broken: tuple[Path, str], trained: Workspace, tmp_path: Path) -> None:
    variant_dir, reason = broken
    out = tmp_path / "lambda"
    with pytest.raises(UserError) as refused:
        package_lambda(variant_dir, out, trained.cache())
    assert str(refused.value) == f"{variant_dir}: the runtime cannot load this model: {reason}"
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


@pytest.mark.parametrize("broken", CASES, indirect=True)
def test_edge_bundle_refuses_it(broken: tuple[Path, str], trained: Workspace, tmp_path: Path) -> None:
    variant_dir, reason = broken
    out = tmp_path / "edge"
    with pytest.raises(UserError) as refused:
        package_edge(variant_dir, out, trained.cache())
    assert str(refused.value) == f"{variant_dir}: the runtime cannot load this model: {reason}"
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("broken", CASES, indirect=True)
def test_edge_server_exits_with_the_reason_and_never_listens(broken: tuple[Path, str]) -> None:
    variant_dir, reason = broken
    done = subprocess.run([sys.executable, "-m", "edgemaas.edge_entry", "--model-dir", str(variant_dir), "serve",
                           "--port", "0"], cwd=REPO, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"Error: cannot load the model in {variant_dir}: {reason}"
    assert "Traceback" not in done.stderr and "serving" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize("kind", KINDS)
def test_lambda_init_fails_with_the_reason(kind: str, trained: Workspace, packaged_cnn: Path,
                                           tmp_path: Path) -> None:
    """The shipped zip with its model broken, as if altered after packaging: the function's init fails, and the
    error Lambda reports names the reason (the handler loads the model at init, not per request)."""
    broken = break_model(chosen_variant(trained, "cnn"), tmp_path, kind)
    with pytest.raises(ModelLoadError) as refused:
        load_model(broken)
    package = tmp_path / "function.zip"
    with zipfile.ZipFile(packaged_cnn) as source, zipfile.ZipFile(package, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            name = Path(info.filename)
            replaced = broken / name.name if name.parent == Path("model") else None
            target.writestr(info, replaced.read_bytes() if replaced else source.read(info))
    (result,) = invoke_local(package, [{"inputs": [[[0.0] * 8] * 8]}])
    assert result.function_error == "Unhandled"
    assert "ModelLoadError" in result.error_message
    # The same reason, but for the model's folder: the function's own model/ rather than the copy here.
    expected = re.escape(str(refused.value)).replace(re.escape(str(broken)), r"/\S+/model")
    assert re.search(expected, result.error_message), (expected, result.error_message)
    assert result.init_duration_ms is not None
