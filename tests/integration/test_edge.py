"""The edge bundle: its contents and determinism, and the four built-in models served from it for real.

One fresh virtual environment (python -m venv), shared by the four bundles, gets only the bundles' requirements,
installed offline from the wheels a bundle vendors. In it, `python -m <name>_edge predict` and `serve` must give
exactly what the runtime gives in this process on the held-out samples, and the held-out metric recomputed from the
bundle's answers must equal the one the build recorded in the variant's manifest.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edgemaas.errors import UserError
from edgemaas.compress.evaluation import metrics
from edgemaas.packaging.edge.bundle import FIXED_MTIME, EdgeBundle, package_edge
from edgemaas.pipeline import chosen_variant
from edgemaas.runtime import load_model, read_manifest
from edgemaas.runtime.service import Service
from edgemaas.workspace import Workspace
from tests.conftest import BUILTINS
from tests.functional.test_handler import CONTEXT, http_v2, load_handler

SYSTEMD_HINT = "systemd-analyze is missing: apt-get install systemd"


@dataclass
class Unpacked:
    bundle: EdgeBundle
    root: Path  # the extracted top folder, <name>-edge/
    variant_dir: Path


@pytest.fixture(scope="module")
def bundles(trained: Workspace, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Unpacked]:
    """Each built-in model's gate-chosen TFLite variant as an offline bundle (--with-deps), extracted."""
    root = tmp_path_factory.mktemp("bundles")
    unpacked = {}
    for name in BUILTINS:
        variant_dir = chosen_variant(trained, name)
        bundle = package_edge(variant_dir, trained.dist / name / "edge", trained.cache(), with_deps=True)
        unpacked[name] = Unpacked(bundle, _extract(Path(bundle.tar_path), root / name) / bundle.top_dir, variant_dir)
    return unpacked


