"""Capture the runtime process's merged stdout/stderr, with bookmarks so each invoke gets its own logs."""

from __future__ import annotations

import os
import re
import select
import sys
import threading
import time
from typing import Any


def _pending_bytes(fd: int) -> int:
    """Bytes waiting in a pipe (Linux FIONREAD); 0 if unknown."""
    try:
        import fcntl
        import termios

        buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
        return int.from_bytes(buf, sys.byteorder)
    except (ImportError, OSError):
        return 0


class OutputCapture:
    """Collects the child's merged stdout/stderr and lets us bookmark positions in it."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._fd = stream.fileno()
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._eof = False
        self._thread = threading.Thread(target=self._run, name="lambda-output", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self._fd], [], [], 0.5)
            except (OSError, ValueError):
                break
            if not ready:
                continue
            # Read under the lock so mark() never sees bytes that left the pipe
            # but are not in the buffer yet.
            with self._lock:
                try:
                    chunk = os.read(self._fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    self._eof = True
                    return
                self._buf += chunk
        with self._lock:
            self._eof = True

    def mark(self, settle_s: float = 0.2) -> int:
        """Position after everything the child has written so far.

        The runtime flushes its prints before talking to the API, so once the pipe
        is empty all output belonging to the previous phase is in the buffer.
        """
        deadline = time.monotonic() + settle_s
        while True:
            with self._lock:
                if self._eof or _pending_bytes(self._fd) == 0 or time.monotonic() > deadline:
                    return len(self._buf)
            time.sleep(0.001)

    def text(self, start: int, end: int | None = None) -> str:
        with self._lock:
            data = bytes(self._buf[start:end])
        # awslambdaric separates the lines of an error log with a bare '\r' (one
        # CloudWatch event); show them as normal lines.
        return re.sub(r"\r(?!\n)", "\n", data.decode("utf-8", "replace"))

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def reading(self) -> bool:
        return self._thread.is_alive()
