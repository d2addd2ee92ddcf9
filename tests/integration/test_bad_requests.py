"""Bad requests against both serving surfaces: the Lambda handler (direct invokes, HTTP API v2 / Function URL events
with and without base64, REST API v1 events) and the edge server over real HTTP.

Each row of BAD_BODIES is a different mistake. Every surface that can carry it must answer a 4xx with a JSON error
that says what was wrong, and every surface must give the same error record for the same body (they share
`runtime/service.py`). After the whole table each server still answers good requests exactly as the model does here.
cnn stands for numeric inputs, nlp for text, linear for regression; each is the variant the gate chose.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from edgemaas.pipeline import chosen_variant
from edgemaas.runtime import load_model
from edgemaas.runtime.text import OOV_ID, PAD_ID, encode, vocabulary_index
from edgemaas.workspace import Workspace
from tests.conftest import REPO
from tests.functional.test_handler import CONTEXT, http_v1, http_v2, load_handler
from tests.edge_helpers import served_port

pytestmark = pytest.mark.models("cnn", "linear", "nlp")  # the built-ins `trained` holds here

MODELS = ("cnn", "nlp", "linear")
MB = 1024 * 1024
IMAGE = [[0.0] * 8 for _ in range(8)]  # a well-formed cnn sample, varied below into bad ones
FEATURES = [0.0] * 10  # a well-formed linear sample


# ---------------------------------------------------------------------------------------------------------------
# The edge server, started from the repository (`python -m edgemaas.edge_entry`), and plain HTTP clients for it.
# test_fuzz.py and test_load.py use these too.


@dataclass
class EdgeServer:
    process: subprocess.Popen
    port: int
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None


@contextmanager
def edge_server(model_dir: Path, log: Path, *args: str) -> Iterator[EdgeServer]:
    """`python -m edgemaas.edge_entry --model-dir DIR serve --port 0 ARGS`, until the block ends (then SIGTERM)."""
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "edgemaas.edge_entry", "--model-dir", str(model_dir),
                                    "serve", "--port", "0", *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield EdgeServer(process, served_port(log, process), log)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def post(port: int, body: bytes, path: str = "/predict", method: str = "POST",
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request on a fresh connection; (status, parsed JSON body). Fails unless the answer is JSON."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        data = response.read()
        assert response.getheader("Content-Type") == "application/json", data[:200]
        return response.status, json.loads(data)
    finally:
        connection.close()


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, Any]:
    """Send bytes as they are (a request http.client would not form); parse the one response that comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # nothing follows: the server closes after its answer, even on keep-alive
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything we send
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    reply = b"".join(chunks)
    head, _, body = reply.partition(b"\r\n\r\n")
    status = re.match(rb"HTTP/1\.[01] (\d{3}) ", head)
    assert status, reply[:300]
    assert re.search(rb"(?im)^content-type: application/json\r?$", head), head
    return int(status.group(1)), json.loads(body)


# ---------------------------------------------------------------------------------------------------------------
# Fixtures: the gate-chosen variant of each model, its handler loaded in this process, its edge server


@pytest.fixture(scope="module")
def variants(trained: Workspace) -> dict[str, Path]:
    return {name: chosen_variant(trained, name) for name in MODELS}


@pytest.fixture(scope="module")
def handlers(variants: dict[str, Path]) -> dict[str, ModuleType]:
    return {name: load_handler(str(path)) for name, path in variants.items()}


@pytest.fixture(scope="module")
def servers(variants: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, EdgeServer]]:
    logs = tmp_path_factory.mktemp("edge-logs")
    options = ("--workers", "1", "--max-request-bytes", str(6 * MB))  # Lambda's request limit, on every surface
    with edge_server(variants["cnn"], logs / "cnn.log", *options) as cnn, \
            edge_server(variants["nlp"], logs / "nlp.log", *options) as nlp, \
            edge_server(variants["linear"], logs / "linear.log", *options) as linear:
        yield {"cnn": cnn, "nlp": nlp, "linear": linear}


