"""Models people bring, of every kind: packaged for Lambda and the edge, served by name, equal to their own runtime.

The models (tests/tensor_models.py) are made in a child process. Each is imported, packaged as a Lambda zip (run
through awslambdaric by `invoke_local`) and as an edge bundle (its own `python -m <name>_edge serve`), and asked
the same requests in the tensor form and the Open Inference Protocol. Every output must equal the original file
run directly in onnxruntime or LiteRT: floats to 1e-5 relative, quantized outputs to one quantization step.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgemaas.errors import UserError
from edgemaas.local import invoke_local
from edgemaas.packaging.awslambda.target import package_for_lambda
from edgemaas.packaging.edge.bundle import package_edge
from edgemaas.runtime import load_model, read_manifest
from edgemaas.user_models.importing import import_model
from edgemaas.workspace import Workspace
from tests.edge_helpers import served_port

REPO = Path(__file__).resolve().parents[2]
SERVED = ("detector", "vad", "branchy", "landmarks", "textline", "int8", "stream")
RNG = np.random.default_rng(11)


def _f32(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


# Two requests per model; where the file leaves dimensions open, the second changes them (TFLite reallocates).
REQUESTS: dict[str, list[dict[str, np.ndarray]]] = {
    "detector": [{"images": _f32(2, 3, 20, 28)}, {"images": _f32(1, 3, 32, 16)}],
    "vad": [{"input": _f32(3, 512), "state": _f32(2, 3, 16), "sr": np.array(16000, np.int64)},
            {"input": _f32(1, 256), "state": _f32(2, 1, 16), "sr": np.array(8000, np.int64)}],
    "branchy": [{"x": np.abs(_f32(2, 4))}, {"x": -np.abs(_f32(3, 4))}],
    "landmarks": [{"image": _f32(2, 16, 16, 3)}, {"image": _f32(1, 16, 16, 3)}],
    "textline": [{"line": _f32(1, 8, 37, 3)}, {"line": _f32(2, 8, 50, 3)}],
    "int8": [{"features": _f32(4, 6)}, {"features": _f32(1, 6)}],
    "stream": [{"audio": _f32(2, 24)}, {"audio": _f32(1, 40)}],
}
# Concrete shapes for the package-time smoke test where the placeholder 1 cannot run (frames of 4 samples).
SMOKE_SHAPES = {"stream": {"audio": [1, 8]}}
OUTPUTS = {"detector": ["out_1", "out_0"], "vad": ["output", "stateN"], "branchy": ["y"],
           "landmarks": None, "textline": ["logits"], "int8": ["probabilities"],
           "stream": ["classificators", "regressors"]}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("brought")
    done = subprocess.run([sys.executable, "-m", "tests.tensor_models", str(root)], cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return {p.stem: p for p in root.iterdir() if p.suffix in (".onnx", ".tflite")}


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("ws"))


# ---------------------------------------------------------------------------------------------------------------
# The original files, run directly in their own runtime


def reference(path: Path, request: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, float]]:
    """{output name: (real values, tolerance step)}: step 0 for float outputs, the scale for quantized ones."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return {n: (v, 0.0) for n, v in zip(names, session.run(names, dict(request)))}
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner()
    feeds = {}
    for name, detail in runner.get_input_details().items():
        scale, zero = detail["quantization"]
        value = request[name]
        if scale:
            info = np.iinfo(detail["dtype"])
            value = np.clip(np.rint(value / scale + zero), info.min, info.max).astype(detail["dtype"])
        feeds[name] = value
    results = runner(**feeds)
    answer = {}
    for name, detail in runner.get_output_details().items():
        scale, zero = detail["quantization"]
        value = results[name]
        answer[name] = ((value.astype(np.float32) - zero) * scale, scale) if scale else (value, 0.0)
    return answer


def assert_outputs_equal(got: dict[str, dict[str, Any]], expected: dict[str, tuple[np.ndarray, float]],
                         where: str) -> None:
    assert set(got) == set(expected), (where, list(got), list(expected))
    for name, (want, step) in expected.items():
        value = np.asarray(got[name]["data"], dtype=np.float64).reshape(got[name]["shape"])
        assert list(value.shape) == list(want.shape), (where, name, value.shape, want.shape)
        if step:
            assert np.abs(value - want).max() <= step * 1.0001, (where, name)
        else:
            np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6, err_msg=f"{where} {name}")


def tensor_form(request: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"inputs": {name: value.tolist() for name, value in request.items()}}


def oip_form(request: dict[str, np.ndarray]) -> dict[str, Any]:
    datatypes = {"float32": "FP32", "int64": "INT64"}
    return {"id": "req-1", "inputs": [{"name": n, "shape": list(v.shape), "datatype": datatypes[str(v.dtype)],
                                       "data": v.reshape(-1).tolist()} for n, v in request.items()]}


