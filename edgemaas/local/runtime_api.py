"""The Lambda Runtime API (2018-06-01) on 127.0.0.1, serving one runtime process.

Events are sent as the bytes the caller gave, as Lambda does: the runtime client parses them itself.
"""

from __future__ import annotations

import json
import queue
import re
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edgemaas.local.output import OutputCapture

_API_PREFIX = "/2018-06-01/runtime"
_NEXT_PATH = f"{_API_PREFIX}/invocation/next"
_INIT_ERROR_PATH = f"{_API_PREFIX}/init/error"
_RESULT_PATH = re.compile(rf"^{_API_PREFIX}/invocation/([^/]+)/(response|error)$")

# Lambda's synchronous invoke request limit (Invoke answers RequestTooLargeException, HTTP 413, above it).
MAX_REQUEST_BYTES = 6 * 1024 * 1024  # 6291456 bytes
# Lambda's synchronous response limit. The runtime gets a 413 above it.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024 + 100  # 6291556 bytes


@dataclass(eq=False)
class Invocation:
    """One event travelling through the Runtime API."""

    request_id: str
    body: bytes
    handed_out: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    start: float = 0.0
    end: float = 0.0
    log_start: int = 0
    log_end: int = 0
    kind: str = ""  # "response" | "error" | "too-large"
    result: bytes = b""


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # Never wait for a handler stuck on a dead socket.

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The runtime is killed on timeout/OOM and at the end, so broken
        # connections are routine; don't print tracebacks for them.
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class RuntimeAPI:
    """A Lambda Runtime API server for exactly one runtime process."""

    def __init__(self, function_arn: str, timeout_s: float) -> None:
        self.function_arn = function_arn
        self.timeout_s = timeout_s
        self.output: OutputCapture | None = None
        self.pending: queue.Queue[Invocation] = queue.Queue()
        self.active: dict[str, Invocation] = {}
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self.first_next: float | None = None
        self.init_error: bytes | None = None
        self.init_error_at: float | None = None
        self.server = _QuietServer(("127.0.0.1", 0), _RuntimeAPIHandler)
        self.server.api = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def start(self, output: OutputCapture) -> None:
        # Started after the child exists so handlers always have the output capture;
        # earlier connections simply wait in the listen backlog.
        self.output = output
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
            name="lambda-runtime-api", daemon=True)
        self._thread.start()

    def submit(self, inv: Invocation) -> None:
        with self.lock:
            self.active[inv.request_id] = inv
        self.pending.put(inv)

    def next_invocation(self) -> Invocation | None:
        """Block (in the handler thread) until an event is queued or we shut down."""
        with self.lock:
            if self.first_next is None:
                self.first_next = time.monotonic()
        while not self.closing.is_set():
            try:
                inv = self.pending.get(timeout=0.1)
            except queue.Empty:
                continue
            inv.log_start = self.output.mark() if self.output else 0
            inv.start = time.monotonic()
            inv.handed_out.set()
            return inv
        return None

    def claim(self, request_id: str, kind: str, body: bytes) -> Invocation | None:
        """Record a response/error; None if the request id is unknown or already done.

        The caller replies to the runtime and only then calls ``inv.done.set()``:
        waking the main thread first could get the process killed mid-reply.
        """
        end = time.monotonic()
        with self.lock:
            inv = self.active.get(request_id)
            if inv is None or not inv.handed_out.is_set():
                return None
            del self.active[request_id]
        inv.end = end
        inv.log_end = self.output.mark() if self.output else 0
        inv.kind, inv.result = kind, body
        return inv

    def record_init_error(self, body: bytes) -> None:
        with self.lock:
            self.init_error = body
            self.init_error_at = time.monotonic()

    def close(self) -> None:
        self.closing.set()
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=2)
        self.server.server_close()


class _RuntimeAPIHandler(BaseHTTPRequestHandler):
    # libcurl in awslambdaric's native client keeps the connection alive between
    # requests, so speak HTTP/1.1 and always send Content-Length.
    protocol_version = "HTTP/1.1"
    server_version = "edgemaas-lambda-local/1"

    def setup(self) -> None:
        super().setup()
        # We write headers and body separately; without NODELAY, Nagle plus the
        # client's delayed ACK adds ~40 ms to every warm invoke.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # Keep the caller's stderr clean.

    @property
    def api(self) -> RuntimeAPI:
        return self.server.api  # type: ignore[attr-defined]

    def _send(self, code: int, body: bytes | dict, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Type" not in (headers or {}):
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self) -> None:  # noqa: N802
        if self.path != _NEXT_PATH:
            self._send(404, {"errorMessage": f"unknown path {self.path}", "errorType": "NotFound"})
            return
        inv = self.api.next_invocation()
        if inv is None:
            self.close_connection = True
            self._send(500, {"errorMessage": "shutting down", "errorType": "ServiceException"})
            return
        deadline_ms = int((time.time() + self.api.timeout_s) * 1000)
        trace = (f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};"
                 f"Parent={uuid.uuid4().hex[:16]};Sampled=0")
        self._send(200, inv.body, {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": inv.request_id,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": self.api.function_arn,
            "Lambda-Runtime-Trace-Id": trace,
        })

    def do_POST(self) -> None:  # noqa: N802
        body = self._read_body()
        if self.path == _INIT_ERROR_PATH:
            self.api.record_init_error(body)
            self._send(202, {"status": "OK"})
            return
        match = _RESULT_PATH.match(self.path)
        if not match:
            self._send(404, {"errorMessage": f"unknown path {self.path}", "errorType": "NotFound"})
            return
        request_id, kind = match.groups()
        too_large = kind == "response" and len(body) > MAX_RESPONSE_BYTES
        inv = self.api.claim(request_id, "too-large" if too_large else kind, body)
        try:
            if inv is None:
                self._send(400, {"errorMessage": f"Invalid request ID: {request_id}",
                                 "errorType": "InvalidRequestID"})
            elif too_large:
                self._send(413, {"errorMessage": "Exceeded maximum allowed payload size "
                                 f"({MAX_RESPONSE_BYTES} bytes).",
                                 "errorType": "RequestEntityTooLarge"})
            else:
                self._send(202, {"status": "OK"})
        finally:
            if inv is not None:
                inv.done.set()

