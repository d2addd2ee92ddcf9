"""Refusing connections so that clients can read the refusal (stdlib only).

Closing a socket with unread bytes in it resets the connection; a client still sending its body (http.client,
requests and curl all send the whole request before reading) then gets a broken pipe instead of the 503. So a
refused connection is answered at once, then its request (the head, then Content-Length bytes) is read and dropped
until it is complete or `deadline_s` passes (`head_wait_s` for a client that has not sent its head), and only
then closed. One thread does this for every refused
connection (non-blocking sockets and a selector), at most `max_pending` at once; past that, a connection is answered
and closed at once (a client still sending its body may then read a reset: under a flood of ~2,500 refused POSTs a
second on a loaded 2-core machine, a few in 10,000 did).
"""

from __future__ import annotations

import logging
import re
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

_LENGTH = re.compile(rb"(?im)^content-length[ \t]*:[ \t]*(\d{1,18})[ \t]*\r?$")
_CHUNKED = re.compile(rb"(?im)^transfer-encoding[ \t]*:")
_READ = 1 << 16  # a request head is read this much at a time
# A body being dropped is read up to this much at a time, into one reused buffer: fewer reads (each gives up the GIL,
# and gets it back only when the other threads let it) and no new bytes object per read.
_DROP = 1 << 20
SCAN_S = 0.05  # how often the deadlines of pending refusals are checked

log = logging.getLogger("edgemaas.server")


def response_bytes(status_line: str, text: str, retry_after: int | None = 1) -> bytes:
    body = text.encode()
    retry = f"Retry-After: {retry_after}\r\n" if retry_after is not None else ""
    return (f"HTTP/1.1 {status_line}\r\nServer: edgemaas-edge\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{retry}Connection: close\r\n\r\n").encode() + body


@dataclass(eq=False)
class _Pending:
    sock: socket.socket
    deadline: float
    head_deadline: float  # a client that has not sent its head by then never will: its place goes to others
    head: bytearray = field(default_factory=bytearray)
    left: int | None = None  # body bytes still to drop, once the head is in


class Refuser:
    def __init__(self, max_head_bytes: int, max_body_bytes: int, deadline_s: float = 2.0,
                 max_pending: int = 512, head_wait_s: float = 1.0) -> None:
        self.max_head_bytes = max_head_bytes
        self.max_body_bytes = max_body_bytes
        self.deadline_s = deadline_s
        self.max_pending = max_pending
        self.head_wait_s = head_wait_s
        self._selector = selectors.DefaultSelector()
        self._incoming: list[_Pending] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._count = 0
        self._closed = False
        self._scratch = memoryview(bytearray(_DROP))  # only the refusals thread reads into it
        threading.Thread(target=self._run, name="refusals", daemon=True).start()

    def refuse(self, sock: socket.socket, response: bytes) -> None:
        """Answer `response` (it must fit in the socket's send buffer: a few KB) and drain the request."""
        try:
            sock.setblocking(False)
            sock.send(response)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            _close(sock)
            return
        with self._lock:
            if self._count >= self.max_pending or self._closed:
                _close(sock)
                return
            self._count += 1
            now = time.monotonic()
            self._incoming.append(_Pending(sock, now + self.deadline_s, now + min(self.head_wait_s, self.deadline_s)))
            if len(self._incoming) > 1:
                return  # the thread has a wake-up coming already and takes every incoming connection at once
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # the wake-up pipe is full: the loop is awake already

    def close(self) -> None:
        with self._lock:
            self._closed = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _run(self) -> None:
        next_scan = 0.0
        while True:
            with self._lock:
                incoming, self._incoming = self._incoming, []
                closed = self._closed
            for pending in incoming:
                self._selector.register(pending.sock, selectors.EVENT_READ, pending)
            now = time.monotonic()
            # Deadlines every SCAN_S, not on every wake-up: a scan walks every pending connection (up to max_pending),
            # and under a flood of refusals this thread wakes thousands of times a second.
            if closed or now >= next_scan:
                next_scan = now + SCAN_S
                for pending in [key.data for key in list(self._selector.get_map().values())
                                if key.data is not None and (closed or key.data.deadline <= now or (
                                    key.data.left is None and key.data.head_deadline <= now))]:
                    self._finish(pending)
            if closed:
                self._selector.close()
                return
            for key, _ in self._selector.select(timeout=0.1):
                if key.data is None:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except OSError:
                        pass
                elif not self._feed(key.data):
                    self._finish(key.data)

    def _feed(self, pending: _Pending) -> bool:
        """Read what is there; False when the request is complete (or the client is gone)."""
        try:
            while True:
                if pending.left is not None:  # the body: dropped unseen
                    dropped = pending.sock.recv_into(self._scratch, min(pending.left, _DROP))
                    pending.left -= dropped
                    if not dropped or pending.left <= 0:
                        return False
                    continue
                chunk = pending.sock.recv(_READ)
                if not chunk:
                    return False
                pending.head += chunk
                end = pending.head.find(b"\r\n\r\n")
                if end < 0:
                    if len(pending.head) > self.max_head_bytes:
                        return False
                    continue
                head = bytes(pending.head[:end])
                if _CHUNKED.search(head):
                    pending.left = self.max_body_bytes  # no length: drop what comes until the deadline
                else:
                    found = _LENGTH.search(head)
                    pending.left = min(int(found.group(1)), self.max_body_bytes) if found else 0
                pending.left -= len(pending.head) - (end + 4)
                pending.head = bytearray()
                if pending.left <= 0:
                    return False
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False

    def _finish(self, pending: _Pending) -> None:
        try:
            self._selector.unregister(pending.sock)
        except (KeyError, ValueError):
            pass
        _close(pending.sock)
        with self._lock:
            self._count -= 1


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
