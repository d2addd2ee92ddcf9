"""`edgemaas deploy --snapstart` and `--memory auto` against a real moto_server (tests/integration/aws_fixtures.py).

moto 5 accepts `SnapStart` on create/update (boto3 validates the parameter against Lambda's real schema) but does not
store it: GetFunctionConfiguration always reports `{"ApplyOn": "None", "OptimizationStatus": "Off"}`. So these tests
prove the requests Lambda's API accepts and what the plan says; the stored setting is not observable here.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner

from edgemaas.cli import cli
from tests.integration.aws_fixtures import MotoServer, moto_server  # noqa: F401 (a fixture)
from tests.integration.test_deploy import FUNCTION, write_package


def run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def project(tmp_path: Path, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    monkeypatch.chdir(tmp_path)
    write_package(tmp_path)  # a python3.12 package, 256 MB
    return tmp_path


def _set_python(project: Path, python: str) -> None:
    record_path = project / "dist/tiny/lambda/package.json"
    record = json.loads(record_path.read_text())
    record["python_version"] = python
    record_path.write_text(json.dumps(record))


def test_snapstart_deploy_publishes_a_version_with_the_setting_accepted(project: Path) -> None:
    planned = run("deploy", "tiny", "--snapstart", "--dry-run")
    assert planned.exit_code == 0, planned.output
    assert "dry run" in planned.output
    result = run("deploy", "tiny", "--snapstart")
    assert result.exit_code == 0, result.output
    assert "deployed edgemaas-tiny version 1 → alias dev" in result.output
    client = boto3.client("lambda")
    assert client.get_alias(FunctionName=FUNCTION, Name="dev")["FunctionVersion"] == "1"
    assert "SnapStart" in client.get_function_configuration(FunctionName=FUNCTION, Qualifier="1")
    # Turning it off again is an ordinary configuration (the same parameter, ApplyOn None): accepted too.
    write_package(project, version="2")
    assert run("deploy", "tiny").exit_code == 0


def test_snapstart_is_refused_for_a_python311_package(project: Path) -> None:
    _set_python(project, "3.11")
    result = run("deploy", "tiny", "--snapstart")
    assert result.exit_code == 1
    assert "Error: " in result.output and "SnapStart for Python needs python3.12 or later" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(client_error()):
        boto3.client("lambda").get_function(FunctionName=FUNCTION)  # nothing was deployed


def client_error() -> type[Exception]:
    from botocore.exceptions import ClientError

    return ClientError


def _write_selection(project: Path, memory_mb: int | None) -> None:
    selection = {"max_metric_drop": 1.0, "objective": "cost", "size": "gzip",
                 "chosen": {"tflite": "tflite-int8", "onnx": None}, "default": "tflite-int8", "fallback": [],
                 "unit": "accuracy points"}
    if memory_mb is not None:
        selection["lambda"] = {"formats": {"tflite": {"variant": "tflite-int8", "memory_mb": memory_mb}}}
    (project / "build" / "tiny").mkdir(parents=True, exist_ok=True)
    (project / "build" / "tiny" / "selection.json").write_text(json.dumps(selection))


def test_memory_auto_takes_what_the_gate_priced(project: Path) -> None:
    _write_selection(project, 1769)
    result = run("deploy", "tiny", "--memory", "auto")
    assert result.exit_code == 0, result.output
    assert "memory 1769 MB: the cheapest the gate priced for tflite-int8" in result.output
    assert boto3.client("lambda").get_function_configuration(FunctionName=FUNCTION)["MemorySize"] == 1769


def test_memory_auto_without_a_price_keeps_the_packages(project: Path) -> None:
    _write_selection(project, None)
    result = run("deploy", "tiny", "--memory", "auto")
    assert result.exit_code == 0, result.output
    assert "memory 256 MB: the package's (" in result.output and "prices no memory" in result.output
    assert boto3.client("lambda").get_function_configuration(FunctionName=FUNCTION)["MemorySize"] == 256


@pytest.mark.parametrize("value, message", [("lots", "'lots' is not a number of MB nor auto"),
                                            ("64", "64 is not in the range 128<=x<=10240")])
def test_memory_must_be_mb_or_auto(project: Path, value: str, message: str) -> None:
    result = run("deploy", "tiny", "--memory", value)
    assert result.exit_code == 2 and message in result.output
