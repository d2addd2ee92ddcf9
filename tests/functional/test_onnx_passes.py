"""ONNX passes on tiny real tf-keras models: export with parity, dynamic/static int8, float16, TFLite sources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgemaas.errors import StageFailed
from edgemaas.isolate import run_isolated
from edgemaas.compress.passes import onnx_passes as passes

MODELS = ("cnn", "text", "regression")


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = _session(path)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _json_able(notes: dict) -> dict:
    assert json.loads(json.dumps(notes)) == notes
    return notes


def _op_types(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Three small tf-keras models, trained an epoch on random data (non-trivial weights), saved as .keras with
    100 preprocessed samples each (.npy)."""
    from edgemaas.tf import keras

    k = keras()
    k.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("onnx-passes")
    rng = np.random.default_rng(0)
    layers = k.layers
    built = {
        # 16 filters: enough weights for int8 to shrink the file past the quantization overhead
        "cnn": (k.Sequential([layers.Input((8, 8)), layers.Reshape((8, 8, 1)),
                              layers.Conv2D(16, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
                              layers.Flatten(), layers.Dense(10, activation="softmax")]),
                rng.random((128, 8, 8), dtype=np.float32), rng.integers(0, 10, 128), "sparse_categorical_crossentropy"),
        "text": (k.Sequential([layers.Input((6,), dtype="int32"), layers.Embedding(50, 8),
                               layers.GRU(8, unroll=True), layers.Dense(3, activation="softmax")]),
                 rng.integers(0, 50, (128, 6)).astype(np.int32), rng.integers(0, 3, 128),
                 "sparse_categorical_crossentropy"),
        "regression": (k.Sequential([layers.Input((10,)), layers.Dense(16, activation="relu"), layers.Dense(1)]),
                       rng.standard_normal((128, 10)).astype(np.float32), rng.standard_normal(128), "mse"),
    }
    found = {}
    for name, (model, x, y, loss) in built.items():
        model.compile("adam", loss)
        model.fit(x, y, epochs=2, batch_size=32, verbose=0)
        path, samples = root / f"{name}.keras", root / f"{name}.npy"
        model.save(path)
        np.save(samples, x[:100])
        found[name] = {"model": model, "keras": path, "samples": samples, "x": x[:100], "dir": root}
    return found


@pytest.fixture(scope="module")
def exported(models: dict[str, dict[str, Any]]) -> dict[str, tuple[Path, dict]]:
    result = {}
    for name, info in models.items():
        out = info["dir"] / f"{name}.onnx"
        notes = passes.export_onnx(str(info["keras"]), "keras", str(out), parity_inputs_path=str(info["samples"]))
        result[name] = (out, _json_able(notes))
    return result


@pytest.mark.parametrize("name", MODELS)
def test_export_keras_matches_and_takes_any_batch(name: str, models: dict, exported: dict) -> None:
    out, notes = exported[name]
    x = models[name]["x"]
    assert notes["converter"] == "tf2onnx.convert.from_keras"
    assert notes["opset"] >= 17
    assert notes["parity_max_abs_diff"] < 1e-4 and notes["parity"]["samples"] == 100
    assert notes["nodes"] == sum(notes["op_types"].values()) > 0
    assert not Path(f"{out}.partial").exists()
    onnx.checker.check_model(str(out))
    session = _session(out)
    assert session.get_inputs()[0].shape[0] == "batch" and session.get_outputs()[0].shape[0] == "batch"
    assert session.get_inputs()[0].type == ("tensor(int32)" if name == "text" else "tensor(float)")
    for batch in (1, 5):
        assert _run(out, x[:batch]).shape[0] == batch
    if name == "text":  # the unrolled GRU is plain ops, the embedding a Gather
        assert {"Gather", "MatMul", "Sigmoid", "Tanh"} <= set(notes["op_types"])
        assert "Loop" not in notes["op_types"] and "Scan" not in notes["op_types"]
    if name == "cnn":
        assert {"Conv", "MaxPool", "Reshape", "Softmax"} <= set(notes["op_types"])


def test_function_path_converts_the_gru_model_too(models: dict) -> None:
    """The fallback when from_keras fails: a traced tf.function with the same (dynamic-batch) signature."""
    proto, converter, problems = passes._convert_keras(models["text"]["model"], 17, use_function=True)
    assert converter == "tf2onnx.convert.from_function" and problems == []
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = models["text"]["x"]
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, models["text"]["model"].predict(x, verbose=0), atol=1e-5)


def test_parity_over_tolerance_raises_and_writes_nothing(models: dict, tmp_path: Path) -> None:
    # tf (oneDNN) and onnxruntime (MLAS) sum in different orders: the measured difference is ~4e-8, never 0
    out = tmp_path / "cnn.onnx"
    with pytest.raises(StageFailed, match=r"differ from the keras model by up to [0-9.e-]+ on 100 samples"):
        passes.export_onnx(str(models["cnn"]["keras"]), "keras", str(out),
                           parity_inputs_path=str(models["cnn"]["samples"]), parity_tolerance=0.0)
    assert list(tmp_path.iterdir()) == []


