"""Per-layer quantization error, named by the user's layers, and selective precision that keeps the worst in float.

TFLite: LiteRT's QuantizationDebugger runs the calibrated model with a NumericVerify op after every quantized op,
which compares the op's int8 output with the same op run in float on the same (dequantized) input. So each figure
is the error that layer *adds*, not the error accumulated up to it. The figure is RMSE / scale: the error in
quantization steps (about 0.29, 1/sqrt(12), is plain rounding; much more means the layer's range does not fit int8).
Tensor names are mapped back to the Keras layer that made them.

Jobs here run in child processes (edgemaas.isolate): they import TensorFlow.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np

from edgemaas.fsutil import atomic_write_bytes

DEBUG_SAMPLES = 64
TFLITE_METHOD = "LiteRT QuantizationDebugger (NumericVerify per op)"
TFLITE_METRIC = "RMSE / scale (quantization steps)"


def keras_layer_for(tensor_name: str, layer_names: list[str]) -> str:
    """The Keras layer a converted tensor came from: the first path component of its (fused) name that is a layer's
    name, e.g. "model/conv2d/Relu;model/conv2d/BiasAdd" -> "conv2d". The tensor name when none matches."""
    known = set(layer_names)
    for part in tensor_name.split(";"):
        for component in part.split("/"):
            if component in known:
                return component
    return tensor_name


def _debugger(source_path: str, representative_path: str, denylist: list[str] | None) -> Any:
    from edgemaas.compress.passes.tflite_passes import keras_converter
    from edgemaas.tf import tensorflow

    tf = tensorflow()
    notes: dict[str, Any] = {}
    converter, _ = keras_converter(source_path, "int8", notes)
    samples = np.load(representative_path)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s[None]] for s in samples)
    debug = samples[: DEBUG_SAMPLES]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denylist or None)
    return tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=lambda: ([s[None]] for s in debug),
                                                     debug_options=options)


def _layer_names(source_path: str) -> list[str]:
    from pathlib import Path

    if Path(source_path).is_dir():
        return []
    from edgemaas.compress.passes.tfmot_passes import load_keras

    return [layer.name for layer in load_keras(source_path).layers]


def tflite_layer_errors(source_path: str, representative_path: str) -> dict[str, Any]:
    """Job: the error each layer adds under full int8, per Keras layer in graph order:
    {"method", "metric", "layers": [{"layer", "op", "error", "tensors": [tensor names]}]}. A layer that made several
    tensors reports its worst."""
    debugger = _debugger(source_path, representative_path, None)
    debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    names = _layer_names(source_path)
    layers: dict[str, dict[str, Any]] = {}
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        scale = float(row.get("scale") or 0)
        mse = float(row.get("mean_squared_error") or 0)
        error = math.sqrt(mse) / scale if scale > 0 else float("nan")
        name = keras_layer_for(row["tensor_name"], names)
        if name == row["tensor_name"] and layers and names:
            # An output tensor named after the graph (e.g. the softmax of the last Dense layer): it belongs to
            # the layer before it.
            name = list(layers)[-1]
        entry = layers.setdefault(name, {"layer": name, "op": row.get("op_name", ""), "error": error, "tensors": []})
        entry["tensors"].append(row["tensor_name"])
        if math.isfinite(error) and not error <= entry["error"]:
            entry["error"], entry["op"] = error, row.get("op_name", "")
    return {"method": TFLITE_METHOD, "metric": TFLITE_METRIC, "samples": int(min(len(np.load(representative_path)),
                                                                                  DEBUG_SAMPLES)),
            "layers": list(layers.values())}


def convert_mixed(source_path: str, out_path: str, representative_path: str, keep_float: list[str],
                  tensors: list[str]) -> dict[str, Any]:
    """Job: int8 with the ops that made `tensors` (the layers `keep_float`) left in float; float input and output."""
    debugger = _debugger(source_path, representative_path, list(tensors))
    content = debugger.get_nondebug_quantized_model()
    atomic_write_bytes(out_path, content)
    return {"mode": "int8-mixed", "kept_float": list(keep_float), "denylisted_nodes": list(tensors),
            "bytes": len(content)}
