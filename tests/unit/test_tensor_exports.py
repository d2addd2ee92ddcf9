"""Models as popular exporters write them, served in tensors and the Open Inference Protocol, equal to onnxruntime.

torch-style names (`input.1`, `onnx::Gather_3`), dim_param strings and unnamed dynamic dimensions, a detector whose
number of detections depends on the data (NonMaxSuppression: zero-size outputs when nothing is found), paddle2onnx
OCR names (`x`, `softmax_2.tmp_0`, `p2o.DynamicDimension.0`), BERT-like int64 token inputs, a float16 model and a
tf2onnx uint8 image input (`serving_default_images:0`). Every output is compared by name, as JSON and as bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgemaas.runtime.oip import DATATYPES
from edgemaas.runtime.service import Service
from tests.unit.test_tensor_contract import binary_body, serving

RNG = np.random.default_rng(5)


def save(model: Any, path: Path) -> Path:
    import onnx

    model.ir_version = 9  # what onnxruntime 1.16.3 (Lambda's Python 3.10/3.11) reads
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _int64(name: str, values: list[int]) -> Any:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def nms_detector(path: Path) -> Path:
    """input.1 [batch_size, 3, height, width] -> scores [?], dets [Gatherdets_dim_0, 4], labels [unk__7] (int64)."""
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["batch_size", 3, "height", "width"])
    outputs = [helper.make_tensor_value_info("onnx::Gather_3", TensorProto.FLOAT, [None]),
               helper.make_tensor_value_info("dets", TensorProto.FLOAT, ["Gatherdets_dim_0", 4]),
               helper.make_tensor_value_info("labels", TensorProto.INT64, ["unk__7"])]
    weights = numpy_helper.from_array(RNG.normal(size=(3, 24)).astype(np.float32), "onnx::MatMul_99")
    constants = [weights, _int64("boxes_shape", [1, 6, 4]), _int64("scores_shape", [1, 1, 6]),
                 _int64("max_out", [10]), numpy_helper.from_array(np.array([0.5], np.float32), "iou"),
                 numpy_helper.from_array(np.array([0.5], np.float32), "threshold"), _int64("two", [2]),
                 _int64("one", [1]), _int64("zero", [0]), _int64("six", [6]), _int64("flat", [-1])]
    nodes = [
        helper.make_node("ReduceMean", ["input.1"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("Slice", ["pooled", "zero", "one", "zero"], ["first"]),
        helper.make_node("MatMul", ["first", "onnx::MatMul_99"], ["raw"]),
        helper.make_node("Reshape", ["raw", "boxes_shape"], ["boxes"]),
        helper.make_node("Slice", ["raw", "zero", "six", "one"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["probabilities"]),
        helper.make_node("Reshape", ["probabilities", "scores_shape"], ["scores"]),
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou", "threshold"], ["selected"]),
        helper.make_node("Gather", ["selected", "two"], ["box_column"], axis=1),
        helper.make_node("Squeeze", ["box_column", "one"], ["kept"]),
        helper.make_node("Squeeze", ["boxes", "zero"], ["all_boxes"]),
        helper.make_node("Gather", ["all_boxes", "kept"], ["dets"], axis=0),
        helper.make_node("Reshape", ["scores", "flat"], ["all_scores"]),
        helper.make_node("Gather", ["all_scores", "kept"], ["onnx::Gather_3"], axis=0),
        helper.make_node("Gather", ["selected", "one"], ["class_column"], axis=1),
        helper.make_node("Squeeze", ["class_column", "one"], ["labels"]),
    ]
    graph = helper.make_graph(nodes, "torch_jit", [image], outputs, constants)
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def ocr_recogniser(path: Path) -> Path:
    """paddle2onnx: x [p2o.DynamicDimension.0, 3, 48, p2o.DynamicDimension.1] -> softmax_2.tmp_0 [N, W/4, 97]."""
    line = helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                         ["p2o.DynamicDimension.0", 3, 48, "p2o.DynamicDimension.1"])
    probabilities = helper.make_tensor_value_info("softmax_2.tmp_0", TensorProto.FLOAT,
                                                  ["p2o.DynamicDimension.0", "p2o.DynamicDimension.2", 97])
    weights = numpy_helper.from_array(RNG.normal(size=(3, 97)).astype(np.float32), "linear_1.w_0")
    nodes = [helper.make_node("AveragePool", ["x"], ["pooled"], kernel_shape=[48, 4], strides=[48, 4]),
             helper.make_node("Squeeze", ["pooled", "axis2"], ["columns"]),
             helper.make_node("Transpose", ["columns"], ["steps"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["steps", "linear_1.w_0"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["softmax_2.tmp_0"], axis=2)]
    graph = helper.make_graph(nodes, "paddle", [line], [probabilities], [weights, _int64("axis2", [2])])
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), path)


def token_encoder(path: Path) -> Path:
    """input_ids, attention_mask, token_type_ids int64 [batch_size, sequence_length] -> two float outputs."""
    names = ["input_ids", "attention_mask", "token_type_ids"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch_size", "sequence_length"]) for n in names]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                             ["batch_size", "sequence_length", 8]),
               helper.make_tensor_value_info("pooler_output", TensorProto.FLOAT, ["batch_size", 8])]
    words = numpy_helper.from_array(RNG.normal(size=(100, 8)).astype(np.float32), "embeddings.word_embeddings.weight")
    types = numpy_helper.from_array(RNG.normal(size=(2, 8)).astype(np.float32), "token_type_embeddings")
    nodes = [helper.make_node("Gather", ["embeddings.word_embeddings.weight", "input_ids"], ["/embeddings/Gather"]),
             helper.make_node("Gather", ["token_type_embeddings", "token_type_ids"], ["type_vectors"]),
             helper.make_node("Add", ["/embeddings/Gather", "type_vectors"], ["embedded"]),
             helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mask", "last"], ["mask3"]),
             helper.make_node("Mul", ["embedded", "mask3"], ["last_hidden_state"]),
             helper.make_node("ReduceMean", ["last_hidden_state"], ["mean"], axes=[1], keepdims=0),
             helper.make_node("Tanh", ["mean"], ["pooler_output"])]
    graph = helper.make_graph(nodes, "main_graph", inputs, outputs, [words, types, _int64("last", [-1])])
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), path)


def half_model(path: Path) -> Path:
    pixels = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT16, ["batch", 4])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT16, ["batch", 3])
    weights = numpy_helper.from_array(RNG.normal(size=(4, 3)).astype(np.float16), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["pixel_values", "w"], ["logits"])], "half", [pixels],
                              [logits], [weights])
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def uint8_images(path: Path) -> Path:
    """tf2onnx: serving_default_images:0 uint8 [unk__12, unk__13, unk__14, 3] -> StatefulPartitionedCall:1 (scores)
    then StatefulPartitionedCall:0 (int64 class), declared in that order."""
    images = helper.make_tensor_value_info("serving_default_images:0", TensorProto.UINT8,
                                           ["unk__12", "unk__13", "unk__14", 3])
    outputs = [helper.make_tensor_value_info("StatefulPartitionedCall:1", TensorProto.FLOAT, ["unk__15", 5]),
               helper.make_tensor_value_info("StatefulPartitionedCall:0", TensorProto.INT64, ["unk__15"])]
    weights = numpy_helper.from_array(RNG.normal(size=(3, 5)).astype(np.float32), "w")
    nodes = [helper.make_node("Cast", ["serving_default_images:0"], ["pixels"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["pixels"], ["pooled"], axes=[1, 2], keepdims=0),
             helper.make_node("MatMul", ["pooled", "w"], ["StatefulPartitionedCall:1"]),
             helper.make_node("ArgMax", ["StatefulPartitionedCall:1"], ["StatefulPartitionedCall:0"], axis=1,
                              keepdims=0)]
    graph = helper.make_graph(nodes, "tf2onnx", [images], outputs, [weights])
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


MODELS = {"nms": nms_detector, "ocr": ocr_recogniser, "tokens": token_encoder, "half": half_model,
          "uint8": uint8_images}
REQUESTS: dict[str, list[dict[str, np.ndarray]]] = {
    "nms": [{"input.1": RNG.normal(size=(1, 3, 20, 24)).astype(np.float32) + 3},
            {"input.1": np.zeros((2, 3, 8, 8), np.float32)}],  # all scores 0.5, not above the threshold: nothing
    "ocr": [{"x": RNG.normal(size=(1, 3, 48, 40)).astype(np.float32)},
            {"x": RNG.normal(size=(2, 3, 48, 64)).astype(np.float32)}],
    "tokens": [{"input_ids": RNG.integers(0, 100, (2, 7)), "attention_mask": np.ones((2, 7), np.int64),
                "token_type_ids": np.zeros((2, 7), np.int64)}],
    "half": [{"pixel_values": RNG.normal(size=(3, 4)).astype(np.float16)}],
    "uint8": [{"serving_default_images:0": RNG.integers(0, 256, (2, 10, 12, 3)).astype(np.uint8)}],
}


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Service]]:
    root = tmp_path_factory.mktemp("exports")
    made = {}
    for name, make in MODELS.items():
        path = make(root / f"{name}.onnx")
        made[name] = (path, serving(path))
    return made


def expected(path: Path, request: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, request)))


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray], where: str) -> None:
    assert list(got) == list(want), where  # every output, in the file's declared order
    for name, value in want.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, (where, name)
        np.testing.assert_allclose(got[name].astype(np.float64), value.astype(np.float64), rtol=1e-6, err_msg=where)


@pytest.mark.parametrize("name", list(MODELS))
def test_exported_models_answer_like_onnxruntime_in_every_form(name: str,
                                                               services: dict[str, tuple[Path, Service]]) -> None:
    path, service = services[name]
    route = f"/v2/models/{name}/infer"
    for request in REQUESTS[name]:
        want = expected(path, request)
        reply = service.dispatch("POST", "/predict", json.dumps({"inputs": {k: v.tolist() for k, v in
                                                                            request.items()}}))
        assert reply.status == 200, reply.body
        assert_same({k: np.array(v["data"], dtype=v["dtype"]).reshape(v["shape"])
                     for k, v in reply.body["outputs"].items()}, want, f"{name} tensors")
        as_json = {"inputs": [{"name": k, "shape": list(v.shape), "datatype": DATATYPES[str(v.dtype)],
                               "data": v.ravel().tolist()} for k, v in request.items()]}
        as_bytes = binary_body(request, {k: DATATYPES[str(v.dtype)] for k, v in request.items()})
        for body in (json.dumps(as_json), as_bytes):
            reply = service.dispatch("POST", route, body)
            assert reply.status == 200, reply.body
            datatypes = {v: k for k, v in DATATYPES.items()}
            assert_same({o["name"]: np.array(o["data"], dtype=datatypes[o["datatype"]]).reshape(o["shape"])
                         for o in reply.body["outputs"]}, want, f"{name} OIP")


def test_a_detector_that_finds_nothing_answers_zero_size_outputs(services: dict[str, tuple[Path, Service]]) -> None:
    _, service = services["nms"]
    reply = service.dispatch("POST", "/predict", json.dumps({"inputs": {"input.1": np.zeros((1, 3, 4, 4)).tolist()}}))
    assert reply.status == 200, reply.body
    assert {k: (v["shape"], v["data"]) for k, v in reply.body["outputs"].items()} == {
        "onnx::Gather_3": ([0], []), "dets": ([0, 4], []), "labels": ([0], [])}


def test_describe_keeps_the_exporters_names_and_dimensions(services: dict[str, tuple[Path, Service]]) -> None:
    tensors = services["ocr"][1].describe()["tensors"]
    assert tensors["inputs"] == [{"name": "x", "dtype": "float32",
                                  "shape": ["p2o.DynamicDimension.0", 3, 48, "p2o.DynamicDimension.1"]}]
    assert tensors["outputs"][0]["shape"] == ["p2o.DynamicDimension.0", "p2o.DynamicDimension.2", 97]
    nms = services["nms"][1].dispatch("GET", "/v2/models/nms", None).body
    assert [(o["name"], o["datatype"], o["shape"]) for o in nms["outputs"]] == [
        ("onnx::Gather_3", "FP32", [-1]), ("dets", "FP32", [-1, 4]), ("labels", "INT64", [-1])]
    assert services["nms"][1].describe()["tensors"]["outputs"][0]["shape"] == ["?"]  # unnamed in the file
