"""Small runs of benchmarks/load_edge.py and benchmarks/lambda_soak.py, as scripts in their own processes: zero
errors, and memory that stops growing after warm-up. No timing is asserted (CI machines vary too much)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgemaas.pipeline import chosen_variant
from edgemaas.workspace import Workspace
from tests.conftest import REPO

pytestmark = pytest.mark.models("cnn")  # the built-ins `trained` holds here

MAX_GROWTH_MB = 10  # generous: a leak of even 1 KB per request would show as 2 MB over these runs


def run_script(name: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], check=False, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def test_edge_server_under_load(trained: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    done = run_script("load_edge.py", "--model-dir", str(chosen_variant(trained, "cnn")), "--requests", "2000",
                      "--concurrency", "32", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert (result["requests"], result["concurrency"], result["errors"]) == (2000, 32, 0), result["error_examples"]
    assert result["server_exit_code"] == 0  # SIGTERM after the run: a clean stop
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= result["latency_ms"]["max"]
    assert result["rss_mb_after_warmup"] > 0 and len(result["rss_samples"]) >= 2
    assert [done for _, done, _ in result["rss_samples"]] == sorted(done for _, done, _ in result["rss_samples"])
    assert result["rss_growth_mb"] < MAX_GROWTH_MB, result["rss_samples"]
    assert "| latency p50 / p90 / p99 / max |" in done.stdout and "| errors | 0 |" in done.stdout


def test_lambda_function_soak(trained: Workspace, packaged_cnn: Path, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = run_script("lambda_soak.py", "--workspace", str(trained.root), "--model", "cnn", "--package",
                      str(packaged_cnn), "--invokes", "200", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert (result["invokes"], result["cold_starts"], result["errors"]) == (200, 1, 0), result["error_examples"]
    assert len(result["max_memory_mb"]) == 200 and result["max_memory_mb_after_warmup"] > 0
    assert result["max_memory_growth_mb"] < MAX_GROWTH_MB, result["max_memory_mb"]
    assert result["baseline_growth_mb"] is not None  # the echo function ran on the same events
    assert "| Max Memory Used at the end |" in done.stdout and "| errors | 0 |" in done.stdout
