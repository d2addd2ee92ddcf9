"""Run an AWS Lambda Python function package locally through the real runtime client.

The package runs in a fresh interpreter started as ``python -S -s -m awslambdaric
<handler>``, the way Lambda's managed runtime starts it. That interpreter sees only
the standard library, the package (task root), the layers (``/opt/python``) and a
private copy of ``awslambdaric``. It does not see the site-packages of the
development environment, so a package that works here should also import on Lambda.

The parent implements the Lambda Runtime API (2018-06-01) on 127.0.0.1 and feeds the
events to that process one after another. It measures durations and memory, enforces
the timeout and the memory size, and collects what the function printed. The module
uses only the standard library, so importing it costs nothing.
"""

from __future__ import annotations

import functools
import json
import math
import os
import queue
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.machinery import all_suffixes
from pathlib import Path
from typing import Any

from edgemaas.errors import UserError
from edgemaas.workspace import cache_root

__all__ = ["InvokeResult", "LocalLambdaError", "invoke_local", "runtime_client_dir"]

_API_PREFIX = "/2018-06-01/runtime"
_NEXT_PATH = f"{_API_PREFIX}/invocation/next"
_INIT_ERROR_PATH = f"{_API_PREFIX}/init/error"
_RESULT_PATH = re.compile(rf"^{_API_PREFIX}/invocation/([^/]+)/(response|error)$")

# Lambda's synchronous response limit. The runtime gets a 413 above it.
_MAX_RESPONSE_BYTES = 6 * 1024 * 1024 + 100  # 6291556 bytes
# Lambda gives the init phase 10 s (on-demand); we add the invoke timeout
# because Lambda re-runs a slow init inside the first invoke.
_INIT_LIMIT_S = 10.0
_POLL_S = 0.01  # How often we check the process for death, OOM and timeout.
_PIP_TIMEOUT_S = 900.0
_ACCOUNT_ID = "000000000000"
_LAMBDA_PATH = "/usr/local/bin:/usr/bin:/bin"  # Lambda's PATH, without /var/lang/bin.


class LocalLambdaError(UserError):
    """The function could not be set up to run (bad package, missing runtime client, ...)."""


@dataclass(frozen=True)
class InvokeResult:
    """The outcome of one invoke, shaped like Lambda's Invoke response and REPORT line."""

    request_id: str
    payload: Any  # Parsed JSON response, or the raw text if not JSON.
    function_error: str | None  # None on success, else "Unhandled" (X-Amz-Function-Error).
    error_message: str | None  # "ErrorType: message", or "Task timed out after N seconds".
    init_duration_ms: float | None  # Only on cold invokes (first invoke of a process).
    duration_ms: float
    max_memory_used_mb: int
    logs: str  # stdout+stderr of the function during this invoke (cold: including init).
    memory_size_mb: int = 512  # Configured memory; only needed for report_line().

    def report_line(self) -> str:
        """Return the REPORT line Lambda would log for this invoke."""
        billed = max(1, math.ceil(self.duration_ms))  # Lambda bills in 1 ms steps.
        line = (
            f"REPORT RequestId: {self.request_id} Duration: {self.duration_ms:.2f} ms "
            f"Billed Duration: {billed} ms Memory Size: {self.memory_size_mb} MB "
            f"Max Memory Used: {self.max_memory_used_mb} MB"
        )
        if self.init_duration_ms is not None:
            line += f" Init Duration: {self.init_duration_ms:.2f} ms"
        return line


# --------------------------------------------------------------------------- runtime client


@dataclass(frozen=True)
class _PythonInfo:
    major: int
    minor: int
    ric_version: str | None  # awslambdaric version installed for that interpreter, if any

    @property
    def tag(self) -> str:
        return f"py{self.major}{self.minor}"


_PROBE_CODE = """
import sys
try:
    from importlib.metadata import version
    v = version("awslambdaric")
except Exception:
    v = ""
print(sys.version_info[0], sys.version_info[1], v)
"""


