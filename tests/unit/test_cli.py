"""The command line: help everywhere, exact error text, no tracebacks for user mistakes (no trained model needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edgemaas.cli import cli


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
                             "(built-ins: attention, cnn, linear, nlp, rnn)\n")


def test_garbage_model_file(runner: CliRunner, tmp_path: Path) -> None:
    garbage = tmp_path / "model.tflite"
    garbage.write_text("definitely not a model")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        result = runner.invoke(cli, ["package", str(garbage)])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith(f"Error: {garbage}: not a model format edgemaas reads; expected .tflite, .onnx")
    assert "Traceback" not in result.output


def test_invoke_missing_package(runner: CliRunner, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        result = runner.invoke(cli, ["invoke", "cnn", "--local", "--data", "{}"])
    assert result.exit_code == 1
    assert result.output == ("Error: cnn: no function zip there, and no dist/cnn/lambda/function.zip; "
                             "run `edgemaas package cnn` first\n")


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
