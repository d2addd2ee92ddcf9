"""`edgemaas package --explain-runtime`: the runtime matrix, with no TARGET needed (issue 14)."""

from __future__ import annotations

from click.testing import CliRunner

from edgemaas.cli import cli
from edgemaas.packaging.common.matrix import explain_runtime


def test_explain_runtime_prints_the_matrix_and_needs_no_target() -> None:
    result = CliRunner().invoke(cli, ["package", "--explain-runtime"])
    assert result.exit_code == 0, result.output
    assert result.output == explain_runtime()
    for python in ("3.10", "3.11", "3.12", "3.13"):
        assert f"| python{python} | x86_64 |" in result.output and f"| python{python} | arm64 |" in result.output
