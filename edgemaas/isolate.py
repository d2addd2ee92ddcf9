"""Run a risky step (a converter that can segfault, a validation that can hang) in its own process.

A crash or a timeout becomes a StageFailed with the reason and the tail of the step's log, never the end of the
pipeline. The child is a fresh interpreter started with `python -m edgemaas.isolate`, so it works from any caller
(a script without a `__main__` guard included), and its stdout/stderr, C++ converter noise too, go to a log file.
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

from edgemaas.errors import StageFailed, UserError
from edgemaas.fsutil import atomic_write_bytes


def run_isolated(fn: Callable[..., Any], *args: Any, timeout: float, log_path: Path | None = None) -> Any:
    """Call fn(*args) (a module-level function) in a fresh process and return its result, or raise StageFailed."""
    with tempfile.TemporaryDirectory(prefix="edgemaas-isolate-") as scratch:
        job, result = Path(scratch) / "job.pkl", Path(scratch) / "result.pkl"
        job.write_bytes(pickle.dumps((fn.__module__, fn.__qualname__, args)))
        log = Path(log_path) if log_path else Path(scratch) / "log.txt"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               "TF_USE_LEGACY_KERAS": "1"}
        with open(log, "wb") as sink:
            process = subprocess.Popen([sys.executable, "-m", "edgemaas.isolate", str(job), str(result)],
                                       stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, env=env)
            try:
                code = process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise StageFailed(f"timed out after {timeout:.0f} s" + _log_tail(log)) from None
            except BaseException:  # Ctrl-C or a kill of the parent: the child must not go on writing
                process.kill()
                process.wait()
                raise
        if not result.exists():
            raise StageFailed(f"the process crashed ({_exit_reason(code)})" + _log_tail(log))
        status, payload = pickle.loads(result.read_bytes())
        if status == "user-error":  # the user's mistake, found in the child: the same clean message here
            raise UserError(payload)
        if status == "failed":
            raise StageFailed(payload.strip())
        return payload


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _log_tail(log: Path, lines: int = 8) -> str:
    tail = log.read_text(errors="replace").strip().splitlines()[-lines:] if log.exists() else []
    return ("; last log lines:\n" + "\n".join(tail)) if tail else ""


def _main(job_path: str, result_path: str) -> None:
    module, qualname, args = pickle.loads(Path(job_path).read_bytes())
    try:
        fn = importlib.import_module(module)
        for part in qualname.split("."):
            fn = getattr(fn, part)
        outcome = ("ok", fn(*args))
    except UserError as exc:
        outcome = ("user-error", str(exc))
    except BaseException as exc:  # every failure goes back to the parent as a message
        outcome = ("failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}")
    atomic_write_bytes(result_path, pickle.dumps(outcome), fsync=False)  # read by the parent; no crash to outlive


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