@pytest.fixture(scope="module")
def venv(bundles: dict[str, Unpacked], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ONE fresh venv for the four bundles, with only their requirements, from the vendored wheels, offline."""
    requirement_files = {(b.root / "requirements.txt").read_text() for b in bundles.values()}
    assert len(requirement_files) == 1, requirement_files  # the four share numpy + ai-edge-litert, pinned
    path = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, capture_output=True)
    source = bundles["cnn"].root
    done = subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                           "--no-deps", "--no-index", "--find-links", str(source / "wheels"), "-r",
                           str(source / "requirements.txt")],
                          capture_output=True, text=True, env=_clean_env(PIP_CONFIG_FILE=os.devnull))
    assert done.returncode == 0, done.stderr
    listed = subprocess.run([str(path / "bin" / "python"), "-m", "pip", "list", "--disable-pip-version-check",
                             "--no-index", "--format", "json"],
                            capture_output=True, text=True, check=True, env=_clean_env(PIP_CONFIG_FILE=os.devnull))
    installed = {p["name"].lower() for p in json.loads(listed.stdout)} - {"pip", "setuptools", "wheel"}
    assert installed == {"numpy", "ai-edge-litert"}
    return path


# ---------------------------------------------------------------------------------------------------------------
# The four models, from a fresh venv


@pytest.mark.parametrize("name", BUILTINS)
def test_predict_in_a_fresh_venv_equals_the_build_time_evaluation(name: str, bundles: dict[str, Unpacked],
                                                                  venv: Path, trained: Workspace,
                                                                  tmp_path: Path) -> None:
    unpacked = bundles[name]
    x, y = _held_out(trained, name)
    here = load_model(unpacked.variant_dir)
    answers: list[dict[str, Any]] = []
    for start in range(0, len(x), here.describe()["max_batch"]):
        chunk = x[start:start + here.describe()["max_batch"]].tolist()
        request = tmp_path / f"request-{start}.json"
        request.write_text(json.dumps({"inputs": chunk}))
        done = _run(venv, unpacked, "predict", "--input", str(request))
        assert done.returncode == 0, done.stderr
        body = json.loads(done.stdout)
        assert (body["model"], body["variant"]) == (name, unpacked.bundle.variant)
        assert body["predictions"] == here.predict(chunk)
        answers += body["predictions"]
    manifest = read_manifest(unpacked.variant_dir)
    recorded = manifest.metrics["held_out"]
    assert _metric_from_answers(manifest, answers, y) == recorded


@pytest.mark.parametrize("name", BUILTINS)
def test_serve_in_a_fresh_venv(name: str, bundles: dict[str, Unpacked], venv: Path, trained: Workspace,
                               tmp_path: Path) -> None:
    unpacked = bundles[name]
    x, _ = _held_out(trained, name)
    here = load_model(unpacked.variant_dir)
    batch = x[:64].tolist()
    expected = here.predict(batch)
    with _server(venv, unpacked, tmp_path / "serve.log") as (process, port):
        status, health = _request(port, "GET", "/health")
        assert status == 200 and health == {"status": "ok", "model": name, "variant": unpacked.bundle.variant,
                                            "sha256": unpacked.bundle.model_sha256, "backend": "ai-edge-litert"}
        status, description = _request(port, "GET", "/")
        assert status == 200 and description == {**here.describe(), "backend": "ai-edge-litert"}
        for path in ("/", "/predict"):
            status, body = _request(port, "POST", path, json.dumps({"inputs": batch}))
            assert status == 200 and body["predictions"] == expected

        # Bad requests: 4xx JSON errors, the same ones the shared contract gives in this process.
        service = Service(here)
        for raw in (b"{not json", b"[1, 2]", b'{"inputs": [], "extra": 1}', b'{"inputs": "x"}', b"\xff\xfe"):
            status, body = _request(port, "POST", "/predict", raw)
            reply = service.handle_body(raw)
            assert (status, body) == (reply.status, reply.body)
            assert 400 <= status < 500 and body["error"]["type"] == "InvalidRequest"
        assert _request(port, "GET", "/nope")[0] == 404
        assert _request(port, "DELETE", "/")[1]["error"]["type"] == "MethodNotAllowed"

        # Concurrent requests share the interpreters safely: every answer is the right one.
        results: list[Any] = []
        threads = [threading.Thread(target=lambda i=i: results.append(
            (i, _request(port, "POST", "/predict", json.dumps({"inputs": x[i:i + 8].tolist()}))))) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(i for i, _ in results) == list(range(16))
        for i, (status, body) in results:
            assert status == 200 and body["predictions"] == here.predict(x[i:i + 8].tolist())

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    log = (tmp_path / "serve.log").read_text()
    assert "SIGTERM: no new connections" in log and log.rstrip().endswith("stopped")
    assert "Traceback" not in log
    assert re.search(r'127\.0\.0\.1 "POST /predict HTTP/1\.1" 200 \d+ [\d.]+ms', log)  # the access log


# ---------------------------------------------------------------------------------------------------------------
# The server's limits (cnn)


def test_server_limits_answer_quickly_and_it_keeps_serving(bundles: dict[str, Unpacked], venv: Path,
                                                           trained: Workspace, tmp_path: Path) -> None:
    unpacked = bundles["cnn"]
    x, _ = _held_out(trained, "cnn")
    good = json.dumps({"inputs": x[:2].tolist()})
    args = ("--max-connections", "3", "--read-timeout", "2", "--max-request-bytes", "20000")
    with _server(venv, unpacked, tmp_path / "serve.log", *args) as (process, port):
        # Over the size limit: 413 from the Content-Length alone, before any body byte is sent.
        reply = _raw(port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 7000000\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 413 ") and b'"the request body exceeds 20000 bytes"' in reply
        reply = _raw(port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 7000000\r\n"
                           b"Expect: 100-continue\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in reply
        reply = _raw(port, b"POST / HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 413 ")
        # No Content-Length: 411; a malformed one, or a malformed request line: 400 (JSON, like every error).
        assert _raw(port, b"POST / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 411 ")
        for bad in (b"POST / HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n", b"GARBAGE\r\n\r\n"):
            reply = _raw(port, bad)
            assert reply.startswith(b"HTTP/1.1 400 ") and b'"type": "InvalidRequest"' in reply
        # A body that stops arriving: 408 after the read timeout.
        started = time.monotonic()
        reply = _raw(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inp")
        assert reply.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 5
        # Connections over the limit get an immediate 503; the server serves again once they close.
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            time.sleep(0.2)
            started = time.monotonic()
            reply = _raw(port, f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(good)}\r\n\r\n{good}".encode())
            assert reply.startswith(b"HTTP/1.1 503 ") and b'"Overloaded"' in reply
            assert time.monotonic() - started < 1
        finally:
            for sock in idle:
                sock.close()
        _wait(lambda: _request(port, "POST", "/predict", good)[0] == 200, "the server to serve again")
        # An idle keep-alive connection is closed after the read timeout.
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.settimeout(5)
            assert sock.recv(100) == b""
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0


def test_lambda_handler_and_edge_server_answer_bad_input_identically(bundles: dict[str, Unpacked], venv: Path,
                                                                     tmp_path: Path) -> None:
    unpacked = bundles["nlp"]
    handler = load_handler(str(unpacked.variant_dir))
    bodies = ["", "{", "null", '{"inputs": [1]}', '{"inputs": ["x"], "a": 1, "b": 2}', '{"inputs": ["' +
              "y" * 1001 + '"]}', '{"inputs": [' + "[" * 3000 + "]" * 3000 + "]}", '{"inputs": 1' + "0" * 5000 + "}"]
    with _server(venv, unpacked, tmp_path / "serve.log") as (_, port):
        for body in bodies:
            lambda_reply = handler.handler(http_v2(body), CONTEXT)
            status, edge_body = _request(port, "POST", "/predict", body.encode())
            assert status == lambda_reply["statusCode"] and 400 <= status < 500
            assert edge_body == json.loads(lambda_reply["body"])


# ---------------------------------------------------------------------------------------------------------------
# predict's errors, other formats and platforms


def test_predict_bad_input_prints_the_error_and_exits_1(bundles: dict[str, Unpacked], venv: Path,
                                                        tmp_path: Path) -> None:
    unpacked = bundles["cnn"]
    service = Service(load_model(unpacked.variant_dir))
    raw = b'{"inputs": [[1, 2, 3]]}'
    done = _run(venv, unpacked, "predict", "--input", "-", stdin=raw)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == f"Error: {service.handle_body(raw).error_message}"
    done = _run(venv, unpacked, "predict", "--input", str(tmp_path / "missing.json"))
    assert done.returncode == 1 and "Error: cannot read --input" in done.stderr
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (6 * 1024 * 1024 + 1))
    done = _run(venv, unpacked, "predict", "--input", str(big))
    assert done.returncode == 1 and done.stderr.strip().endswith("Error: the request body exceeds 6 MB")
    tampered = tmp_path / "model"
    shutil.copytree(unpacked.root / unpacked.bundle.module / "model", tampered)
    model_file = next(p for p in tampered.iterdir() if p.name != "manifest.json")
    model_file.write_bytes(model_file.read_bytes()[:-1])
    done = _run(venv, unpacked, "--model-dir", str(tampered), "describe")
    assert done.returncode == 1 and "does not match its manifest" in done.stderr
    for output in (done.stderr, _run(venv, unpacked, "predict", "--input", "-", stdin=raw).stderr):
        assert "Traceback" not in output


def test_onnx_bundle_serves_with_onnxruntime(trained: Workspace, tmp_path: Path) -> None:
    variant_dir = trained.variant_dir("cnn", "onnx-float32")
    bundle = package_edge(variant_dir, tmp_path / "dist", trained.cache())
    assert bundle.requirements[-1].startswith("onnxruntime==") and not bundle.with_deps
    root = _extract(Path(bundle.tar_path), tmp_path / "x") / bundle.top_dir
    x, _ = _held_out(trained, "cnn")
    done = subprocess.run([sys.executable, "-m", bundle.module, "predict", "--input", "-"], cwd=root,
                          input=json.dumps({"inputs": x[:5].tolist()}).encode(), capture_output=True,
                          env=_clean_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["predictions"] == load_model(variant_dir).predict(x[:5].tolist())


def test_bundle_contents_are_deterministic_and_reused(trained: Workspace, tmp_path: Path) -> None:
    variant_dir = chosen_variant(trained, "linear")
    first = package_edge(variant_dir, tmp_path / "a", trained.cache())
    second = package_edge(variant_dir, tmp_path / "b", trained.cache())
    assert (first.sha256, first.bytes) == (second.sha256, second.bytes) and not first.reused
    again = package_edge(variant_dir, tmp_path / "a", trained.cache())
    assert again.reused and again.sha256 == first.sha256
    with tarfile.open(first.tar_path) as archive:
        members = archive.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert all(m.mtime == FIXED_MTIME and m.uid == m.gid == 0 and m.uname == m.gname == "" for m in members)
    assert all(m.mode == (0o755 if m.isdir() else 0o644) for m in members)
    assert Path(first.tar_path).read_bytes()[4:8] == b"\0\0\0\0"  # no time in the gzip header
    top, package = "linear-edge", "linear-edge/linear_edge"
    files = {m.name for m in members if m.isfile()}
    assert {f"{top}/README.txt", f"{top}/requirements.txt", f"{top}/linear-edge.service",
            f"{top}/greengrass-recipe.yaml", f"{package}/__main__.py", f"{package}/__init__.py",
            f"{package}/edge_entry/cli.py", f"{package}/edge_entry/server.py", f"{package}/runtime/service.py",
            f"{package}/runtime/model.py", f"{package}/model/manifest.json",
            f"{package}/model/{read_manifest(variant_dir).model.file}"} <= files
    assert not any("/wheels/" in f or "__pycache__" in f for f in files)  # no --with-deps, no bytecode
    other = package_edge(variant_dir, tmp_path / "c", trained.cache(), platform="linux_aarch64")
    assert other.sha256 != first.sha256 and other.input_hash != first.input_hash
    recipe = yaml.safe_load(Path(other.recipe_path).read_text())
    assert recipe["Manifests"][0]["Platform"]["architecture"] == "aarch64"


def test_aarch64_wheels_are_vendored_for_aarch64(trained: Workspace, tmp_path: Path) -> None:
    bundle = package_edge(chosen_variant(trained, "linear"), tmp_path, trained.cache(), platform="linux_aarch64",
                          with_deps=True)
    python_tag = f"-cp{bundle.python_version.replace('.', '')}-"
    assert len(bundle.wheels) == 2
    assert all(w.endswith("_aarch64.whl") and python_tag in w for w in bundle.wheels), bundle.wheels


def test_armv7l_is_tflite_runtime_on_python_3_9_with_numpy_from_piwheels(trained: Workspace,
                                                                         tmp_path: Path) -> None:
    variant_dir = chosen_variant(trained, "cnn")
    with pytest.raises(UserError, match=r"tflite-runtime has 32-bit ARM wheels for Python 3\.7, 3\.9 only"):
        package_edge(variant_dir, tmp_path, trained.cache(), platform="linux_armv7l", python_version="3.11")
    with pytest.raises(UserError, match=r"--with-deps: numpy has no linux_armv7l wheel on PyPI"):
        package_edge(variant_dir, tmp_path, trained.cache(), platform="linux_armv7l", python_version="3.9",
                     with_deps=True)
    with pytest.raises(UserError, match="onnxruntime publishes no 32-bit ARM wheels"):
        package_edge(trained.variant_dir("cnn", "onnx-float32"), tmp_path, trained.cache(),
                     platform="linux_armv7l", python_version="3.9")
    bundle = package_edge(variant_dir, tmp_path, trained.cache(), platform="linux_armv7l", python_version="3.9")
    root = _extract(Path(bundle.tar_path), tmp_path / "x") / bundle.top_dir
    assert (root / "requirements.txt").read_text().splitlines() == [
        "--extra-index-url https://www.piwheels.org/simple", "numpy>=1.21.2,<2", "tflite-runtime==2.13.0"]
    assert any("piwheels" in w for w in bundle.warnings)
    assert yaml.safe_load((root / "greengrass-recipe.yaml").read_text())["Manifests"][0]["Platform"] == {
        "os": "linux", "architecture": "arm"}


@pytest.mark.parametrize("kwargs, fragment", [
    ({"platform": "linux_riscv64"}, "unknown platform 'linux_riscv64'; choose one of linux_x86_64, linux_aarch64"),
    ({"python_version": "3"}, "--python-version '3': expected 3.X"),
    ({"component_version": "1.0"}, "Greengrass takes major.minor.patch"),
])
def test_bad_options_are_refused(trained: Workspace, tmp_path: Path, kwargs: dict, fragment: str) -> None:
    with pytest.raises(UserError, match=re.escape(fragment)):
        package_edge(chosen_variant(trained, "cnn"), tmp_path, trained.cache(), **kwargs)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_keras_variant_is_refused(trained: Workspace, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="a keras model cannot ship to a device"):
        package_edge(trained.variant_dir("cnn", "keras-float32"), tmp_path, trained.cache())


# ---------------------------------------------------------------------------------------------------------------
# The systemd unit and the Greengrass recipe


def test_systemd_unit_verifies_and_is_hardened(bundles: dict[str, Unpacked], venv: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, SYSTEMD_HINT
    unpacked = bundles["rnn"]
    unit_name = f"{unpacked.bundle.top_dir}.service"
    text = (unpacked.root / unit_name).read_text()
    assert f"ExecStart=/opt/{unpacked.bundle.top_dir}/venv/bin/python -m {unpacked.bundle.module} serve" in text
    for setting in ("DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                    "PrivateTmp=yes", "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service"):
        assert setting in text
    # Verified as installed on a device: the bundle in place of /opt/<name>-edge, with its venv beside it.
    link = unpacked.root / "venv"
    if not link.exists():
        link.symlink_to(venv)
    unit = tmp_path / unit_name
    unit.write_text(text.replace(f"/opt/{unpacked.bundle.top_dir}", str(unpacked.root)))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr.strip() == "" and done.stdout.strip() == "", done.stderr
    done = subprocess.run([analyze, "security", "--offline=true", str(unit)], capture_output=True, text=True)
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout + done.stderr)
    assert exposure and float(exposure.group(1)) <= 2.0, done.stdout[-500:]


def test_greengrass_recipe_installs_and_runs_the_bundle(bundles: dict[str, Unpacked], tmp_path: Path) -> None:
    """The recipe's Install and Run scripts, with Greengrass's placeholders filled in as a core device would, on
    the bundle as an artifact: a venv of its own from the vendored wheels, then a server that answers."""
    unpacked = bundles["linear"]
    recipe = yaml.safe_load((unpacked.root / "greengrass-recipe.yaml").read_text())
    assert recipe["RecipeFormatVersion"] == "2020-01-25"
    assert recipe["ComponentName"] == "com.edgemaas.linear"
    assert re.fullmatch(r"\d+\.\d+\.\d+", recipe["ComponentVersion"])
    assert recipe["ComponentConfiguration"]["DefaultConfiguration"] == {"Host": "127.0.0.1", "Port": 8080}
    manifest = recipe["Manifests"][0]
    assert manifest["Platform"] == {"os": "linux", "architecture": "amd64"}
    assert manifest["Artifacts"] == [{"URI": unpacked.bundle.artifact_uri, "Unarchive": "NONE"}]
    assert unpacked.bundle.artifact_uri.startswith("s3://REPLACE-WITH-YOUR-BUCKET/edgemaas/linear/")
    assert Path(unpacked.bundle.recipe_path).read_text() == (unpacked.root / "greengrass-recipe.yaml").read_text()

    artifacts, work = tmp_path / "artifacts", tmp_path / "work"
    artifacts.mkdir()
    work.mkdir()
    shutil.copy(unpacked.bundle.tar_path, artifacts)
    port = _free_port()
    values = {"{artifacts:path}": str(artifacts), "{work:path}": str(work), "{configuration:/Host}": "127.0.0.1",
              "{configuration:/Port}": str(port)}
    lifecycle = manifest["Lifecycle"]
    env = _clean_env(PIP_CONFIG_FILE=os.devnull, **lifecycle["Setenv"])
    env["PATH"] = f"{_python3_dir(tmp_path)}:{env['PATH']}"  # the device's python3: this Python's base interpreter
    install = subprocess.run(["sh", "-c", _fill(lifecycle["Install"]["Script"], values)], env=env,
                             capture_output=True, text=True, timeout=lifecycle["Install"]["Timeout"])
    assert install.returncode == 0, install.stderr
    assert _fill(lifecycle["Install"]["Skipif"], values) == f"exists {work}/.installed-{unpacked.bundle.input_hash}"
    assert (work / f".installed-{unpacked.bundle.input_hash}").exists()
    with open(tmp_path / "run.log", "wb") as log:
        process = subprocess.Popen(["sh", "-c", _fill(lifecycle["Run"]["Script"], values)], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        _wait(lambda: _try_request(port, "/health") == 200, "the Greengrass-run server", process, tmp_path / "run.log")
        process.send_signal(signal.SIGTERM)  # `exec`: the signal reaches the server itself
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _extract(tar_path: Path, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path) as archive:
        archive.extractall(into, filter="data")
    return into


def _held_out(ws: Workspace, name: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(ws.data_file(name)) as data:
        return data["x_test"], data["y_test"]


def _metric_from_answers(manifest: Any, answers: list[dict[str, Any]], y: np.ndarray) -> dict[str, Any]:
    """The held-out metric as evaluation.metrics computes it, from the bundle's JSON answers alone."""
    post = manifest.postprocessing
    if manifest.task == "classification":
        chosen = [post["labels"].index(a["label"]) for a in answers]
        return metrics("classification", y, np.eye(len(post["labels"]))[chosen])
    return metrics("regression", y, np.asarray([a[post["names"][0]] for a in answers]))


def _clean_env(**extra: str) -> dict[str, str]:
    """What a device's shell has: no PYTHONPATH, no virtualenv of ours."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8", **extra}


def _run(venv: Path, unpacked: Unpacked, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """python -m <module> ARGS in the fresh venv, from the extracted bundle, as a device would run it."""
    done = subprocess.run([str(venv / "bin" / "python"), "-m", unpacked.bundle.module, *args], cwd=unpacked.root,
                          input=stdin, capture_output=True, env=_clean_env(), timeout=60, check=False)
    done.stdout, done.stderr = done.stdout.decode(), done.stderr.decode()
    return done


@contextmanager
def _server(venv: Path, unpacked: Unpacked, log_path: Path, *args: str) -> Iterator[tuple[subprocess.Popen, int]]:
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(venv / "bin" / "python"), "-m", unpacked.bundle.module, "serve", "--port",
                                    "0", *args], cwd=unpacked.root, stdout=log, stderr=subprocess.STDOUT,
                                   env=_clean_env())
    try:
        ports: list[int] = []

        def listening() -> bool:
            found = re.search(r"on http://127\.0\.0\.1:(\d+);", log_path.read_text())
            if found:
                ports.append(int(found.group(1)))
            return bool(found)

        _wait(listening, "the server to listen", process, log_path)
        yield process, ports[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait(condition: Any, what: str, process: subprocess.Popen | None = None, log: Path | None = None,
          timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            pytest.fail(f"exited with {process.returncode} while waiting for {what}:\n"
                        f"{log.read_text() if log else ''}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}" + (f":\n{log.read_text()}" if log else ""))


def _request(port: int, method: str, path: str, body: str | bytes | None = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.getheader("Content-Type") == "application/json"
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _try_request(port: int, path: str) -> int | None:
    try:
        return _request(port, "GET", path)[0]
    except OSError:
        return None


def _raw(port: int, data: bytes) -> bytes:
    """Send bytes as they are; return everything the server answers before it closes (or 5 s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fill(script: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        script = script.replace(key, value)
    assert not re.search(r"\{(artifacts|work|configuration):", script), script
    return script


def _python3_dir(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "device-bin"
    bin_dir.mkdir(exist_ok=True)
    link = bin_dir / "python3"
    if not link.exists():
        link.symlink_to(getattr(sys, "_base_executable", sys.executable))
    return bin_dir
