"""Identity models for the floor: the least a runtime can be asked to do (one float32 [1, 4] tensor in and out).

Made once and cached: the .tflite by TensorFlow's converter in a child process (TensorFlow never loads in the caller),
the .onnx with onnx.helper.
"""

from __future__ import annotations

from pathlib import Path

from edgemaas.errors import StageFailed, UserError
from edgemaas.fsutil import atomic_path
from edgemaas.isolate import run_isolated

SHAPE = [1, 4]


def identity_model(model_format: str, cache: Path) -> Path:
    """The cached identity model for `model_format` ("tflite" or "onnx"), made if missing."""
    path = cache / "bench" / f"identity-{SHAPE[0]}x{SHAPE[1]}.{model_format}"
    if path.exists():
        return path
    try:
        with atomic_path(path, keep_suffix=True) as tmp:
            if model_format == "tflite":
                run_isolated(write_identity_tflite, str(tmp), timeout=300)
            else:
                write_identity_onnx(str(tmp))
    except StageFailed as exc:
        raise UserError(f"could not make the identity model for the floor: {exc}") from None
    return path


def write_identity_tflite(path: str) -> None:
    from edgemaas.tf import tensorflow

    tf = tensorflow()
    function = tf.function(lambda x: tf.identity(x)).get_concrete_function(tf.TensorSpec(SHAPE, tf.float32))
    Path(path).write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([function]).convert())


def write_identity_onnx(path: str) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime we pin (1.15+)
    onnx.checker.check_model(model)
    onnx.save(model, path)
