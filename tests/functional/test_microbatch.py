"""Micro-batching in the edge server (issue 16): with batching on, every built-in answers byte for byte as with it
off, errors included. The real HTTP server runs in this process (so the test can see that batches did form), two
of it side by side: one batching, one not; concurrent clients over real sockets."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from edgemaas.edge_entry.batching import Batcher, batchable
from edgemaas.edge_entry.server import EdgeHTTPServer, ServerSettings
from edgemaas.pipeline import chosen_variant
from edgemaas.runtime import load_model
from edgemaas.runtime.service import Service
from edgemaas.workspace import Workspace
from tests.conftest import BUILTINS

pytestmark = pytest.mark.models(*BUILTINS)

CLIENTS = 16


class Running:
    def __init__(self, model_dir: Path, batching: bool, event_loop: bool = True, max_batch: int = 32) -> None:
        models = [load_model(model_dir) for _ in range(2)]
        service = Service(models, max_body_bytes=6 * 1024 * 1024)
        batching = batching and (batchable(models[0]) or max_batch == 1)  # as the CLI: batches of one if fixed
        self.batcher = (Batcher([Service(m, max_body_bytes=service.max_body_bytes) for m in models],
                                max_batch=max_batch, max_wait_s=0.05, max_queue=128) if batching else None)
        self.server = EdgeHTTPServer(ServerSettings(port=0, access_log=False, event_loop=event_loop), service,
                                     self.batcher)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def serving(model_dir: Path, batching: bool, event_loop: bool = True, max_batch: int = 32) -> Iterator[Running]:
    running = Running(model_dir, batching, event_loop, max_batch)
    try:
        yield running
    finally:
        running.close()


def _post(port: int, body: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _requests(ws: Workspace, name: str) -> list[bytes]:
    """Held-out samples, one to three a request, and requests the model refuses (their errors must match too)."""
    with np.load(ws.data_file(name)) as data:
        x = data["x_test"][:96].tolist()
    bodies, i, size = [], 0, 1
    while i < len(x):
        bodies.append(json.dumps({"inputs": x[i:i + size]}).encode())
        i, size = i + size, size % 3 + 1
    bodies += [b'{"inputs": [[1, 2]]}', b'{"inputs": []}', b'{"inputs": 5}', b'{"input": [1]}', b"not json",
               json.dumps({"inputs": [x[0], "x"]}).encode()]
    return bodies


@pytest.mark.parametrize("variant", ["chosen", "tflite-float32"])
@pytest.mark.parametrize("name", BUILTINS)
def test_batching_on_and_off_answer_bit_identically(trained: Workspace, name: str, variant: str) -> None:
    """The variant the gate ships and the float32 LiteRT variant. A variant whose batch is fixed (the recurrent
    built-in is frozen with one) keeps batching off; the others must batch and still answer identically."""
    model_dir = chosen_variant(trained, name) if variant == "chosen" else trained.variant_dir(name, variant)
    bodies = _requests(trained, name)
    with serving(model_dir, batching=False) as off:
        expected = [_post(off.port, body) for body in bodies]
    with serving(model_dir, batching=True) as on:
        with ThreadPoolExecutor(CLIENTS) as pool:
            got = list(pool.map(lambda body: _post(on.port, body), bodies))
        batched = on.batcher
        dynamic = batchable(on.server.service.model)
    assert [status for status, _ in expected].count(200) >= 30
    for body, want, have in zip(bodies, expected, got):
        assert have == want, f"{name} {model_dir.name}: {body[:80]!r}"
    if variant == "tflite-float32" and name in ("linear", "cnn"):  # dense and convolutional: a dynamic batch
        assert dynamic, f"{name} {model_dir.name}: the batch dimension is fixed"
    if not dynamic:  # a fixed batch: nothing to gain, batching stays off
        assert batched is None
    else:
        assert batched is not None and batched.batches > 0
        assert batched.largest_batch > 3, f"{name}: no request was batched with another (largest batch " \
                                          f"{batched.largest_batch})"


@pytest.mark.parametrize("name", BUILTINS)
def test_batches_of_one_on_the_event_loop_answer_bit_identically(trained: Workspace, name: str) -> None:
    """What `serve` runs for a model whose batch is fixed (rnn, nlp): the workers and the event loop with batches
    of one; the same answers and errors as the threaded server without a batcher, for every built-in."""
    model_dir = trained.variant_dir(name, "tflite-float32")
    bodies = _requests(trained, name)
    with serving(model_dir, batching=False) as off:
        expected = [_post(off.port, body) for body in bodies]
    with serving(model_dir, batching=True, max_batch=1) as on:
        with ThreadPoolExecutor(CLIENTS) as pool:
            got = list(pool.map(lambda body: _post(on.port, body), bodies))
        assert on.server.loop is not None and on.batcher is not None
        assert on.batcher.batches > 0 and on.batcher.largest_batch <= 3  # one request a batch (1-3 samples)
    assert [status for status, _ in expected].count(200) >= 30
    for body, want, have in zip(bodies, expected, got):
        assert have == want, f"{name}: {body[:80]!r}"


def _read_response(sock: socket.socket, buffer: bytearray) -> bytes:
    """One whole HTTP response from the socket (the bytes after it stay in `buffer`), with its Date header blanked
    (the one part two servers may differ in)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed mid-response: {bytes(buffer)!r}"
        buffer += chunk
    end = buffer.index(b"\r\n\r\n") + 4
    length = int(re.search(rb"Content-Length: (\d+)", bytes(buffer[:end])).group(1))  # type: ignore[union-attr]
    while len(buffer) < end + length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed mid-body"
        buffer += chunk
    response = bytes(buffer[:end + length])
    del buffer[:end + length]
    return re.sub(rb"Date: [^\r]*", b"Date: -", response)