@functools.lru_cache(maxsize=None)
def _probe_python(python: str) -> _PythonInfo:
    """Ask the interpreter for its version and its installed awslambdaric version."""
    try:
        proc = subprocess.run(
            [python, "-c", _PROBE_CODE], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalLambdaError(f"cannot run Python interpreter {python!r}: {exc}") from exc
    fields = proc.stdout.split()
    if proc.returncode != 0 or len(fields) < 2:
        raise LocalLambdaError(
            f"cannot run Python interpreter {python!r}: {proc.stderr.strip()[-500:]}"
        )
    return _PythonInfo(int(fields[0]), int(fields[1]), fields[2] if len(fields) > 2 else None)


def _cache_root() -> Path:
    """Return the cache directory for runtime clients (EDGEMAAS_CACHE_DIR wins)."""
    return cache_root() / "runtime-client"


def _version_key(path: Path) -> tuple[int, ...]:
    version = path.name.split("-", 1)[-1]
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.+-]", version))


def _pip_install(python: str, spec: str, root: Path, final: str) -> Path:
    """pip-install ``spec`` into a new temporary directory under ``root``.

    ``final`` names the cache directory it is meant for (only used in the hint).
    """
    root.mkdir(parents=True, exist_ok=True)
    # A dot-prefixed temp dir on the same filesystem: never mistaken for a finished
    # install, and can be renamed atomically into place.
    tmp = Path(tempfile.mkdtemp(prefix=".installing-", dir=root))
    cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
           "--target", str(tmp), spec]
    hint = (f"Fix the cause above (network access, pip configuration, or an interpreter "
            f"without pip: '{python} -m ensurepip'), or fill the cache yourself: "
            f"'{python} -m pip install --target {root / final} {spec}'. "
            "EDGEMAAS_CACHE_DIR moves the cache.")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LocalLambdaError(f"could not run pip to install {spec}: {exc}\n{hint}") from exc
    if proc.returncode != 0 or not (tmp / "awslambdaric").is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise LocalLambdaError(f"pip could not install {spec} for {python}:\n{tail}\n{hint}")
    return tmp


def _move_into_place(tmp: Path, target: Path) -> Path:
    """Atomically publish a finished install; if another process won the race, use theirs."""
    tmp.chmod(0o755)  # mkdtemp's 0700 was only for the install window.
    try:
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.is_dir():
            raise
    return target


def runtime_client_dir(python: str = sys.executable) -> Path:
    """Return a directory holding awslambdaric and its dependencies for ``python``.

    Installs once with pip into ``~/.cache/edgemaas/runtime-client/<pyXY>-<version>``
    (root overridable with EDGEMAAS_CACHE_DIR), pinned to the awslambdaric version
    installed for that interpreter, else the latest, and reuses it afterwards.
    """
    info = _probe_python(python)
    root = _cache_root()
    if info.ric_version:
        target = root / f"{info.tag}-{info.ric_version}"
        if target.is_dir():
            return target
        spec = f"awslambdaric=={info.ric_version}"
        return _move_into_place(_pip_install(python, spec, root, target.name), target)
    # Not installed locally: reuse the newest cached copy rather than asking the
    # index every time, else install the latest and name the dir after what we got.
    cached = sorted((p for p in root.glob(f"{info.tag}-*") if p.is_dir()), key=_version_key)
    if cached:
        return cached[-1]
    tmp = _pip_install(python, "awslambdaric", root, f"{info.tag}-<version>")
    dists = sorted(tmp.glob("awslambdaric-*.dist-info"))
    version = dists[0].name[len("awslambdaric-"):-len(".dist-info")] if dists else "unknown"
    return _move_into_place(tmp, root / f"{info.tag}-{version}")


# --------------------------------------------------------------------------- packages


def _safe_parts(archive: Path, name: str) -> list[str]:
    """Split a zip entry name, refusing anything that could land outside the target."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or "\x00" in norm:
        raise LocalLambdaError(
            f"{archive}: refusing zip entry {name!r} with an absolute path; "
            "rebuild the zip with paths relative to its root")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LocalLambdaError(
            f"{archive}: refusing zip entry {name!r} that climbs out with '..'; "
            "rebuild the zip with paths relative to its root")
    return parts


def _checked_dir(root: Path, parts: list[str]) -> Path:
    """Create root/parts..., refusing to pass through an existing symlink."""
    path = root
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise LocalLambdaError(f"refusing to write through symlink {path}")
        path.mkdir(exist_ok=True)
    return path


def _checked_path(root: Path, parts: list[str]) -> Path:
    """Path of a file under root whose parent dirs exist and are not symlinks."""
    return _checked_dir(root, parts[:-1]) / parts[-1]


def _extract_zip(archive: Path, dest: Path) -> None:
    """Extract a zip safely: no absolute/'..' entries, never write through a symlink."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as exc:
        raise LocalLambdaError(f"cannot read zip {archive}: {exc}") from exc
    with zf:
        infos = zf.infolist()
        for info in infos:  # Validate every name before writing anything.
            _safe_parts(archive, info.filename)
        try:
            links = [link for info in infos if (link := _extract_entry(zf, info, dest))]
            for parts, target in links:
                _make_link(archive, dest, parts, target)
        except (OSError, zipfile.BadZipFile) as exc:
            raise LocalLambdaError(f"cannot extract {archive}: {exc}") from exc


