"""Killed or interrupted mid-way, `compress` and `package` leave nothing half-written that looks complete, and running
the same command again finishes the job. Real processes, real signals, kill points found by watching the files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Callable

import pytest

from edgemaas.runtime import read_manifest
from edgemaas.runtime.manifest import intact
from tests.conftest import MODELS

EDGEMAAS = [sys.executable, "-m", "edgemaas"]


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A project folder with a quick spec: the linear model with three variants."""
    spec = (MODELS / "linear.yaml").read_text() + "compress:\n  variants: [tflite-float32, tflite-int8, tflite-dynamic]\n"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "linear.yaml").write_text(spec)
    return tmp_path


def start(project: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*EDGEMAAS, *args], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def wait_for(process: subprocess.Popen[str], seen: Callable[[], bool], what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not seen():
        if process.poll() is not None:
            raise AssertionError(f"the command ended before {what}: {process.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def hidden_entry(directory: Path, prefix: str) -> Callable[[], bool]:
    """True once this run makes a temporary entry (.NAME...tmp) in directory: the stage is writing. (Entries left by
    an earlier killed run don't count: the stage deletes and remakes them.)"""
    since = time.time()

    def seen() -> bool:
        try:
            return directory.exists() and any(p.name.startswith(prefix) and p.lstat().st_mtime >= since
                                              for p in directory.iterdir())
        except FileNotFoundError:  # removed while we looked
            return False

    return seen


def assert_nothing_looks_complete_but_is_not(project: Path) -> None:
    """Every manifest on disk names an intact model file; every record and zip that exists is whole."""
    build, dist = project / "build", project / "dist"
    for manifest_path in build.rglob("manifest.json") if build.exists() else []:
        if any(part.startswith(".") for part in manifest_path.relative_to(build).parts):
            continue  # a temporary folder: not yet renamed into place, never read as a result
        assert intact(manifest_path.parent, read_manifest(manifest_path.parent)), manifest_path
    for record in [*(build.rglob("selection.json") if build.exists() else []),
                   *(dist.rglob("*.json") if dist.exists() else [])]:
        json.loads(record.read_text())
    package = dist / "linear" / "lambda" / "package.json"
    zip_path = dist / "linear" / "lambda" / "function.zip"
    if zip_path.exists():
        with zipfile.ZipFile(zip_path) as archive:
            assert archive.testzip() is None
        if package.exists():
            from edgemaas.runtime.manifest import sha256_file

            recorded = json.loads(package.read_text())
            assert recorded["sha256"] == sha256_file(zip_path) or not recorded.get("input_hash")


def test_killed_compress_and_package_leave_nothing_half_written_and_a_rerun_finishes(project: Path) -> None:
    spec = "models/linear.yaml"
    model_dir = project / "build" / "linear"

    # Killed (SIGKILL, the whole process group) while training writes the float model.
    seen = hidden_entry(model_dir, ".keras-float32.tmp")
    run = start(project, "compress", spec)
    wait_for(run, seen, "training to write")
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert_nothing_looks_complete_but_is_not(project)
    assert not (model_dir / "keras-float32" / "manifest.json").exists()

    # Killed (the CLI process alone, SIGKILL) while the full-int8 pass runs in its child process.
    seen = hidden_entry(model_dir, ".tflite-int8.tmp")
    run = start(project, "compress", spec)
    wait_for(run, seen, "the int8 pass to start")
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert_nothing_looks_complete_but_is_not(project)
    assert not (model_dir / "tflite-int8" / "manifest.json").exists()
    assert (model_dir / "tflite-float32" / "manifest.json").exists()  # finished before the kill: kept

    # Ctrl-C (SIGINT) during the next pass: a short message, no traceback, exit 130.
    seen = hidden_entry(model_dir, ".tflite-")
    run = start(project, "compress", spec)
    wait_for(run, seen, "a pass to start")
    os.kill(run.pid, signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    assert "Interrupted. Nothing half-written was left behind; run the same command again to finish." in stderr
    assert "Traceback" not in stderr
    assert_nothing_looks_complete_but_is_not(project)

    # Killed while the Lambda zip is being written.
    lambda_dir = project / "dist" / "linear" / "lambda"
    seen = hidden_entry(lambda_dir, ".function.zip")
    run = start(project, "package", spec, "--layout", "zip")
    wait_for(run, seen, "the zip to be written")
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert_nothing_looks_complete_but_is_not(project)
    assert not (lambda_dir / "function.zip").exists()

    # The same command again finishes the job, redoing only what did not finish.
    float_made = (model_dir / "tflite-float32" / "manifest.json").stat().st_mtime_ns
    done = subprocess.run([*EDGEMAAS, "package", spec, "--layout", "zip"], cwd=project, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert_nothing_looks_complete_but_is_not(project)
    assert (model_dir / "tflite-float32" / "manifest.json").stat().st_mtime_ns == float_made
    for variant in ("keras-float32", "tflite-float32", "tflite-int8", "tflite-dynamic"):
        assert intact(model_dir / variant, read_manifest(model_dir / variant)), variant
    record = json.loads((lambda_dir / "package.json").read_text())
    with zipfile.ZipFile(lambda_dir / "function.zip") as archive:
        assert "model/manifest.json" in archive.namelist()
    assert record["variant"] == json.loads((model_dir / "selection.json").read_text())["chosen"]["tflite"]
    leftovers = [p for p in project.rglob(".*.tmp*") if p.exists()]
    assert not [p for p in leftovers if p.parent == lambda_dir], leftovers
