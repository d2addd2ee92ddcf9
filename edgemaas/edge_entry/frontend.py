"""The edge server's event loop (stdlib `selectors`): one thread reads, parses and answers every keep-alive
connection on the common path, with micro-batching on: `POST /predict` (or `/`) over HTTP/1.1 with a plain
Content-Length body in the batch form. Its requests are prepared in this thread and run by the batcher's workers;
a worker wakes the loop once per batch (a byte on a socket pair), and the loop sends the answers.

Why: profiled under load (32 connections, a 26 KB image request), a quarter of the server's CPU went to the kernel
switching between the 32 connection threads (each wakes for its request, waits for the GIL, for the gate, for its
batch), and one thread per connection cannot batch its wake-ups. Here a request costs no thread switch; a batch
costs two.

Everything else goes to the threaded handler in server.py, which owns the contract's edge cases: the loop hands the
connection over, with the bytes it has read of the current request, the moment a request is anything but the common
case (another method or path, HTTP/1.0, Expect, Transfer-Encoding, a header it does not parse plainly, a body that
does not prepare or a batch that fails, a gate or queue that is full) or is still incomplete `HANDOFF_AFTER_S` after
its first byte (a slow client: the handler's head and body deadlines then apply, the head's counted from that first
byte, the body's from the hand-over: at most HANDOFF_AFTER_S + SWEEP_S late). The handler re-reads the request from its first byte, so its answer, error or refusal is the one it would
have given alone. Limits hold here as there: the connection table (slots, eviction), the body budget, the gate
around parsing (tried without waiting: a full gate is a hand-over), `max_queue`, the queue timeout (503), the read
timeout on idle keep-alive connections and on stalled writes, and the new-connection head timeout.
"""

from __future__ import annotations

import collections
import logging
import re
import selectors
import socket
import threading
import time
from email.utils import formatdate
from typing import Any

from ..runtime.service import error_reply
from .batching import QUEUED, Job
from .connections import BODY, BUSY, HEAD, IDLE, Connection
from .limits import parse_cost_over

access_log = logging.getLogger("edgemaas.access")
log = logging.getLogger("edgemaas.server")

HANDOFF_AFTER_S = 0.05  # an incomplete request this long after its first byte goes to a thread (a slow client)
SWEEP_S = 0.02  # timers (deadlines, hand-overs, queue timeouts) are checked this often
# Larger bodies go to a thread: this one thread parses every body it takes and formats every answer, so one large
# request here delays every other connection (measured: 16 clients posting 256-sample batches of 100 KB put the
# valid client's p99 at 525 ms on the loop, 145 ms in threads). 64 KB keeps a 32x32x3 image request (26 KB) here.
LOOP_BODY_LIMIT = 64 * 1024
_RECV = 1 << 16
_FAST_PATHS = (b"/predict", b"/")
_MAX_HEADERS = 100  # http.client's limit; more goes to the handler (431)
_TOKEN = re.compile(rb"[!-9;-~]+")  # a header name as the email parser reads one: printable ASCII but the colon


class _Client:
    """One connection held by the loop."""

    __slots__ = ("sock", "address", "conn", "buf", "first_byte", "served", "job", "out", "out_since", "close",
                 "line", "started", "length", "reserved", "last", "consumed")

    def __init__(self, sock: socket.socket, address: Any, conn: Connection) -> None:
        self.sock, self.address, self.conn = sock, address, conn
        self.buf = bytearray()
        self.first_byte: float | None = None  # monotonic time of the current request's first byte
        self.served = 0
        self.job: Job | None = None  # the request in a worker's hands
        self.out = b""  # answer bytes not yet sent
        self.out_since = 0.0
        self.close = False  # close once the answer is out
        self.line = ""  # the request line, for the access log
        self.started = 0.0  # perf_counter at the complete head, for the access log
        self.length = 0
        self.reserved = 0  # body bytes reserved in the server's budget
        self.last = time.monotonic()  # last activity (idle keep-alive timeout)
        self.consumed = 0  # bytes of `buf` the request in flight spans (kept until answered: a hand-over replays it)