def _extract_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path
                   ) -> tuple[list[str], str] | None:
    """Write one entry; symlinks are returned instead, to be created after all files."""
    parts = _safe_parts(Path(zf.filename or "zip"), info.filename)
    mode = info.external_attr >> 16
    if not parts:
        return None
    if info.is_dir():
        _checked_dir(dest, parts)
        return None
    if stat.S_ISLNK(mode):
        # Created last, so no later entry can be written through one.
        return parts, zf.read(info).decode("utf-8", "replace")
    path = _checked_path(dest, parts)
    if path.is_symlink() or path.is_file():
        path.unlink()  # A later layer overrides an earlier one, like Lambda.
    perms = (mode & 0o777) | 0o400 if mode & 0o777 else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, perms)
    with os.fdopen(fd, "wb") as out, zf.open(info) as src:
        shutil.copyfileobj(src, out)
    return None


def _make_link(archive: Path, dest: Path, parts: list[str], target: str) -> None:
    """Recreate a symlink entry only if it points inside the extracted tree."""
    inside = os.path.normpath(os.path.join(dest, *parts[:-1], target))
    if os.path.isabs(target) or os.path.commonpath([inside, str(dest)]) != str(dest):
        raise LocalLambdaError(
            f"{archive}: refusing symlink entry {'/'.join(parts)!r} -> {target!r} "
            "that points outside the package")
    path = _checked_path(dest, parts)
    if path.is_symlink() or path.is_file():
        path.unlink()
    os.symlink(target, path)


def _prepare_package(package: Path, workdir: Path) -> Path:
    """Return the task root: the directory itself, or the zip extracted into workdir."""
    if package.is_dir():
        return package.resolve()  # Used in place; PYTHONDONTWRITEBYTECODE keeps it clean.
    if package.is_file() and zipfile.is_zipfile(package):
        root = workdir / "task"
        _extract_zip(package, root)
        return root
    raise LocalLambdaError(f"package {package} is neither a directory nor a zip file")


def _prepare_layers(layers: Sequence[Path], workdir: Path) -> Path:
    """Lay the layers out in one 'opt' directory, later layers overriding earlier ones."""
    opt = workdir / "opt"
    opt.mkdir(parents=True, exist_ok=True)
    for layer in map(Path, layers):
        if layer.is_dir():
            shutil.copytree(layer, opt, symlinks=True, dirs_exist_ok=True)
        elif layer.is_file() and zipfile.is_zipfile(layer):
            _extract_zip(layer, opt)
        else:
            raise LocalLambdaError(f"layer {layer} is neither a directory nor a zip file")
    return opt


def _module_exists(module: str, search: list[Path]) -> bool:
    """Cheap pre-check that the handler module is a file/package on the search path."""
    *pkgs, leaf = module.split(".")
    for base in search:
        folder = base.joinpath(*pkgs)
        if (folder / leaf).is_dir():
            return True  # Regular or namespace package.
        if any((folder / f"{leaf}{suffix}").is_file() for suffix in all_suffixes()):
            return True
    return False


def _check_handler(handler: str, search: list[Path], task_root: Path) -> None:
    """Fail early, with a useful hint, when the handler cannot possibly be found."""
    module, sep, func = handler.rpartition(".")
    if not sep or not module or not func:
        raise LocalLambdaError(
            f"handler {handler!r} must look like 'module.function', e.g. 'handler.handler'")
    module = module.replace("/", ".")  # awslambdaric accepts 'dir/module.func' too.
    if _module_exists(module, search):
        return
    top = sorted(p.name for p in task_root.iterdir())[:20]
    raise LocalLambdaError(
        f"handler module {module!r} not found in the package (top level: {top}). "
        "Lambda imports it from the root of the zip: put "
        f"{module.replace('.', '/')}.py at the top level, not inside a folder, "
        "or fix the handler setting.")


# --------------------------------------------------------------------------- child output


