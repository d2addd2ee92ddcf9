"""LiteRT (TFLite) post-training conversions: float32, float16, dynamic-range int8, full int8, int16x8.

Jobs here run in child processes (edgemaas.isolate): a converter can crash the interpreter, and for recurrent
models some modes do.

Recurrent layers: the converter's `from_keras_model` cannot lower the tensor-list ops of a symbolic loop, and full
int8 needs the loop unrolled. So float modes convert a *rolled* graph (one copy of the weights; frozen with a fixed
batch of 1 when the model has recurrent layers) and integer modes an *unrolled* one (one copy per time step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgemaas.fsutil import atomic_write_bytes

MODES = ("float32", "float16", "dynamic", "int8", "int16x8")
RECURRENT = ("GRU", "LSTM", "SimpleRNN")


def recurrent_layers(model: Any) -> list[Any]:
    found = []
    for layer in model.layers:
        inner = getattr(layer, "forward_layer", None) or layer  # Bidirectional wraps its layer
        if type(inner).__name__ in RECURRENT:
            found.append(inner)
    return found


def with_unroll(model: Any, unroll: bool) -> Any:
    """The same model with every recurrent layer rolled or unrolled (same weights)."""
    from edgemaas.tf import keras

    config = model.get_config()

    def patch(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("class_name") in RECURRENT and isinstance(node.get("config"), dict):
                node["config"]["unroll"] = unroll
            for value in node.values():
                patch(value)
        elif isinstance(node, list):
            for value in node:
                patch(value)

    patch(config)
    clone = model.__class__.from_config(config, custom_objects=None) if not isinstance(model, keras().Sequential) \
        else keras().Sequential.from_config(config)
    clone.set_weights(model.get_weights())
    return clone


def _converter(model: Any, frozen_batch: bool) -> Any:
    from edgemaas.tf import tensorflow

    tf = tensorflow()
    if not frozen_batch:
        return tf.lite.TFLiteConverter.from_keras_model(model)
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    specs = [tf.TensorSpec([1, *t.shape[1:]], t.dtype, name=t.name.split(":")[0]) for t in model.inputs]
    function = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False))
    frozen = convert_variables_to_constants_v2(function.get_concrete_function(*specs))
    return tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)


def keras_converter(source_path: str, mode: str, notes: dict[str, Any]) -> tuple[Any, bool]:
    """A TFLite converter for the Keras file (or SavedModel folder) at source_path, its recurrent layers rolled or
    unrolled as `mode` needs; returns it and whether the batch was frozen to 1. Fills `notes`."""
    from edgemaas.compress.passes.tfmot_passes import load_keras
    from edgemaas.tf import tensorflow

    tf = tensorflow()
    if Path(source_path).is_dir():  # a SavedModel
        model, recurrent = None, []
    else:
        model = load_keras(source_path)
        recurrent = recurrent_layers(model)
    integer = mode in ("int8", "int16x8")
    frozen_batch = False
    if recurrent:
        rolled = not all(layer.unroll for layer in recurrent)
        if integer and rolled:
            model, notes["recurrent"] = with_unroll(model, True), "unrolled for integer quantization"
        elif not integer and not rolled:
            model, notes["recurrent"] = with_unroll(model, False), "rolled (one copy of the weights)"
        frozen_batch = not integer  # a rolled loop converts only from a frozen, fixed-batch function
        notes["fixed_batch"] = 1 if frozen_batch else None
    converter = tf.lite.TFLiteConverter.from_saved_model(source_path) if model is None else \
        _converter(model, frozen_batch)
    return converter, frozen_batch


def convert_keras(source_path: str, out_path: str, mode: str, representative_path: str | None = None) -> dict:
    """Convert a Keras model file to TFLite in `mode`; write out_path atomically; return notes."""
    from edgemaas.tf import tensorflow

    if mode not in MODES:
        raise ValueError(f"unknown TFLite mode {mode!r}; expected one of {', '.join(MODES)}")
    tf = tensorflow()
    notes: dict[str, Any] = {"mode": mode}
    integer = mode in ("int8", "int16x8")
    converter, frozen_batch = keras_converter(source_path, mode, notes)
    if mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif integer:
        samples = np.load(representative_path)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([s[None]] for s in samples)
        if mode == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if samples.dtype.kind == "f":  # token ids stay int32: only float inputs take the int8 interface
                converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        else:
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        notes["representative_samples"] = int(len(samples))
    if frozen_batch:
        # Frozen graphs lose the Keras hints; keep select ops off so the model runs on plain LiteRT.
        converter.target_spec.supported_ops = list(converter.target_spec.supported_ops or
                                                   [tf.lite.OpsSet.TFLITE_BUILTINS])
    content = converter.convert()
    write_atomic(Path(out_path), content)
    notes["bytes"] = len(content)
    return notes


def write_atomic(path: Path, content: bytes) -> None:
    atomic_write_bytes(path, content)
