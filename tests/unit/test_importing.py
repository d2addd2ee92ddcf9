"""Models the user brings: format detection by content, and files that are refused (no TensorFlow needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgemaas.errors import UserError
from edgemaas.user_models.importing import detect_format


def tiny_onnx(path: Path) -> Path:
    """A real ONNX graph: y = softmax(x @ W + b), x of shape [N, 4], 3 classes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_detects_onnx_by_content_even_when_misnamed(tmp_path: Path) -> None:
    path = tiny_onnx(tmp_path / "model.onnx")
    disguised = tmp_path / "model.tflite"
    shutil.copy(path, disguised)
    assert detect_format(path) == "onnx"
    assert detect_format(disguised) == "onnx"


@pytest.mark.parametrize("content, message", [
    (b"hello, I am a text file\n", "not a model format edgemaas reads"),
    (b"PK\x03\x04garbage", "is a zip archive but not a Keras model"),
])
def test_garbage_is_refused_with_the_reason(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "model.onnx"
    if content.startswith(b"PK"):
        import zipfile

        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("readme.txt", "not a model")
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        detect_format(path)


def test_directory_without_saved_model(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="directory without saved_model.pb"):
        detect_format(tmp_path)
