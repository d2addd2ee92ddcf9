"""The runtime that ships in packages: parity with Keras, quantization, validation, integrity, import rule."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgemaas.runtime import ModelLoadError, RequestError, load_model, read_manifest
from edgemaas.workspace import FLOAT_VARIANT, Workspace
from tests.conftest import REPO


def keras_outputs(ws: Workspace, name: str, arrays: np.ndarray) -> np.ndarray:
    from edgemaas.tf import keras

    model = keras().models.load_model(ws.variant_dir(name, FLOAT_VARIANT) / "model.keras", compile=False)
    return model.predict(arrays, verbose=0)


@pytest.mark.parametrize("name", ["linear", "cnn", "rnn", "nlp"])
def test_float32_tflite_matches_keras(trained: Workspace, name: str) -> None:
    model = load_model(trained.variant_dir(name, "tflite-float32"))
    with np.load(trained.data_file(name)) as data:
        x_test = data["x_test"][:100]
    arrays = model.transform([x_test])
    expected = keras_outputs(trained, name, arrays[0])
    np.testing.assert_allclose(model.infer(arrays)[0], expected, rtol=1e-4, atol=1e-5)


def test_int8_cnn_agrees_with_keras_on_labels(trained: Workspace) -> None:
    model = load_model(trained.variant_dir("cnn", "tflite-int8"))
    with np.load(trained.data_file("cnn")) as data:
        x_test = data["x_test"]
    arrays = model.transform([x_test])
    expected = keras_outputs(trained, "cnn", arrays[0])
    got = model.infer(arrays)[0]
    assert got.dtype == np.float32  # dequantized
    assert np.mean(np.argmax(got, 1) == np.argmax(expected, 1)) >= 0.98
    assert np.max(np.abs(got - expected)) < 0.2


def test_predict_returns_labels_and_probabilities(trained: Workspace) -> None:
    model = load_model(trained.variant_dir("nlp", "tflite-int8"))
    predictions = model.predict(["please turn on the kitchen lights", "what's the weather in paris"])
    assert [p["label"] for p in predictions] == ["turn_on", "weather"]
    assert all(0 <= p["probability"] <= 1 and len(p["top"]) == 3 for p in predictions)


def test_regression_predictions_are_in_target_units(trained: Workspace) -> None:
    model = load_model(trained.variant_dir("rnn", "tflite-int8"))
    with np.load(trained.data_file("rnn")) as data:
        window, truth = data["x_test"][0].tolist(), float(data["y_test"][0])
    (prediction,) = model.predict([window])
    assert set(prediction) == {"sunspots"}
    assert abs(prediction["sunspots"] - truth) < 60  # sunspot numbers, not standardised units


def test_batches_of_any_size(trained: Workspace) -> None:
    model = load_model(trained.variant_dir("cnn", "tflite-float32"))
    with np.load(trained.data_file("cnn")) as data:
        x = data["x_test"][:7].tolist()
    one_by_one = [model.predict([sample])[0]["label"] for sample in x]
    assert [p["label"] for p in model.predict(x)] == one_by_one


@pytest.mark.parametrize("inputs, field, fragment", [
    ("not a list", "inputs", "expected a list (a batch of samples), got a string"),
    ([], "inputs", "the batch is empty"),
    ([[0.0] * 8] * 8, "inputs[0]", "expected a list of length 8, got a number"),
    ([[[0.0] * 8] * 7], "inputs[0]", "expected a list of length 8, got length 7"),
    ([[["1"] * 8] * 8], "inputs[0]", "expected a number, got a string"),
    ([[[True] * 8] * 8], "inputs[0]", "expected a number, got a boolean"),
    ([[[None] * 8] * 8], "inputs[0]", "expected a number, got null"),
    ([[[float("nan")] * 8] * 8], "inputs[0]", "is not a finite float32"),
    ([[[1e39] * 8] * 8], "inputs[0]", "is not a finite float32"),
    ([[[0.0] * 8] * 8] * 257, "inputs", "the batch has 257 samples; the limit is 256"),
])
def test_bad_numeric_requests_name_the_field(trained: Workspace, inputs, field: str, fragment: str) -> None:
    model = load_model(trained.variant_dir("cnn", "tflite-int8"))
    with pytest.raises(RequestError) as caught:
        model.predict(inputs)
    assert caught.value.field == field
    assert fragment in str(caught.value)


def test_bad_text_requests(trained: Workspace) -> None:
    model = load_model(trained.variant_dir("nlp", "tflite-int8"))
    with pytest.raises(RequestError, match=r"inputs\[1\]: expected a string, got a number"):
        model.predict(["ok", 5])
    with pytest.raises(RequestError, match=r"inputs\[0\]: text of 5000 characters exceeds the limit of 1000"):
        model.predict(["a" * 5000])


def test_tampered_model_is_refused(trained: Workspace, tmp_path: Path) -> None:
    copy = tmp_path / "cnn"
    shutil.copytree(trained.variant_dir("cnn", "tflite-int8"), copy)
    data = bytearray((copy / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="does not match its manifest"):
        load_model(copy)


def test_truncated_model_is_refused(trained: Workspace, tmp_path: Path) -> None:
    copy = tmp_path / "cnn"
    shutil.copytree(trained.variant_dir("cnn", "tflite-int8"), copy)
    (copy / "model.tflite").write_bytes((copy / "model.tflite").read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="modified or truncated"):
        load_model(copy)


def test_manifest_of_another_schema_is_refused(trained: Workspace, tmp_path: Path) -> None:
    copy = tmp_path / "cnn"
    shutil.copytree(trained.variant_dir("cnn", "tflite-int8"), copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schema"] = "something/9"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="this runtime reads 'edgemaas.manifest/1'"):
        load_model(copy)


def test_runtime_and_handler_do_not_import_tensorflow(trained: Workspace) -> None:
    """A fresh interpreter that loads a model through the handler has no tensorflow, click or boto3 loaded."""
    code = (
        "import os, sys, json\n"
        f"os.environ['EDGEMAAS_MODEL_DIR'] = {str(trained.variant_dir('cnn', 'tflite-int8'))!r}\n"
        f"sys.path.insert(0, {str(REPO / 'functions')!r})\n"
        "import aws_lambda\n"
        "heavy = sorted(m for m in ('tensorflow', 'tf_keras', 'keras', 'click', 'boto3', 'rich') if m in sys.modules)\n"
        "print(json.dumps({'heavy': heavy, 'backend': aws_lambda.MODEL.backend.name}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"heavy": [], "backend": "ai-edge-litert"}


def test_manifest_records_preprocessing(trained: Workspace) -> None:
    manifest = read_manifest(trained.variant_dir("linear", "tflite-float32"))
    step = manifest.preprocessing[0]
    assert step["kind"] == "numeric" and step["shape"] == [10] and len(step["mean"]) == 10
    assert manifest.postprocessing["kind"] == "regression" and manifest.postprocessing["names"] == ["progression"]
