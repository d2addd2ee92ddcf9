"""Shared by the tests that start an edge server: the port it says it listens on."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

LISTENING = re.compile(r"on http://127\.0\.0\.1:(\d+);")


def served_port(log_path: Path, process: subprocess.Popen, timeout_s: float = 60) -> int:
    """Wait until the server's log names its port (`--port 0`); fail with the log if it exits or never listens."""
    deadline = time.monotonic() + timeout_s
    while not (found := LISTENING.search(log_path.read_text(errors="replace"))):
        if process.poll() is not None:
            raise AssertionError(f"the edge server exited with {process.returncode}:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the edge server did not listen within {timeout_s} s:\n{log_path.read_text()}")
        time.sleep(0.05)
    return int(found.group(1))
