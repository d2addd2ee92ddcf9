"""Package time: load the model and answer one request with the runtime release that ships, not the dev one.

An older runtime may not know the op versions a newer converter wrote. The check runs in a fresh interpreter
(`-S -s`: no site-packages) whose path holds only the shipped `edgemaas/runtime` and the wheels: the package's own
runtime files, as they unzip, run by an interpreter of the target's Python version (this one, or python3.X on PATH)
when the target's architecture is this machine's; else the same releases built for this machine's Python (the op
set is the release's, not the platform's). When even those have no wheel here, the result says it was not executed.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from edgemaas.errors import UserError
from edgemaas.packaging.awslambda.bytecode import target_python
from edgemaas.packaging.common import dependencies

# The model's own example request (in full; with the smoke test's shapes), through the handler's HTTP entry point.
# A line once the model has loaded tells a failed (or crashed: SIGFPE, SIGSEGV) request from a failed load.
_PROBE = r"""
import json, sys
import numpy
from edgemaas.runtime import load_model
from edgemaas.runtime.service import Service
try:
    model = load_model(sys.argv[1])
except Exception as exc:
    print(json.dumps({"ok": False, "failed_at": "load", "error": f"{type(exc).__name__}: {exc}"})); sys.exit(0)
known = model.manifest.example_shapes
shapes = {t.name: list(known[t.name]) if t.name in known else [d if d >= 0 else 1 for d in t.shape]
          for t in model.tensor_inputs}
print(json.dumps({"loaded": True, "shapes": shapes}), flush=True)
path, body = model.example_request()
reply = Service(model).dispatch("POST", path, json.dumps(body))
print(json.dumps({"ok": reply.status == 200, "failed_at": "" if reply.status == 200 else "request",
                  "status": reply.status, "backend": model.backend.name, "numpy": numpy.__version__,
                  "error": "" if reply.status == 200 else json.dumps(reply.body)}))
"""
# What each runtime says when a model asks for more than it knows (LiteRT; onnxruntime 1.16.3, as measured):
# "Didn't find op for builtin opcode 'SOFTMAX' version '4'", "Opset 20 is under development [...] Current official
# support for domain ai.onnx is till opset 19.", "Unsupported model IR version: 10, max supported IR version: 9".
_TFLITE_OP = re.compile(r"op for builtin opcode '([^']+)' version '(\d+)'")
_ONNX_OPSET = re.compile(r"Opset (\d+) is under development.*?support for domain (\S+) is till opset (\d+)", re.S)
_ONNX_IR = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")


@dataclass
class LoadCheck:
    """How the model fared with the shipped runtime release, as recorded in package.json."""

    ok: bool
    executed: bool
    exact_wheels: bool  # the very files that go into the package, run by the target's Python version
    ran_with: str  # "Python 3.11 x86_64: ai-edge-litert==1.4.0, numpy==1.26.4"
    backend: str = ""
    error: str = ""
    failed_at: str = ""  # "load" (the runtime refused the model) or "request" (it loaded; the smoke request failed)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        if not self.executed:
            return f"model load not executed: {self.error}"
        how = "the shipped wheels" if self.exact_wheels else "the same runtime releases built for this machine, not " \
            "the shipped wheels (no interpreter of the target's Python and architecture here)"
        result = "loaded and answered a smoke request" if self.ok else f"FAILED: {self.error}"
        return f"{result} with {how} ({self.ran_with})"

    def op_problem(self) -> str | None:
        return op_version_problem(self.error)


def op_version_problem(message: str) -> str | None:
    """What a runtime did not know when it refused a model for an op, opset or format version newer than its own
    (`op SOFTMAX version 4`, `ai.onnx opset 20 (it supports up to 19)`), from its error message; else None."""
    found = _TFLITE_OP.search(message)
    if found:
        return f"op {found.group(1)} version {found.group(2)}"
    found = _ONNX_OPSET.search(message)
    if found:
        return f"{found.group(2)} opset {found.group(1)} (it supports up to {found.group(3)})"
    found = _ONNX_IR.search(message)
    return f"ONNX IR version {found.group(1)} (it reads up to {found.group(2)})" if found else None


def host_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def host_arch() -> str:
    return "arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"


def check_with_runtime(variant_dir: Path, requirements: list[str], python_version: str, arch: str,
                       cache: Path, shipped: dict[str, Path | bytes] | None = None) -> LoadCheck:
    """Load `variant_dir` and answer its first example request with `requirements` (see the module docstring).
    `shipped`: the package's runtime files (archive name -> file), run exactly as they ship when an interpreter of
    the target Python is here (this one, or python3.X on PATH) and the target architecture is this machine's."""
    interpreter = target_python(python_version) if arch == host_arch() and shipped is not None else None
    exact = interpreter is not None
    with tempfile.TemporaryDirectory(prefix="edgemaas-loadcheck-", dir=_scratch(cache)) as scratch:
        if interpreter is not None and shipped is not None:
            deps, ran_with = _stage(shipped, Path(scratch) / "deps"), f"Python {python_version} {arch}"
        else:
            interpreter, ran_with = sys.executable, f"Python {host_python()} {host_arch()}"
            try:
                deps = dependencies.install(requirements, host_python(), host_arch(), cache)
            except UserError as exc:
                return LoadCheck(ok=True, executed=False, exact_wheels=False,
                                 ran_with=f"{ran_with}: {', '.join(requirements)}",
                                 error=f"{', '.join(requirements)} have no wheel for this machine's Python "
                                       f"{host_python()} {host_arch()} to try the model with ({exc})")
        ran_with += f": {', '.join(requirements)}"
        code = Path(scratch) / "code"
        code.mkdir()
        _write_runtime(code)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PYTHONPATH"] = os.pathsep.join([str(code), str(deps)])
        done = subprocess.run([interpreter, "-S", "-s", "-c", _PROBE, str(variant_dir)], capture_output=True,
                              text=True, env=env, timeout=300)
    return probe_result(done.returncode, done.stdout, done.stderr, exact, ran_with)