def _pending_bytes(fd: int) -> int:
    """Bytes waiting in a pipe (Linux FIONREAD); 0 if unknown."""
    try:
        import fcntl
        import termios

        buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
        return int.from_bytes(buf, sys.byteorder)
    except (ImportError, OSError):
        return 0


class _OutputCapture:
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


# --------------------------------------------------------------------------- runtime API


@dataclass(eq=False)
class _Invocation:
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


class _RuntimeAPI:
    """A Lambda Runtime API server for exactly one runtime process."""

    def __init__(self, function_arn: str, timeout_s: float) -> None:
        self.function_arn = function_arn
        self.timeout_s = timeout_s
        self.output: _OutputCapture | None = None
        self.pending: queue.Queue[_Invocation] = queue.Queue()
        self.active: dict[str, _Invocation] = {}
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

    def start(self, output: _OutputCapture) -> None:
        # Started after the child exists so handlers always have the output capture;
        # earlier connections simply wait in the listen backlog.
        self.output = output
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
            name="lambda-runtime-api", daemon=True)
        self._thread.start()

    def submit(self, inv: _Invocation) -> None:
        with self.lock:
            self.active[inv.request_id] = inv
        self.pending.put(inv)

    def next_invocation(self) -> _Invocation | None:
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

    def claim(self, request_id: str, kind: str, body: bytes) -> _Invocation | None:
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
    def api(self) -> _RuntimeAPI:
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
        too_large = kind == "response" and len(body) > _MAX_RESPONSE_BYTES
        inv = self.api.claim(request_id, "too-large" if too_large else kind, body)
        try:
            if inv is None:
                self._send(400, {"errorMessage": f"Invalid request ID: {request_id}",
                                 "errorType": "InvalidRequestID"})
            elif too_large:
                self._send(413, {"errorMessage": "Exceeded maximum allowed payload size "
                                 f"({_MAX_RESPONSE_BYTES} bytes).",
                                 "errorType": "RequestEntityTooLarge"})
            else:
                self._send(202, {"status": "OK"})
        finally:
            if inv is not None:
                inv.done.set()


# --------------------------------------------------------------------------- process


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


def _exit_reason(returncode: int) -> str:
    """Describe a process exit the way Lambda does ('exit status 1', 'signal: killed')."""
    if returncode < 0:
        try:
            name = (signal.strsignal(-returncode) or str(-returncode)).lower()
        except ValueError:
            name = str(-returncode)
        return f"signal: {name}"
    return f"exit status {returncode}"


class _Session:
    """One runtime process together with the Runtime API server it talks to."""

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path, function_arn: str,
                 timeout_s: float) -> None:
        self.api = _RuntimeAPI(function_arn, timeout_s)
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
        self.output = _OutputCapture(self.proc.stdout)
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


# --------------------------------------------------------------------------- invoking


@dataclass(frozen=True)
class _Config:
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    function_arn: str
    memory_mb: int
    timeout_s: float

    def new_session(self) -> _Session:
        return _Session(self.cmd, self.env, self.cwd, self.function_arn, self.timeout_s)


def _error_text(body: Any) -> str:
    """'ErrorType: message' from a runtime error body."""
    if isinstance(body, dict):
        etype, message = body.get("errorType") or "", body.get("errorMessage") or ""
        return f"{etype}: {message}" if etype and message else str(etype or message)
    return str(body)


def _parse_payload(data: bytes) -> Any:
    text = data.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _platform_error(rid: str, etype: str, message: str) -> dict[str, str]:
    """Error payload Lambda itself produces when the runtime cannot answer."""
    return {"errorType": etype, "errorMessage": f"RequestId: {rid} Error: {message}"}


class _Failure(Exception):
    """Internal: the invoke ended without a response from the runtime."""

    def __init__(self, payload: dict[str, str], message: str) -> None:
        super().__init__(message)
        self.payload, self.message = payload, message


