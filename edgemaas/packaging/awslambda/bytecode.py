"""Precompiled bytecode for packages whose code folder is read-only (Lambda's /var/task and /opt).

Without `__pycache__`, Python compiles every module it imports on every cold start and cannot save the result:
numpy alone costs ~120 ms of a ~220 ms init (measured by `edgemaas bench`). The `.pyc` files are *unchecked-hash*
pycs (PEP 552): valid whatever the files' timestamps (zips carry fixed ones), and the same bytes for the same source.
They are made by the target Python itself (the running one, `python3.X` on PATH, or one pyenv or uv installed) in a
fresh process, so that the marshalled bytes do not depend on this process's state.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_COMPILE = r"""
import importlib.util, json, sys
from importlib._bootstrap_external import _code_to_hash_pyc
jobs = json.load(sys.stdin)
done = []
for arcname, source, target in jobs:
    data = open(source, "rb").read()
    try:
        code = compile(data, arcname, "exec", dont_inherit=True, optimize=0)
    except (SyntaxError, ValueError):
        continue  # a file this Python cannot compile (never imported here): it ships without bytecode
    with open(target, "wb") as out:
        out.write(_code_to_hash_pyc(code, importlib.util.source_hash(data), checked=False))
    done.append(arcname)
print(json.dumps({"cache_tag": sys.implementation.cache_tag, "compiled": done}))
"""


def target_python(python_version: str) -> str | None:
    """An interpreter of the target version: this one, python3.X on PATH, or one installed by pyenv or uv (found
    even when not on PATH); None when there is none here."""
    if python_version == f"{sys.version_info.major}.{sys.version_info.minor}":
        return sys.executable
    for found in _candidates(python_version):
        try:  # a version manager's shim can exist without the version behind it
            done = subprocess.run([found, "-I", "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip() == python_version:
            return found
    return None


def _candidates(python_version: str) -> list[str]:
    name = f"python{python_version}"
    on_path = shutil.which(name)
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    uv = Path(os.environ.get("UV_PYTHON_INSTALL_DIR") or Path.home() / ".local" / "share" / "uv" / "python")
    installed = sorted(pyenv.glob(f"{python_version}.*/bin/{name}"), reverse=True) + \
        sorted(uv.glob(f"cpython-{python_version}.*/bin/{name}"), reverse=True)
    return ([on_path] if on_path else []) + [str(path) for path in installed]


def compile_bytecode(files: dict[str, Path | bytes], python: str) -> dict[str, bytes]:
    """`__pycache__/<module>.<tag>.pyc` entries for every .py in `files` (archive name -> source)."""
    sources = {name: source for name, source in files.items() if name.endswith(".py")}
    if not sources:
        return {}
    with tempfile.TemporaryDirectory(prefix="edgemaas-pyc-") as scratch:
        jobs = []
        for index, (name, source) in enumerate(sorted(sources.items())):
            path = Path(scratch) / f"{index}.py"
            if isinstance(source, Path):
                path = source
            else:
                path.write_bytes(source)
            jobs.append([name, str(path), str(Path(scratch) / f"{index}.pyc")])
        done = subprocess.run([python, "-I", "-S", "-c", _COMPILE], input=json.dumps(jobs), capture_output=True,
                              text=True, timeout=600, check=True)
        result = json.loads(done.stdout)
        compiled = set(result["compiled"])
        out = {}
        for name, _, target in jobs:
            if name in compiled:
                folder, _, file = name.rpartition("/")
                pyc = f"{folder + '/' if folder else ''}__pycache__/{file[:-3]}.{result['cache_tag']}.pyc"
                out[pyc] = Path(target).read_bytes()
        return out
