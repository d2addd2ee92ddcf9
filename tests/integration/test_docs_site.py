"""The documentation site builds with `mkdocs build --strict`: a broken link, a missing anchor or a page left out of
the navigation fails the suite (and so CI), with mkdocs' own output."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_docs_site_builds_strictly(tmp_path: Path) -> None:
    assert importlib.util.find_spec("mkdocs") is not None, (
        "mkdocs is not installed: pip install -e '.[dev]' (or pip install 'mkdocs>=1.6')")
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "-d", str(site)],
                            cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{output}"
    assert "WARNING" not in output, output
    for page in ("index.html", "cli/index.html", "benchmarks/index.html", "developers-notes/index.html"):
        assert (site / page).is_file(), f"{page} missing from the built site:\n{output}"


def edge_flags(*command: str) -> set[str]:
    """The long options the edge bundle's command line (argparse) lists in its own --help."""
    # A wide terminal, so argparse never wraps a flag in the middle (`--min-body-rate-` / `kb`).
    env = {**os.environ, "COLUMNS": "1000"}
    result = subprocess.run([sys.executable, "-m", "edgemaas.edge_entry", *command, "--help"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", result.stdout)) - {"--help"}


def test_edge_bundle_options_are_documented() -> None:
    # The bundle's own command line is argparse, not click, so tests/unit/test_docs.py cannot walk it.
    page = (REPO / "docs" / "edge.md").read_text(encoding="utf-8")
    flags = {(name or "(top)", flag) for name in ("", "predict", "serve")
             for flag in edge_flags(*([name] if name else []))}
    assert {flag for _, flag in flags} >= {"--model-dir", "--input", "--port", "--max-request-bytes"}, flags
    missing = sorted(f"{name} {flag}" for name, flag in flags
                     if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", page))
    assert not missing, "edge bundle options not in docs/edge.md:\n  " + "\n  ".join(missing)
