"""Models the user brings: format detection by content, import, and packaging straight from the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgemaas.errors import UserError
from edgemaas.user_models.importing import detect_format, import_model
from edgemaas.local import invoke_local
from edgemaas.packaging.awslambda.target import package_for_lambda
from edgemaas.runtime import load_model
from edgemaas.workspace import Workspace
from tests.unit.test_importing import tiny_onnx

pytestmark = pytest.mark.models("cnn")  # the built-ins `trained` holds here


@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small tf-keras model saved three ways: .keras, HDF5 and SavedModel."""
    from edgemaas.tf import keras

    k = keras()
    k.utils.set_random_seed(0)
    model = k.Sequential([k.Input(shape=(5,)), k.layers.Dense(8, activation="relu"), k.layers.Dense(2)])
    root = tmp_path_factory.mktemp("keras")
    model.save(root / "model.keras")
    model.save(root / "model.h5")
    model.export(str(root / "saved_model"))
    np.save(root / "expected.npy", model.predict(np.ones((1, 5), np.float32), verbose=0))
    return root


def test_detects_keras_formats(tiny_keras: Path, tmp_path: Path) -> None:
    assert detect_format(tiny_keras / "model.keras") == "keras"
    assert detect_format(tiny_keras / "model.h5") == "h5"
    assert detect_format(tiny_keras / "saved_model") == "savedmodel"
    hdf5_named_keras = tmp_path / "old.keras"  # a Keras 2 HDF5 file saved with a .keras name
    shutil.copy(tiny_keras / "model.h5", hdf5_named_keras)
    assert detect_format(hdf5_named_keras) == "h5"


def test_detects_tflite(trained: Workspace, tmp_path: Path) -> None:
    renamed = tmp_path / "weights.bin"
    shutil.copy(trained.variant_dir("cnn", "tflite-int8") / "model.tflite", renamed)
    assert detect_format(renamed) == "tflite"


@pytest.mark.parametrize("source", ["model.keras", "model.h5", "saved_model"])
def test_keras_imports_convert_to_tflite(tiny_keras: Path, tmp_path: Path, source: str) -> None:
    ws = Workspace(tmp_path)
    manifest = import_model(tiny_keras / source, ws, name="tiny")
    assert manifest.variant == "tflite-float32" and manifest.model.format == "tflite"
    assert manifest.provenance["source_format"] == detect_format(tiny_keras / source)
    model = load_model(ws.variant_dir("tiny", "imported"))
    (prediction,) = model.predict([[1.0] * 5])
    np.testing.assert_allclose(prediction["values"], np.load(tiny_keras / "expected.npy")[0], rtol=1e-5)


def test_truncated_tflite_is_refused_at_import(trained: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "broken.tflite"
    path.write_bytes((trained.variant_dir("cnn", "tflite-int8") / "model.tflite").read_bytes()[:2000])
    with pytest.raises(UserError, match="the runtime cannot load this model"):
        import_model(path, Workspace(tmp_path))


def test_onnx_file_packages_and_serves_through_awslambdaric(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    source = tiny_onnx(tmp_path / "Tiny Classifier.onnx")
    package = package_for_lambda(str(source), ws, labels=["cat", "dog", "bird"])
    assert package.model == "tiny-classifier" and package.model_format == "onnx"
    assert any(r.startswith("onnxruntime==") for r in package.requirements)
    (result,) = invoke_local(Path(package.zip_path), [{"inputs": [[1, 2, 3, 4]]}])
    assert result.function_error is None, result.error_message
    prediction = result.payload["predictions"][0]
    assert prediction["label"] in ("cat", "dog", "bird")
    manifest = json.loads((ws.variant_dir("tiny-classifier", "imported") / "manifest.json").read_text())
    assert manifest["inputs"][0]["shape"] == [-1, 4]


def test_a_saved_model_carrying_a_secret_is_refused(tiny_keras: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from edgemaas.cli import cli

    model = tmp_path / "exported"
    shutil.copytree(tiny_keras / "saved_model", model)
    (model / "assets").mkdir(exist_ok=True)
    (model / "assets" / ".env").write_text("DATABASE_URL=postgres://user:hunter2@db/prod\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["compress", str(model)])
    assert result.exit_code == 1
    assert (f"Error: refusing to put what looks like a secret into the workspace (SavedModel {model}):\n"
            f"  assets/.env (from {model / 'assets' / '.env'}): its name is one that holds secrets\n") in result.output
    assert not any((tmp_path / "build").rglob("manifest.json")) if (tmp_path / "build").exists() else True
