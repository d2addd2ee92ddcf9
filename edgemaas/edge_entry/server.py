"""A JSON HTTP API for one model, on the standard library's ThreadingHTTPServer (no dependency beyond the runtime).

GET /health (liveness, model name, variant, sha256), GET / (the model's description), POST / and POST /predict
(`{"inputs": [...]}` -> `{"model", "variant", "predictions"}`); every other path or method gets a JSON 404 or 405.
Requests go through the same contract as the Lambda handler (`runtime/service.py`), so bad input gets the same
answers on both.

Bounded wherever a caller could make it grow:
- size: Content-Length is required and checked before a byte of the body is read (413 over the limit);
- connections: at most `max_connections` at once; the next one gets an immediate 503 from the accepting thread,
  which starts no thread for it;
- time: a read timeout on every socket operation (an idle keep-alive connection is closed after it) and a deadline
  for the whole body (408);
- interpreters: a pool of `workers` model replicas; a request holds one for its prediction only and waits for one
  at most `borrow_timeout_s` (then 503).
SIGTERM or SIGINT stops accepting, lets in-flight requests finish (up to `shutdown_grace_s`) and exits 0.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any
from urllib.parse import urlsplit

from ..runtime.service import Reply, Service, error_reply, too_large

access_log = logging.getLogger("edgemaas.access")
log = logging.getLogger("edgemaas.server")

_KINDS = {400: "InvalidRequest", 404: "NotFound", 405: "MethodNotAllowed", 408: "RequestTimeout",
          411: "LengthRequired", 413: "InvalidRequest", 414: "InvalidRequest", 431: "InvalidRequest",
          503: "Overloaded", 505: "InvalidRequest"}
_LOG_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_connections: int = 128
    read_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    shutdown_grace_s: float = 10.0
    access_log: bool = True


class EdgeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # an idle keep-alive connection must not hold the process at exit
    block_on_close = False
    request_queue_size = 128  # listen backlog

    def __init__(self, settings: ServerSettings, service: Service) -> None:
        self.settings = settings
        self.service = service
        self.address_family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        self._slots = threading.BoundedSemaphore(settings.max_connections)
        self._inflight = 0
        self._idle = threading.Condition()
        super().__init__((settings.host, settings.port), RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall for seconds on a device without DNS.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request, client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, sock: socket.socket, client_address: Any) -> None:
        """Over the connection limit: answer 503 at once, from this (the accepting) thread, and close."""
        reply = error_reply(503, f"the server is at its limit of {self.settings.max_connections} connections; "
                                 "retry shortly", kind="Overloaded")
        body = reply.text.encode()
        head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
                "\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
        try:
            sock.settimeout(1.0)
            sock.sendall(head + body)
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            while sock.recv(65536):  # what the client already sent; left unread, close() would reset the connection
                pass
        except OSError:
            pass
        if self.settings.access_log:
            access_log.info('%s "-" 503 %d refused: connection limit', _client(client_address), len(body))

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up is routine; anything else is a bug worth a traceback in the log.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            log.debug("connection from %s ended early", _client(client_address))
        else:
            log.exception("error on a connection from %s", _client(client_address))

    def request_started(self) -> None:
        with self._idle:
            self._inflight += 1

    def request_finished(self) -> None:
        with self._idle:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait for in-flight requests to finish; False if some were still running at the timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout)


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client making many requests pays for one connection
    server_version = "edgemaas-edge"
    disable_nagle_algorithm = True  # Nagle + delayed ACK would add ~40 ms to every small response
    server: EdgeHTTPServer

    def setup(self) -> None:
        self.timeout = self.server.settings.read_timeout_s  # applied to the socket by StreamRequestHandler.setup
        super().setup()
        self._counted = False

    def handle_one_request(self) -> None:
        self._started = time.perf_counter()
        self._status = 0
        self._sent = 0
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away or stalled mid-response: nothing to answer
        finally:
            if self._counted:
                self._counted = False
                self.server.request_finished()
                self._log_access()

    def _begin(self) -> None:
        """Count the request as in flight (shutdown waits for it) and log it when it ends."""
        if not self._counted:
            self._counted = True
            self.server.request_started()

    def parse_request(self) -> bool:
        self._begin()
        return super().parse_request()

    def handle_expect_100(self) -> bool:
        # curl sends `Expect: 100-continue` before large bodies: refuse an oversized one before it is sent.
        if _content_length(self.headers) > self.server.service.max_body_bytes:
            exc = too_large(self.server.service.max_body_bytes)
            self._send(error_reply(413, str(exc), field=exc.field), close=True)
            return False
        return super().handle_expect_100()

    # -- routes -------------------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self._path()
        # A GET with a body (never read): close after answering, or its bytes would be parsed as the next request.
        extra = _content_length(self.headers)
        close = extra > 0 or bool(self.headers.get("Transfer-Encoding"))
        if path == "/health":
            self._send(self.server.service.health_reply(), close=close)
        elif path == "/":
            self._send(self.server.service.describe_reply(), close=close)
        elif path == "/predict":
            self._not_allowed("POST", close=close)
        else:
            self._not_found(close=close)
        if close:
            self._drain(extra)

    def do_POST(self) -> None:
        path = self._path()
        if path not in ("/", "/predict"):  # the body is not read: answer, then close
            if path == "/health":
                self._not_allowed("GET", close=True)
            else:
                self._not_found(close=True)
            self._drain(_content_length(self.headers))
            return
        body = self._read_body()
        if body is not None:
            self._send(self.server.service.handle_body(body, request_id=uuid.uuid4().hex))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (malformed request line, headers too long, unknown method...) as JSON."""
        self._begin()
        if getattr(self, "request_version", "") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # a garbled request line parses as HTTP/0.9, which has no status line
        if code == HTTPStatus.NOT_IMPLEMENTED:  # a method we have no do_* for
            self._not_allowed("GET, POST", close=True)
            return
        try:
            text = message or HTTPStatus(code).phrase
        except ValueError:
            text = f"error {code}"
        self._send(error_reply(code, _clip(text), kind=_KINDS.get(code, "InvalidRequest")), close=True)

    # -- helpers ------------------------------------------------------------------------------------------------

    def _path(self) -> str:
        return urlsplit(self.path).path or "/"

    def _not_found(self, close: bool = False) -> None:
        self._send(error_reply(404, f"no such endpoint {_clip(self._path())!r}; use GET /health, GET / or "
                                    "POST /predict", kind="NotFound"), close=close)

    def _not_allowed(self, allowed: str, close: bool = False) -> None:
        method = _clip(self.command or "?")
        self._send(error_reply(405, f"method {method} is not allowed on {_clip(self._path())!r}; use {allowed}",
                               kind="MethodNotAllowed"), close=close, headers={"Allow": allowed})

    def _read_body(self) -> bytes | None:
        """The body, read against Content-Length and a deadline; None when a reply (an error) was already sent."""
        limit = self.server.service.max_body_bytes
        if self.headers.get("Transfer-Encoding"):
            self._send(error_reply(411, "Transfer-Encoding is not supported; send the body with a Content-Length "
                                        "header", field="body", kind="LengthRequired"), close=True)
            return None
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            self._send(error_reply(411, "a Content-Length header is required", field="body",
                                   kind="LengthRequired"), close=True)
            return None
        length = _parse_length(lengths[0])
        if len({v.strip() for v in lengths}) > 1 or length is None:
            self._send(error_reply(400, "the Content-Length header is not a single non-negative integer",
                                   field="body"), close=True)
            return None
        if length > limit:
            exc = too_large(limit)
            self._send(error_reply(413, str(exc), field=exc.field), close=True)
            self._drain(length)
            return None
        deadline = time.monotonic() + self.server.settings.body_timeout_s
        chunks, remaining = [], length
        try:
            while remaining:
                if time.monotonic() > deadline:
                    raise TimeoutError
                chunk = self.rfile.read1(min(remaining, 1 << 16))
                if not chunk:  # the client hung up before sending it all: nobody to answer
                    self.close_connection = True
                    return None
                chunks.append(chunk)
                remaining -= len(chunk)
        except TimeoutError:
            self._send(error_reply(408, f"the request body did not arrive within "
                                        f"{self.server.settings.body_timeout_s:g} s", field="body",
                                   kind="RequestTimeout"), close=True)
            return None
        return b"".join(chunks)

    def _drain(self, length: int) -> None:
        """After an early answer, read and drop what the client is still sending (bounded), so that closing the
        socket does not reset the connection before the client has read the answer."""
        budget = min(length, 4 * self.server.service.max_body_bytes)
        if budget <= 0:
            return
        deadline = time.monotonic() + 2.0
        try:
            self.connection.shutdown(socket.SHUT_WR)
            while budget > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read1(min(budget, 1 << 16))
                if not chunk:
                    break
                budget -= len(chunk)
        except OSError:
            pass

    def _send(self, reply: Reply, close: bool = False, headers: dict[str, str] | None = None) -> None:
        data = reply.text.encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
            self._sent = len(data)

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one access line per request is written when it ends, with its duration

    def log_message(self, format: str, *args: Any) -> None:
        # http.server's own notes (an idle connection timing out, a malformed request line): routine, so debug.
        log.debug("%s %s", _client(self.client_address), (format % args).translate(_LOG_ESCAPES))

    def _log_access(self) -> None:
        if self.server.settings.access_log:
            line = _clip(getattr(self, "requestline", "") or "-", 200).translate(_LOG_ESCAPES)
            access_log.info('%s "%s" %s %d %.1fms', _client(self.client_address), line, self._status or "-",
                            self._sent, (time.perf_counter() - self._started) * 1000)


