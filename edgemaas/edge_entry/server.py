"""The edge bundle's HTTP server, on the standard library's http.server (no dependency beyond the runtime).

Routes, answers and errors are the service's (`Service.dispatch` in runtime/service.py: GET /health, GET /,
POST / and /predict, the Open Inference Protocol under /v2), the same contract as the Lambda handler; this module
owns the connection: framing, limits, deadlines, memory. The path it passes is the request target without its
query (http.server already turns a leading `//` into `/`, so `//predict` is `/predict`, never a host name).

Built to stay up on a hostile network (issue #17): every resource a client can hold is bounded in size and in time.
- slots: at most `max_connections` connections, `max_per_client` from one address; when they run out, an idle
  keep-alive connection or a request head still trickling in after `evict_after_s` gives up its slot
  (connections.py), else the new connection is refused: a 503 that the client can read (refusal.py);
- the request head: at most `max_head_bytes` (and http.client's 100 header lines), complete within
  `head_timeout_s` of its first byte (a new connection must start it within the same time); the deadline holds
  however slowly the bytes trickle (deadline_io.py);
- the body: Content-Length is required and checked before a byte is read (413); it must arrive within
  `body_timeout_s + length / min_body_rate` (408); the bodies held at once are bounded by `body_budget_bytes` (503);
- memory: a body whose JSON would cost more than `parse_limit` to parse is refused from byte counts (413), and
  parsing and inference run behind one gate sized to the workers (gate.py: the smallest body first; a request
  waits at most `queue_timeout_s` for it, then 503), so peak RSS follows the formula in limits.py; a
  MemoryError is a 503, never a dropped connection;
- silence: `read_timeout_s` on every read and write (an idle keep-alive connection is closed after it).
SIGTERM or SIGINT stops accepting, lets in-flight requests finish (up to `shutdown_grace_s`) and exits 0.
"""

from __future__ import annotations

import io
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

from ..runtime import oip
from ..runtime.processing import OutputProcessor
from ..runtime.service import Reply, Service, error_reply, parse_body, request_inputs, too_large
from .batching import Batcher, Job
from .connections import BODY, BUSY, HEAD, IDLE, Connection, ConnectionTable
from .deadline_io import DeadlineExceeded, DeadlineReader
from .frontend import EventLoop
from .gate import Gate
from .limits import MB, parse_cost_over, parse_limit
from .refusal import Refuser, response_bytes

access_log = logging.getLogger("edgemaas.access")
log = logging.getLogger("edgemaas.server")

_KINDS = {400: "InvalidRequest", 404: "NotFound", 405: "MethodNotAllowed", 408: "RequestTimeout",
          411: "LengthRequired", 413: "InvalidRequest", 414: "InvalidRequest", 431: "InvalidRequest",
          503: "Overloaded", 505: "InvalidRequest"}
_LOG_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}
_BLANK = (b"\r\n", b"\n")
_READ_BUFFER = 1 << 16
_HEAD_DRAIN = 1 << 16  # bytes read and dropped after a head over the limit (a client just over it reads its 431)
# Larger bodies are not micro-batched (they run as they are, in a worker): requests prepared outside the gate stay
# small, so the memory formula holds with batching on.
BATCH_BODY_LIMIT = 256 * 1024


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_connections: int = 128
    max_per_client: int = 64
    read_timeout_s: float = 10.0
    head_timeout_s: float = 5.0
    max_head_bytes: int = 64 * 1024
    body_timeout_s: float = 5.0
    min_body_rate: int = 32 * 1024  # bytes/s a body must keep up, on top of body_timeout_s
    body_budget_bytes: int = 256 * MB
    queue_timeout_s: float = 2.0
    evict_after_s: float = 1.0
    refusal_drain_s: float = 2.0
    max_refusals: int = 512  # refusals draining at once; beyond, a refused connection is answered and closed
    shutdown_grace_s: float = 10.0
    access_log: bool = True
    event_loop: bool = True  # with micro-batching: the common requests on one event loop (frontend.py)


class EdgeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # an idle keep-alive connection must not hold the process at exit
    block_on_close = False
    # Listen backlog (the kernel caps it at net.core.somaxconn): under a connection flood, a full backlog drops SYNs,
    # and a dropped SYN costs a client a 1 s retransmission; a long one drains in well under that.
    request_queue_size = 1024
    accept_batch = 64  # connections accepted per wake-up of the accept loop

    def __init__(self, settings: ServerSettings, service: Service, batcher: Batcher | None = None) -> None:
        self.settings = settings
        self.service = service
        self.batcher = batcher
        self.output = OutputProcessor(service.model.manifest.postprocessing) if batcher is not None else None
        self.address_family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        self.table = ConnectionTable(settings.max_connections, settings.max_per_client, settings.evict_after_s)
        self.gate = Gate(service.replicas)  # parsing + inference: the memory-heavy part
        self.parse_limit = parse_limit(service.max_body_bytes)
        # Bytes dropped after an early answer: read and thrown away, so bounded by the drain deadline, not memory.
        self.drain_limit = max(4 * service.max_body_bytes, 64 * MB)
        self.refuser = Refuser(settings.max_head_bytes, self.drain_limit, settings.refusal_drain_s,
                               settings.max_refusals)
        messages = {"per-client": f"this address already has {settings.max_per_client} connections open, the most "
                                  "one client may hold; retry shortly",
                    "full": f"the server is at its limit of {settings.max_connections} busy connections; retry shortly"}
        self._refusals = {why: response_bytes("503 Service Unavailable", error_reply(503, text, kind="Overloaded").text)
                          for why, text in messages.items()}
        self._budget_lock = threading.Lock()
        self._body_bytes = 0
        self._inflight = 0
        self._idle = threading.Condition()
        super().__init__((settings.host, settings.port), RequestHandler)
        self.loop = EventLoop(self) if batcher is not None and settings.event_loop else None

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        if self.loop is None:
            super().serve_forever(poll_interval)
        else:
            self.loop.run(poll_interval)

    def shutdown(self) -> None:
        if self.loop is None:
            super().shutdown()
        else:
            self.loop.stop()

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall for seconds on a device without DNS.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    # -- connections ----------------------------------------------------------------------------------------------

    def _handle_request_noblock(self) -> None:
        # socketserver accepts one connection per select() wake-up; under a flood that halves the accept rate.
        # Accept what is waiting (up to accept_batch) each time instead.
        self.socket.setblocking(False)
        try:
            for _ in range(self.accept_batch):
                try:
                    request, client_address = self.get_request()
                except OSError:  # nothing more waiting (BlockingIOError), or the client already gave up
                    return
                request.setblocking(True)
                try:
                    self.process_request(request, client_address)
                except Exception:
                    self.handle_error(request, client_address)
                    self.shutdown_request(request)
        finally:
            self.socket.setblocking(True)

    def process_request(self, request: Any, client_address: Any) -> None:
        conn = self.table.admit(request, _client(client_address))
        if isinstance(conn, str):
            self.refuse(request, client_address, conn)
            return
        self.hand_over(request, client_address, conn)

    def hand_over(self, request: Any, client_address: Any, conn: Connection, prefix: bytes = b"",
                  head_started: float | None = None, served: int = 0) -> None:
        """A connection to a thread of its own: a new one, or one from the event loop with the bytes read of its
        current request."""
        thread = threading.Thread(target=self._serve_connection,
                                  args=(request, client_address, conn, prefix, head_started, served), daemon=True)
        try:
            thread.start()
        except BaseException:  # no thread to be had (TasksMax): let the slot go
            self.table.release(conn)
            self.shutdown_request(request)
            raise

    def _serve_connection(self, request: Any, client_address: Any, conn: Connection, prefix: bytes = b"",
                          head_started: float | None = None, served: int = 0) -> None:
        try:
            RequestHandler(request, client_address, self, conn, prefix, head_started, served)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.table.release(conn)
            self.shutdown_request(request)

    def refuse(self, sock: socket.socket, client_address: Any, why: str) -> None:
        """No slot: a 503 the client can read (refusal.py drains the request before closing)."""
        settings = self.settings
        response = self._refusals[why]
        if settings.access_log:
            access_log.info('%s "-" 503 %d refused: %s', _client(client_address), len(response), why)
        self.refuser.refuse(sock, response)

    def server_close(self) -> None:
        super().server_close()
        self.refuser.close()
        if self.batcher is not None:
            self.batcher.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up is routine; anything else is a bug worth a traceback in the log.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            log.debug("connection from %s ended early", _client(client_address))
        else:
            log.exception("error on a connection from %s", _client(client_address))

    # -- the batched path's own steps (the threads' and the event loop's) ---------------------------------------

    def prepare(self, body: bytes) -> list | None:
        """The preprocessed arrays of a batch-form request, or None when it is anything else (or is refused: the
        service then says why, in its own words)."""
        service = self.service
        try:
            request = parse_body(body, False, service.max_body_bytes)
            if oip.is_oip_request(request):
                return None
            inputs = request_inputs(request)
            if not isinstance(inputs, list) or not inputs:
                return None
            return service.model.prepare(inputs)
        except Exception:
            return None

    def batch_reply(self, outputs: list) -> Reply | None:
        """This request's rows of a batch, formatted as `Service.predict` formats them; None when formatting
        refuses (a non-finite output): the request then runs alone for the service's own error."""
        model = self.service.model
        try:
            predictions = self.output(outputs[0])  # type: ignore[misc]
            reply = Reply(200, {"model": model.name, "variant": model.manifest.variant, "predictions": predictions})
            reply.text  # noqa: B018 (NaN or Infinity refused here, as the service does)
            return reply
        except Exception:
            return None

    # -- the body budget --------------------------------------------------------------------------------------------

    def reserve_body(self, length: int) -> bool:
        with self._budget_lock:
            if self._body_bytes + length > self.settings.body_budget_bytes:
                return False
            self._body_bytes += length
            return True

    def release_body(self, length: int) -> None:
        with self._budget_lock:
            self._body_bytes -= length

    # -- graceful shutdown ------------------------------------------------------------------------------------------

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


