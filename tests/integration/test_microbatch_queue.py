"""Micro-batching's bounded queue (issue 16): a burst larger than the queue gets immediate 503s (Overloaded, with
Retry-After) and 200s, nothing else; the server then serves as before. `serve` in its own process, real clients."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path

import pytest

from edgemaas.pipeline import chosen_variant
from edgemaas.workspace import Workspace
from tests.integration.test_bad_requests import edge_server

pytestmark = pytest.mark.models("cnn")

GOOD = json.dumps({"inputs": [[[0.5] * 8] * 8]}).encode()
BURST = 48


def _post(port: int, body: bytes) -> tuple[int | str, dict, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__, {}, {}
    finally:
        connection.close()


def test_a_burst_larger_than_the_queue_gets_503s_and_nothing_else_breaks(trained: Workspace, tmp_path: Path) -> None:
    model_dir = chosen_variant(trained, "cnn")
    # A queue of 2 and a batch that waits up to 300 ms for requests still arriving: the burst overflows the queue.
    with edge_server(model_dir, tmp_path / "serve.log", "--max-queue", "2", "--max-batch", "64", "--max-wait-ms",
                     "300", "--quiet") as server:
        results: list[tuple[int | str, dict, dict]] = []
        start = threading.Barrier(BURST)

        def client() -> None:
            start.wait()
            results.append(_post(server.port, GOOD))

        threads = [threading.Thread(target=client) for _ in range(BURST)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses = [status for status, _, _ in results]
        assert set(statuses) <= {200, 503}, statuses
        assert statuses.count(503) > 0 and statuses.count(200) > 0, statuses
        for status, headers, body in results:
            if status == 503:
                assert body["error"]["type"] == "Overloaded"
                assert "queue" in body["error"]["message"]
                assert headers.get("Retry-After") == "1"
            else:
                assert body["predictions"][0]["label"]
        # afterwards: served as before, and alive
        assert _post(server.port, GOOD)[0] == 200
        assert server.alive()
    assert "micro-batching: up to 64 samples" in (tmp_path / "serve.log").read_text()