def _parse_length(value: str) -> int | None:
    """A Content-Length value as a number of bytes; None unless it is plain ASCII digits. Absurdly long numbers
    (which int() would refuse past 4300 digits) count as larger than any limit."""
    value = value.strip()
    if not (value.isascii() and value.isdigit()):
        return None
    return int(value) if len(value) <= 18 else sys.maxsize


def _content_length(headers: Any) -> int:
    """The declared body size, or 0 when absent or malformed (only for deciding what to refuse or drain)."""
    value = headers.get("Content-Length") if headers is not None else None
    return (_parse_length(value) or 0) if value else 0


def _client(address: Any) -> str:
    return str(address[0]) if isinstance(address, tuple) and address else "-"


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def serve(service: Service, settings: ServerSettings) -> int:
    """Serve until SIGTERM or SIGINT; then finish in-flight requests and return 0."""
    server = EdgeHTTPServer(settings, service)
    host, port = server.server_address[:2]
    stopping = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("%s: no new connections; finishing in-flight requests", signal.Signals(signum).name)
            threading.Thread(target=server.shutdown, daemon=True).start()  # shutdown() waits for serve_forever

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    model = service.model
    shown_host = f"[{host}]" if ":" in str(host) else host
    log.info("serving %s (%s, %s, sha256 %s) on http://%s:%d; %d worker(s), at most %d connections, requests up "
             "to %d bytes", model.name, model.manifest.variant, model.backend.name, model.manifest.model.sha256[:12],
             shown_host, port, service.replicas, settings.max_connections, service.max_body_bytes)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        finished = server.wait_idle(settings.shutdown_grace_s)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped%s", "" if finished else f" (requests still running after {settings.shutdown_grace_s:g} s "
                                               "were cut off)")
    return 0
