"""The command line: help everywhere, exact error text, no tracebacks for user mistakes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgemaas.cli import cli
from edgemaas.workspace import Workspace
from tests.conftest import MODELS
from tests.unit.test_cli import runner  # noqa: F401 (a fixture)

pytestmark = pytest.mark.models("cnn")  # the built-ins `trained` holds here

IMAGE = [[0, 0, 5, 13, 9, 1, 0, 0]] * 8


def test_invoke_bad_json_is_a_usage_error(runner: CliRunner, packaged_cnn: Path) -> None:
    result = runner.invoke(cli, ["invoke", str(packaged_cnn), "--local", "--data", "{inputs: 1}"])
    assert result.exit_code == 2
    assert ("Invalid value for --data: not valid JSON: Expecting property name enclosed in double quotes at line 1 "
            "column 2") in result.output


def test_invoke_needs_exactly_one_data_source(runner: CliRunner, packaged_cnn: Path) -> None:
    result = runner.invoke(cli, ["invoke", str(packaged_cnn), "--local"])
    assert result.exit_code == 2
    assert "Error: give the event with exactly one of --data or --data-file" in result.output


def test_local_invoke_prints_response_and_report(runner: CliRunner, packaged_cnn: Path) -> None:
    result = runner.invoke(cli, ["invoke", str(packaged_cnn), "--local", "--data", json.dumps({"inputs": [IMAGE]})])
    assert result.exit_code == 0, result.output
    assert '"label"' in result.output and '"model": "cnn"' in result.output
    assert "REPORT RequestId:" in result.output and "Init Duration:" in result.output


def test_local_invoke_bad_request_exits_nonzero(runner: CliRunner, packaged_cnn: Path, tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"inputs": [[1, 2]]}))
    result = runner.invoke(cli, ["invoke", str(packaged_cnn), "--local", "--data-file", str(event)])
    assert result.exit_code == 1
    assert ("Error: the function rejected the request: inputs[0]: expected a list of length 8, got length 2; "
            "expected a batch of shape [N, 8, 8]") in result.output


def test_package_unknown_variant(runner: CliRunner, trained: Workspace) -> None:
    cwd = os.getcwd()
    os.chdir(trained.root)
    try:
        result = runner.invoke(cli, ["package", str(MODELS / "cnn.yaml"), "--variant", "tflite-int4"])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 1
    assert result.output.endswith("Error: cnn: no variant 'tflite-int4' was built (built: keras-float32, "
                                  "onnx-float32, tflite-float16, tflite-float32, tflite-int8)\n")
