"""The four built-in models reach their metric floors, and full int8 stays close to float."""

from __future__ import annotations

import pytest

from edgemaas.runtime import read_manifest
from edgemaas.workspace import FLOAT_VARIANT, Workspace


def held_out(ws: Workspace, name: str, variant: str) -> dict:
    return read_manifest(ws.variant_dir(name, variant)).metrics["held_out"]


def test_cnn_reaches_95_percent(trained: Workspace) -> None:
    assert held_out(trained, "cnn", FLOAT_VARIANT)["accuracy"] >= 0.95


def test_nlp_reaches_95_percent(trained: Workspace) -> None:
    assert held_out(trained, "nlp", FLOAT_VARIANT)["accuracy"] >= 0.95


def test_rnn_beats_the_naive_forecast(trained: Workspace) -> None:
    metrics = held_out(trained, "rnn", FLOAT_VARIANT)
    assert metrics["rmse"] < 0.8 * metrics["naive_last_value_rmse"]


def test_linear_regression_explains_variance(trained: Workspace) -> None:
    metrics = held_out(trained, "linear", FLOAT_VARIANT)
    # Ordinary least squares reaches R² of about 0.3-0.5 on this data; a constant predictor scores 0.
    assert metrics["r2"] > 0.25
    assert metrics["rmse"] < 65


@pytest.mark.parametrize("name", ["cnn", "nlp"])
def test_int8_accuracy_within_two_points(trained: Workspace, name: str) -> None:
    reference = held_out(trained, name, FLOAT_VARIANT)["accuracy"]
    assert held_out(trained, name, "tflite-int8")["accuracy"] >= reference - 0.02


@pytest.mark.parametrize("name", ["rnn", "linear"])
def test_int8_rmse_within_five_percent(trained: Workspace, name: str) -> None:
    reference = held_out(trained, name, FLOAT_VARIANT)["rmse"]
    assert held_out(trained, name, "tflite-int8")["rmse"] <= reference * 1.05


@pytest.mark.parametrize("name", ["linear", "cnn", "rnn", "nlp"])
def test_every_variant_manifest_is_complete(trained: Workspace, name: str) -> None:
    for variant in ("tflite-float32", "tflite-int8"):
        manifest = read_manifest(trained.variant_dir(name, variant))
        assert manifest.model.format == "tflite" and len(manifest.model.sha256) == 64
        assert manifest.model.size_bytes == (trained.variant_dir(name, variant) / "model.tflite").stat().st_size
        assert manifest.provenance["parent"] == read_manifest(trained.variant_dir(name, FLOAT_VARIANT)).model.sha256
        assert manifest.metrics["latency_p50_ms"] > 0
        assert "held_out" in manifest.metrics and "metric_drop" in manifest.metrics


def test_int8_models_have_int8_interfaces(trained: Workspace) -> None:
    cnn = read_manifest(trained.variant_dir("cnn", "tflite-int8"))
    assert cnn.inputs[0].dtype == "int8" and cnn.inputs[0].scale > 0
    assert cnn.outputs[0].dtype == "int8" and cnn.outputs[0].scale > 0
    nlp = read_manifest(trained.variant_dir("nlp", "tflite-int8"))
    assert nlp.inputs[0].dtype == "int32"  # token ids are not quantized
    assert nlp.outputs[0].dtype == "int8"


def test_text_vocabulary_and_labels_travel_in_the_manifest(trained: Workspace) -> None:
    manifest = read_manifest(trained.variant_dir("nlp", "tflite-int8"))
    step = manifest.preprocessing[0]
    assert step["kind"] == "text" and step["vocabulary"][:2] == ["<pad>", "<oov>"]
    assert "turn_on" in manifest.postprocessing["labels"]
