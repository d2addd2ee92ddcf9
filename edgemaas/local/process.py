"""The runtime client process (``python -S -s -m awslambdaric``) with its Runtime API server and output."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from pathlib import Path

from edgemaas.local.errors import LocalLambdaError
from edgemaas.local.output import OutputCapture
from edgemaas.local.runtime_api import RuntimeAPI


def proc_memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in kB from /proc; zeros when unavailable (exited, non-Linux)."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return rss, hwm


def exit_reason(returncode: int) -> str:
    """Describe a process exit the way Lambda does ('exit status 1', 'signal: killed')."""
    if returncode < 0:
        try:
            name = (signal.strsignal(-returncode) or str(-returncode)).lower()
        except ValueError:
            name = str(-returncode)
        return f"signal: {name}"
    return f"exit status {returncode}"


class RuntimeProcess:
    """One runtime process together with the Runtime API server it talks to."""

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path, function_arn: str,
                 timeout_s: float) -> None:
        self.api = RuntimeAPI(function_arn, timeout_s)
        self.served = 0
        self.peak_kb = 0
        self.started = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                cmd, env={**env, "AWS_LAMBDA_RUNTIME_API": self.api.address}, cwd=cwd,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,  # Own process group: we can kill all it spawned.
            )
        except OSError as exc:
            self.api.close()
            raise LocalLambdaError(f"cannot start {cmd[0]!r}: {exc}") from exc
        self.output = OutputCapture(self.proc.stdout)
        self.api.start(self.output)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kb(self) -> int:
        """Current RSS; also tracks the high-water mark for 'Max Memory Used'."""
        rss, hwm = proc_memory_kb(self.proc.pid)
        self.peak_kb = max(self.peak_kb, hwm, rss)
        return rss

    def peak_mb(self) -> int:
        self.rss_kb()
        return math.ceil(self.peak_kb / 1024)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.kill()
        except OSError:
            pass

    def wait_exit(self, timeout: float = 5.0) -> None:
        """Wait for the process and drain its output (bounded)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.output.join(timeout=1.0)

    def close(self) -> None:
        self.kill()
        self.wait_exit()
        self.api.close()
        # If a grandchild escaped and still holds the pipe, leak the fd rather than
        # close it under the reader thread (the number could be reused).
        if self.proc.stdout is not None and not self.output.reading():
            self.proc.stdout.close()
