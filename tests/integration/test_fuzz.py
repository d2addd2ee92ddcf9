"""Fuzzing the request contract: hypothesis-made Lambda events and HTTP bodies against the handler in this process,
and a smaller stream of bodies and request heads against a running edge server; then the same for a model brought
without a task (named tensors, the Open Inference Protocol, its binary extension) on both surfaces.

Whatever arrives, the answer is a JSON reply with predictions (or, for GET, the model's description) or a 4xx error
record: never a 5xx, never an exception escaping the handler, never a dead server. Examples are derandomized so CI
runs the same ones every time; EDGEMAAS_FUZZ_SCALE=10 runs ten times as many (new ones) while hunting bugs.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import math
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edgemaas.pipeline import chosen_variant
from edgemaas.workspace import Workspace
from tests.integration.test_bad_requests import EdgeServer, edge_server
from tests.functional.test_handler import CONTEXT, load_handler

pytestmark = pytest.mark.models("cnn", "linear", "nlp")  # the built-ins `trained` holds here

SCALE = float(os.environ.get("EDGEMAAS_FUZZ_SCALE", "1"))
MODELS = ("cnn", "nlp", "linear")
SHAPES = {"cnn": (8, 8), "linear": (10,)}


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=max(1, int(examples * SCALE)), derandomize=SCALE == 1, deadline=None,
                    database=None, suppress_health_check=list(HealthCheck), print_blob=True)


# ---------------------------------------------------------------------------------------------------------------
# Strategies: JSON values, near-valid requests, bodies, Lambda events

EXTREME_NUMBERS = st.sampled_from([
    0, -0.0, 1e-45, 5e-324, 3.4e38, -3.4028235e38, 3.5e38, 1e308, -1e308, math.inf, -math.inf, math.nan,
    2**31, -(2**63), 2**64, 10**38, 10**39, 10**400, -(10**1000),
])
NUMBERS = st.one_of(st.floats(-300, 300), st.integers(-1000, 1000), st.floats(), EXTREME_NUMBERS)
WORDS = st.sampled_from(["turn", "on", "off", "the", "lights", "lock", "front", "door", "weather", "paris", "zzyzx",
                         "<oov>", "<pad>", "don't", "TURN", "🙂", "中文", "\u200b", "\ud800", "\x00", " ", "-"])
TEXTS = st.one_of(st.text(max_size=40), st.lists(WORDS, max_size=12).map(" ".join),
                  st.integers(990, 1010).map(lambda n: ("lights on " * 101)[:n]))
LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=20))
JSON_VALUES = st.recursive(LEAVES, lambda children: st.one_of(
    st.lists(children, max_size=6), st.dictionaries(st.text(max_size=8), children, max_size=5)), max_leaves=30)


def _nest(flat: list[Any], shape: tuple[int, ...]) -> list[Any]:
    if len(shape) == 1:
        return flat
    step = len(flat) // shape[0]
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


@st.composite
def numeric_batches(draw: st.DrawFn, shape: tuple[int, ...]) -> list[Any]:
    """A batch of well-shaped samples, then a few mistakes: a value swapped for anything, a list cut or grown."""
    size = draw(st.one_of(st.integers(0, 4), st.sampled_from([256, 257])))
    per_sample = math.prod(shape)
    batch = []
    for _ in range(size):
        # A few drawn values repeated to fill the sample (drawing every value would exhaust hypothesis's buffer),
        # then a few positions set to numbers of any size.
        cycle = draw(st.lists(st.floats(-20, 20), min_size=1, max_size=4)) if size <= 4 else [1.0]
        flat = [cycle[i % len(cycle)] for i in range(per_sample)]
        for _extreme in range(draw(st.integers(0, 2)) if size <= 4 else 0):
            flat[draw(st.integers(0, per_sample - 1))] = draw(NUMBERS)
        batch.append(_nest(flat, shape))
    for _ in range(draw(st.integers(0, 3)) if batch else 0):
        node = batch
        for _level in range(draw(st.integers(0, len(shape)))):
            child = node[draw(st.integers(0, len(node) - 1))]
            if not isinstance(child, list) or not child:
                break
            node = child
        where = draw(st.integers(0, len(node) - 1))
        mistake = draw(st.sampled_from(["replace", "drop", "grow", "wrap"]))
        if mistake == "replace":
            node[where] = draw(JSON_VALUES)
        elif mistake == "drop":
            del node[where]
        elif mistake == "grow":
            node.append(draw(NUMBERS))
        else:
            node[where] = [node[where]]
        if not node:
            break
    return batch


TEXT_BATCHES = st.one_of(st.lists(TEXTS, max_size=5), st.lists(st.one_of(TEXTS, JSON_VALUES), max_size=5),
                         st.integers(255, 258).map(lambda n: ["turn on"] * n))


def requests_for(model: str) -> st.SearchStrategy[Any]:
    """A request for `model`: mostly {"inputs": <near-valid batch>}, sometimes with extra keys or anything at all."""
    batch = TEXT_BATCHES if model == "nlp" else numeric_batches(SHAPES[model])
    return st.one_of(
        st.fixed_dictionaries({"inputs": batch}),
        st.fixed_dictionaries({"inputs": batch}, optional={"model": JSON_VALUES, "": JSON_VALUES}),
        st.fixed_dictionaries({"inputs": st.one_of(JSON_VALUES, batch)}),
        JSON_VALUES,
    )


@st.composite
def serialized(draw: st.DrawFn, request: Any) -> bytes:
    """`request` as JSON bytes (NaN/Infinity literals, raw or escaped non-ASCII, lone surrogates as invalid UTF-8),
    sometimes damaged a little."""
    try:
        text = json.dumps(request, ensure_ascii=draw(st.booleans()), separators=draw(st.sampled_from(
            [(",", ":"), (", ", ": ")])))
    except ValueError:  # an integer too long to print
        text = '{"inputs": []}'
    data = bytearray(text.encode("utf-8", "surrogatepass"))
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 0, 1, 2, 3]))):
        where = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = draw(st.sampled_from(b'{}[]",:0\\\x00\xff\xc3 eE-.'))
        if kind == "insert":
            data.insert(where, byte)
        elif where < len(data):
            if kind == "delete":
                del data[where]
            else:
                data[where] = byte
    return bytes(data)


ODD_BODIES = st.one_of(
    st.binary(max_size=64),
    st.integers(1, 60_000).map(lambda depth: b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"),
    st.integers(1, 60_000).map(lambda depth: b'{"a":' * depth + b"0" + b"}" * depth),
    st.integers(300, 5000).map(lambda digits: b'{"inputs": [[1' + b"0" * digits + b"]]}"),
    st.sampled_from([b"", b" ", b"null", b"{}", b"[]", b'{"inputs": [], "inputs": []}', b"NaN", b"-Infinity",
                     b"\xef\xbb\xbf{}", '{"inputs": ["\ud800"]}'.encode("utf-8", "surrogatepass")]),
)


def bodies_for(model: str) -> st.SearchStrategy[bytes]:
    serialized_requests = requests_for(model).flatmap(serialized)
    return st.one_of(serialized_requests, serialized_requests, serialized_requests, ODD_BODIES)


METHODS = st.one_of(st.sampled_from(["POST", "GET", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "post", "get"]),
                    st.text(max_size=8), LEAVES)


@st.composite
def http_events(draw: st.DrawFn, model: str) -> dict[str, Any]:
    """An API Gateway HTTP API v2 / Function URL or REST API v1 event, in shapes AWS sends and some it does not."""
    raw = draw(bodies_for(model))
    encoded = draw(st.booleans())
    if encoded:
        body: Any = base64.b64encode(raw).decode()
        if draw(st.integers(0, 9)) == 0:
            body = body[:-1] + draw(st.sampled_from(["!", "=", "\n", "é"]))
    else:
        body = raw.decode("utf-8", "surrogateescape")
    body = draw(st.one_of(st.just(body), st.just(body), st.just(body), st.none(), JSON_VALUES))
    flag = draw(st.one_of(st.just(encoded), st.just(encoded), LEAVES))
    headers = draw(st.dictionaries(st.text(max_size=12), st.one_of(st.text(max_size=20), LEAVES), max_size=4))
    if draw(st.booleans()):
        context = draw(st.one_of(
            st.fixed_dictionaries({"http": st.fixed_dictionaries({"method": METHODS, "path": st.text(max_size=10)})}),
            st.fixed_dictionaries({"http": JSON_VALUES}), JSON_VALUES))
        event = {"version": "2.0", "routeKey": "$default", "rawPath": "/", "requestContext": context}
    else:
        event = {"resource": "/predict", "httpMethod": draw(METHODS), "requestContext": draw(JSON_VALUES)}
    event.update({"headers": headers, "body": body, "isBase64Encoded": flag})
    for key in draw(st.lists(st.sampled_from(["headers", "isBase64Encoded", "routeKey", "rawPath"]), max_size=2)):
        event.pop(key, None)
    return event


# ---------------------------------------------------------------------------------------------------------------
# What every answer must be


def check_body(body: Any, status: int, request: Any = None) -> None:
    """A JSON object with predictions, the model's description, or a 4xx error record."""
    assert isinstance(body, dict), body
    json.dumps(body, allow_nan=False)  # what the caller receives is strict JSON
    event(f"{status} {'predictions' if 'predictions' in body else body.get('error', {}).get('field', '-')}")
    if "error" in body:
        error = body["error"]
        assert 400 <= status < 500 and error["status"] == status, body
        assert isinstance(error["type"], str) and isinstance(error["message"], str) and error["message"], body
        return
    assert status == 200, body
    if "predictions" in body:
        assert isinstance(body["predictions"], list) and body["predictions"]
        if isinstance(request, dict) and isinstance(request.get("inputs"), list):
            assert len(body["predictions"]) == len(request["inputs"])
    else:
        assert {"model", "variant", "inputs", "max_batch"} <= set(body), body  # GET: the description


