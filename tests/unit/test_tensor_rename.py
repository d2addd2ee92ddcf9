"""rename_graph_io: an exported graph's inputs and outputs renamed by position, everywhere they are used."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgemaas.compress.passes.onnx_passes import rename_graph_io


def exported() -> object:
    """serving_default_x:0 -> an If whose branches read it from the outer scope -> StatefulPartitionedCall:0."""
    x = helper.make_tensor_value_info("serving_default_x:0", TensorProto.FLOAT, ["batch", 2])
    y = helper.make_tensor_value_info("StatefulPartitionedCall:0", TensorProto.FLOAT, ["batch", 2])
    branch_out = helper.make_tensor_value_info("branch", TensorProto.FLOAT, ["batch", 2])
    then_graph = helper.make_graph([helper.make_node("Neg", ["serving_default_x:0"], ["branch"])], "then", [],
                                   [branch_out])
    else_graph = helper.make_graph([helper.make_node("Abs", ["serving_default_x:0"], ["branch"])], "else", [],
                                   [branch_out])
    nodes = [helper.make_node("ReduceSum", ["serving_default_x:0"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["positive"]),
             helper.make_node("If", ["positive"], ["StatefulPartitionedCall:0"], then_branch=then_graph,
                              else_branch=else_graph)]
    graph = helper.make_graph(nodes, "tf2onnx", [x], [y], [numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def test_inputs_and_outputs_are_renamed_everywhere() -> None:
    model = exported()
    assert rename_graph_io(model.graph, ["x"], ["scores"])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"] and [o.name for o in session.get_outputs()] == ["scores"]
    for x, want in ((np.array([[1.0, 2.0]], np.float32), [[-1.0, -2.0]]),
                    (np.array([[-1.0, -2.0]], np.float32), [[1.0, 2.0]])):
        np.testing.assert_array_equal(session.run(None, {"x": x})[0], want)


def test_a_clash_or_a_count_mismatch_leaves_the_graph_alone() -> None:
    model = exported()
    before = model.SerializeToString()
    assert not rename_graph_io(model.graph, ["total"], ["scores"])  # "total" is another tensor's name
    assert not rename_graph_io(model.graph, ["x", "y"], ["scores"])
    assert not rename_graph_io(model.graph, ["x"], ["same", "same"])
    assert model.SerializeToString() == before
