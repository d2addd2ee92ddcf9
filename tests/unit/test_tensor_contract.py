"""The tensor contract in-process: the tensor form, the Open Inference Protocol and the routes of Service.dispatch.

Small ONNX graphs (onnx.helper) run in onnxruntime here; no TensorFlow, no subprocess. Every bad request must be a
4xx with a message naming the input; hypothesis checks that no body gets a 5xx.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgemaas.runtime import Manifest, ModelFile
from edgemaas.runtime.backends import open_backend
from edgemaas.runtime.manifest import sha256_bytes
from edgemaas.runtime.model import ServingModel
from edgemaas.runtime.service import Service
from tests.tensor_models import DTYPE_INPUTS, detector_onnx, dtypes_onnx, vad_onnx


def serving(path: Path, max_input_elements: int = 1 << 20) -> Service:
    """A tensor-form service for an ONNX file, with the manifest the importer would write."""
    content = path.read_bytes()
    backend = open_backend("onnx", content)
    manifest = Manifest(name=path.stem, variant="onnx-imported", task="tensors",
                        model=ModelFile(path.name, "onnx", sha256_bytes(content), len(content)),
                        inputs=backend.inputs, outputs=backend.outputs, preprocessing=[],
                        postprocessing={"kind": "raw"}, request_forms=["tensors"],
                        limits={"max_batch": 256, "max_text_chars": 1000, "max_input_elements": max_input_elements})
    return Service(ServingModel(manifest, backend))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("graphs")
    return {"vad": vad_onnx(root / "vad.onnx"), "detector": detector_onnx(root / "detector.onnx"),
            "dtypes": dtypes_onnx(root / "dtypes.onnx")}


@pytest.fixture(scope="module")
def vad(files: dict[str, Path]) -> Service:
    return serving(files["vad"], max_input_elements=4096)


def post(service: Service, body: Any, path: str = "/predict") -> tuple[int, dict[str, Any]]:
    reply = service.dispatch("POST", path, json.dumps(body) if not isinstance(body, (str, bytes)) else body)
    return reply.status, json.loads(reply.text)


VAD_OK = {"input": [[0.5] * 8], "state": [[[0.1] * 16], [[0.2] * 16]], "sr": 16000}


def test_the_tensor_form_answers_every_output_by_name_like_onnxruntime(vad: Service, files: dict[str, Path]) -> None:
    status, body = post(vad, {"inputs": VAD_OK})
    assert status == 200 and list(body["outputs"]) == ["output", "stateN"]
    session = ort.InferenceSession(str(files["vad"]), providers=["CPUExecutionProvider"])
    feeds = {"input": np.array(VAD_OK["input"], np.float32), "state": np.array(VAD_OK["state"], np.float32),
             "sr": np.array(16000, np.int64)}
    for name, want in zip(["output", "stateN"], session.run(["output", "stateN"], feeds)):
        got = body["outputs"][name]
        assert got["shape"] == list(want.shape) and got["dtype"] == "float32"
        np.testing.assert_allclose(np.array(got["data"]), want, rtol=1e-6)


def test_every_served_dtype_goes_in_and_comes_out(files: dict[str, Path]) -> None:
    service = serving(files["dtypes"])
    values = {"half": [[1.5, -2.25]], "count": [7], "pixels": [[0, 128, 254]], "mask": [True], "offset": [-128],
              "wide": [1e300]}
    status, body = post(service, {"inputs": values})
    assert status == 200, body
    outputs = body["outputs"]
    assert {name: outputs[f"{name}_out"]["dtype"] for name in DTYPE_INPUTS} == DTYPE_INPUTS
    assert outputs["half_out"]["data"] == [[2.5, -1.25]] and outputs["count_out"]["data"] == [8]
    assert outputs["pixels_out"]["data"] == [[1, 129, 255]] and outputs["mask_out"]["data"] == [False]
    assert outputs["offset_out"]["data"] == [-127] and outputs["wide_out"]["data"] == [1e300 + 1]
    oip = {"inputs": [{"name": n, "shape": list(np.array(v).shape), "datatype": dt,
                       "data": np.array(v).reshape(-1).tolist()}
                      for (n, v), dt in zip(values.items(), ["FP16", "INT32", "UINT8", "BOOL", "INT8", "FP64"])]}
    status, body = post(service, oip, "/v2/models/dtypes/infer")
    assert status == 200, body
    assert [(o["name"], o["datatype"]) for o in body["outputs"]] == [
        ("half_out", "FP16"), ("count_out", "INT32"), ("pixels_out", "UINT8"), ("mask_out", "BOOL"),
        ("offset_out", "INT8"), ("wide_out", "FP64")]


BAD_TENSORS = [
    pytest.param({"inputs": {**VAD_OK, "extra": 1}}, 400, "inputs", "unknown input(s) 'extra'", id="unknown-name"),
    pytest.param({"inputs": {"input": VAD_OK["input"], "state": VAD_OK["state"]}}, 400, "inputs",
                 "missing input(s) sr", id="missing-input"),
    pytest.param({"inputs": {**VAD_OK, "sr": 16000.5}}, 400, "inputs.sr",
                 "expected integers for a int64 tensor, got a number with a fraction", id="float-for-int64"),
    pytest.param({"inputs": {**VAD_OK, "sr": True}}, 400, "inputs.sr", "expected integers for a int64 tensor, got a "
                 "boolean", id="bool-for-int64"),
    pytest.param({"inputs": {**VAD_OK, "sr": [16000]}}, 400, "inputs.sr", "got more nesting than that",
                 id="list-for-0d"),
    pytest.param({"inputs": {**VAD_OK, "sr": 2 ** 70}}, 400, "inputs.sr", "is outside the range of int64",
                 id="int64-overflow"),
    pytest.param({"inputs": {**VAD_OK, "input": [["a"] * 8]}}, 400, "inputs.input",
                 "expected numbers for a float32 tensor, got a string", id="string-for-float"),
    pytest.param({"inputs": {**VAD_OK, "input": [[1e39] * 8]}}, 400, "inputs.input", "is not a finite float32",
                 id="float32-overflow"),
    pytest.param({"inputs": {**VAD_OK, "state": [[[0.0] * 16]] * 3}}, 400, "inputs.state",
                 "dimension 0 must be 2 (shape [2, batch, 16]), got 3", id="breaks-fixed-dim"),
    pytest.param({"inputs": {**VAD_OK, "state": [[[0.0] * 15], [[0.0] * 15]]}}, 400, "inputs.state",
                 "dimension 2 must be 16", id="breaks-last-dim"),
    pytest.param({"inputs": {**VAD_OK, "state": [[[0.0] * 16] * 2] * 2}}, 400, "inputs.state",
                 "dimension 'batch' is 2 here but 1 in input 'input'", id="shared-dim-differs"),
    pytest.param({"inputs": {**VAD_OK, "input": [0.5] * 8}}, 400, "inputs.input",
                 "expected a tensor of rank 2 [batch, samples] as nested lists; at depth 1 found", id="wrong-rank"),
    pytest.param({"inputs": {**VAD_OK, "input": [[0.5] * 8, [0.5] * 7]}}, 400, "inputs.input",
                 "have different lengths", id="ragged"),
    pytest.param({"inputs": {**VAD_OK, "input": [[]]}}, 400, "inputs.input", "dimension 1 is 0", id="empty-dim"),
    pytest.param({"inputs": {**VAD_OK, "input": [[0.5] * 5000]}}, 413, "inputs.input",
                 "more than 4096 elements", id="too-many-elements"),
    pytest.param({"inputs": [[0.5] * 8]}, 400, "inputs", "this model takes named tensors, not a batch of samples",
                 id="batch-form-for-tensor-model"),
]


@pytest.mark.parametrize("body, status, field, fragment", BAD_TENSORS)
def test_bad_tensor_requests_are_4xx_naming_the_input(vad: Service, body: Any, status: int, field: str,
                                                      fragment: str) -> None:
    got, reply = post(vad, body)
    assert got == status == reply["error"]["status"], reply
    assert reply["error"]["field"] == field and fragment in reply["error"]["message"], reply


def _oip(**changes: Any) -> dict[str, Any]:
    inputs = [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": [0.5] * 8},
              {"name": "state", "shape": [2, 1, 16], "datatype": "FP32", "data": [0.0] * 32},
              {"name": "sr", "shape": [], "datatype": "INT64", "data": [16000]}]
    for name, change in changes.items():
        if change is None:
            inputs = [i for i in inputs if i["name"] != name]
        else:
            inputs = [{**i, **change} if i["name"] == name else i for i in inputs]
    return {"inputs": inputs}


BAD_OIP = [
    pytest.param(_oip(sr={"datatype": "INT32"}), 400, "inputs.sr.datatype", "'INT32' does not match the model's INT64",
                 id="wrong-datatype"),
    pytest.param(_oip(state={"shape": [3, 1, 16], "data": [0.0] * 48}), 400, "inputs.state.shape",
                 "dimension 0 must be 2", id="wrong-shape"),
    pytest.param(_oip(input={"data": [0.5] * 7}), 400, "inputs.input.data", "holds 7 values; shape [1, 8] needs 8",
                 id="wrong-count"),
    pytest.param(_oip(sr=None), 400, "inputs", "missing input(s) sr", id="missing-input"),
    pytest.param(_oip(input={"name": "audio"}), 400, "inputs[0].name", "'audio' is not an input of this model",
                 id="unknown-input"),
    pytest.param(_oip(input={"shape": [1, 5000], "data": [0.5] * 5000}), 413, "inputs.input",
                 "more than 4096 elements", id="too-many-elements"),
    pytest.param(_oip(input={"shape": [1, -8]}), 400, "inputs.input.shape", "non-negative integers",
                 id="negative-dim"),
    pytest.param({**_oip(), "outputs": [{"name": "nope"}]}, 400, "outputs", "'nope' is not an output",
                 id="unknown-output"),
    pytest.param({**_oip(), "model": "x"}, 400, "body", "unknown key(s) 'model'", id="unknown-key"),
    pytest.param({"inputs": _oip()["inputs"] + _oip()["inputs"][:1]}, 400, "inputs[3].name", "given twice",
                 id="duplicate-input"),
]


@pytest.mark.parametrize("body, status, field, fragment", BAD_OIP)
def test_bad_oip_requests_are_4xx_naming_the_input(vad: Service, body: Any, status: int, field: str,
                                                   fragment: str) -> None:
    for path in ("/v2/models/vad/infer", "/v2/models/vad/versions/1/infer", "/predict"):
        got, reply = post(vad, body, path)
        assert got == status == reply["error"]["status"], (path, reply)
        assert reply["error"]["field"] == field and fragment in reply["error"]["message"], (path, reply)


def test_oip_takes_flat_or_nested_data_and_a_subset_of_outputs(vad: Service) -> None:
    flat = _oip()
    nested = _oip(input={"data": [[0.5] * 8]}, state={"data": [[[0.0] * 16], [[0.0] * 16]]}, sr={"data": 16000})
    answers = [post(vad, body, "/v2/models/vad/infer") for body in (flat, nested)]
    assert answers[0] == answers[1] and answers[0][0] == 200
    status, body = post(vad, {**flat, "id": "abc", "outputs": [{"name": "stateN"}]}, "/v2/models/vad/infer")
    assert status == 200 and body["id"] == "abc" and [o["name"] for o in body["outputs"]] == ["stateN"]


def test_routes_and_their_errors(vad: Service) -> None:
    assert vad.dispatch("GET", "/v2/health/ready", None).body == {"ready": True}
    assert vad.dispatch("GET", "/v2/models/vad/ready", None).body == {"name": "vad", "ready": True}
    metadata = vad.dispatch("GET", "/v2/models/vad/versions/1", None).body
    assert metadata["inputs"][2] == {"name": "sr", "datatype": "INT64", "shape": []}
    assert vad.dispatch("HEAD", "/v2/models/vad", None).status == 200
    missing = vad.dispatch("GET", "/v2/models/other", None)
    assert missing.status == 404 and "no model named 'other'; this server serves 'vad'" in missing.error_message
    assert vad.dispatch("GET", "/v2/models/vad/versions/7", None).status == 404
    wrong = vad.dispatch("GET", "/v2/models/vad/infer", None)
    assert wrong.status == 405 and wrong.headers == {"Allow": "POST"}
    assert vad.dispatch("DELETE", "/", None).headers == {"Allow": "GET, POST"}
    assert vad.dispatch("GET", "/nope", None).status == 404
    assert vad.accepts_body("POST", "/v2/models/vad/infer") and vad.accepts_body("POST", "/predict")
    assert not vad.accepts_body("POST", "/v2/models/other/infer") and not vad.accepts_body("GET", "/")
    assert not vad.accepts_body("POST", "/health")


def test_describe_shows_the_forms_with_examples_that_work(files: dict[str, Path]) -> None:
    service = serving(files["detector"])
    description = service.dispatch("GET", "/", None).body
    assert description["forms"] == ["tensors", "oip"]
    for route, example in description["examples"].items():
        path = route.split(" ")[1]
        status, body = post(service, example, path)
        assert status == 200, (route, body)


JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=False),
                        st.text(max_size=5))
JSON = st.recursive(JSON_LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                    max_leaves=30)
TENSORISH = st.recursive(st.one_of(st.integers(-3, 3), st.floats(-2, 2), st.booleans()),
                         lambda inner: st.lists(inner, min_size=1, max_size=4), max_leaves=80)


@st.composite
def tensor_bodies(draw: st.DrawFn) -> Any:
    names = st.sampled_from(["input", "state", "sr", "x"])
    return {"inputs": draw(st.dictionaries(names, st.one_of(TENSORISH, JSON), max_size=4))}


@st.composite
def oip_bodies(draw: st.DrawFn) -> Any:
    item = st.fixed_dictionaries(
        {"name": st.sampled_from(["input", "state", "sr", "x"]),
         "shape": st.one_of(st.lists(st.integers(-1, 20), max_size=4), JSON),
         "datatype": st.sampled_from(["FP32", "INT64", "FP16", "BOOL", "BYTES", "fp32"]),
         "data": st.one_of(TENSORISH, st.lists(st.floats(-5, 5), max_size=40), JSON)})
    body: dict[str, Any] = {"inputs": draw(st.lists(item, min_size=1, max_size=4))}
    if draw(st.booleans()):
        body["outputs"] = draw(st.one_of(st.lists(st.fixed_dictionaries(
            {"name": st.sampled_from(["output", "stateN", "x"])}), max_size=2), JSON))
    return body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(tensor_bodies(), oip_bodies(), JSON), path=st.sampled_from(
    ["/predict", "/", "/v2/models/vad/infer"]))
def test_no_tensor_or_oip_body_gets_a_5xx(vad: Service, body: Any, path: str) -> None:
    reply = vad.dispatch("POST", path, json.dumps(body))
    answer = json.loads(reply.text)
    if reply.status == 200:
        assert "outputs" in answer
    else:
        assert 400 <= reply.status < 500 and answer["error"]["status"] == reply.status, answer
        assert answer["error"]["message"]


# ---------------------------------------------------------------------------------------------------------------
# Triton's binary-data extension: raw little-endian tensors after the JSON header (tritonclient's default)


def binary_body(arrays: dict[str, np.ndarray], datatypes: dict[str, str], sizes: dict[str, int] | None = None,
                tail: bytes = b"") -> bytes:
    """A body as tritonclient makes it: the JSON header, then each input's bytes in the header's order."""
    sizes = sizes or {}
    header = {"inputs": [{"name": name, "shape": list(array.shape), "datatype": datatypes[name],
                          "parameters": {"binary_data_size": sizes.get(name, array.nbytes)}}
                         for name, array in arrays.items()],
              "parameters": {"binary_data_output": True}}
    return json.dumps(header).encode() + b"".join(a.tobytes() for a in arrays.values()) + tail


VAD_ARRAYS = {"input": np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8),
              "state": np.full((2, 1, 16), 0.1, np.float32), "sr": np.array(16000, np.int64)}
VAD_TYPES = {"input": "FP32", "state": "FP32", "sr": "INT64"}


def test_binary_tensors_answer_like_json_data_and_onnxruntime(vad: Service, files: dict[str, Path]) -> None:
    import base64

    reply = vad.dispatch("POST", "/v2/models/vad/infer", binary_body(VAD_ARRAYS, VAD_TYPES))
    assert reply.status == 200, reply.body
    as_json = _oip(input={"data": VAD_ARRAYS["input"].ravel().tolist()},
                   state={"data": VAD_ARRAYS["state"].ravel().tolist()})
    assert reply.body["outputs"] == post(vad, as_json, "/v2/models/vad/infer")[1]["outputs"]
    session = ort.InferenceSession(str(files["vad"]), providers=["CPUExecutionProvider"])
    for output, expected in zip(reply.body["outputs"], session.run(None, VAD_ARRAYS)):
        np.testing.assert_allclose(np.reshape(output["data"], output["shape"]), expected, rtol=1e-6)
    # a function URL / API Gateway event carries the bytes base64-encoded
    encoded = base64.b64encode(binary_body(VAD_ARRAYS, VAD_TYPES)).decode()
    assert vad.dispatch("POST", "/v2/models/vad/infer", encoded, is_base64=True).body == reply.body
    # a mixed request: some inputs as JSON data, some as bytes
    mixed = json.dumps({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32",
                                    "data": VAD_ARRAYS["input"].ravel().tolist()},
                                   {"name": "state", "shape": [2, 1, 16], "datatype": "FP32",
                                    "parameters": {"binary_data_size": 128}},
                                   {"name": "sr", "shape": [], "datatype": "INT64", "data": [16000]}]}).encode()
    assert vad.dispatch("POST", "/v2/models/vad/infer", mixed + VAD_ARRAYS["state"].tobytes()).body == reply.body


def test_every_served_dtype_goes_in_as_bytes(files: dict[str, Path]) -> None:
    service = serving(files["dtypes"])
    rng = np.random.default_rng(3)
    shapes = {"half": (3, 2), "pixels": (3, 3)}  # the others are [batch]
    arrays = {name: rng.integers(0, 2, size=shapes.get(name, (3,))).astype(dtype)
              for name, dtype in DTYPE_INPUTS.items()}
    types = {name: {"float16": "FP16", "int32": "INT32", "uint8": "UINT8", "bool": "BOOL", "int8": "INT8",
                    "float64": "FP64"}[dtype] for name, dtype in DTYPE_INPUTS.items()}
    reply = service.dispatch("POST", "/v2/models/dtypes/infer", binary_body(arrays, types))
    assert reply.status == 200, reply.body
    session = ort.InferenceSession(str(files["dtypes"]), providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, arrays)))
    for output in reply.body["outputs"]:
        want = expected[output["name"]]
        assert output["datatype"] == types[output["name"].removesuffix("_out")]
        np.testing.assert_array_equal(np.array(output["data"], dtype=want.dtype).reshape(output["shape"]), want)


def _bool_input(value: int) -> bytes:
    header = json.dumps({"inputs": [{"name": "mask", "shape": [1], "datatype": "BOOL",
                                     "parameters": {"binary_data_size": 1}}]}).encode()
    return header + bytes([value])


BAD_BINARY = [
    pytest.param(binary_body(VAD_ARRAYS, VAD_TYPES)[:-3], "inputs.sr", "binary_data_size is 8 but only 5 bytes",
                 id="truncated"),
    pytest.param(binary_body(VAD_ARRAYS, VAD_TYPES, tail=b"xx"), "body", "2 bytes follow the JSON header",
                 id="extra-bytes"),
    pytest.param(binary_body(VAD_ARRAYS, VAD_TYPES, sizes={"input": 28}), "inputs.input.parameters.binary_data_size",
                 "is 28 bytes; shape [1, 8] of FP32 needs 32", id="size-disagrees-with-shape"),
    pytest.param(binary_body({**VAD_ARRAYS, "input": np.array([[np.nan] * 8], np.float32)}, VAD_TYPES),
                 "inputs.input.data", "not a finite float32", id="nan"),
    pytest.param(binary_body({**VAD_ARRAYS, "sr": np.array(16000, np.int32)}, {**VAD_TYPES, "sr": "INT32"}),
                 "inputs.sr.datatype", "'INT32' does not match the model's INT64", id="wrong-datatype"),
    pytest.param(binary_body(VAD_ARRAYS, VAD_TYPES, sizes={"sr": -8}), "inputs.sr.parameters.binary_data_size",
                 "non-negative integer", id="negative-size"),
]


@pytest.mark.parametrize("body, field, fragment", BAD_BINARY)
def test_bad_binary_tensors_are_4xx_naming_the_input(vad: Service, body: bytes, field: str, fragment: str) -> None:
    reply = vad.dispatch("POST", "/v2/models/vad/infer", body)
    assert reply.status == 400 and reply.body["error"]["field"] == field, reply.body
    assert fragment in reply.error_message, reply.body


def test_bool_bytes_other_than_0_and_1_are_refused(files: dict[str, Path]) -> None:
    service = serving(files["dtypes"])
    body = json.loads(_bool_input(2)[:-1])  # the header alone, to add the other inputs as JSON
    body["inputs"] += [{"name": name, "shape": [1, 2] if name == "half" else [1, 3] if name == "pixels" else [1],
                        "datatype": {"float16": "FP16", "int32": "INT32", "uint8": "UINT8", "int8": "INT8",
                                     "float64": "FP64"}[dtype], "data": [0] * (2 if name == "half" else
                                                                             3 if name == "pixels" else 1)}
                       for name, dtype in DTYPE_INPUTS.items() if dtype != "bool"]
    reply = service.dispatch("POST", "/v2/models/dtypes/infer", json.dumps(body).encode() + bytes([2]))
    assert reply.status == 400 and "a BOOL tensor's bytes must be 0 or 1" in reply.error_message, reply.body
    good = service.dispatch("POST", "/v2/models/dtypes/infer", json.dumps(body).encode() + bytes([1]))
    assert good.status == 200 and good.body["outputs"][3]["data"] == [False], good.body


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(head=oip_bodies(), sizes=st.lists(st.one_of(st.integers(-4, 300), JSON), min_size=1, max_size=4),
       tail=st.binary(max_size=300))
def test_no_binary_body_gets_a_5xx(vad: Service, head: Any, sizes: list[Any], tail: bytes) -> None:
    for item, size in zip(head["inputs"], sizes):
        item.pop("data", None)
        item["parameters"] = {"binary_data_size": size}
    reply = vad.dispatch("POST", "/v2/models/vad/infer", json.dumps(head).encode() + tail)
    answer = json.loads(reply.text)
    assert reply.status == 200 or (400 <= reply.status < 500 and answer["error"]["message"]), answer