def test_export_from_tflite(models: dict, tmp_path: Path) -> None:
    from edgemaas.tf import tensorflow

    tf = tensorflow()
    source = tmp_path / "cnn.tflite"
    source.write_bytes(tf.lite.TFLiteConverter.from_keras_model(models["cnn"]["model"]).convert())
    out = tmp_path / "cnn.onnx"
    notes = _json_able(passes.export_onnx(str(source), "tflite", str(out), parity_inputs_path=str(models["cnn"]["samples"])))
    assert notes["converter"] == "tf2onnx.convert.from_tflite"
    assert notes["parity_max_abs_diff"] < 1e-4
    x = models["cnn"]["x"]
    assert _run(out, x[:5]).shape == (5, 10)
    np.testing.assert_allclose(_run(out, x[:5]), models["cnn"]["model"].predict(x[:5], verbose=0), atol=1e-4)


def test_export_from_int8_tflite_quantizes_the_parity_samples(models: dict, tmp_path: Path) -> None:
    """A full-int8 TFLite model keeps its int8 interface in ONNX; float samples are quantized for both."""
    from edgemaas.tf import tensorflow

    tf = tensorflow()
    x = models["cnn"]["x"]
    converter = tf.lite.TFLiteConverter.from_keras_model(models["cnn"]["model"])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s[None]] for s in x[:32])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    source = tmp_path / "cnn_int8.tflite"
    source.write_bytes(converter.convert())
    notes = passes.export_onnx(str(source), "tflite", str(tmp_path / "cnn_int8.onnx"),
                               parity_inputs_path=str(models["cnn"]["samples"]))
    assert notes["inputs"][0]["dtype"] == "int8" and notes["outputs"][0]["dtype"] == "int8"
    assert notes["parity_max_abs_diff"] < 1e-4
    assert "QuantizeLinear" in notes["op_types"]


def test_export_from_frozen_batch_tflite_fails_clearly(models: dict, tmp_path: Path) -> None:
    """A TFLite model frozen at batch 1 (how rolled GRUs convert) bakes the batch into its reshapes."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from edgemaas.tf import tensorflow

    tf = tensorflow()
    model = models["cnn"]["model"]
    function = tf.function(lambda x: model(x, training=False))
    frozen = convert_variables_to_constants_v2(function.get_concrete_function(tf.TensorSpec([1, 8, 8], tf.float32)))
    source = tmp_path / "frozen.tflite"
    source.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([frozen], model).convert())
    with pytest.raises(StageFailed, match="converted with a fixed batch of 1 .*export from the Keras model"):
        passes.export_onnx(str(source), "tflite", str(tmp_path / "frozen.onnx"))
    assert not (tmp_path / "frozen.onnx").exists() and not (tmp_path / "frozen.onnx.partial").exists()


@pytest.mark.parametrize("name", MODELS)
def test_dynamic_quantization(name: str, models: dict, exported: dict, tmp_path: Path) -> None:
    source, _ = exported[name]
    out = tmp_path / f"{name}.dynamic.onnx"
    notes = _json_able(passes.quantize_dynamic(str(source), str(out)))
    x = models[name]["x"]
    assert notes["preprocess"] == {"ok": True} and notes["attempt"] == "all supported ops"
    assert notes["batch_check"] == 3 and notes["settings"]["weight_type"] == "qint8"
    assert np.max(np.abs(_run(out, x) - _run(source, x))) < 0.1
    assert _run(out, x[:5]).shape[0] == 5
    assert "MatMulInteger" in notes["quantized_op_types"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no .partial, no preprocessing scratch left
    if name == "cnn":
        assert out.stat().st_size < source.stat().st_size and notes["size_ratio"] < 1
        assert "ConvInteger" in notes["quantized_op_types"]
    if name == "text":  # the embedding table is stored int8 too (a DequantizeLinear feeds the Gather)
        assert notes["quantized_op_types"].get("Gather") == 1


def test_a_failed_attempt_quantizes_less(models: dict, exported: dict, tmp_path: Path) -> None:
    """The fallback order: everything, then the embedding lookups kept float. The first attempt is made to fail
    (no real model of ours fails it); the second is ORT's real quantizer."""
    from onnxruntime.quantization import quantize_dynamic

    def quantize(source: Path, target: Path, exclude: list[str], op_types: list[str] | None) -> None:
        if not exclude:
            raise RuntimeError("this quantizer refuses embeddings")
        quantize_dynamic(str(source), str(target), op_types_to_quantize=op_types, nodes_to_exclude=exclude)

    out = tmp_path / "text.dynamic.onnx"
    notes = _json_able(passes._quantize_job("quantize_dynamic", str(exported["text"][0]), str(out), {}, quantize,
                                            None))
    assert notes["attempt"] == "embedding lookups kept float" and len(notes["excluded_nodes"]) == 1
    assert "refuses embeddings" in notes["warnings"][0]
    assert "Gather" not in notes["quantized_op_types"] and "MatMulInteger" in notes["quantized_op_types"]
    assert _run(out, models["text"]["x"][:3]).shape == (3, 3)


