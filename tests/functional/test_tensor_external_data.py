"""An ONNX file whose weights sit in a separate file (torch.onnx.export(..., external_data=True), exports of large
models) is brought as one self-contained file, answering like the original; a missing weights file is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgemaas.errors import UserError
from edgemaas.runtime import load_model
from edgemaas.runtime.service import Service
from edgemaas.user_models.importing import import_model, import_root
from edgemaas.workspace import Workspace


def external_onnx(folder: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])
    weights = numpy_helper.from_array(np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32),
                                      "fc.weight")
    graph = helper.make_graph([helper.make_node("MatMul", ["input.1", "fc.weight"], ["logits"])], "torch_jit",
                              [x], [y], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "classifier.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="classifier.onnx.data",
                    size_threshold=0)
    assert (folder / "classifier.onnx.data").is_file()
    return path


def test_weights_in_a_separate_file_are_brought_along(tmp_path: Path) -> None:
    path = external_onnx(tmp_path / "export")
    ws = Workspace(tmp_path / "ws")
    manifest = import_model(path, ws)
    served = ws.variant_dir(manifest.name, "imported")
    assert sorted(p.name for p in served.iterdir()) == ["manifest.json", "model.onnx"]
    x = np.random.default_rng(2).normal(size=(2, 4)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input.1": x})[0]
    reply = Service(load_model(served)).dispatch("POST", "/predict",
                                                 json.dumps({"inputs": {"input.1": x.tolist()}}))
    assert reply.status == 200, reply.body
    np.testing.assert_allclose(reply.body["outputs"]["logits"]["data"], expected, rtol=1e-6)
    root, root_manifest = import_root(path, ws, name="classifier-root")  # what `edgemaas compress FILE` starts from
    assert load_model(ws.variant_dir("classifier-root", root)).backend.outputs[0].name == "logits"


def test_a_missing_weights_file_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = external_onnx(tmp_path / "export")
    (tmp_path / "export" / "classifier.onnx.data").unlink()
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(UserError, match="keeps its weights in separate file.*keep them next to it"):
        import_model(path, ws)
    assert not ws.variant_dir("classifier", "imported").exists()
