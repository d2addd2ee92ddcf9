"""The command line: help everywhere, exact error text, no tracebacks for user mistakes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgemaas.cli import cli
from edgemaas.workspace import Workspace
from tests.integration.aws_fixtures import moto_server  # noqa: F401 (a fixture)
from tests.conftest import MODELS

IMAGE = [[0, 0, 5, 13, 9, 1, 0, 0]] * 8


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_help_with_an_example(runner: CliRunner, name: str) -> None:
    command = cli.commands[name]
    assert command.help and "Example" in command.help, f"{name} lacks help with an example"
    for param in command.params:
        if param.param_type_name == "option" and param.name != "help":
            assert param.help, f"{name} --{param.name} lacks help"
    result = runner.invoke(cli, [name, "--help"])
    assert result.exit_code == 0 and "Example" in result.output


def test_bad_spec_prints_error_without_traceback(runner: CliRunner, tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nmodel: {architecture: cnn}\ndata: {dataset: digits}\ntrain: {epochs: -1}\n")
    result = runner.invoke(cli, ["train", str(spec)])
    assert result.exit_code == 1
    assert result.output == (f"Error: {spec}: invalid spec:\n"
                             "  train.epochs: Input should be greater than or equal to 1 (got -1)\n")


def test_unknown_package_target(runner: CliRunner, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        result = runner.invoke(cli, ["package", "nothing-here"])
    assert result.exit_code == 1
    assert result.output == ("Error: nothing-here: no such spec, model file or built-in model name "
                             "(built-ins: none found)\n")


def test_garbage_model_file(runner: CliRunner, tmp_path: Path) -> None:
    garbage = tmp_path / "model.tflite"
    garbage.write_text("definitely not a model")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        result = runner.invoke(cli, ["package", str(garbage)])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith(f"Error: {garbage}: not a model format edgemaas reads; expected .tflite, .onnx")
    assert "Traceback" not in result.output


def test_remote_invoke_needs_a_deployed_function(runner: CliRunner, packaged_cnn: Path,
                                                 moto_server: object) -> None:  # noqa: F811
    result = runner.invoke(cli, ["invoke", str(packaged_cnn), "--data", "{}"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: edgemaas-cnn is not deployed in us-east-1; deploy it first")


def test_invoke_bad_json_is_a_usage_error(runner: CliRunner, packaged_cnn: Path) -> None:
    result = runner.invoke(cli, ["invoke", str(packaged_cnn), "--local", "--data", "{inputs: 1}"])
    assert result.exit_code == 2
    assert ("Invalid value for --data: not valid JSON: Expecting property name enclosed in double quotes at line 1 "
            "column 2") in result.output


def test_invoke_needs_exactly_one_data_source(runner: CliRunner, packaged_cnn: Path) -> None:
    result = runner.invoke(cli, ["invoke", str(packaged_cnn), "--local"])
    assert result.exit_code == 2
    assert "Error: give the event with exactly one of --data or --data-file" in result.output


def test_invoke_missing_package(runner: CliRunner, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        result = runner.invoke(cli, ["invoke", "cnn", "--local", "--data", "{}"])
    assert result.exit_code == 1
    assert result.output == ("Error: cnn: no function zip there, and no dist/cnn/lambda/function.zip; "
                             "run `edgemaas package cnn` first\n")


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


def test_package_rejects_unsupported_python(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["package", "cnn", "--python-version", "3.9"])
    assert result.exit_code == 2
    assert "Invalid value for --python-version: give a Python from 3.10 to 3.13" in result.output


def test_debug_shows_the_traceback(runner: CliRunner, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        result = runner.invoke(cli, ["--debug", "package", "nothing-here"])
    assert result.exit_code == 1
    assert isinstance(result.exception, Exception) and "nothing-here" in str(result.exception)


def test_bench_without_built_models_says_what_to_do(runner: CliRunner, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        result = runner.invoke(cli, ["bench"])
    assert result.exit_code == 1
    assert result.output == "Error: no built models in build; run `edgemaas build` first\n"
