"""onnxruntime's quant_pre_process writes sym_shape_infer_temp.onnx and a uuid-named .data file into the current
directory when symbolic shape inference is incomplete, then raises. The ONNX passes must leave the directory they
are run from as they found it (the stray files used to appear in the repository root)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgemaas.compress.passes import onnx_passes
from edgemaas.isolate import run_isolated


def shape_from_values_onnx(path: Path) -> Path:
    """y = x @ W + ConstantOfShape(r), where r ([1, 1] at run time) is computed from x's values: symbolic shape
    inference cannot know the added tensor's shape, so onnxruntime's pre-pass gives up (and writes its files)."""
    one = [helper.make_node("ReduceMax", ["x"], ["t"], keepdims=0), helper.make_node("Greater", ["t", "low"], ["g"]),
           helper.make_node("Cast", ["g"], ["i"], to=TensorProto.INT64),
           helper.make_node("Unsqueeze", ["i", "axis"], ["u"]),
           helper.make_node("Concat", ["u", "u"], ["r"], axis=0)]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"]), *one, helper.make_node("ConstantOfShape", ["r"], ["c"]),
             helper.make_node("Add", ["m", "c"], ["y"])]
    graph = helper.make_graph(
        nodes, "shape-from-values", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.linspace(-1, 1, 16, dtype=np.float32).reshape(4, 4), "W"),
                     numpy_helper.from_array(np.array(-1e30, dtype=np.float32), "low"),
                     numpy_helper.from_array(np.array([0], dtype=np.int64), "axis")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_a_failed_pre_pass_leaves_the_current_directory_clean(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    source = shape_from_values_onnx(tmp_path / "model.onnx")
    here = tmp_path / "where-the-user-runs-edgemaas"
    here.mkdir()
    monkeypatch.chdir(here)  # the isolated child inherits it, as it does from the CLI
    notes = run_isolated(onnx_passes.quantize_dynamic, str(source), str(tmp_path / "dynamic.onnx"), timeout=300)
    assert notes["preprocess"]["ok"] is False, notes  # the pre-pass did fail: the case that wrote the files
    assert "Incomplete symbolic shape inference" in notes["preprocess"]["error"]
    assert sorted(p.name for p in here.iterdir()) == []
    assert (tmp_path / "dynamic.onnx").is_file()  # and the pass still quantized the model as exported
