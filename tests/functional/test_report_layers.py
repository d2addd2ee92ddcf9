"""`edgemaas report NAME --layers`: the per-layer quantization error of the int8 variants, by the model's own layer
names (issue 15)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from edgemaas.cli import cli
from edgemaas.workspace import Workspace

pytestmark = pytest.mark.models("cnn")


def test_report_layers_names_the_keras_layers_of_the_int8_variant(trained: Workspace,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(trained.root)
    result = CliRunner().invoke(cli, ["report", "cnn", "--layers"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("tflite-int8 ")
    layers = [line.split()[0] for line in lines[1:] if line.startswith("  ")]
    assert {"conv2d", "conv2d_1", "dense", "probabilities"} <= set(layers)  # the names models/cnn.yaml's layers carry
    errors = [float(line.split()[-1]) for line in lines[1:] if line.startswith("  ")]
    assert errors == sorted(errors, reverse=True)  # worst first


def test_report_layers_of_an_unknown_model_is_an_error(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["report", "nothing", "--layers"])
    assert result.exit_code == 1 and result.output.startswith("Error: ")
