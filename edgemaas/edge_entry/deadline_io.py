"""A socket reader with a deadline as well as a timeout (stdlib only).

A socket timeout bounds each read; a client sending one byte just before each timeout never trips it. Here every read
waits at most `min(timeout, deadline - now)`, so a request head or body has an overall deadline however it trickles.
"""

from __future__ import annotations

import io
import socket
import time


class DeadlineExceeded(TimeoutError):
    """The current deadline passed (a plain TimeoutError means the socket was silent for `timeout`)."""


class DeadlineReader(io.RawIOBase):
    def __init__(self, sock: socket.socket, timeout: float, prefix: bytes = b"") -> None:
        super().__init__()
        self._sock = sock
        self.timeout = timeout
        self.deadline: float | None = None  # time.monotonic() value, or None: the timeout alone
        self._prefix = memoryview(prefix)  # bytes already read from the socket by someone else (the event loop)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        wait = self.timeout
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded
            wait = min(wait, left)
        self._sock.settimeout(wait)
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise DeadlineExceeded from None
            raise