class _SocketWriter(io.BufferedIOBase):
    """Writes with sendall under the read timeout (the reader leaves the socket's timeout at whatever was left)."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        super().__init__()
        self._sock, self._timeout = sock, timeout

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sock.settimeout(self._timeout)
        self._sock.sendall(data)
        with memoryview(data) as view:
            return view.nbytes


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client making many requests pays for one connection
    server_version = "edgemaas-edge"
    server: EdgeHTTPServer

    def __init__(self, request: Any, client_address: Any, server: EdgeHTTPServer, conn: Connection,
                 prefix: bytes = b"", head_started: float | None = None, served: int = 0) -> None:
        self.conn = conn
        self._prefix, self._head_started, self._served_before = prefix, head_started, served
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        settings = self.server.settings
        self.connection = self.request
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)  # Nagle + delayed ACK: +40 ms
        self.reader = DeadlineReader(self.connection, settings.read_timeout_s, self._prefix)
        self.rfile = self._socket_rfile = io.BufferedReader(self.reader, _READ_BUFFER)
        self.wfile = _SocketWriter(self.connection, settings.read_timeout_s)
        self._counted = False
        self._served = self._served_before  # requests this connection had answered on the event loop

    def handle_one_request(self) -> None:
        self._started = time.perf_counter()
        self._status = 0
        self._sent = 0
        try:
            head = self._read_head()
            if head is None:
                self.close_connection = True
                return
            self._started = time.perf_counter()
            self._served += 1
            self.raw_requestline = head[0]
            self.rfile = io.BytesIO(b"".join(head[1:]))  # parse_request reads the headers from here
            try:
                parsed = self.parse_request()
            finally:
                self.rfile = self._socket_rfile
            if not parsed:
                return
            self.server.table.set_state(self.conn, BUSY)
            self._route()
            self.wfile.flush()
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away or stalled mid-response: nothing to answer
        except MemoryError:
            self._out_of_memory()
        finally:
            if self._counted:
                self._counted = False
                self.server.request_finished()
                self._log_access()

    def _read_head(self) -> list[bytes] | None:
        """The request line and header lines (up to the blank line), within the head deadline; None when there is
        no request to answer (the client closed, stayed silent, was evicted) or an error was already sent."""
        settings = self.server.settings
        table = self.server.table
        if self._served:
            table.set_state(self.conn, IDLE)  # evictable while it waits for the next request
            self.reader.deadline = None
        else:  # a new connection must start its request within the head timeout
            self.reader.deadline = self.conn.since + settings.head_timeout_s
        try:
            if not self.rfile.peek(1) or self.conn.evicted:
                return None
        except TimeoutError:
            return None  # an idle keep-alive connection, or a connection that never said anything: close quietly
        table.set_state(self.conn, HEAD)
        started, self._head_started = self._head_started or time.monotonic(), None  # handed over: its first byte
        self.reader.deadline = started + settings.head_timeout_s
        lines: list[bytes] = []
        size = 0
        limit = settings.max_head_bytes
        try:
            while True:
                line = self.rfile.readline(limit - size + 1)
                size += len(line)
                if size > limit:
                    self._head_error(HTTPStatus.REQUEST_URI_TOO_LONG if not lines
                                     else HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                                     None if not lines else f"the request head exceeds {limit} bytes")
                    self._drain(_HEAD_DRAIN)  # the rest of the head: left unread, closing would reset the answer
                    return None
                if not line:  # the client stopped sending: parse what came (an HTTP/0.9 line has no headers)
                    return lines if lines and not self.conn.evicted else None
                if not lines and line in _BLANK:
                    continue  # RFC 9112 2.2: ignore empty lines before the request line
                lines.append(line)
                if len(lines) > 1 and line in _BLANK:
                    return lines
        except DeadlineExceeded:
            if self.conn.evicted:
                return None
            self._head_error(HTTPStatus.REQUEST_TIMEOUT,
                             f"the request head did not arrive within {settings.head_timeout_s:g} s")
            return None
        finally:
            self.reader.deadline = None

    def _head_error(self, status: HTTPStatus, message: str | None) -> None:
        self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
        self.send_error(status, message)

    def _begin(self) -> None:
        """Count the request as in flight (shutdown waits for it) and log it when it ends."""
        if not self._counted:
            self._counted = True
            self.server.request_started()

    def parse_request(self) -> bool:
        self._begin()
        return super().parse_request()

    def handle_expect_100(self) -> bool:
        # curl sends `Expect: 100-continue` before large bodies: refuse what will be refused before it is sent.
        # The headers are parsed by now: read from the socket again (a client may send its body without waiting).
        self.rfile = self._socket_rfile
        if self.headers.get("Transfer-Encoding"):
            self._length_required_chunked()
            return False
        length = _content_length(self.headers)
        if length > self.server.service.max_body_bytes:
            exc = too_large(self.server.service.max_body_bytes)
            self._send(error_reply(413, str(exc), field=exc.field), close=True)
            self._drain(length)
            return False
        return super().handle_expect_100()

    # -- routes: the service's (Service.dispatch); this module only decides whether and how a body is read --------

    def _route(self) -> None:
        service = self.server.service
        method, path = self.command, self._path()
        if not service.accepts_body(method, path):
            # A body nobody reads (GET with a body, POST to a wrong path): answer, then close, or its bytes would
            # be parsed as the next request.
            extra = _content_length(self.headers)
            chunked = bool(self.headers.get("Transfer-Encoding"))
            close = extra > 0 or chunked
            self._send(service.dispatch(method, path, None), close=close)
            if close:
                self._drain(extra if not chunked else self.server.drain_limit, chunked)
            return
        length = self._body_length()
        if length is None:
            return
        if not self.server.reserve_body(length):
            self._overloaded("the server holds as many request bodies as its memory budget allows; retry shortly")
            self._drain(length)
            return
        try:
            body = self._read_body(length)
            if body is not None:
                self._dispatch_body(method, path, body)
        finally:
            self.server.release_body(length)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (malformed request line, headers too long, unknown method...) as JSON."""
        self._begin()
        if getattr(self, "request_version", "") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # a garbled request line parses as HTTP/0.9, which has no status line
        try:
            text = message or HTTPStatus(code).phrase
        except ValueError:
            text = f"error {code}"
        self._send(error_reply(code, _clip(text), kind=_KINDS.get(code, "InvalidRequest")), close=True)

    # -- the request body -------------------------------------------------------------------------------------------

    def _body_length(self) -> int | None:
        """The declared body size, checked; None when an error reply was already sent."""
        limit = self.server.service.max_body_bytes
        if self.headers.get("Transfer-Encoding"):
            self._length_required_chunked()
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
        return length

    def _read_body(self, length: int) -> bytes | None:
        """The body, within its deadline; None when there is nothing more to do (an error was sent, or the client
        hung up). The deadline moves with the bytes: `body_timeout_s` plus the bytes so far at `min_body_rate`,
        so a client trickling a byte a second is cut off after `body_timeout_s`, not after the time its
        Content-Length would allow."""
        settings = self.server.settings
        self.server.table.set_state(self.conn, BODY)
        started = time.monotonic()
        body = bytearray()
        try:
            while len(body) < length:
                self.reader.deadline = started + settings.body_timeout_s + len(body) / settings.min_body_rate
                chunk = self.rfile.read1(min(length - len(body), _READ_BUFFER))
                if not chunk:  # the client hung up before sending it all: nobody to answer
                    self.close_connection = True
                    return None
                body += chunk
                self.conn.received = len(body)
        except DeadlineExceeded:
            self._timed_out(f"the request body did not arrive in time: {len(body)} of {length} bytes in "
                            f"{time.monotonic() - started:.1f} s (allowed: {settings.body_timeout_s:g} s plus "
                            f"{settings.min_body_rate // 1024} KB/s)")
            return None
        except TimeoutError:
            self._timed_out(f"the request body stopped arriving: nothing for {settings.read_timeout_s:g} s")
            return None
        finally:
            self.reader.deadline = None
        if self.conn.evicted:
            return None
        self.server.table.set_state(self.conn, BUSY)
        return bytes(body)

    def _dispatch_body(self, method: str, path: str, body: bytes) -> None:
        cost = parse_cost_over(body, self.server.parse_limit)
        if cost is not None:
            self._send(error_reply(413, f"the request body's JSON would take {cost / MB:.0f} MB to parse; the "
                                        f"limit is {self.server.parse_limit / MB:.0f} MB (send numbers, not "
                                        "objects or empty lists)", field="body"), close=True)
            return
        if self.server.batcher is not None:
            self._dispatch_batched(method, path, body)
            return
        if not self.server.gate.acquire(len(body), self.server.settings.queue_timeout_s):
            self._overloaded(f"every worker stayed busy for {self.server.settings.queue_timeout_s:g} s; retry shortly")
            return
        try:
            reply = self.server.service.dispatch(method, path, body, request_id=uuid.uuid4().hex)
            reply.text  # noqa: B018 (serialised under the gate: it is memory too)
        except MemoryError:
            reply = None
        finally:
            self.server.gate.release()
        if reply is None:
            self._out_of_memory()
        else:
            self._send(reply)

    def _dispatch_batched(self, method: str, path: str, body: bytes) -> None:
        """Micro-batching on: a batch-form prediction joins a batch; anything else, and any request that does not
        prepare or format cleanly, runs alone in a worker through `Service.dispatch` (the same answer or error).
        Parsing a body holds a slot of the gate, as without batching, so the memory formula holds either way."""
        batcher = self.server.batcher
        assert batcher is not None
        gate, queue_timeout = self.server.gate, self.server.settings.queue_timeout_s
        request_id = uuid.uuid4().hex
        reply = None
        if path in ("/", "/predict") and len(body) <= BATCH_BODY_LIMIT:
            if not gate.acquire(len(body), queue_timeout):
                self._workers_busy()
                return
            batcher.arriving(1)
            try:
                arrays = self.server.prepare(body)
                job = Job(arrays, None, cost=len(body)) if arrays is not None else None
                queued = job is None or batcher.submit(job)
            finally:
                gate.release()
                batcher.arriving(-1)
            if not queued:
                self._queue_full()
                return
            if job is not None:
                if not batcher.wait(job, queue_timeout):
                    self._workers_busy()
                    return
                if job.error is None:
                    reply = self.server.batch_reply(job.result)
        if reply is None:
            reply = self._run_alone(method, path, body, request_id)
        if reply is not None:
            self._send(reply)

    def _run_alone(self, method: str, path: str, body: bytes, request_id: str) -> Reply | None:
        """`Service.dispatch` in a worker, under a slot of the gate; None when an error was already sent."""
        batcher, gate = self.server.batcher, self.server.gate
        queue_timeout = self.server.settings.queue_timeout_s
        assert batcher is not None
        if not gate.acquire(len(body), queue_timeout):
            self._workers_busy()
            return None
        try:
            job = Job(None, lambda service: _dispatched(service, method, path, body, request_id), cost=len(body))
            if not batcher.submit(job):
                self._queue_full()
                return None
            if not batcher.wait(job, queue_timeout):
                self._workers_busy()
                return None
        finally:
            gate.release()
        if isinstance(job.error, MemoryError):
            self._out_of_memory()
            return None
        if job.error is not None:
            raise job.error
        return job.result

    def _queue_full(self) -> None:
        self._overloaded(f"the server's queue holds {self.server.batcher.max_queue} requests already; "  # type: ignore
                         "retry shortly")

    def _workers_busy(self) -> None:
        self._overloaded(f"every worker stayed busy for {self.server.settings.queue_timeout_s:g} s; retry shortly")

    def _length_required_chunked(self) -> None:
        self._send(error_reply(411, "Transfer-Encoding is not supported; send the body with a Content-Length "
                                    "header", field="body", kind="LengthRequired"), close=True)
        self._drain(self.server.drain_limit, chunked=True)

    # -- replies ------------------------------------------------------------------------------------------------

    def _path(self) -> str:
        # The origin form ("/predict?x") is a path as it stands: urlsplit would read "//predict" as a host name.
        target = self.path
        if target.startswith("/"):
            return target.split("?", 1)[0].split("#", 1)[0]
        return urlsplit(target).path or "/"

    def _timed_out(self, message: str) -> None:
        self._send(error_reply(408, message, field="body", kind="RequestTimeout"), close=True)

    def _overloaded(self, message: str) -> None:
        self._send(error_reply(503, message, kind="Overloaded"), close=True, headers={"Retry-After": "1"})

    def _out_of_memory(self) -> None:
        self.close_connection = True
        try:
            self._overloaded("the server ran short of memory for this request; retry shortly")
        except (MemoryError, OSError):
            pass

    def _drain(self, length: int, chunked: bool = False) -> None:
        """After an early answer, read and drop what the client is still sending (bounded in bytes and time), so
        that closing the socket does not reset the connection before the client has read the answer."""
        budget = min(length, self.server.drain_limit)
        if budget <= 0:
            return
        self.reader.deadline = time.monotonic() + self.server.settings.refusal_drain_s
        tail = b""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            while budget > 0:
                chunk = self.rfile.read1(min(budget, _READ_BUFFER))
                if not chunk:
                    break
                budget -= len(chunk)
                tail = (tail + chunk)[-5:]
                if chunked and tail == b"0\r\n\r\n":  # the last chunk (a body with trailers runs to the deadline)
                    break
        except OSError:
            pass
        finally:
            self.reader.deadline = None

    def _send(self, reply: Reply, close: bool = False, headers: dict[str, str] | None = None) -> None:
        data = reply.text.encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in {**reply.headers, **(headers or {})}.items():
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