def from_oip(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assert body["id"] == "req-1" and body["model_version"] == "1", body
    return {o["name"]: {"shape": o["shape"], "data": o["data"]} for o in body["outputs"]}


def output_order(body: dict[str, Any]) -> list[str]:
    return [o["name"] for o in body["outputs"]] if isinstance(body["outputs"], list) else list(body["outputs"])


def http_v2(method: str, path: str, body: str | None = None) -> dict[str, Any]:
    return {"version": "2.0", "routeKey": "$default", "rawPath": path, "isBase64Encoded": False,
            "requestContext": {"http": {"method": method, "path": path}, "stage": "$default"},
            "headers": {"content-type": "application/json"}, "body": body}


def rest_v1(method: str, path: str, body: str | None = None) -> dict[str, Any]:
    return {"resource": "/{proxy+}", "path": path, "httpMethod": method, "requestContext": {"stage": "prod"},
            "headers": {}, "body": body, "isBase64Encoded": False}


# ---------------------------------------------------------------------------------------------------------------
# The manifest: every tensor recorded as the file has it


def test_the_manifest_records_every_tensor_as_the_file_has_it(model_files: dict[str, Path], ws: Workspace) -> None:
    vad = import_model(model_files["vad"], ws)
    assert [(t.name, t.dtype, t.dims or t.shape) for t in vad.inputs] == [
        ("input", "float32", ["batch", "samples"]), ("state", "float32", [2, "batch", 16]), ("sr", "int64", [])]
    assert vad.request_forms == ["tensors"] and vad.task == "tensors"
    detector = import_model(model_files["detector"], ws)
    assert [t.name for t in detector.outputs] == ["out_1", "out_0"]  # the file's order, not the names' order
    assert json.loads(detector.model_metadata["props"]["names"]) == {"0": "cat", "1": "dog"}
    stream = import_model(model_files["stream"], ws)
    assert stream.signature_key == "serving_default"
    assert [(t.key, t.shape) for t in stream.inputs] == [("audio", [-1, -1])]
    assert {t.key for t in stream.outputs} == {"regressors", "classificators"}
    assert not any(t.name in ("regressors", "classificators") for t in stream.outputs)  # tensor names differ
    assert stream.model_metadata["entries"]["min_runtime_version"]
    landmarks = import_model(model_files["landmarks"], ws)
    assert {t.key for t in landmarks.outputs} == {"mask", "landmarks", "score", "pose", "embedding"}
    assert landmarks.request_forms == ["batch", "tensors"]
    int8 = import_model(model_files["int8"], ws)
    assert int8.inputs[0].dtype == "int8" and int8.inputs[0].quantized


def test_tflite_associated_files_are_kept_verbatim(model_files: dict[str, Path], ws: Workspace,
                                                  tmp_path: Path) -> None:
    """The TFLite metadata writer appends associated files (labels) as a zip after the flatbuffer."""
    import io
    import zipfile

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as files:
        files.writestr("labels.txt", "left_eye\nright_eye\n")
        files.writestr("big.bin", b"\0" * 40000)
    with_files = tmp_path / "landmarks-labelled.tflite"
    with_files.write_bytes(model_files["landmarks"].read_bytes() + archive.getvalue())
    manifest = import_model(with_files, ws, name="labelled")
    assert manifest.model_metadata["files"] == {"labels.txt": "left_eye\nright_eye\n", "big.bin": {"bytes": 40000}}
    described = load_model(ws.variant_dir("labelled", "imported")).describe()
    assert described["metadata"]["files"]["labels.txt"] == "left_eye\nright_eye\n"


def test_tflite_reallocates_only_when_the_shapes_change(model_files: dict[str, Path], ws: Workspace) -> None:
    import_model(model_files["stream"], ws)
    model = load_model(ws.variant_dir("stream", "imported"))
    assert model.backend.allocations == 0  # [1, 1] cannot be allocated: the first request's shapes are
    for samples in (8, 8, 8, 16, 16, 8):
        audio = np.ones((2, samples), np.float32)
        (classes, sums) = model.run_tensors([audio])
        assert classes.shape == (samples // 2, 4) and sums.shape == (samples // 2,)
    assert model.backend.allocations == 3  # 8, then 16, then 8 again


def test_describe_shows_forms_examples_and_metadata(model_files: dict[str, Path], ws: Workspace) -> None:
    import_model(model_files["detector"], ws)
    model = load_model(ws.variant_dir("detector", "imported"))
    description = model.describe()
    assert description["forms"] == ["tensors", "oip"]
    assert description["tensors"]["inputs"] == [{"name": "images", "dtype": "float32",
                                                 "shape": ["batch", 3, "height", "width"]}]
    assert description["metadata"]["props"]["stride"] == "32"
    assert set(description["examples"]) == {"POST /predict (tensors)", "POST /v2/models/detector/infer"}
    int8 = import_model(model_files["int8"], ws)
    described = load_model(ws.variant_dir(int8.name, "imported")).describe()["tensors"]["inputs"][0]
    assert described["dtype"] == "float32" and described["quantized"]["dtype"] == "int8"


def test_a_custom_op_is_refused_at_package_time_by_name(model_files: dict[str, Path], ws: Workspace) -> None:
    with pytest.raises(UserError, match=r"custom_op\.tflite: the model uses the custom op\(s\) BesselI0e"):
        package_for_lambda(str(model_files["custom_op"]), ws)
    assert not list((ws.root / "build").glob("custom*/.*tmp*"))


# ---------------------------------------------------------------------------------------------------------------
# Lambda: a zip run by awslambdaric


@pytest.mark.parametrize("name", SERVED)
def test_lambda_serves_every_output_by_name(name: str, model_files: dict[str, Path], ws: Workspace) -> None:
    path = model_files[name]
    package = package_for_lambda(str(path), ws, input_shapes=SMOKE_SHAPES.get(name))
    events: list[Any] = []
    for request in REQUESTS[name]:
        body = json.dumps(oip_form(request))
        events += [tensor_form(request), oip_form(request), http_v2("POST", f"/v2/models/{name}/infer", body),
                   rest_v1("POST", f"/prod/v2/models/{name}/versions/1/infer", body)]
    events += [http_v2("GET", f"/v2/models/{name}"), http_v2("GET", "/v2/health/ready"),
               http_v2("POST", "/v2/models/other/infer", "{}")]
    results = invoke_local(Path(package.zip_path), events)
    assert all(r.function_error is None for r in results), [r.error_message for r in results]
    payloads = [r.payload for r in results]
    for i, request in enumerate(REQUESTS[name]):
        expected = reference(path, request)
        direct, oip_direct, via_url, via_rest = payloads[4 * i: 4 * i + 4]
        assert_outputs_equal(direct["outputs"], expected, f"{name} direct tensors")
        assert_outputs_equal(from_oip(oip_direct), expected, f"{name} direct OIP")
        for response in (via_url, via_rest):
            assert response["statusCode"] == 200, response["body"]
            assert_outputs_equal(from_oip(json.loads(response["body"])), expected, f"{name} HTTP OIP")
        if OUTPUTS[name]:
            assert output_order(direct) == output_order(oip_direct) == OUTPUTS[name]
    metadata, ready, other = payloads[-3:]
    described = json.loads(metadata["body"])
    assert described["name"] == name and [i["name"] for i in described["inputs"]] == list(REQUESTS[name][0])
    assert ready["statusCode"] == 200
    assert other["statusCode"] == 404 and json.loads(other["body"])["error"]["type"] == "NotFound"


# ---------------------------------------------------------------------------------------------------------------
# The edge: the bundle's own server


@contextmanager
def bundle_server(bundle_tar: Path, top: str, module: str, where: Path) -> Iterator[int]:
    with tarfile.open(bundle_tar) as archive:
        archive.extractall(where, filter="data")
    log_path = where / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "EDGEMAAS"))}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", module, "serve", "--port", "0"],  # default limits
                                   cwd=where / top, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        yield served_port(log_path, process)
    finally:
        process.terminate()
        process.wait(timeout=15)


