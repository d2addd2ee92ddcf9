"""The documentation site builds with `mkdocs build --strict`: a broken link, a missing anchor or a page left out of
the navigation fails the suite (and so CI), with mkdocs' own output."""

from __future__ import annotations

import importlib.util
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
