"""Code stored inside a user's Keras file (a Lambda layer) runs only with --trust-model-code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgemaas.cli import cli
from edgemaas.isolate import run_isolated
from edgemaas.user_models.model_safety import code_layers


def _save_models_with_code(directory: str, marker: str) -> list[str]:
    """In a child process: a small model whose Lambda layer writes `marker` when it runs, as .keras and .h5."""
    import numpy as np

    from edgemaas.tf import keras

    k = keras()
    code = eval(f"lambda x: (open({marker!r}, 'w').write('ran'), x * 2.0)[1]")  # marshalled into the file
    inputs = k.Input((4,), name="features")
    hidden = k.layers.Lambda(code, name="doubler")(inputs)
    model = k.Model(inputs, k.layers.Dense(3, activation="softmax")(hidden))
    model.predict(np.zeros((1, 4), np.float32), verbose=0)
    paths = [str(Path(directory) / "lam.keras"), str(Path(directory) / "lam.h5")]
    for path in paths:
        model.save(path)
    Path(marker).unlink()  # building and saving ran the function; the tests watch for it running again
    return paths


@pytest.fixture(scope="module")
def models_with_code(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    directory = tmp_path_factory.mktemp("lambda-models")
    marker = directory / "code-ran"
    paths = run_isolated(_save_models_with_code, str(directory), str(marker), timeout=300)
    return [Path(p) for p in paths], marker


def test_lambda_layers_are_found_without_loading(models_with_code: tuple[list[Path], Path]) -> None:
    (keras_file, h5_file), marker = models_with_code
    assert code_layers(keras_file, "keras") == ["Lambda layer 'doubler'"]
    assert code_layers(h5_file, "h5") == ["Lambda layer 'doubler'"]
    assert not marker.exists()


@pytest.mark.parametrize("command", ["package", "compress"])
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_code_in_a_model_file_is_refused_and_does_not_run(models_with_code: tuple[list[Path], Path],
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          command: str, suffix: str) -> None:
    paths, marker = models_with_code
    path = next(p for p in paths if p.suffix == suffix)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, [command, str(path)])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] + "\n" == (
        f"Error: {path}: this model file contains Python code that would run when it is loaded (Lambda layer "
        "'doubler'). Load it only if you trust where it came from: pass --trust-model-code (or set "
        "model.trust_code: true in the spec); or rebuild the model without Lambda layers.\n")
    assert not marker.exists(), "the model's code ran although it was refused"
    assert not (tmp_path / "build").exists() or not any((tmp_path / "build").rglob("manifest.json"))


def test_trusted_code_loads_and_is_recorded(models_with_code: tuple[list[Path], Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    paths, marker = models_with_code
    h5_file = next(p for p in paths if p.suffix == ".h5")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["package", str(h5_file), "--trust-model-code", "--labels", "a,b,c"])
    assert result.exit_code == 0, result.output
    assert marker.exists(), "with --trust-model-code the Lambda layer runs (it is part of the model)"
    manifest = json.loads((tmp_path / "build" / "lam" / "imported" / "manifest.json").read_text())
    assert manifest["provenance"]["trust_model_code"] is True
