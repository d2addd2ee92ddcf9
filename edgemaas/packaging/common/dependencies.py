"""The inference runtime's wheels for a target Python and architecture, installed with pip's cross-platform flags.

Only numpy and the one runtime a model needs go in: `--no-deps`, because ai-edge-litert's and onnxruntime's
interpreters import numpy alone (their other requirements serve converters and tools we do not ship). For Lambda the
versions come from `matrix.plan` (the ones installed here where the runtime's glibc allows, else older releases whose
ELF files fit); `requirements_for` pins the ones installed here (edge bundles, benchmarks).
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from edgemaas.errors import UserError
from edgemaas.fsutil import atomic_dir

RUNTIME_FOR_FORMAT = {"tflite": "ai-edge-litert", "onnx": "onnxruntime"}
PLATFORM_TAGS = {
    # ai-edge-litert publishes manylinux_2_27 wheels; numpy and onnxruntime use 2014 (2_17) or 2_28.
    "x86_64": ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64"],
    "arm64": ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64"],
}
# Which wheels each Lambda runtime gets (their glibc needs read from the ELF files): packaging/common/matrix.py.


def pinned(distribution: str) -> str:
    try:
        return f"{distribution}=={metadata.version(distribution)}"
    except metadata.PackageNotFoundError:
        return distribution


def requirements_for(model_format: str) -> list[str]:
    return [pinned("numpy"), pinned(RUNTIME_FOR_FORMAT[model_format])]


def install(requirements: list[str], python_version: str, arch: str, cache: Path) -> Path:
    """Install wheels for (python_version, arch) into a cached folder and return it. Reused while inputs match."""
    key = "-".join([f"py{python_version}", arch, *(r.replace("==", "-") for r in requirements)])
    target = cache / "lambda-deps" / key
    if (target / ".complete").exists():
        return target
    with atomic_dir(target) as tmp:  # pip fills a staging folder; it replaces target only when complete
        command = [sys.executable, "-m", "pip", "install", *_cross_platform(python_version, PLATFORM_TAGS[arch]),
                   "--target", str(tmp), *requirements]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise UserError(_explain_pip_failure(done.stderr, requirements, python_version, arch))
        (tmp / ".complete").write_text(" ".join(requirements) + "\n")
    return target


def download(requirements: list[str], python_version: str, arch: str, cache: Path,
             platform_tags: list[str] | None = None, hint: str | None = None) -> Path:
    """Download the wheel files themselves (for an offline `pip install --no-index --find-links DIR` on a device)
    for (python_version, arch) into a cached folder and return it. Same flags as `install`; reused while inputs
    match. `platform_tags` overrides the manylinux tags of `arch`; `hint` replaces the Lambda advice on failure."""
    safe = [re.sub(r"[^A-Za-z0-9._-]+", "_", r.replace("==", "-")) for r in requirements]
    target = cache / "wheels" / "-".join([f"py{python_version}", arch, *safe])
    if (target / ".complete").exists():
        return target
    with atomic_dir(target) as tmp:
        command = [sys.executable, "-m", "pip", "download",
                   *_cross_platform(python_version, platform_tags or PLATFORM_TAGS[arch]), "--dest", str(tmp),
                   *requirements]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise UserError(_explain_pip_failure(done.stderr, requirements, python_version, arch, hint))
        (tmp / ".complete").write_text(" ".join(requirements) + "\n")
    return target


def _cross_platform(python_version: str, platform_tags: list[str]) -> list[str]:
    """pip flags for binary wheels of another platform: no dependencies (the interpreters import numpy alone)."""
    return ["--quiet", "--disable-pip-version-check", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
            "--python-version", python_version, *[arg for tag in platform_tags for arg in ("--platform", tag)]]


_LAMBDA_HINT = ("Try another --python-version (Lambda runs 3.10 to 3.13) or --arch, or a model format served by the "
                "other runtime (ai-edge-litert for .tflite, onnxruntime for .onnx).")


def _explain_pip_failure(stderr: str, requirements: list[str], python_version: str, arch: str,
                         hint: str | None = None) -> str:
    missing = re.search(r"No matching distribution found for (\S+)", stderr)
    if missing:
        return (f"{missing.group(1)} has no wheel for Python {python_version} on {arch} Linux "
                f"(manylinux). {hint or _LAMBDA_HINT}")
    tail = "\n".join(stderr.strip().splitlines()[-5:])
    return f"pip could not install {' '.join(requirements)} for Python {python_version} {arch}:\n{tail}"
