"""The serving benchmark's small mode (issue 16) against a real peer: LitServe, the lightest, installed by the
benchmark itself into build/peers/litserve/ (reused when there). Checks the run, not the timings: every row is
there, with the keys the issue names, and no errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgemaas.workspace import Workspace
from tests.conftest import REPO

pytestmark = pytest.mark.models("cnn")

KEYS = {"server", "model", "concurrency", "requests", "errors", "rps", "p50_ms", "p99_ms", "rss_mb", "start_s"}


def test_small_mode_against_litserve_has_every_row_and_no_errors(trained: Workspace, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "serving_peers.py"), "--small", "--workspace",
                           str(trained.root), "--servers", "edgemaas", "litserve-batch", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "serving.json").read_text())
    rows = result["rows"]
    assert {(r["server"], r["concurrency"]) for r in rows} == {(s, c) for s in ("edgemaas", "litserve-batch")
                                                              for c in (1, 8, 32)}
    for row in rows:
        assert KEYS <= set(row), row
        assert row["model"] == "cnn"
        assert row["requests"] == 100
        assert row["errors"] == 0, row
        assert row["rps"] > 0 and row["rss_mb"] > 0 and row["start_s"] > 0
    assert result["versions"]["litserve-batch"].startswith("0.")
    assert {g["model"] for g in result["goals"]} == {"cnn"}
    table = (tmp_path / "serving.md").read_text()
    assert "| cnn | litserve-batch | 32 |" in table and "| cnn | edgemaas | 32 |" in table
    assert (tmp_path / "serving.png").stat().st_size > 0
