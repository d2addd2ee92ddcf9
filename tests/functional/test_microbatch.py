"""Micro-batching in the edge server (issue 16): with batching on, every built-in answers byte for byte as with it
off, errors included. The real HTTP server runs in this process (so the test can see that batches did form), two
of it side by side: one batching, one not; concurrent clients over real sockets."""

from __future__ import annotations

import http.client
import json
import threading
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
    def __init__(self, model_dir: Path, batching: bool) -> None:
        models = [load_model(model_dir) for _ in range(2)]
        service = Service(models, max_body_bytes=6 * 1024 * 1024)
        self.batcher = (Batcher([Service(m, max_body_bytes=service.max_body_bytes) for m in models], max_batch=32,
                                max_wait_s=0.05, max_queue=128) if batching and batchable(models[0]) else None)
        self.server = EdgeHTTPServer(ServerSettings(port=0, access_log=False), service, self.batcher)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def serving(model_dir: Path, batching: bool) -> Iterator[Running]:
    running = Running(model_dir, batching)
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