def call(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("name", SERVED)
def test_the_edge_bundle_serves_every_output_by_name(name: str, model_files: dict[str, Path], ws: Workspace,
                                                     tmp_path: Path) -> None:
    path = model_files[name]
    import_model(path, ws)
    bundle = package_edge(ws.variant_dir(name, "imported"), tmp_path / "dist", ws.cache())
    assert read_manifest(ws.variant_dir(name, "imported")).request_forms
    with bundle_server(Path(bundle.tar_path), bundle.top_dir, bundle.module, tmp_path / "unpacked") as port:
        for request in REQUESTS[name]:
            expected = reference(path, request)
            status, body = call(port, "POST", "/predict", tensor_form(request))
            assert status == 200, body
            assert_outputs_equal(body["outputs"], expected, f"{name} edge tensors")
            status, body = call(port, "POST", f"/v2/models/{name}/infer", oip_form(request))
            assert status == 200, body
            assert_outputs_equal(from_oip(body), expected, f"{name} edge OIP")
        status, body = call(port, "GET", f"/v2/models/{name}")
        assert status == 200 and body["name"] == name
        assert call(port, "GET", f"/v2/models/{name}/ready") == (200, {"name": name, "ready": True})
        assert call(port, "GET", "/v2/health/live")[0] == 200