@pytest.mark.parametrize("method", passes.CALIBRATION_METHODS)
@pytest.mark.parametrize("name", MODELS)
def test_static_qdq_quantization(name: str, method: str, models: dict, exported: dict, tmp_path: Path) -> None:
    source, _ = exported[name]
    out = tmp_path / f"{name}.{method}.onnx"
    notes = _json_able(passes.quantize_static(str(source), str(out), str(models[name]["samples"]), method=method))
    x = models[name]["x"]
    assert {"QuantizeLinear", "DequantizeLinear"} <= _op_types(out)
    assert notes["op_types"]["QuantizeLinear"] > 0
    assert notes["calibration"] == {"samples": 100, "batch_size": 10, "method": method}
    assert notes["settings"]["extra_options"] == {"ActivationSymmetric": False, "WeightSymmetric": True}
    assert notes["excluded_nodes"] == [] and notes["check_inputs"] == "calibration samples"
    for batch in (1, 3, 5):
        assert _run(out, x[:batch]).shape[0] == batch
    assert np.max(np.abs(_run(out, x) - _run(source, x))) < 0.1
    if name == "text":  # int32 token ids in; the embedding lookup is quantized, not excluded
        assert _session(out).get_inputs()[0].type == "tensor(int32)"
        assert "Gather" in notes["quantized_op_types"]


def test_static_per_channel_uint8(models: dict, exported: dict, tmp_path: Path) -> None:
    out = tmp_path / "cnn.pc.onnx"
    notes = passes.quantize_static(str(exported["cnn"][0]), str(out), str(models["cnn"]["samples"]),
                                   per_channel=True, activation_type="quint8")
    assert notes["settings"]["per_channel"] is True and notes["settings"]["activation_type"] == "quint8"
    assert _run(out, models["cnn"]["x"][:3]).shape == (3, 10)


@pytest.mark.parametrize("name", MODELS)
def test_float16_keeps_float32_io_and_halves_weights(name: str, models: dict, exported: dict,
                                                      tmp_path: Path) -> None:
    source, _ = exported[name]
    out = tmp_path / f"{name}.fp16.onnx"
    notes = _json_able(passes.convert_float16(str(source), str(out)))
    session = _session(out)
    assert session.get_inputs()[0].type == ("tensor(int32)" if name == "text" else "tensor(float)")
    assert session.get_outputs()[0].type == "tensor(float)"
    assert 0.45 < notes["initializer_ratio"] < 0.6
    assert notes["initializer_bytes_after"] < notes["initializer_bytes_before"]
    onnx.checker.check_model(str(out))
    x = models[name]["x"]
    np.testing.assert_allclose(_run(out, x), _run(source, x), atol=1e-2)


@pytest.mark.parametrize("call, message", [
    (lambda d, e: passes.quantize_static(e, str(d / "o.onnx"), e, method="kl"), "minmax, entropy, percentile"),
    (lambda d, e: passes.quantize_dynamic(e, str(d / "o.onnx"), weight_type="int3"), "qint8, quint8"),
    (lambda d, e: passes.export_onnx(e, "keras", str(d / "o.onnx"), opset=13), "use 17 or newer"),
    (lambda d, e: passes.export_onnx(e, "pytorch", str(d / "o.onnx")), "keras, tflite"),
])
def test_bad_options_raise_value_error(call: Any, message: str, exported: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        call(tmp_path, str(exported["cnn"][0]))
    assert not (tmp_path / "o.onnx").exists()


def test_runs_isolated(models: dict, tmp_path: Path) -> None:
    out = tmp_path / "regression.onnx"
    notes = run_isolated(passes.export_onnx, str(models["regression"]["keras"]), "keras", str(out), 17,
                         str(models["regression"]["samples"]), timeout=300)
    assert notes["parity_max_abs_diff"] < 1e-4 and out.exists()
    notes = run_isolated(passes.quantize_static, str(out), str(tmp_path / "q.onnx"),
                         str(models["regression"]["samples"]), "percentile", timeout=300)
    assert notes["calibration"]["method"] == "percentile"
    with pytest.raises(StageFailed, match="ValueError: unknown calibration method 'kl'"):
        run_isolated(passes.quantize_static, str(out), str(tmp_path / "q2.onnx"),
                     str(models["regression"]["samples"]), "kl", timeout=300)