def probe_result(returncode: int, stdout: str, stderr: str, exact: bool, ran_with: str) -> LoadCheck:
    """The LoadCheck the probe's output means: a load failure, a failed or crashed smoke request (with the shapes it
    sent), or an answer."""
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    loaded = next((line for line in lines if line.get("loaded")), None)
    shapes = ", ".join(f"{name} {shape}" for name, shape in (loaded or {}).get("shapes", {}).items())
    final = lines[-1] if lines and "ok" in lines[-1] else None
    if final is None:
        how = f"killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exit status {returncode}"
        tail = (stderr.strip().splitlines() or [""])[-1]
        error = f"({how})" + (f": {tail}" if tail else "")
        if loaded is None:
            return LoadCheck(ok=False, executed=True, exact_wheels=exact, ran_with=ran_with,
                             error=f"the process crashed {error}", failed_at="load")
        return LoadCheck(ok=False, executed=True, exact_wheels=exact, ran_with=ran_with, failed_at="request",
                         error=f"the smoke request ({shapes}) crashed the process {error}")
    error = final.get("error", "")
    if final.get("failed_at") == "request":
        error = f"the smoke request ({shapes}) failed: {error}"
    return LoadCheck(ok=final["ok"], executed=True, exact_wheels=exact, ran_with=ran_with,
                     backend=final.get("backend", ""), error=error, failed_at=final.get("failed_at", ""))


def _scratch(cache: Path) -> Path:
    """A folder beside the wheel cache: staged files are hard links there (same file system), not 90 MB copies."""
    folder = cache / "lambda-loadcheck"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _stage(files: dict[str, Path | bytes], root: Path) -> Path:
    """The package's runtime files laid out as they unzip (hard links; copies across file systems)."""
    for name, source in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            target.write_bytes(source)
            continue
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    return root


def _write_runtime(root: Path) -> None:
    """edgemaas/runtime/ under an empty edgemaas/__init__.py, as the package ships it."""
    (root / "edgemaas").mkdir()
    (root / "edgemaas" / "__init__.py").write_text("")
    source = Path(str(resources.files("edgemaas.runtime")))
    shutil.copytree(source, root / "edgemaas" / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