def check_http_response(response: Any) -> None:
    assert isinstance(response, dict) and set(response) == {"statusCode", "headers", "body", "isBase64Encoded"}
    assert response["headers"] == {"content-type": "application/json"} and response["isBase64Encoded"] is False
    check_body(json.loads(response["body"]), response["statusCode"])


# ---------------------------------------------------------------------------------------------------------------
# The handler, in this process


@pytest.fixture(scope="module")
def handlers(trained: Workspace) -> Iterator[dict[str, ModuleType]]:
    service_log = logging.getLogger("edgemaas.service")
    level = service_log.level
    service_log.setLevel(logging.WARNING)  # one line per rejected request would be thousands; 500s still log
    try:
        yield {name: load_handler(str(chosen_variant(trained, name))) for name in MODELS}
    finally:
        service_log.setLevel(level)


@fuzz_settings(1000)
@given(data=st.data(), model=st.sampled_from(MODELS))
def test_direct_invokes_never_fail(handlers: dict[str, ModuleType], data: st.DataObject, model: str) -> None:
    event = data.draw(requests_for(model), label="event")
    result = handlers[model].handler(event, CONTEXT)
    status = result["error"]["status"] if isinstance(result, dict) and "error" in result else 200
    check_body(result, status, event)


@fuzz_settings(1200)
@given(data=st.data(), model=st.sampled_from(MODELS))
def test_http_events_never_fail(handlers: dict[str, ModuleType], data: st.DataObject, model: str) -> None:
    event = data.draw(http_events(model), label="event")
    check_http_response(handlers[model].handler(event, CONTEXT))


