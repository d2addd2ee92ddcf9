"""A real `moto_server` on 127.0.0.1 (a free port) for the AWS tests, with fake credentials and a region.

Import the fixture into a test module: `from tests.aws_fixtures import moto_server  # noqa: F401`.
Lambda runs in moto's docker-free backend (`/moto-api/config` `{"lambda": {"use_docker": false}}`), whose Invoke
returns results queued through `/moto-api/static/lambda-simple/response` (see `queue_lambda_results`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest

REGION = "us-east-1"


@dataclass
class MotoServer:
    url: str

    def post(self, path: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def reset(self) -> None:
        self.post("/moto-api/reset", {})
        self.post("/moto-api/config", {"lambda": {"use_docker": False}})

    def queue_lambda_results(self, *results: Any) -> None:
        """What the next Invoke calls return, in order (a dict or list is sent as JSON)."""
        self.post("/moto-api/static/lambda-simple/response",
                  {"results": [r if isinstance(r, str) else json.dumps(r) for r in results], "region": REGION})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_RUNNING: tuple[subprocess.Popen, MotoServer] | None = None


def _start() -> MotoServer:
    """One moto_server per test session, started at first use (so importing `moto_server` alone is enough)."""
    global _RUNNING
    if _RUNNING is not None:
        return _RUNNING[1]
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/moto-api/data.json", timeout=1):
                break
        except (urllib.error.URLError, ConnectionError, OSError):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"moto_server did not start on port {port}") from None
            time.sleep(0.1)
    _RUNNING = (process, MotoServer(url))
    return _RUNNING[1]


def _stop() -> None:
    global _RUNNING
    if _RUNNING is None:
        return
    process = _RUNNING[0]
    _RUNNING = None
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def moto_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A fresh (reset) moto account, and the environment pointing boto3 at it with fake credentials. The server
    process is shared by the session and stopped when the session ends."""
    first = _RUNNING is None
    server = _start()
    if first:
        request.config.add_cleanup(_stop)
    for name in list(os.environ):
        if name.startswith("AWS_") and name != "AWS_CA_BUNDLE":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    server.reset()
    return server
