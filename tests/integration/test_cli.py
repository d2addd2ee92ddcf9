"""The command line against a real moto_server: remote invoke of a function that was never deployed."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from edgemaas.cli import cli
from tests.integration.aws_fixtures import moto_server  # noqa: F401 (a fixture)
from tests.unit.test_cli import runner  # noqa: F401 (a fixture)


def test_remote_invoke_needs_a_deployed_function(runner: CliRunner, packaged_cnn: Path,
                                                 moto_server: object) -> None:  # noqa: F811
    result = runner.invoke(cli, ["invoke", str(packaged_cnn), "--data", "{}"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: edgemaas-cnn is not deployed in us-east-1; deploy it first")
