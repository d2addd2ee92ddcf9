"""`edgemaas bench --serving`: our edge server against the servers a user would otherwise deploy (BentoML, LitServe,
Seldon MLServer, KServe), side by side in one run.

Every server serves the same model file through the same runtime code (`edgemaas.runtime`, on PYTHONPATH), each in
its own venv under build/peers/<name>/ (numpy + the inference runtimes at the project's versions + the peer; ours
gets numpy + the runtimes only, as an edge bundle has), set up as its documentation sets up a custom model
(benchmarks/peers/). Each is started in its own process group, timed to its first answer, warmed up, and driven by
the load generator (loadgen.py) in another process over keep-alive HTTP on 127.0.0.1 at each concurrency; the peak
RSS of its process tree is sampled throughout. Runs only from a checkout of the repository (the peers' service
files are not in the wheel).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from edgemaas.errors import UserError

REPO = Path(__file__).resolve().parents[2]
PEERS_SRC = REPO / "benchmarks" / "peers"
RUNTIME_DISTS = ("numpy", "ai-edge-litert", "onnxruntime")
START_TIMEOUT_S = 300.0
MAX_BATCH = 32
MAX_WAIT_MS = 2.0


@dataclass(frozen=True)
class ServerSpec:
    server: str  # row id: edgemaas, edgemaas-nobatch, litserve-batch, litserve, ...
    venv: str  # build/peers/<venv>
    package: str | None  # the peer's PyPI name (None: ours)
    batching: bool
    protocol: str  # predict ({"inputs": [...]} to /predict) | oip (/v2/models/edge/infer) | v1 (KServe)


SERVERS = (
    ServerSpec("edgemaas", "edgemaas", None, True, "predict"),
    ServerSpec("edgemaas-nobatch", "edgemaas", None, False, "predict"),
    ServerSpec("litserve-batch", "litserve", "litserve", True, "predict"),
    ServerSpec("litserve", "litserve", "litserve", False, "predict"),
    ServerSpec("bentoml-batch", "bentoml", "bentoml", True, "predict"),
    ServerSpec("bentoml", "bentoml", "bentoml", False, "predict"),
    ServerSpec("mlserver-batch", "mlserver", "mlserver", True, "oip"),
    ServerSpec("mlserver", "mlserver", "mlserver", False, "oip"),
    ServerSpec("kserve", "kserve", "kserve", False, "v1"),
)
SERVER_IDS = tuple(s.server for s in SERVERS)
# MLServer 1.7.1's inference workers call asyncio.get_event_loop() in a fresh process, which uvloop 0.22+ refuses
# ("There is no current event loop"): every worker dies and the model never loads. uvloop 0.21 is what it was
# released against.
EXTRA_REQUIREMENTS = {"mlserver": ["uvloop<0.22"]}

Report = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# -- venvs ------------------------------------------------------------------------------------------------------------

def runtime_pins() -> list[str]:
    """numpy and the inference runtimes at this environment's versions: every server runs the same ones."""
    pins = []
    for dist in RUNTIME_DISTS:
        try:
            pins.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pins.append(dist)
    return pins


def ensure_venv(root: Path, name: str, package: str | None, report: Report = _quiet) -> Path:
    """build/peers/<name>/ with the peer and the pinned runtimes (made once; reused while its record matches)."""
    venv = root / name
    wanted = sorted(([package] if package else []) + EXTRA_REQUIREMENTS.get(name, []) + runtime_pins())
    record = venv / ".edgemaas-peer.json"
    python = venv / "bin" / "python"
    if python.exists() and record.exists() and json.loads(record.read_text()).get("packages") == wanted:
        return venv
    report(f"installing {name} into {venv} (once)")
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(venv)], f"create the venv {venv}")
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *wanted],
         f"install {' '.join(wanted)} into {venv}")
    record.write_text(json.dumps({"packages": wanted}) + "\n")
    return venv


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise UserError(f"could not {what}: {(done.stderr or done.stdout).strip()[-1500:]}")


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages"))
    if not found:
        raise UserError(f"{venv} has no site-packages")
    return found[0]


def installed_bytes(venv: Path, ours: bool) -> int:
    """What the server needs on disk: the venv's packages (less pip itself), plus our runtime and server code."""
    skip = {"pip", "setuptools", "_distutils_hack", "pkg_resources"}
    total = 0
    for entry in site_packages(venv).iterdir():
        if entry.name.split("-")[0] in skip:
            continue
        total += _tree_bytes(entry)
    if ours:
        total += _tree_bytes(REPO / "edgemaas" / "runtime") + _tree_bytes(REPO / "edgemaas" / "edge_entry")
    return total


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def package_version(venv: Path, package: str | None) -> str:
    if package is None:
        return _edgemaas_version()
    for info in site_packages(venv).glob("*.dist-info"):
        dist, _, version = info.name[: -len(".dist-info")].partition("-")
        if dist.lower().replace("_", "-") == package:
            return version
    return "unknown"


def _edgemaas_version() -> str:
    from edgemaas import __version__

    return __version__


# -- process trees ----------------------------------------------------------------------------------------------------

def tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of a process and all its descendants (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


class RssSampler:
    """Samples a process tree's RSS every `interval` s in a thread; `peak` since the last `reset()`."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_bytes(self.pid))
            self._stop.wait(self.interval)

    def reset(self) -> None:
        self.peak = tree_rss_bytes(self.pid)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def free_port(count: int = 1) -> int:
    """A port with `count` - 1 free ports after it (MLServer wants HTTP, gRPC and metrics ports)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + count < 65535 and all(_free(port + i) for i in range(1, count)):
            return port
    raise UserError("no free port range on 127.0.0.1")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


# -- servers ----------------------------------------------------------------------------------------------------------

@dataclass
class Running:
    spec: ServerSpec
    process: subprocess.Popen
    port: int
    path: str
    body: str
    log: Path
    start_s: float | None = None
    scratch: list[Path] = field(default_factory=list)


def request_for(spec: ServerSpec, sample: Any, text: bool) -> tuple[str, str]:
    """(path, body) of a one-sample request in the server's protocol."""
    if spec.protocol == "predict":
        return "/predict", json.dumps({"inputs": [sample]})
    if spec.protocol == "v1":
        return "/v1/models/edge:predict", json.dumps({"instances": [sample]})
    if text:
        tensor = {"name": "input", "shape": [1], "datatype": "BYTES", "data": [sample]}
    else:
        import numpy as np

        array = np.asarray([sample], dtype=np.float32)
        tensor = {"name": "input", "shape": list(array.shape), "datatype": "FP32", "data": array.ravel().tolist()}
    return "/v2/models/edge/infer", json.dumps({"inputs": [tensor]})


def start_server(spec: ServerSpec, venv: Path, model_dir: Path, sample: Any, text: bool, logs: Path) -> Running:
    port = free_port(3)
    python = str(venv / "bin" / "python")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{PEERS_SRC}", "PEER_MODEL_DIR": str(model_dir),
           "PEER_BATCH": "1" if spec.batching else "0", "PEER_MAX_BATCH": str(MAX_BATCH),
           "PEER_MAX_WAIT_MS": str(MAX_WAIT_MS), "PYTHONUNBUFFERED": "1", "BENTOML_DO_NOT_TRACK": "true",
           "BENTOML_HOME": str(venv / "bentoml-home"), "VIRTUAL_ENV": str(venv),
           "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    scratch: list[Path] = []
    if spec.venv == "edgemaas":
        command = [python, "-m", "edgemaas.edge_entry", "--model-dir", str(model_dir), "serve", "--port", str(port),
                   "--quiet", "--max-wait-ms", str(MAX_WAIT_MS)] + ([] if spec.batching else ["--max-batch", "1"])
        # batching on: our default --max-batch (32, fewer for large samples: cli.default_max_batch), as a user gets
    elif spec.venv == "litserve":
        command = [python, str(PEERS_SRC / "litserve_server.py"), str(port)]
    elif spec.venv == "kserve":
        command = [python, str(PEERS_SRC / "kserve_server.py"), str(port)]
    elif spec.venv == "bentoml":
        command = [str(venv / "bin" / "bentoml"), "serve", "bentoml_service:Edge", "--host", "127.0.0.1",
                   "--port", str(port)]
    elif spec.venv == "mlserver":
        folder = logs / f"mlserver-{spec.server}-{port}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "settings.json").write_text(json.dumps(
            {"http_port": port, "grpc_port": port + 1, "metrics_port": port + 2, "host": "127.0.0.1"}))
        settings: dict[str, Any] = {"name": "edge", "implementation": "mlserver_runtime.EdgeRuntime"}
        if spec.batching:
            settings.update(max_batch_size=MAX_BATCH, max_batch_time=MAX_WAIT_MS / 1000)
        (folder / "model-settings.json").write_text(json.dumps(settings))
        command = [str(venv / "bin" / "mlserver"), "start", str(folder)]
        scratch.append(folder)
    else:
        raise UserError(f"no way to start {spec.server}")
    path, body = request_for(spec, sample, text)
    log = logs / f"{spec.server}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=PEERS_SRC, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return Running(spec, process, port, path, body, log, scratch=scratch)


def wait_first_answer(running: Running, began: float, timeout_s: float = START_TIMEOUT_S) -> float:
    """Seconds from process start to the first 200 answer to a real request."""
    while time.monotonic() - began < timeout_s:
        if running.process.poll() is not None:
            raise UserError(f"{running.spec.server} exited with {running.process.returncode} before answering; "
                            f"see {running.log}: {_tail(running.log)}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=5)
            connection.request("POST", running.path, body=running.body.encode(),
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            connection.close()
            if response.status == 200:
                return time.monotonic() - began
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.02)
    raise UserError(f"{running.spec.server} gave no answer within {timeout_s:g} s; see {running.log}: "
                    f"{_tail(running.log)}")


def _tail(path: Path) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-5:])[-800:]
    except OSError:
        return ""


def stop_server(running: Running) -> None:
    """SIGTERM to the server's own process group, SIGKILL after 15 s."""
    pgid = running.process.pid  # start_new_session: the group is the server's
    try:
        os.killpg(pgid, signal.SIGTERM)
        running.process.wait(15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        running.process.wait(10)
    time.sleep(0.2)
    try:  # children that outlived their parent (multiprocessing workers) are still in the group
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def drive(running: Running, concurrency: int, requests: int, warmup: int) -> dict[str, Any]:
    """One load-generator run in its own process."""
    config = {"port": running.port, "path": running.path, "body": running.body, "concurrency": concurrency,
              "requests": requests, "warmup": warmup}
    done = subprocess.run([sys.executable, "-m", "edgemaas.bench.loadgen"], input=json.dumps(config),
                          capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        raise UserError(f"the load generator failed: {done.stderr.strip()[-1500:]}")
    return json.loads(done.stdout)