def _watch(session: _Session, cfg: _Config, until: threading.Event, deadline: float,
           rid: str, on_timeout: str) -> None:
    """Wait for ``until``; raise _Failure on runtime death, OOM or deadline."""
    limit_kb = cfg.memory_mb * 1024
    while not until.wait(_POLL_S):
        if not session.alive():
            if until.is_set():  # It answered just before exiting.
                return
            reason = f"Runtime exited with error: {_exit_reason(session.proc.returncode)}"
            raise _Failure(_platform_error(rid, "Runtime.ExitError", reason),
                           f"Runtime.ExitError: {reason}")
        if session.rss_kb() > limit_kb:
            session.kill()
            reason = "Runtime exited with error: signal: killed"
            raise _Failure(_platform_error(rid, "Runtime.OutOfMemory", reason),
                           f"Runtime.OutOfMemory: {reason}")
        if time.monotonic() > deadline:
            session.kill()
            raise _Failure(_platform_error(rid, "Sandbox.Timedout", on_timeout), on_timeout)


def _init_failure(session: _Session, rid: str, cfg: _Config, failure: _Failure | None
                  ) -> InvokeResult:
    """Result for an invoke whose process never asked for it (init crashed / hung)."""
    session.wait_exit(timeout=2.0)  # Let it finish writing its traceback.
    api = session.api
    ended = api.init_error_at or time.monotonic()
    if api.init_error is not None:  # Runtime posted the error itself (import error, ...).
        payload = _parse_payload(api.init_error)
        message = _error_text(payload)
    elif failure is not None:
        payload, message = failure.payload, failure.message
    else:
        reason = f"Runtime exited with error: {_exit_reason(session.proc.returncode)}"
        payload = _platform_error(rid, "Runtime.ExitError", reason)
        message = f"Runtime.ExitError: {reason}"
    return InvokeResult(
        request_id=rid, payload=payload, function_error="Unhandled", error_message=message,
        init_duration_ms=(ended - session.started) * 1000, duration_ms=0.0,
        max_memory_used_mb=math.ceil(session.peak_kb / 1024), logs=session.output.text(0),
        memory_size_mb=cfg.memory_mb)


def _invoke_once(session: _Session, cfg: _Config, body: bytes) -> InvokeResult | None:
    """Send one event to the session's process. None = warm process died before taking it."""
    rid = str(uuid.uuid4())
    cold = session.served == 0
    inv = _Invocation(rid, body)
    session.api.submit(inv)
    try:
        init_deadline = time.monotonic() + _INIT_LIMIT_S + cfg.timeout_s
        _watch(session, cfg, inv.handed_out, init_deadline, rid,
               f"Task timed out after {cfg.timeout_s:.2f} seconds (still initialising; "
               f"Lambda allows {_INIT_LIMIT_S:.0f} s of init plus the function timeout)")
    except _Failure as failure:
        if not cold:
            return None
        session.kill()
        return _init_failure(session, rid, cfg, failure)

    session.served += 1
    init_ms = (session.api.first_next - session.started) * 1000 if cold else None
    timeout_msg = f"Task timed out after {cfg.timeout_s:.2f} seconds"
    log_from = 0 if cold else inv.log_start  # Cold invokes also show the init output.
    try:
        _watch(session, cfg, inv.done, inv.start + cfg.timeout_s, rid, timeout_msg)
    except _Failure as failure:
        # Lambda reports exactly the timeout as the duration of a timed-out invoke.
        elapsed = cfg.timeout_s if failure.message == timeout_msg else time.monotonic() - inv.start
        session.kill()
        session.wait_exit(timeout=2.0)
        return InvokeResult(
            request_id=rid, payload=failure.payload, function_error="Unhandled",
            error_message=failure.message, init_duration_ms=init_ms,
            duration_ms=elapsed * 1000, max_memory_used_mb=math.ceil(session.peak_kb / 1024),
            logs=session.output.text(log_from), memory_size_mb=cfg.memory_mb)

    if inv.kind == "too-large":
        payload: Any = {"errorType": "Function.ResponseSizeTooLarge",
                        "errorMessage": "Response payload size exceeded maximum allowed "
                                        f"payload size ({_MAX_RESPONSE_BYTES} bytes)."}
    else:
        payload = _parse_payload(inv.result)
    failed = inv.kind != "response"
    return InvokeResult(
        request_id=rid, payload=payload, function_error="Unhandled" if failed else None,
        error_message=_error_text(payload) if failed else None, init_duration_ms=init_ms,
        duration_ms=(inv.end - inv.start) * 1000, max_memory_used_mb=session.peak_mb(),
        logs=session.output.text(log_from, inv.log_end), memory_size_mb=cfg.memory_mb)


def _encode_event(index: int, event: Any) -> bytes:
    """JSON-encode an event; bytes are sent verbatim (already-encoded payloads)."""
    if isinstance(event, (bytes, bytearray)):
        return bytes(event)
    try:
        return json.dumps(event).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise LocalLambdaError(f"event #{index} is not JSON-serialisable: {exc}") from exc