class EventLoop:
    def __init__(self, server: Any) -> None:  # server.EdgeHTTPServer (which imports this module)
        self.server = server
        self.settings = server.settings
        self.batcher = server.batcher
        assert self.batcher is not None
        self.selector = selectors.DefaultSelector()
        self.clients: set[_Client] = set()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._done: collections.deque[_Client] = collections.deque()
        self._wake_pending = False
        self._wake_lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._date = (0, "")
        self._server_name = server.RequestHandlerClass.server_version
        self._pending: dict[Job, _Client] = {}  # jobs in the workers' hands, by whose answer they are

    # -- running ----------------------------------------------------------------------------------------------------

    def run(self, poll_interval: float) -> None:
        listener = self.server.socket
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        next_sweep = 0.0
        accepting = True
        grace_end = None
        try:
            while True:
                if self._stop.is_set() and accepting:
                    accepting = False
                    self.selector.unregister(listener)
                    grace_end = time.monotonic() + self.settings.shutdown_grace_s
                    for client in [c for c in self.clients if c.job is None and not c.out]:
                        self._close(client)
                if not accepting and (not self.clients or time.monotonic() > grace_end):  # type: ignore[operator]
                    break
                events = self.selector.select(min(poll_interval, SWEEP_S))
                # Requests read in this round count as arriving until it ends: a worker collecting a batch waits
                # for the rest of the round (at most --max-wait-ms), then runs what it has.
                self.batcher.arriving(1)
                for key, mask in events:
                    try:
                        if key.data == "accept":
                            self._accept()
                        elif key.data == "wake":
                            self._finish_jobs()
                        elif mask & selectors.EVENT_WRITE:
                            self._flush(key.data)
                        else:
                            self._readable(key.data)
                    except Exception:  # a bug must cost one connection, not the server
                        log.exception("error on the event loop")
                        if isinstance(key.data, _Client):
                            self._close(key.data)
                self.batcher.arriving(-1)
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + SWEEP_S
                    self._sweep(now)
        finally:
            for client in list(self.clients):
                self._close(client)
            self.selector.close()
            self._wake_r.close()
            self._wake_w.close()
            listener.setblocking(True)
            self._stopped.set()

    def stop(self) -> None:
        """From another thread: stop accepting, finish in-flight requests (up to the grace), return."""
        self._stop.set()
        self._wake()
        self._stopped.wait()

    # -- connections ----------------------------------------------------------------------------------------------

    def _accept(self) -> None:
        server = self.server
        for _ in range(server.accept_batch):
            try:
                sock, address = server.socket.accept()
            except OSError:  # nothing more waiting, or the client already gave up
                return
            conn = server.table.admit(sock, _client_name(address))
            if isinstance(conn, str):
                sock.setblocking(True)
                server.refuse(sock, address, conn)
                continue
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)  # Nagle + delayed ACK: +40 ms
            except OSError:
                server.table.release(conn)
                sock.close()
                continue
            client = _Client(sock, address, conn)
            self.clients.add(client)
            self.selector.register(sock, selectors.EVENT_READ, client)

    def _close(self, client: _Client) -> None:
        if client not in self.clients:
            return
        self.clients.discard(client)
        self._unregister(client)
        self._release(client)
        if client.job is not None or client.line:  # counted as in flight: no answer will come now
            client.job = None
            self._finished(client, 0, 0)
        self.server.table.release(client.conn)
        self.server.shutdown_request(client.sock)

    def _unregister(self, client: _Client) -> None:
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass

    def _release(self, client: _Client) -> None:
        if client.reserved:
            self.server.release_body(client.reserved)
            client.reserved = 0

    def _handoff(self, client: _Client) -> None:
        """The connection goes to a thread of the threaded handler, with what was read of the current request."""
        self.clients.discard(client)
        self._unregister(client)
        self._release(client)
        if client.line:  # the handler counts the request again, from its first byte
            self._finished(client, 0, 0, log_it=False)
        prefix, client.buf = bytes(client.buf), bytearray()
        try:
            client.sock.setblocking(True)
        except OSError:
            pass
        self.server.hand_over(client.sock, client.address, client.conn, prefix, client.first_byte, client.served)

    # -- reading ----------------------------------------------------------------------------------------------------

    def _readable(self, client: _Client) -> None:
        try:
            data = client.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(client)
            return
        if not data or client.conn.evicted:
            self._close(client)  # the client closed (or was evicted): nothing to answer
            return
        now = time.monotonic()
        client.last = now
        if not client.buf:
            client.first_byte = now
            self.server.table.set_state(client.conn, HEAD)
        client.buf += data
        self._parse(client)

    def _parse(self, client: _Client) -> None:
        """Act on the buffered bytes: wait for more, hand over, or start the request."""
        buf = client.buf
        if buf[:1] in (b"\r", b"\n"):
            self._handoff(client)  # empty lines before the request line
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self.settings.max_head_bytes or b"\n\n" in buf:
                self._handoff(client)
            return
        if not client.line:
            if end + 4 > self.settings.max_head_bytes or not self._head(client, bytes(buf[:end])):
                self._handoff(client)
                return
        if len(buf) < end + 4 + client.length:
            if client.conn.state != BODY:
                self.server.table.set_state(client.conn, BODY)
            return
        self.server.table.set_state(client.conn, BUSY)
        body = bytes(buf[end + 4:end + 4 + client.length])
        client.consumed = end + 4 + client.length
        if not self._start(client, body):
            self._handoff(client)

    def _head(self, client: _Client, head: bytes) -> bool:
        """Parse a common-case head (request line and plain headers); False for anything else. On True the
        request is counted in flight and its body reserved."""
        if not head.isascii():
            return False
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[0] != b"POST" or parts[2] != b"HTTP/1.1" or parts[1] not in _FAST_PATHS:
            return False
        if len(lines) > _MAX_HEADERS + 1:
            return False
        length = None
        close = False
        connection_seen = False
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name) or b"\n" in line or b"\r" in line:
                return False  # what the email parser would read differently (a folded line, a name with a space)
            name = name.lower()
            if name == b"content-length":
                value = value.strip(b" \t")
                if length is not None or not value.isdigit() or len(value) > 18:
                    return False
                length = int(value)
            elif name == b"connection":
                if connection_seen:
                    return False
                connection_seen = True
                token = value.strip(b" \t").lower()
                if token == b"close":
                    close = True
                elif token != b"keep-alive":
                    return False
            elif name in (b"transfer-encoding", b"expect"):
                return False
        server = self.server
        if length is None or length > LOOP_BODY_LIMIT or length > server.service.max_body_bytes:
            return False
        if not server.reserve_body(length):
            return False
        client.reserved = length
        client.length = length
        client.close = close
        client.line = lines[0].decode("ascii")
        client.started = time.perf_counter()
        server.request_started()
        return True

    # -- the request --------------------------------------------------------------------------------------------

    def _start(self, client: _Client, body: bytes) -> bool:
        """Prepare and queue a complete request; False to hand it over (the handler answers it its own way)."""
        server = self.server
        batcher = self.batcher
        assert batcher is not None
        if parse_cost_over(body, server.parse_limit) is not None:
            return False
        if not server.gate.acquire(len(body), 0):
            return False
        try:
            arrays = server.prepare(body)
            if arrays is None:
                return False
            job = Job(arrays, None, self._job_done, len(body))
            if not batcher.submit(job):
                return False
        finally:
            server.gate.release()
        self._release(client)
        client.job = job
        client.out_since = time.monotonic()  # when the job was queued (the queue timeout)
        self._unregister(client)  # no reading while its answer is pending: a pipelined request waits its turn
        self._pending[job] = client
        return True

    def _job_done(self, job: Job) -> None:
        """In a worker: note the job and wake the loop (once for a whole batch)."""
        with self._wake_lock:
            self._done.append(job)  # type: ignore[arg-type]
            if self._wake_pending:
                return
            self._wake_pending = True
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def _finish_jobs(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass
        with self._wake_lock:
            done, self._done = list(self._done), collections.deque()
            self._wake_pending = False
        for job in done:
            client = self._pending.pop(job, None)  # type: ignore[call-overload]
            if client is None or client not in self.clients:
                continue
            client.job = None
            # Each answer on its own: a failure here (MemoryError formatting a large answer) must cost this client
            # its answer from the handler, not leave the rest of the batch's clients waiting forever.
            try:
                reply = self.server.batch_reply(job.result) if job.error is None else None  # type: ignore
                if reply is None:  # the batch failed or the answer does not format: the handler runs it alone
                    self._handoff(client)
                    continue
                self._answer(client, reply.status, reply.text.encode())  # a client's Connection: close: not echoed
            except MemoryError:
                if client in self.clients and not client.out:
                    self._handoff(client)  # the handler runs it alone: its answer, or its 503 when memory is short
            except Exception:
                log.exception("error answering on the event loop")
                self._close(client)

    # -- writing ------------------------------------------------------------------------------------------------

    def _answer(self, client: _Client, status: int, data: bytes, close: bool = False,
                headers: dict[str, str] | None = None) -> None:
        head = [f"HTTP/1.1 {status} {_PHRASES.get(status, '')}\r\nServer: {self._server_name}\r\n"
                f"Date: {self._now_text()}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"]
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}\r\n")
        if close:
            head.append("Connection: close\r\n")
            client.close = True
        head.append("\r\n")
        client.out = "".join(head).encode("latin-1") + data
        del client.buf[:client.consumed]
        client.consumed = 0
        client.out_since = time.monotonic()
        self._finished(client, status, len(data))
        self._flush(client)

    def _flush(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            client.out = b""
            self._close(client)
            return
        client.out = client.out[sent:]
        if client.out:
            self._register(client, selectors.EVENT_WRITE)
            return
        if client.close or self._stop.is_set():
            self._close(client)
            return
        client.served += 1
        client.last = time.monotonic()
        client.first_byte = None
        self.server.table.set_state(client.conn, IDLE)
        self._register(client, selectors.EVENT_READ)
        if client.buf:  # a pipelined request already read
            client.first_byte = client.last
            self.server.table.set_state(client.conn, HEAD)
            self._parse(client)

    def _register(self, client: _Client, events: int) -> None:
        try:
            self.selector.modify(client.sock, events, client)
        except KeyError:
            self.selector.register(client.sock, events, client)

    def _finished(self, client: _Client, status: int, sent: int, log_it: bool = True) -> None:
        if not client.line:
            return
        if log_it and self.settings.access_log:
            access_log.info('%s "%s" %s %d %.1fms', _client_name(client.address), client.line, status or "-", sent,
                            (time.perf_counter() - client.started) * 1000)
        client.line = ""
        client.length = 0
        self.server.request_finished()

    def _now_text(self) -> str:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True))
        return self._date[1]

    # -- timers -------------------------------------------------------------------------------------------------

    def _sweep(self, now: float) -> None:
        settings = self.settings
        for client in list(self.clients):
            if client.job is not None:
                if client.job.state == QUEUED and now - client.out_since > settings.queue_timeout_s:
                    if self.batcher.cancel(client.job):  # type: ignore[union-attr]
                        self._pending.pop(client.job, None)
                        client.job = None
                        self._overloaded(client, f"every worker stayed busy for {settings.queue_timeout_s:g} s; "
                                                 "retry shortly")
            elif client.out:
                if now - client.out_since > settings.read_timeout_s:
                    self._close(client)  # the client stopped reading its answer
            elif client.buf:
                if client.first_byte is not None and now - client.first_byte > HANDOFF_AFTER_S:
                    self._handoff(client)  # a slow client: the handler's deadlines take over
            elif client.served:
                if now - client.last > settings.read_timeout_s:
                    self._close(client)  # an idle keep-alive connection
            elif now - client.conn.since > min(settings.head_timeout_s, settings.read_timeout_s):
                self._close(client)  # a connection that never said anything (as the handler: silent, or too late)
            if client in self.clients and client.conn.evicted and client.job is None and not client.out:
                self._close(client)

    def _overloaded(self, client: _Client, message: str) -> None:
        reply = error_reply(503, message, kind="Overloaded")
        self._answer(client, 503, reply.text.encode(), close=True, headers={"Retry-After": "1"})


def _client_name(address: Any) -> str:
    return str(address[0]) if isinstance(address, tuple) and address else "-"


_PHRASES = {200: "OK", 503: "Service Unavailable"}