def _dispatched(service: Service, method: str, path: str, body: bytes, request_id: str) -> Reply:
    reply = service.dispatch(method, path, body, request_id=request_id)
    reply.text  # noqa: B018 (serialised in the worker: it is memory too)
    return reply


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


def serve(service: Service, settings: ServerSettings, batcher: Batcher | None = None) -> int:
    """Serve until SIGTERM or SIGINT; then finish in-flight requests and return 0."""
    server = EdgeHTTPServer(settings, service, batcher)
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
    log.info("serving %s (%s, %s, sha256 %s) on http://%s:%d; %d worker(s), at most %d connections (%d per "
             "client), requests up to %d bytes, %d MB of bodies at once", model.name, model.manifest.variant,
             model.backend.name, model.manifest.model.sha256[:12], shown_host, port, service.replicas,
             settings.max_connections, settings.max_per_client, service.max_body_bytes,
             settings.body_budget_bytes // MB)
    if batcher is not None and batcher.max_batch > 1:
        log.info("micro-batching: up to %d samples, waiting at most %.1f ms; at most %d requests queued",
                 batcher.max_batch, batcher.max_wait_s * 1000, batcher.max_queue)
    elif batcher is not None:
        log.info("micro-batching off (the model's batch size is fixed); at most %d requests queued",
                 batcher.max_queue)
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