def _child_env(*, task_root: Path, opt: Path, ric_dir: Path, handler: str,
               function_name: str, memory_mb: int, pyver: str,
               env: dict[str, str] | None) -> dict[str, str]:
    """Build the runtime's environment from scratch, like Lambda's (nothing inherited)."""
    overrides = dict(env or {})
    region = overrides.get("AWS_REGION") or overrides.get("AWS_DEFAULT_REGION") or "us-east-1"
    # Same order as Lambda's sys.path: task root, layers, then the runtime client.
    path = [task_root, opt / "python" / "lib" / f"python{pyver}" / "site-packages",
            opt / "python", ric_dir]
    stream = f"{time.strftime('%Y/%m/%d', time.gmtime())}/[$LATEST]{uuid.uuid4().hex}"
    base = {
        "PYTHONPATH": os.pathsep.join(str(p) for p in path if p.is_dir()),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PATH": f"{_LAMBDA_PATH}:{opt / 'bin'}",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "LAMBDA_TASK_ROOT": str(task_root),
        "LAMBDA_RUNTIME_DIR": str(ric_dir),
        "_HANDLER": handler,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{pyver}",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": stream,
    }
    return {**base, **overrides}


def invoke_local(
    package: Path,
    events: list[Any],
    *,
    handler: str = "handler.handler",
    python: str = sys.executable,
    memory_mb: int = 512,
    timeout_s: float = 30.0,
    env: dict[str, str] | None = None,
    layers: Sequence[Path] = (),
    function_name: str = "edgemaas-local",
) -> list[InvokeResult]:
    """Invoke a Lambda package locally with each event, in order, through awslambdaric.

    Events go to one warm process; after a timeout, OOM or crash a fresh process
    (cold start) serves the rest, as on Lambda. ``env`` overrides the runtime's
    environment (except AWS_LAMBDA_RUNTIME_API). Raises LocalLambdaError for setup
    problems; function failures are reported in the results.
    """
    if memory_mb <= 0 or timeout_s <= 0:
        raise LocalLambdaError("memory_mb and timeout_s must be positive")
    bodies = [_encode_event(i, event) for i, event in enumerate(events)]
    ric_dir = runtime_client_dir(python)
    info = _probe_python(python)
    pyver = f"{info.major}.{info.minor}"
    with tempfile.TemporaryDirectory(prefix="edgemaas-lambda-") as tmp:
        task_root = _prepare_package(Path(package), Path(tmp))
        opt = _prepare_layers(layers, Path(tmp))
        layer_paths = [opt / "python", opt / "python" / "lib" / f"python{pyver}" / "site-packages"]
        _check_handler(handler, [task_root, *layer_paths], task_root)
        child_env = _child_env(task_root=task_root, opt=opt, ric_dir=ric_dir, handler=handler,
                                function_name=function_name, memory_mb=memory_mb,
                                pyver=pyver, env=env)
        cfg = _Config(
            # -S: no site module, so the dev env's site-packages never reach sys.path.
            cmd=[python, "-S", "-s", "-m", "awslambdaric", handler],
            env=child_env, cwd=task_root,
            function_arn=(f"arn:aws:lambda:{child_env['AWS_REGION']}:{_ACCOUNT_ID}"
                          f":function:{function_name}"),
            memory_mb=memory_mb, timeout_s=timeout_s)
        return _run_events(cfg, bodies)


def _run_events(cfg: _Config, bodies: list[bytes]) -> list[InvokeResult]:
    """Feed events to runtime processes, replacing a process whenever it is gone."""
    results: list[InvokeResult] = []
    session: _Session | None = None
    try:
        for body in bodies:
            result = None
            for _attempt in range(2):  # A warm process that died between invokes: retry cold.
                if session is None or not session.alive():
                    if session is not None:
                        session.close()
                    session = cfg.new_session()
                result = _invoke_once(session, cfg, body)
                if result is not None:
                    break
                session.close()
                session = None
            if result is None:
                raise LocalLambdaError("the runtime process keeps exiting between invokes")
            # After a timeout, OOM, crash or init failure the process is gone, and the
            # next event gets a fresh one (cold start), like Lambda's sandbox reset.
            results.append(result)
    finally:
        if session is not None:
            session.close()
    return results
