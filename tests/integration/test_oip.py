"""The Open Inference Protocol on the edge server, spoken by the official Triton HTTP client (tritonclient[http]).

A streaming model with three inputs (a float tensor, a recurrent state whose batch is second, an int64 0-d sample
rate) and two outputs, and a detector whose outputs are declared out of name order, served by
`python -m edgemaas.edge_entry`: metadata, readiness, inference equal to onnxruntime on the original file, and the
client's view of our errors (a wrong datatype, a wrong shape, an unknown model, binary tensors of the wrong
size), and the client's defaults (binary tensors in, binary outputs asked for).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgemaas.user_models.importing import import_model
from edgemaas.workspace import Workspace
from tests.edge_helpers import served_port
from tests.tensor_models import detector_onnx, vad_onnx

REPO = Path(__file__).resolve().parents[2]

try:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException
except ImportError:  # pragma: no cover - the dev extra installs it
    pytest.fail("tritonclient is missing: pip install 'tritonclient[http]' (it is in the dev extra)",
                pytrace=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("oip-models")
    return {"vad": vad_onnx(root / "vad.onnx"), "detector": detector_onnx(root / "detector.onnx")}


def serve_model(model_dir: Path, log_path: Path) -> Iterator[int]:
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "edgemaas.edge_entry", "--model-dir", str(model_dir),
                                    "serve", "--port", "0"], cwd=REPO, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        yield served_port(log_path, process)
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def clients(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    servers = {name: serve_model(ws.variant_dir(import_model(path, ws).name, "imported"),
                            tmp_path_factory.mktemp("logs") / f"{name}.log") for name, path in files.items()}
    ports = {name: next(server) for name, server in servers.items()}
    try:
        yield {name: triton.InferenceServerClient(url=f"127.0.0.1:{port}") for name, port in ports.items()}
    finally:
        for server in servers.values():
            server.close()


def _input(name: str, value: np.ndarray, datatype: str) -> object:
    tensor = triton.InferInput(name, list(value.shape), datatype)
    tensor.set_data_from_numpy(value, binary_data=False)
    return tensor


def _vad_request(batch: int, samples: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch * 1000 + samples)
    return {"input": rng.normal(size=(batch, samples)).astype(np.float32),
            "state": rng.normal(size=(2, batch, 16)).astype(np.float32), "sr": np.array(16000, np.int64)}


def _onnxruntime(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def test_health_and_metadata(clients: dict[str, object]) -> None:
    client = clients["vad"]
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("vad")
    metadata = client.get_model_metadata("vad")
    assert metadata["name"] == "vad" and metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, -1]},
                                  {"name": "state", "datatype": "FP32", "shape": [2, -1, 16]},
                                  {"name": "sr", "datatype": "INT64", "shape": []}]
    assert [o["name"] for o in metadata["outputs"]] == ["output", "stateN"]
    assert client.get_server_metadata()["name"] == "edgemaas"
    assert not clients["detector"].is_model_ready("vad")  # another server's model: 404, so not ready


@pytest.mark.parametrize("batch, samples", [(1, 512), (3, 160), (2, 1024)])
def test_infer_several_inputs_and_outputs_equals_onnxruntime(clients: dict[str, object], files: dict[str, Path],
                                                             batch: int, samples: int) -> None:
    feeds = _vad_request(batch, samples)
    inputs = [_input("input", feeds["input"], "FP32"), _input("state", feeds["state"], "FP32"),
              _input("sr", feeds["sr"], "INT64")]
    outputs = [triton.InferRequestedOutput(n, binary_data=False) for n in ("output", "stateN")]
    result = clients["vad"].infer("vad", inputs, outputs=outputs, request_id="r1")
    expected = _onnxruntime(files["vad"], feeds)
    for name, want in expected.items():
        got = result.as_numpy(name)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert result.get_response()["id"] == "r1"


def test_every_output_comes_without_asking_and_one_when_asked(clients: dict[str, object],
                                                              files: dict[str, Path]) -> None:
    images = np.random.default_rng(5).normal(size=(2, 3, 24, 40)).astype(np.float32)
    client = clients["detector"]
    result = client.infer("detector", [_input("images", images, "FP32")])  # no outputs named: all of them
    assert [o["name"] for o in result.get_response()["outputs"]] == ["out_1", "out_0"]
    expected = _onnxruntime(files["detector"], {"images": images})
    for name, want in expected.items():
        np.testing.assert_allclose(result.as_numpy(name), want, rtol=1e-5, atol=1e-6)
    only = client.infer("detector", [_input("images", images, "FP32")],
                        outputs=[triton.InferRequestedOutput("out_0", binary_data=False)])
    assert [o["name"] for o in only.get_response()["outputs"]] == ["out_0"]


def _refusal(client: object, model: str, inputs: list[object]) -> tuple[str, dict[str, object]]:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, inputs)
    error = caught.value
    message = error.message()
    assert isinstance(message, dict), message  # our error record, as the client hands it over
    return error.status(), message


def test_a_wrong_datatype_is_a_400_naming_the_input(clients: dict[str, object]) -> None:
    feeds = _vad_request(1, 64)
    status, error = _refusal(clients["vad"], "vad", [
        _input("input", feeds["input"].astype(np.float64), "FP64"), _input("state", feeds["state"], "FP32"),
        _input("sr", feeds["sr"], "INT64")])
    assert status == "400" and error["status"] == 400 and error["type"] == "InvalidRequest"
    assert error["field"] == "inputs.input.datatype" and "'FP64' does not match the model's FP32" in error["message"]


def test_a_shape_that_breaks_a_fixed_dimension_is_a_400(clients: dict[str, object]) -> None:
    feeds = _vad_request(1, 64)
    state = np.zeros((3, 1, 16), np.float32)  # the file fixes the first dimension at 2
    status, error = _refusal(clients["vad"], "vad", [
        _input("input", feeds["input"], "FP32"), _input("state", state, "FP32"), _input("sr", feeds["sr"], "INT64")])
    assert status == "400" and "dimension 0 must be 2 (shape [2, batch, 16]), got 3" in error["message"]
    state = np.zeros((2, 4, 16), np.float32)  # "batch" is 1 in `input` but 4 here
    status, error = _refusal(clients["vad"], "vad", [
        _input("input", feeds["input"], "FP32"), _input("state", state, "FP32"), _input("sr", feeds["sr"], "INT64")])
    assert status == "400" and "dimension 'batch' is 4 here but 1 in input 'input'" in error["message"]


def test_an_unknown_model_is_a_404(clients: dict[str, object]) -> None:
    feeds = _vad_request(1, 64)
    status, error = _refusal(clients["vad"], "whisper", [_input("input", feeds["input"], "FP32")])
    assert status == "404" and error["type"] == "NotFound" and "no model named 'whisper'" in error["message"]


@pytest.mark.parametrize("batch, samples", [(1, 512), (3, 160)])
def test_the_clients_defaults_binary_tensors_equal_onnxruntime(clients: dict[str, object], files: dict[str, Path],
                                                               batch: int, samples: int) -> None:
    """tritonclient sends raw tensor bytes after the JSON header unless told otherwise, and asks for binary outputs
    when it names none; edgemaas takes the bytes and answers in JSON, which the client reads the same way."""
    feeds = _vad_request(batch, samples)
    inputs = []
    for name, datatype in (("input", "FP32"), ("state", "FP32"), ("sr", "INT64")):
        tensor = triton.InferInput(name, list(feeds[name].shape), datatype)
        tensor.set_data_from_numpy(feeds[name])  # binary_data=True, the default
        inputs.append(tensor)
    result = clients["vad"].infer("vad", inputs)
    expected = _onnxruntime(files["vad"], feeds)
    for name, value in expected.items():
        np.testing.assert_allclose(result.as_numpy(name), value, rtol=1e-5, atol=1e-7)


def test_binary_tensors_of_the_wrong_size_are_a_400(clients: dict[str, object]) -> None:
    feeds = _vad_request(1, 64)
    short = triton.InferInput("input", [1, 64], "FP32")
    short.set_data_from_numpy(feeds["input"])
    short.set_shape([1, 65])  # says 65 values, carries 64 values' bytes
    state = triton.InferInput("state", [2, 1, 16], "FP32")
    state.set_data_from_numpy(feeds["state"])
    status, error = _refusal(clients["vad"], "vad", [short, state, _input("sr", feeds["sr"], "INT64")])
    assert status == "400" and error["field"] == "inputs.input.parameters.binary_data_size"
    assert "is 256 bytes; shape [1, 65] of FP32 needs 260" in error["message"]
