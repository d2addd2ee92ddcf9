"""Per-layer quantization debugging and selective precision, on a Keras model made so that one layer breaks int8.

The layer `spiky` has a row of huge weights on an input feature that is always 0: in float they change nothing, in
int8 they stretch the layer's weight scale so far that its real weights all round to 0. Plain int8 must fail the
gate, the debugger must name `spiky` as the worst layer, and `tflite-int8-mixed` (spiky kept in float) must pass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgemaas.compress.records import ReportCard, VariantStatus
from edgemaas.compress.report import load_report, render_markdown
from edgemaas.pipeline import compress_file
from edgemaas.spec import Spec
from edgemaas.workspace import Workspace

pytestmark = pytest.mark.models()  # trains no built-in

FEATURES, CLASSES = 8, 4
LAYERS = ("spiky", "hidden", "head")


def spiky_model(path: Path) -> None:
    from edgemaas.tf import keras

    k = keras()
    k.utils.set_random_seed(0)
    inputs = k.Input((FEATURES,), name="features")
    # `hidden` is wide enough that weights, not quantization overhead, make the file: int8 must be clearly smaller.
    # (`spiky` stays narrow: at 256 units LiteRT's XNNPACK refuses the int8 model outright, scales out of range.)
    x = k.layers.Dense(32, activation="relu", name="spiky")(inputs)
    x = k.layers.Dense(256, activation="relu", name="hidden")(x)
    outputs = k.layers.Dense(CLASSES, activation="softmax", name="head")(x)
    model = k.Model(inputs, outputs)
    kernel, bias = model.get_layer("spiky").get_weights()
    kernel[0, :] = 1.0e4  # feature 0 is always 0: harmless in float, ruins every column's int8 scale
    model.get_layer("spiky").set_weights([kernel, bias])
    model.save(path)


def data(rng: np.random.Generator, count: int) -> np.ndarray:
    x = rng.normal(size=(count, FEATURES)).astype(np.float32)
    x[:, 0] = 0.0
    return x


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, ReportCard]:
    root = tmp_path_factory.mktemp("spiky")
    model = root / "spiky.keras"
    spiky_model(model)
    rng = np.random.default_rng(0)
    np.save(root / "calibration.npy", data(rng, 200))
    np.savez(root / "eval.npz", x=data(rng, 400))  # no labels: agreement with the float model
    spec = Spec.model_validate({"name": "spiky", "model": {"path": str(model)},
                                "compress": {"variants": ["tflite-float32", "tflite-int8", "onnx-float32",
                                                          "onnx-qdq"]},
                                "gate": {"max_metric_drop": 10.0, "objective": "smallest"}}, strict=False)
    ws = Workspace(root / "ws")
    result = compress_file(model, ws, name="spiky", calibration_data=root / "calibration.npy",
                           eval_data=root / "eval.npz", spec=spec)
    return ws, ReportCard.from_dict(result)


def test_debugger_names_the_keras_layers_and_finds_the_broken_one(card) -> None:
    _, report = card
    int8 = report.row("tflite-int8")
    layers = int8.extra["layers"]["layers"]
    assert {entry["layer"] for entry in layers} <= set(LAYERS)  # every row named after a real Keras layer
    assert {entry["layer"] for entry in layers} >= {"spiky", "head"}
    worst = max(layers, key=lambda entry: entry["error"])
    assert worst["layer"] == "spiky"
    others = [entry["error"] for entry in layers if entry["layer"] != "spiky"]
    assert worst["error"] > 10 * max(others)


def test_plain_int8_fails_and_mixed_passes_with_that_layer_in_float(card) -> None:
    ws, report = card
    int8, mixed = report.row("tflite-int8"), report.row("tflite-int8-mixed")
    assert int8.status is VariantStatus.REJECTED and int8.metric_drop > 10.0
    assert mixed is not None and mixed.extra["kept_float"] == ["spiky"]
    assert mixed.metric_drop <= 10.0 and mixed.status is VariantStatus.CHOSEN
    assert mixed.size_bytes < report.row("tflite-float32").size_bytes
    assert "repairs tflite-int8" in " ".join(mixed.notes)
    md = render_markdown(load_report(ws.dist / "spiky" / "report"))
    assert "## Per-layer quantization error" in md and "| spiky |" in md
    assert "`tflite-int8-mixed` kept in float: spiky" in md
    assert (ws.dist / "spiky" / "report" / "layer_error.png").stat().st_size > 1000


def test_onnx_qdq_is_debugged_by_node_and_repaired_with_nodes_to_exclude(card) -> None:
    _, report = card
    qdq, mixed = report.row("onnx-qdq"), report.row("onnx-qdq-mixed")
    layers = qdq.extra["layers"]["layers"]
    assert "onnxruntime qdq_loss_debug" in qdq.extra["layers"]["method"]
    # Named by the float graph's layers (tf2onnx: "<model>/<layer>"). spiky is the worst: the layers after it are
    # not charged for the values its broken weights push out of their calibrated range, nor for the negative half
    # of a Relu the quantizer dropped (both once tied them with spiky at 1.0).
    assert {entry["layer"].split("/")[-1] for entry in layers} <= set(LAYERS)
    assert max(layers, key=lambda entry: entry["error"])["layer"].endswith("/spiky")
    assert qdq.status is VariantStatus.REJECTED and qdq.metric_drop > 10.0
    assert mixed is not None and mixed.metric_drop <= 10.0
    assert "model/spiky" in mixed.extra["kept_float"] or any(n.endswith("/spiky") for n in mixed.extra["kept_float"])
    assert len(mixed.extra["kept_float"]) < len(LAYERS)  # not simply the float model again