# ---------------------------------------------------------------------------------------------------------------
# The edge server, over HTTP


@pytest.fixture(scope="module")
def server(trained: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeServer]:
    log = tmp_path_factory.mktemp("fuzz-edge") / "cnn.log"
    with edge_server(chosen_variant(trained, "cnn"), log, "--workers", "1", "--quiet") as running:
        yield running


class Client:
    """One keep-alive connection, reopened whenever the server closes it (it does after some errors)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection: http.client.HTTPConnection | None = None

    def send(self, method: str, path: str, body: bytes) -> tuple[int, bytes, str | None]:
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            self.connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = self.connection.getresponse()
            data = response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.close()  # a keep-alive connection the server had just closed: retry once on a fresh one
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = self.connection.getresponse()
            data = response.read()
        if response.will_close:
            self.close()
        return response.status, data, response.getheader("Content-Type")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


@pytest.fixture(scope="module")
def client(server: EdgeServer) -> Iterator[Client]:
    connection = Client(server.port)
    yield connection
    connection.close()


@fuzz_settings(500)
@given(body=bodies_for("cnn"), method=st.sampled_from(["POST"] * 8 + ["GET", "PUT", "DELETE"]),
       path=st.sampled_from(["/predict"] * 4 + ["/", "/health", "/nope", "/predict?x=1"]))
def test_edge_server_bodies(server: EdgeServer, client: Client, body: bytes, method: str, path: str) -> None:
    status, data, content_type = client.send(method, path, body)
    assert content_type == "application/json"
    reply = json.loads(data)
    if path == "/health" and status == 200:
        assert reply["status"] == "ok"
    else:
        check_body(reply, status)
    assert server.alive()


TOKEN = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
HEADER_VALUE = st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\r\n"), max_size=30)


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    """A request line and headers, odd in any way but framing: every head ends, and Content-Length matches."""
    method = draw(st.one_of(st.sampled_from(["GET", "POST", "PUT", "HEAD", "OPTIONS", "CONNECT"]), TOKEN))
    target = draw(st.one_of(st.sampled_from(["/", "/predict", "/health", "*", "http://x/predict"]), TOKEN,
                            HEADER_VALUE.map(lambda v: "/" + v)))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.x", "http/1.1", "HTTP/11", "HTTP/"]))
    body = draw(st.one_of(st.just(b'{"inputs": []}'), st.binary(max_size=40)))
    headers = draw(st.lists(st.tuples(TOKEN, HEADER_VALUE), max_size=6))
    if draw(st.booleans()):
        headers.append(("Content-Length", str(len(body))))
    else:
        body = b""
    if draw(st.integers(0, 9)) == 0:
        headers.append(("Expect", "100-continue"))
    lines = [f"{method} {target} {version}", *(f"{name}: {value}" for name, value in headers)]
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


@fuzz_settings(300)
@given(head=request_heads())
def test_edge_server_request_heads(server: EdgeServer, head: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    reply = b"".join(chunks)
    if reply.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"):  # asked for with Expect: 100-continue
        reply = reply.partition(b"\r\n\r\n")[2]
    assert reply.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), reply[:200]
    status = int(reply[9:12])
    headers, _, body = reply.partition(b"\r\n\r\n")
    assert b"\r\nContent-Type: application/json\r\n" in headers + b"\r\n", headers
    if status == 505:  # HTTP Version Not Supported: the one 5xx that reports a client's mistake (HTTP/2 and up)
        assert head.split(b"\r\n")[0].endswith(b" HTTP/2.0"), head[:200]
        assert json.loads(body)["error"] == {"type": "InvalidRequest", "message": "Invalid HTTP version (2.0)",
                                             "status": 505}
    elif head.startswith(b"HEAD ") and body == b"":  # no body for HEAD (once the request line parses as one)
        assert status < 500
    elif status == 200 and b"/health" in head.split(b"\r\n")[0]:
        assert json.loads(body)["status"] == "ok"
    else:
        check_body(json.loads(body), status)
    assert server.alive()


def test_edge_server_is_still_serving(server: EdgeServer, client: Client, trained: Workspace) -> None:
    import numpy as np

    from edgemaas.runtime import load_model

    with np.load(trained.data_file("cnn")) as data:
        batch = data["x_test"][:8].tolist()
    status, data, _ = client.send("POST", "/predict", json.dumps({"inputs": batch}).encode())
    assert status == 200
    assert json.loads(data)["predictions"] == load_model(chosen_variant(trained, "cnn")).predict(batch)
    assert server.alive() and "Traceback" not in Path(server.log).read_text()


# ---------------------------------------------------------------------------------------------------------------
# A model brought without a task: named tensors, the Open Inference Protocol and its binary extension, through the
# Lambda handler and the edge server (three inputs: a float tensor, a state whose batch is second, an int64 0-d)

TENSOR_PATHS = ["/predict", "/v2/models/vad/infer", "/v2/models/vad/versions/1/infer", "/"]


@st.composite
def binary_oip_bodies(draw: st.DrawFn) -> bytes:
    """An OIP header whose inputs claim binary sizes (right, wrong or nonsense), then any bytes."""
    from tests.unit.test_tensor_contract import oip_bodies

    head = draw(oip_bodies())
    for item in head["inputs"]:
        item.pop("data", None)
        count = math.prod(item["shape"]) if isinstance(item["shape"], list) and all(
            type(d) is int for d in item["shape"]) else 1
        item["parameters"] = {"binary_data_size": draw(st.one_of(st.just(4 * abs(count)), st.integers(-4, 400),
                                                                 JSON_VALUES))}
    tail = draw(st.one_of(st.binary(max_size=400), st.integers(0, 200).map(lambda n: b"\x00\x00\x80\x3f" * n)))
    return json.dumps(head).encode() + tail


@st.composite
def tensor_model_bodies(draw: st.DrawFn) -> bytes:
    from tests.unit.test_tensor_contract import oip_bodies, tensor_bodies

    kind = draw(st.sampled_from(["tensors", "oip", "binary", "odd"]))
    if kind == "binary":
        return draw(binary_oip_bodies())
    if kind == "odd":
        return draw(ODD_BODIES)
    return draw(serialized(draw(tensor_bodies() if kind == "tensors" else oip_bodies())))


def check_tensor_answer(body: Any, status: int) -> None:
    """Every output by name (tensor form), an OIP response, the description, or a 4xx error record."""
    assert isinstance(body, dict), body
    json.dumps(body, allow_nan=False)
    if "error" in body:
        error = body["error"]
        assert 400 <= status < 500 and error["status"] == status and error["message"], body
        event(f"{status} {error.get('field', '-')}")
        return
    assert status == 200 and ({"outputs"} <= set(body) or {"model", "forms", "tensors"} <= set(body)), body
    event("200")


@pytest.fixture(scope="module")
def vad_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgemaas.runtime import read_manifest
    from edgemaas.user_models.importing import import_model
    from tests.tensor_models import vad_onnx

    root = tmp_path_factory.mktemp("fuzz-vad")
    ws = Workspace(root / "ws")
    directory = ws.variant_dir(import_model(vad_onnx(root / "vad.onnx"), ws).name, "imported")
    manifest = read_manifest(directory)
    manifest.limits["max_input_elements"] = 4096  # over it: 413, a case the bodies reach
    manifest.save(directory)
    return directory


@pytest.fixture(scope="module")
def vad_handler(vad_dir: Path) -> Iterator[ModuleType]:
    service_log = logging.getLogger("edgemaas.service")
    level = service_log.level
    service_log.setLevel(logging.WARNING)
    try:
        yield load_handler(str(vad_dir))
    finally:
        service_log.setLevel(level)


@fuzz_settings(600)
@given(body=tensor_model_bodies(), path=st.sampled_from(TENSOR_PATHS), encoded=st.booleans())
def test_tensor_model_http_events_never_fail(vad_handler: ModuleType, body: bytes, path: str,
                                             encoded: bool) -> None:
    event = {"version": "2.0", "routeKey": "$default", "rawPath": path, "headers": {},
             "requestContext": {"http": {"method": "POST", "path": path}}, "isBase64Encoded": encoded,
             "body": base64.b64encode(body).decode() if encoded else body.decode("utf-8", "surrogateescape")}
    response = vad_handler.handler(event, CONTEXT)
    check_tensor_answer(json.loads(response["body"]), response["statusCode"])


@fuzz_settings(300)
@given(body=tensor_model_bodies())
def test_tensor_model_direct_invokes_never_fail(vad_handler: ModuleType, body: bytes) -> None:
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):  # a direct invoke is JSON; Lambda refuses anything else before the handler
        request = {"inputs": body.decode("latin-1")}
    result = vad_handler.handler(request, CONTEXT)
    check_tensor_answer(result, result["error"]["status"] if "error" in result else 200)


@pytest.fixture(scope="module")
def vad_server(vad_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeServer]:
    log = tmp_path_factory.mktemp("fuzz-vad-edge") / "vad.log"
    with edge_server(vad_dir, log, "--workers", "1", "--quiet", "--max-request-bytes", str(1 << 20)) as running:
        yield running


@fuzz_settings(300)
@given(body=tensor_model_bodies(), path=st.sampled_from(TENSOR_PATHS))
def test_tensor_model_edge_bodies(vad_server: EdgeServer, body: bytes, path: str) -> None:
    connection = Client(vad_server.port)
    try:
        status, data, content_type = connection.send("POST", path, body)
    finally:
        connection.close()
    assert content_type == "application/json"
    check_tensor_answer(json.loads(data), status)
    assert vad_server.alive()


def test_the_tensor_model_server_is_still_serving(vad_server: EdgeServer, vad_handler: ModuleType) -> None:
    good = {"inputs": {"input": [[0.5] * 8], "state": [[[0.1] * 16], [[0.2] * 16]], "sr": 16000}}
    client = Client(vad_server.port)
    try:
        status, data, _ = client.send("POST", "/predict", json.dumps(good).encode())
    finally:
        client.close()
    assert status == 200 and json.loads(data) == vad_handler.handler(good, CONTEXT)
    assert vad_server.alive() and "Traceback" not in Path(vad_server.log).read_text()