# ---------------------------------------------------------------------------------------------------------------
# The table: one body, the status and a fragment of the message every surface must give


@dataclass(frozen=True)
class Bad:
    model: str
    body: bytes
    status: int
    fragment: str
    field: str | None = None
    # The mistake is in the bytes (the JSON itself), so there is no parsed event to send as a direct invoke.
    in_bytes: bool = False


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


def with_value(value: str, row: int = 0, column: int = 0) -> bytes:
    """A cnn request whose one sample has the JSON literal `value` at [row][column]."""
    rows = [", ".join(value if (r, c) == (row, column) else "0.0" for c in range(8)) for r in range(8)]
    return ('{"inputs": [[' + ", ".join(f"[{r}]" for r in rows) + "]]}").encode()


def image_with(item: Any, row: int = 0, column: int = 0) -> list[list[Any]]:
    image = [list(r) for r in IMAGE]
    image[row][column] = item
    return image


UNKNOWN = {f"k{i}": i for i in range(7)}

BAD_BODIES = [
    # -- the bytes: not JSON, not UTF-8, too deep, too large ------------------------------------------------------
    pytest.param(Bad("cnn", b'{"inputs": [[1, 2', 400, "the request body is not valid JSON: Expecting ',' delimiter "
                     "at line 1 column 18", "body", in_bytes=True), id="malformed-json"),
    pytest.param(Bad("cnn", b'{"inputs": []} {"inputs": []}', 400, "not valid JSON: Extra data at line 1 column 16",
                     "body", in_bytes=True), id="trailing-data"),
    pytest.param(Bad("cnn", b"{'inputs': []}", 400, "not valid JSON: Expecting property name enclosed in double "
                     "quotes", "body", in_bytes=True), id="single-quotes"),
    pytest.param(Bad("cnn", b" \r\n\t ", 400, "not valid JSON: Expecting value at line 2 column 3", "body",
                     in_bytes=True), id="whitespace-only"),
    pytest.param(Bad("cnn", b"", 400, 'the request body is empty; send JSON like {"inputs": [...]}', "body",
                     in_bytes=True), id="empty-body"),
    pytest.param(Bad("nlp", '{"inputs": ["café au lait"]}'.encode("latin-1"), 400,
                     "the request body is not valid UTF-8", "body", in_bytes=True), id="non-utf8-latin1"),
    pytest.param(Bad("nlp", '{"inputs": ["turn on"]}'.encode("utf-16"), 400, "the request body is not valid UTF-8",
                     "body", in_bytes=True), id="utf16-body"),
    pytest.param(Bad("nlp", '\ufeff{"inputs": ["turn on"]}'.encode(), 400,
                     "not valid JSON: Unexpected UTF-8 BOM", "body", in_bytes=True), id="utf8-bom"),
    pytest.param(Bad("nlp", b'{"inputs": ["turn\x00on"]}', 400,
                     "not valid JSON: Invalid control character at line 1 column 18", "body", in_bytes=True),
                 id="raw-control-character"),
    pytest.param(Bad("cnn", b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400,
                     "the request body is nested too deeply", "body", in_bytes=True), id="deep-nesting-lists"),
    pytest.param(Bad("cnn", b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, 400, "the request body is nested too deeply",
                     "body", in_bytes=True), id="deep-nesting-objects"),
    pytest.param(Bad("cnn", js({"inputs": [IMAGE]})[:-1] + b" " * (6 * MB) + b"}", 413,
                     "the request body exceeds 6 MB", "body", in_bytes=True), id="body-over-6mb"),
    pytest.param(Bad("cnn", with_value("1" + "0" * 5000), 400,
                     "the request body is not valid JSON: a number has more than 4300 digits", "body", in_bytes=True),
                 id="integer-of-5001-digits"),
    pytest.param(Bad("cnn", b'{"inputs": [], "inputs": ' + js([IMAGE]) + b"}", 400,
                     "the request body repeats the key 'inputs'; send each key once", "body", in_bytes=True),
                 id="duplicate-key"),
    # -- the envelope: {"inputs": [...]} and nothing else -----------------------------------------------------------
    pytest.param(Bad("cnn", js([IMAGE]), 400, 'the request must be a JSON object like {"inputs": [...]}, got a list'),
                 id="top-level-list"),
    pytest.param(Bad("cnn", js("inputs"), 400, "must be a JSON object like {\"inputs\": [...]}, got a string"),
                 id="top-level-string"),
    pytest.param(Bad("cnn", b"42", 400, "must be a JSON object like {\"inputs\": [...]}, got a number"),
                 id="top-level-number"),
    pytest.param(Bad("cnn", b"null", 400, "must be a JSON object like {\"inputs\": [...]}, got null"),
                 id="top-level-null"),
    pytest.param(Bad("cnn", b"true", 400, "must be a JSON object like {\"inputs\": [...]}, got a boolean"),
                 id="top-level-boolean"),
    pytest.param(Bad("cnn", js({"instances": [IMAGE]}), 400, 'missing "inputs": send {"inputs": [sample, ...]}',
                     "inputs"), id="missing-inputs-key"),
    pytest.param(Bad("cnn", js({"inputs": [IMAGE], "model": "cnn"}), 400,
                     "unknown key(s) 'model'; only \"inputs\" is accepted"), id="unknown-key"),
    pytest.param(Bad("cnn", js({"inputs": [IMAGE], **UNKNOWN}), 400,
                     "unknown key(s) 'k0', 'k1', 'k2', 'k3', 'k4' and 2 more"), id="many-unknown-keys"),
    # -- the batch --------------------------------------------------------------------------------------------------
    pytest.param(Bad("cnn", js({"inputs": "0,0,0"}), 400, "inputs: expected a list (a batch of samples), got a "
                     "string; send one sample as [<array of shape [8, 8]>]", "inputs"), id="inputs-a-string"),
    pytest.param(Bad("cnn", js({"inputs": {"image": [IMAGE]}}), 400,
                     "inputs: expected a list (a batch of samples), got an object", "inputs"), id="inputs-an-object"),
    pytest.param(Bad("cnn", js({"inputs": None}), 400, "inputs: expected a list (a batch of samples), got null",
                     "inputs"), id="inputs-null"),
    pytest.param(Bad("cnn", js({"inputs": []}), 400, "inputs: the batch is empty; send at least one sample", "inputs"),
                 id="empty-batch"),
    pytest.param(Bad("cnn", js({"inputs": [IMAGE] * 257}), 400, "inputs: the batch has 257 samples; the limit is 256",
                     "inputs"), id="batch-over-max-batch"),
    # -- shape and rank ---------------------------------------------------------------------------------------------
    pytest.param(Bad("cnn", js({"inputs": IMAGE}), 400, "inputs[0]: expected a list of length 8, got a number; "
                     "expected a batch of shape [N, 8, 8]", "inputs[0]"), id="missing-batch-dimension"),
    pytest.param(Bad("cnn", js({"inputs": [[0.0] * 64]}), 400, "inputs[0]: expected a list of length 8, got length 64",
                     "inputs[0]"), id="flattened-sample"),
    pytest.param(Bad("cnn", js({"inputs": [[[[0.0]] * 8] * 8]}), 400, "inputs[0]: expected a number, got a list",
                     "inputs[0]"), id="extra-rank"),
    pytest.param(Bad("cnn", js({"inputs": [IMAGE[:3] + [[0.0] * 7] + IMAGE[4:]]}), 400,
                     "inputs[0]: expected a list of length 8, got length 7", "inputs[0]"), id="ragged-row"),
    pytest.param(Bad("cnn", js({"inputs": [IMAGE, IMAGE[:7]]}), 400,
                     "inputs[1]: expected a list of length 8, got length 7", "inputs[1]"), id="ragged-batch"),
    pytest.param(Bad("linear", js({"inputs": [FEATURES + [0.0]]}), 400,
                     "inputs[0]: expected a list of length 10, got length 11; expected a batch of shape [N, 10]",
                     "inputs[0]"), id="regression-wrong-width"),
    # -- types ------------------------------------------------------------------------------------------------------
    pytest.param(Bad("cnn", js({"inputs": [image_with("1.5", 2, 3)]}), 400, "inputs[0]: expected a number, got a "
                     "string", "inputs[0]"), id="string-for-number"),
    pytest.param(Bad("cnn", js({"inputs": [image_with(True)]}), 400, "inputs[0]: expected a number, got a boolean",
                     "inputs[0]"), id="boolean-for-number"),
    pytest.param(Bad("cnn", js({"inputs": [image_with(None)]}), 400, "inputs[0]: expected a number, got null",
                     "inputs[0]"), id="null-for-number"),
    pytest.param(Bad("cnn", js({"inputs": [image_with({"value": 1})]}), 400,
                     "inputs[0]: expected a number, got an object", "inputs[0]"), id="object-for-number"),
    # -- values -----------------------------------------------------------------------------------------------------
    pytest.param(Bad("cnn", with_value("NaN", 7, 7), 400, "inputs[0]: value nan at position [7, 7] is not a finite "
                     "float32 (NaN, Infinity or beyond ±3.4e+38)", "inputs[0]"), id="nan-literal"),
    pytest.param(Bad("cnn", with_value("-Infinity", 1, 2), 400, "value -inf at position [1, 2] is not a finite "
                     "float32", "inputs[0]"), id="infinity-literal"),
    pytest.param(Bad("cnn", with_value("1e400", 3, 4), 400, "value inf at position [3, 4] is not a finite float32",
                     "inputs[0]"), id="float-beyond-float64"),
    pytest.param(Bad("cnn", with_value("-1e39", 5, 6), 400, "value -1e+39 at position [5, 6] is not a finite "
                     "float32", "inputs[0]"), id="float-beyond-float32"),
    pytest.param(Bad("cnn", with_value("1" + "0" * 400, 2, 2), 400, "inputs[0]: an integer of 401 digits at position "
                     "[2, 2] is not a finite float32 (beyond ±3.4e+38)", "inputs[0]"), id="integer-beyond-float64"),
    pytest.param(Bad("linear", js({"inputs": [FEATURES, [3e38] + FEATURES[1:]]}), 400, "inputs[1]: value 3e+38 at "
                     "position [0] is out of range for this model: standardised ((x - mean) / std) it is not a finite "
                     "float32", "inputs[1]"), id="regression-standardised-overflow"),
    # -- text -------------------------------------------------------------------------------------------------------
    pytest.param(Bad("nlp", js({"inputs": ["turn on the light " * (MB // 18) + "x" * (MB % 18)]}), 400,
                     "inputs[0]: text of 1048576 characters exceeds the limit of 1000", "inputs[0]"),
                 id="text-1mb-string"),
    pytest.param(Bad("nlp", js({"inputs": ["ok", 42]}), 400, "inputs[1]: expected a string, got a number",
                     "inputs[1]"), id="text-number"),
    pytest.param(Bad("nlp", js({"inputs": [["turn", "on", "the", "light"]]}), 400,
                     "inputs[0]: expected a string, got a list", "inputs[0]"), id="text-pre-tokenised"),
    pytest.param(Bad("nlp", js({"inputs": "turn on the lights"}), 400, 'inputs: expected a list (a batch of samples), '
                     'got a string; send one sample as ["turn on the lights"]', "inputs"), id="text-without-batch"),
    pytest.param(Bad("nlp", js({"inputs": ["lights on"] * 300}), 400, "inputs: the batch has 300 samples; the limit "
                     "is 256", "inputs"), id="text-batch-over-max-batch"),
]


def error_of(reply: Any) -> dict[str, Any]:
    assert isinstance(reply, dict) and set(reply) == {"error"}, str(reply)[:300]
    return reply["error"]


def lambda_http_replies(handler: ModuleType, body: bytes) -> dict[str, tuple[int, Any]]:
    """The handler's answers to `body` through every HTTP event shape Lambda can deliver it in."""
    encoded = base64.b64encode(body).decode()
    events = {"http-v2-base64": http_v2(encoded, base64_encoded=True)}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None  # API Gateway and Function URLs deliver a body that is not UTF-8 base64-encoded
    if text is not None:
        events["http-v2"] = http_v2(text)
        events["rest-v1"] = http_v1(text)
    replies = {}
    for surface, event in events.items():
        response = handler.handler(event, CONTEXT)
        assert response["headers"] == {"content-type": "application/json"}
        replies[surface] = (response["statusCode"], json.loads(response["body"]))
    return replies


@pytest.mark.parametrize("case", BAD_BODIES)
def test_bad_request_gets_the_same_clear_4xx_on_every_surface(case: Bad, handlers: dict[str, ModuleType],
                                                             servers: dict[str, EdgeServer]) -> None:
    replies = lambda_http_replies(handlers[case.model], case.body)
    replies["edge-server"] = post(servers[case.model].port, case.body)
    if not case.in_bytes:
        direct = handlers[case.model].handler(json.loads(case.body), CONTEXT)
        replies["direct-invoke"] = (error_of(direct)["status"], direct)
    for surface, (status, body) in replies.items():
        error = error_of(body)
        assert (status, error["status"]) == (case.status, case.status), (surface, error)
        assert error["type"] == "InvalidRequest", surface
        assert case.fragment in error["message"], (surface, error["message"])
        assert error.get("field") == case.field, (surface, error)
    assert len({json.dumps(body, sort_keys=True) for _, body in replies.values()}) == 1, replies


def test_the_table_holds_thirty_distinct_mistakes() -> None:
    ids = [param.id for param in BAD_BODIES]
    assert len(ids) == len(set(ids)) >= 30
    assert len({param.values[0].body for param in BAD_BODIES}) == len(ids)


# ---------------------------------------------------------------------------------------------------------------
# Mistakes only one surface can carry


@pytest.mark.parametrize("event, status, fragment", [
    pytest.param({**http_v2(None), "body": {"inputs": [IMAGE]}}, 400, "the request body must be a string",
                 id="http-body-not-a-string"),
    pytest.param(http_v2("!!!not base64!!!", base64_encoded=True), 400,
                 "the body is marked isBase64Encoded but is not valid base64", id="bad-base64"),
    pytest.param(http_v2(base64.b64encode(js({"inputs": [IMAGE]})).decode()[:-3], base64_encoded=True), 400,
                 "the body is marked isBase64Encoded but is not valid base64", id="truncated-base64"),
    pytest.param(http_v2(base64.b64encode(b"x" * (6 * MB + 1)).decode(), base64_encoded=True), 413,
                 "the request body exceeds 6 MB", id="base64-body-over-6mb"),
    pytest.param(http_v1(None), 400, "the request body is empty", id="rest-v1-without-body"),
])
def test_lambda_event_mistakes(handlers: dict[str, ModuleType], event: dict[str, Any], status: int,
                               fragment: str) -> None:
    response = handlers["cnn"].handler(event, CONTEXT)
    error = error_of(json.loads(response["body"]))
    assert response["statusCode"] == error["status"] == status
    assert fragment in error["message"]


@pytest.mark.parametrize("event, fragment", [
    pytest.param([{"inputs": [IMAGE]}], "got a list", id="direct-list"),
    pytest.param("{\"inputs\": []}", "got a string", id="direct-json-in-a-string"),
    pytest.param(7, "got a number", id="direct-number"),
    pytest.param(None, "got null", id="direct-null"),
    pytest.param({"requestContext": {"http": {"method": "POST"}}}, 'missing "inputs"',
                 id="direct-half-an-http-event"),
])
def test_direct_invoke_mistakes(handlers: dict[str, ModuleType], event: Any, fragment: str) -> None:
    error = error_of(handlers["cnn"].handler(event, CONTEXT))
    assert error["status"] == 400 and fragment in error["message"]


def _request_bytes(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


GOOD_BODY = js({"inputs": [IMAGE]})


@pytest.mark.parametrize("request_bytes, status, fragment", [
    pytest.param(_request_bytes("POST", "/predict", {}), 411, "a Content-Length header is required",
                 id="no-content-length"),
    pytest.param(_request_bytes("POST", "/predict", {"Transfer-Encoding": "chunked"}), 411,
                 "Transfer-Encoding is not supported; send the body with a Content-Length header", id="chunked-body"),
    pytest.param(_request_bytes("POST", "/predict", {"Content-Length": "-5"}), 400,
                 "the Content-Length header is not a single non-negative integer", id="negative-content-length"),
    pytest.param(_request_bytes("POST", "/predict", {"Content-Length": "12, 13"}), 400,
                 "the Content-Length header is not a single non-negative integer", id="listed-content-length"),
    pytest.param(_request_bytes("POST", "/predict", {"Content-Length": str(7 * MB)}), 413,
                 "the request body exceeds 6 MB", id="content-length-over-6mb"),
    pytest.param(_request_bytes("PUT", "/predict", {"Content-Length": "0"}), 405,
                 "method PUT is not allowed on '/predict'; use GET, POST", id="put"),
    pytest.param(_request_bytes("GET", "/predict", {}), 405, "method GET is not allowed on '/predict'; use POST",
                 id="get-predict"),
    pytest.param(_request_bytes("POST", "/health", {"Content-Length": str(len(GOOD_BODY))}, GOOD_BODY), 405,
                 "method POST is not allowed on '/health'; use GET", id="post-health"),
    pytest.param(_request_bytes("POST", "/v1/models/cnn:predict", {"Content-Length": "2"}, b"{}"), 404,
                 "no such endpoint '/v1/models/cnn:predict'; use GET /health, GET / or POST /predict",
                 id="unknown-path"),
    pytest.param(b"HELLO\r\n\r\n", 400, "Bad request syntax", id="garbage-request-line"),
    pytest.param(_request_bytes("POST", "/predict", {f"X-H{i}": "v" for i in range(101)}), 431, "Too many headers",
                 id="too-many-headers"),
    pytest.param(_request_bytes("GET", "/" + "a" * 70_000, {}), 414, "URI Too Long", id="request-line-too-long"),
])
def test_http_transport_mistakes_get_json_errors(servers: dict[str, EdgeServer], request_bytes: bytes, status: int,
                                                 fragment: str) -> None:
    got, body = raw_exchange(servers["cnn"].port, request_bytes)
    error = error_of(body)
    assert got == error["status"] == status
    assert fragment in error["message"], error


# ---------------------------------------------------------------------------------------------------------------
# Bugs the fuzz tests found, kept as plain tests


def test_regression_output_overflow_is_a_400_not_a_500(variants: dict[str, Path], handlers: dict[str, ModuleType],
                                                       servers: dict[str, EdgeServer]) -> None:
    """Finite inputs, each finite once standardised, whose weighted sum overflows float32 inside the model: the
    prediction would be Infinity, which JSON cannot carry (it was a 500)."""
    model = load_model(variants["linear"])
    base = model.predict([FEATURES])[0]["progression"]
    signs = []  # each feature pushed the way its weight points, so the terms add up instead of cancelling
    for i in range(len(FEATURES)):
        nudged = list(FEATURES)
        nudged[i] = 1.0
        signs.append(1.0 if model.predict([nudged])[0]["progression"] > base else -1.0)
    std = model.manifest.preprocessing[0]["std"]
    sample = [sign * 3e38 * s for sign, s in zip(signs, std)]  # each one standardises to ±3e38
    body = js({"inputs": [FEATURES, sample]})
    replies = lambda_http_replies(handlers["linear"], body)
    replies["edge-server"] = post(servers["linear"].port, body)
    for status, reply in replies.values():
        assert status == 400
        assert error_of(reply) == {"type": "InvalidRequest", "message": "inputs[1]: the model's output for this "
                                   "sample is not a finite number (NaN or Infinity): its values are far outside the "
                                   "range the model was trained on", "status": 400, "field": "inputs[1]"}


# ---------------------------------------------------------------------------------------------------------------
# Near misses that are served (200), by design


def test_odd_but_valid_inputs_are_served(variants: dict[str, Path], servers: dict[str, EdgeServer]) -> None:
    cnn = load_model(variants["cnn"])
    port = servers["cnn"].port
    negative_zero = b'{"inputs": [[' + b", ".join([b"[" + b", ".join([b"-0"] * 4 + [b"-0.0"] * 4) + b"]"] * 8) + b"]]}"
    status, body = post(port, negative_zero)
    assert status == 200 and body["predictions"] == cnn.predict([IMAGE])  # -0 is zero
    ints = [[int(v) for v in row] for row in IMAGE]
    status, body = post(port, js({"inputs": [ints]}))
    assert status == 200 and body["predictions"] == cnn.predict([IMAGE])  # integers are numbers
    largest = image_with(3.4e38)  # within float32
    status, body = post(port, js({"inputs": [largest]}))
    assert status == 200 and body["predictions"] == cnn.predict([largest])
    status, body = post(port, js({"inputs": [IMAGE] * 256}))  # exactly max_batch
    assert status == 200 and len(body["predictions"]) == 256


def test_unknown_words_and_characters_are_served_as_out_of_vocabulary(variants: dict[str, Path],
                                                                      servers: dict[str, EdgeServer]) -> None:
    """The text model maps words it never saw to the OOV token and drops characters that form no token (emoji,
    punctuation, other scripts): a 200 by design. Requests that encode alike must be answered alike."""
    nlp = load_model(variants["nlp"])
    step = nlp.manifest.preprocessing[0]
    index, length = vocabulary_index(step["vocabulary"]), step["max_length"]
    unknown = ["zzyzx qwertyuiop", "xqxqxq wvwvwv"]
    no_tokens = ["", "🙂 ☃ — ¿¡ 中文 \ud800 \u200b", "!!! ??? ..."]
    assert {tuple(encode(t, index, length)) for t in unknown} == {(OOV_ID, OOV_ID) + (PAD_ID,) * (length - 2)}
    assert {tuple(encode(t, index, length)) for t in no_tokens} == {(PAD_ID,) * length}
    at_limit = ("lights on " * 100)[:1000]  # exactly max_text_chars
    assert len(at_limit) == nlp.describe()["inputs"][0]["max_chars"]
    texts = unknown + no_tokens + [at_limit, "TURN ON THE LIGHTS", "turn on the lights"]
    status, body = post(servers["nlp"].port, json.dumps({"inputs": texts}).encode())
    assert status == 200 and body["predictions"] == nlp.predict(texts)
    predictions = body["predictions"]
    assert predictions[0] == predictions[1]  # two unknown words each
    assert predictions[2] == predictions[3] == predictions[4]  # nothing to tokenise
    assert predictions[-2] == predictions[-1]  # lowercased


# ---------------------------------------------------------------------------------------------------------------
# After everything above: still serving, correctly, in the same processes


def test_servers_and_handlers_still_serve_after_the_bad_requests(variants: dict[str, Path], trained: Workspace,
                                                                 handlers: dict[str, ModuleType],
                                                                 servers: dict[str, EdgeServer]) -> None:
    for name in MODELS:
        with np.load(trained.data_file(name)) as data:
            batch = data["x_test"][:16].tolist()
        expected = load_model(variants[name]).predict(batch)
        server = servers[name]
        assert server.alive(), server.log.read_text()
        status, body = post(server.port, js({"inputs": batch}))
        assert status == 200 and body["predictions"] == expected
        assert handlers[name].handler({"inputs": batch}, CONTEXT)["predictions"] == expected
        log = server.log.read_text()
        assert "Traceback" not in log and '" 500 ' not in log