def _conversation(port: int, pieces: list[bytes], answers: int) -> list[bytes]:
    """Send the pieces (0.2 s apart: a slow client) on one connection and read `answers` responses, then whether
    the server closed it (b"closed") or kept it open (b"open")."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(0.2)
            sock.sendall(piece)
        buffer = bytearray()
        responses = [_read_response(sock, buffer) for _ in range(answers)]
        sock.settimeout(0.5)
        try:
            responses.append(b"closed" if not buffer and sock.recv(1) == b"" else b"open")
        except TimeoutError:
            responses.append(b"open")
        return responses


def test_the_event_loop_answers_byte_for_byte_as_the_threads(trained: Workspace) -> None:
    """The event loop (batching on) against the threaded handler (batching on, loop off), whole responses compared:
    pipelined requests, a request trickling in (handed over to a thread after its first byte), a GET then a POST
    on one connection (handed over), an error, Connection: close, and HTTP/1.0."""
    model_dir = trained.variant_dir("cnn", "tflite-float32")
    with np.load(trained.data_file("cnn")) as data:
        x = data["x_test"][:4].tolist()
    good = [json.dumps({"inputs": x[i:i + 1 + i % 2]}).encode() for i in range(3)]

    def post(body: bytes, extra: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
        return (b"POST /predict " + version + b"\r\nHost: x\r\nContent-Type: application/json\r\n" + extra
                + b"Content-Length: %d\r\n\r\n" % len(body) + body)

    pipelined = post(good[0]) + post(good[1]) + post(good[2])
    slow = post(good[1])
    cases = [
        ([pipelined], 3),
        ([slow[:20], slow[20:60], slow[60:]], 1),
        ([b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + post(good[0])], 2),
        ([post(b'{"inputs": [[1, 2]]}') + post(good[2])], 2),
        ([post(good[0], b"Connection: close\r\n")], 1),
        ([post(good[0], version=b"HTTP/1.0")], 1),
        ([post(good[0]) + post(b"not json")], 2),
    ]
    with serving(model_dir, batching=True, event_loop=False) as threads:
        expected = [_conversation(threads.port, pieces, answers) for pieces, answers in cases]
    with serving(model_dir, batching=True) as loop:
        assert loop.server.loop is not None
        got = [_conversation(loop.port, pieces, answers) for pieces, answers in cases]
    for (pieces, _), want, have in zip(cases, expected, got):
        assert have == want, pieces[0][:60]
    assert [r[:12] for r in got[0][:3]] == [b"HTTP/1.1 200"] * 3
    assert got[4][-1] == b"closed" and got[0][-1] == b"open"


def test_running_out_of_memory_answering_on_the_event_loop_is_a_503_for_every_client(trained: Workspace) -> None:
    """Formatting a batch's answers runs out of memory: every client of the batch reads a 503 JSON (the handler
    runs each request alone, and runs short too) and the server serves on (before: the loop lost the rest of the
    batch, whose clients waited for an answer that never came)."""
    model_dir = trained.variant_dir("cnn", "tflite-float32")
    bodies = [body for body in _requests(trained, "cnn") if body.startswith(b'{"inputs": [[[')][:16]
    with serving(model_dir, batching=True) as on:
        assert on.server.loop is not None
        formats = on.server.batch_reply

        def out_of_memory(outputs: list) -> None:
            raise MemoryError

        on.server.batch_reply = out_of_memory  # type: ignore[method-assign]

        def post(body: bytes) -> tuple[int, str | None, dict]:
            connection = http.client.HTTPConnection("127.0.0.1", on.port, timeout=10)
            try:
                connection.request("POST", "/predict", body=body)
                response = connection.getresponse()
                return response.status, response.getheader("Retry-After"), json.loads(response.read())
            finally:
                connection.close()

        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = list(pool.map(post, bodies))
        on.server.batch_reply = formats  # type: ignore[method-assign]
        assert _post(on.port, bodies[0])[0] == 200
    assert len(answers) == 16 and {(status, retry) for status, retry, _ in answers} == {(503, "1")}
    assert all(body["error"]["type"] == "Overloaded" and "short of memory" in body["error"]["message"]
               for _, _, body in answers)
