"""Bad requests in the tensor form and the Open Inference Protocol get the same clear 4xx on every surface.

The table is the unit tier's (tests/unit/test_tensor_contract.py); here each body goes to a model brought by a user
(three inputs: a float tensor, a state whose batch is second, an int64 0-d scalar) through the Lambda handler
(HTTP API v2 / function URL, REST API v1 with a stage, direct invoke) and the edge server, on the predict path and
the OIP path. Every surface must give the same status, field and message.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from edgemaas.runtime import read_manifest
from edgemaas.user_models.importing import import_model
from edgemaas.workspace import Workspace
from tests.functional.test_handler import CONTEXT, load_handler
from tests.integration.test_bad_requests import EdgeServer, edge_server, post
from tests.tensor_models import vad_onnx
from tests.unit.test_tensor_contract import BAD_OIP, BAD_TENSORS, VAD_ARRAYS, VAD_TYPES, binary_body

MAX_ELEMENTS = 4096  # the tables' too-many-elements rows need this limit


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vad")
    ws = Workspace(root / "ws")
    manifest = import_model(vad_onnx(root / "vad.onnx"), ws)
    directory = ws.variant_dir(manifest.name, "imported")
    manifest = read_manifest(directory)
    manifest.limits["max_input_elements"] = MAX_ELEMENTS  # an operator's edit: the manifest, not the model file
    manifest.save(directory)
    return directory


@pytest.fixture(scope="module")
def handler(model_dir: Path) -> ModuleType:
    return load_handler(str(model_dir))


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeServer]:
    log = tmp_path_factory.mktemp("logs") / "vad.log"
    with edge_server(model_dir, log, "--max-request-bytes", str(6 * 1024 * 1024)) as running:
        yield running


def lambda_replies(handler: ModuleType, path: str, body: bytes) -> dict[str, tuple[int, Any]]:
    text = body.decode()
    events = {
        "http-v2": {"version": "2.0", "routeKey": "$default", "rawPath": path, "isBase64Encoded": False,
                    "requestContext": {"http": {"method": "POST", "path": path}}, "headers": {}, "body": text},
        "rest-v1": {"resource": "/{proxy+}", "path": f"/prod{path}", "httpMethod": "POST",
                    "requestContext": {"stage": "prod"}, "headers": {}, "body": text, "isBase64Encoded": False},
    }
    replies = {}
    for surface, event in events.items():
        response = handler.handler(event, CONTEXT)
        replies[surface] = (response["statusCode"], json.loads(response["body"]))
    direct = handler.handler(json.loads(body), CONTEXT)
    replies["direct-invoke"] = (direct["error"]["status"] if "error" in direct else 200, direct)
    return replies


def check_same_refusal(replies: dict[str, tuple[int, Any]], status: int, field: str, fragment: str) -> None:
    for surface, (got, body) in replies.items():
        assert "error" in body, (surface, body)
        error = body["error"]
        assert got == error["status"] == status, (surface, error)
        assert error["field"] == field and fragment in error["message"], (surface, error)
    assert len({json.dumps(body, sort_keys=True) for _, body in replies.values()}) == 1, replies


@pytest.mark.parametrize("request_body, status, field, fragment", BAD_TENSORS)
def test_bad_tensor_form_requests_on_every_surface(request_body: Any, status: int, field: str, fragment: str,
                                                   handler: ModuleType, server: EdgeServer) -> None:
    body = json.dumps(request_body).encode()
    replies = lambda_replies(handler, "/predict", body)
    replies["edge-server"] = post(server.port, body, "/predict")
    check_same_refusal(replies, status, field, fragment)


@pytest.mark.parametrize("request_body, status, field, fragment", BAD_OIP)
def test_bad_oip_requests_on_every_surface(request_body: Any, status: int, field: str, fragment: str,
                                           handler: ModuleType, server: EdgeServer) -> None:
    body = json.dumps(request_body).encode()
    replies = lambda_replies(handler, "/v2/models/vad/infer", body)
    replies["edge-server"] = post(server.port, body, "/v2/models/vad/infer")
    check_same_refusal(replies, status, field, fragment)


def test_good_requests_still_answer_after_the_bad_ones(handler: ModuleType, server: EdgeServer) -> None:
    good = {"inputs": {"input": [[0.5] * 8], "state": [[[0.1] * 16], [[0.2] * 16]], "sr": 16000}}
    status, body = post(server.port, json.dumps(good).encode(), "/predict")
    assert status == 200 and handler.handler(good, CONTEXT) == body


def binary_events(path: str, body: bytes) -> dict[str, dict[str, Any]]:
    """A binary-extension body as a function URL / HTTP API and a REST API (binary media types) deliver it."""
    encoded = base64.b64encode(body).decode()
    return {
        "http-v2": {"version": "2.0", "routeKey": "$default", "rawPath": path, "isBase64Encoded": True,
                    "requestContext": {"http": {"method": "POST", "path": path}},
                    "headers": {"content-type": "application/octet-stream"}, "body": encoded},
        "rest-v1": {"resource": "/{proxy+}", "path": f"/prod{path}", "httpMethod": "POST",
                    "requestContext": {"stage": "prod"}, "headers": {}, "body": encoded, "isBase64Encoded": True},
    }


def test_binary_tensors_on_lambda_and_the_edge(handler: ModuleType, server: EdgeServer) -> None:
    """Triton's binary-data extension (tritonclient's default) answers as the same tensors sent as JSON, and a bad
    one gets the same 400 on every surface that can carry bytes."""
    path = "/v2/models/vad/infer"
    as_json = json.dumps(_oip_of(VAD_ARRAYS)).encode()
    expected = handler.handler(json.loads(as_json), CONTEXT)  # a direct invoke: JSON data only
    good = binary_body(VAD_ARRAYS, VAD_TYPES)
    for surface, event in binary_events(path, good).items():
        response = handler.handler(event, CONTEXT)
        assert response["statusCode"] == 200 and json.loads(response["body"]) == expected, (surface, response)
    assert post(server.port, good, path) == (200, expected)
    bad = binary_body(VAD_ARRAYS, VAD_TYPES, sizes={"input": 28})
    replies = {surface: (r["statusCode"], json.loads(r["body"]))
               for surface, event in binary_events(path, bad).items() for r in [handler.handler(event, CONTEXT)]}
    replies["edge"] = post(server.port, bad, path)
    check_same_refusal(replies, 400, "inputs.input.parameters.binary_data_size", "needs 32")


def _oip_of(arrays: dict[str, Any]) -> dict[str, Any]:
    return {"inputs": [{"name": name, "shape": list(array.shape), "datatype": VAD_TYPES[name],
                        "data": array.ravel().tolist()} for name, array in arrays.items()]}
