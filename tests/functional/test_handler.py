"""The Lambda handler: event shapes, and a clear 400 for every bad request."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from edgemaas.workspace import Workspace
from tests.conftest import REPO

pytestmark = pytest.mark.models("cnn", "nlp")  # the built-ins `trained` holds here

CONTEXT = SimpleNamespace(aws_request_id="req-1234")
IMAGE = [[0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0]] * 8


def load_handler(model_dir: str) -> ModuleType:
    os.environ["EDGEMAAS_MODEL_DIR"] = model_dir
    try:
        spec = importlib.util.spec_from_file_location(f"handler_{abs(hash(model_dir))}",
                                                      REPO / "functions" / "aws_lambda.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        del os.environ["EDGEMAAS_MODEL_DIR"]


@pytest.fixture(scope="module")
def cnn(trained: Workspace) -> ModuleType:
    return load_handler(str(trained.variant_dir("cnn", "tflite-int8")))


@pytest.fixture(scope="module")
def nlp(trained: Workspace) -> ModuleType:
    return load_handler(str(trained.variant_dir("nlp", "tflite-int8")))


def http_v2(body: Any, method: str = "POST", base64_encoded: bool = False) -> dict[str, Any]:
    return {"version": "2.0", "routeKey": "$default", "rawPath": "/", "isBase64Encoded": base64_encoded,
            "requestContext": {"http": {"method": method, "path": "/"}, "requestId": "abc"},
            "headers": {"content-type": "application/json"}, "body": body}


def http_v1(body: Any, method: str = "POST") -> dict[str, Any]:
    return {"resource": "/predict", "path": "/predict", "httpMethod": method, "requestContext": {"stage": "dev"},
            "headers": {}, "body": body, "isBase64Encoded": False}


def test_direct_invoke(cnn: ModuleType) -> None:
    result = cnn.handler({"inputs": [IMAGE, IMAGE]}, CONTEXT)
    assert result["model"] == "cnn" and len(result["predictions"]) == 2
    assert result["predictions"][0]["label"] in [str(i) for i in range(10)]


def test_http_api_v2_and_function_url(cnn: ModuleType) -> None:
    response = cnn.handler(http_v2(json.dumps({"inputs": [IMAGE]})), CONTEXT)
    assert response["statusCode"] == 200
    assert response["headers"]["content-type"] == "application/json"
    assert len(json.loads(response["body"])["predictions"]) == 1


def test_base64_body(cnn: ModuleType) -> None:
    body = base64.b64encode(json.dumps({"inputs": [IMAGE]}).encode()).decode()
    response = cnn.handler(http_v2(body, base64_encoded=True), CONTEXT)
    assert response["statusCode"] == 200


def test_rest_api_v1(nlp: ModuleType) -> None:
    response = nlp.handler(http_v1(json.dumps({"inputs": ["lock the front door"]})), CONTEXT)
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["predictions"][0]["label"] == "lock_door"


def test_get_describes_the_model(nlp: ModuleType) -> None:
    response = nlp.handler(http_v2(None, method="GET"), CONTEXT)
    body = json.loads(response["body"])
    assert response["statusCode"] == 200
    assert body["inputs"] == [{"name": "text", "type": "string", "max_chars": 1000}]


BAD_HTTP = [
    ("{not json", False, 400, "the request body is not valid JSON: Expecting property name enclosed in double quotes"),
    ("", False, 400, "the request body is empty"),
    ("!!!not base64!!!", True, 400, "the body is marked isBase64Encoded but is not valid base64"),
    (base64.b64encode(b"\xff\xfe\xfa").decode(), True, 400, "the request body is not valid UTF-8"),
    ("[1, 2, 3]", False, 400, "the request must be a JSON object like {\"inputs\": [...]}, got a list"),
    ('{"instances": []}', False, 400, 'missing "inputs"'),
    ('{"inputs": [], "extra": 1}', False, 400, "unknown key(s) 'extra'"),
    ('{"inputs": []}', False, 400, "inputs: the batch is empty; send at least one sample"),
    ('{"inputs": "x"}', False, 400, "inputs: expected a list (a batch of samples), got a string"),
    ('{"inputs": [[1, 2, 3]]}', False, 400, "inputs[0]: expected a list of length 8, got length 3"),
    ('{"inputs": [[[1,1,1,1,1,1,1,"a"]]]}', False, 400, "inputs[0]: expected a list of length 8, got length 1"),
    ('{"inputs": [' + json.dumps([["1"] * 8] * 8) + ']}', False, 400, "inputs[0]: expected a number, got a string"),
    ('{"inputs": [' + json.dumps([[0] * 7 + [1e40]] * 8) + ']}', False, 400, "is not a finite float32"),
    ('{"inputs": [' + json.dumps([[0] * 8] * 7 + [[0] * 7 + ["NaN"]]) + ']}', False, 400,
     "expected a number, got a string"),
    ('{"inputs": [' + ("[" * 5000) + "]" * 5000 + "]}", False, 400, "nested too deeply"),
    ("x" * (7 * 1024 * 1024), False, 413, "the request body exceeds 6 MB"),
]


@pytest.mark.parametrize("body, b64, status, fragment", BAD_HTTP)
def test_bad_http_requests_get_a_clear_4xx(cnn: ModuleType, body: str, b64: bool, status: int, fragment: str) -> None:
    response = cnn.handler(http_v2(body, base64_encoded=b64), CONTEXT)
    assert response["statusCode"] == status
    error = json.loads(response["body"])["error"]
    assert fragment in error["message"]
    assert error["type"] == "InvalidRequest" and error["status"] == status


def test_json_nan_is_rejected(cnn: ModuleType) -> None:
    body = '{"inputs": [' + json.dumps([[0] * 8] * 7)[:-1] + ', [0, 0, 0, 0, 0, 0, 0, NaN]]]}'
    response = cnn.handler(http_v2(body), CONTEXT)
    assert response["statusCode"] == 400
    assert "value nan at position [7, 7] is not a finite float32" in json.loads(response["body"])["error"]["message"]


@pytest.mark.parametrize("event, fragment", [
    ({"inputs": [IMAGE[:3]]}, "inputs[0]: expected a list of length 8, got length 3"),
    ({}, 'missing "inputs"'),
    ("just a string", "the request must be a JSON object"),
    ({"inputs": [IMAGE], "model": "other"}, "unknown key(s) 'model'"),
])
def test_bad_direct_invokes_get_an_error_object(cnn: ModuleType, event: Any, fragment: str) -> None:
    result = cnn.handler(event, CONTEXT)
    assert result["error"]["status"] == 400
    assert fragment in result["error"]["message"]


def test_text_model_rejects_numbers_and_huge_strings(nlp: ModuleType) -> None:
    response = nlp.handler(http_v2(json.dumps({"inputs": [42]})), CONTEXT)
    assert json.loads(response["body"])["error"]["message"] == "inputs[0]: expected a string, got a number"
    response = nlp.handler(http_v2(json.dumps({"inputs": ["x" * (1024 * 1024)]})), CONTEXT)
    assert response["statusCode"] == 400
    assert "exceeds the limit of 1000" in json.loads(response["body"])["error"]["message"]


def test_unknown_words_are_served_not_rejected(nlp: ModuleType) -> None:
    result = nlp.handler({"inputs": ["zzyzx qwertyuiop"]}, CONTEXT)
    assert "label" in result["predictions"][0]


def test_internal_failure_is_a_500_with_request_id(cnn: ModuleType, caplog: pytest.LogCaptureFixture) -> None:
    original = cnn.MODEL.backend.run
    cnn.MODEL.backend.run = lambda feeds: (_ for _ in ()).throw(RuntimeError("interpreter exploded"))
    try:
        response = cnn.handler(http_v2(json.dumps({"inputs": [IMAGE]})), CONTEXT)
        direct = cnn.handler({"inputs": [IMAGE]}, CONTEXT)
    finally:
        cnn.MODEL.backend.run = original
    assert response["statusCode"] == 500
    assert json.loads(response["body"])["error"]["request_id"] == "req-1234"
    assert direct["error"]["status"] == 500
    assert "interpreter exploded" in caplog.text  # logged with the traceback, not sent to the caller
    assert "interpreter exploded" not in response["body"]
