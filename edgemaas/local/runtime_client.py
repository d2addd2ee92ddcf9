"""Install awslambdaric once per interpreter into a private cache, outside the dev environment."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgemaas.local.errors import LocalLambdaError
from edgemaas.workspace import cache_root

_PIP_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class PythonInfo:
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
def probe_python(python: str) -> PythonInfo:
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
    return PythonInfo(int(fields[0]), int(fields[1]), fields[2] if len(fields) > 2 else None)


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
    info = probe_python(python)
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
