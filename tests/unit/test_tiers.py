"""The `trained` fixture's view of the session workspace: a module reads only the built-in models it declared
(`pytest.mark.models(...)`), since those are the only ones trained for it when it runs alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import DeclaredWorkspace, UndeclaredModel


def test_a_module_reads_only_the_models_it_declared(tmp_path: Path) -> None:
    ws = DeclaredWorkspace(tmp_path, frozenset({"cnn"}))
    assert ws.variant_dir("cnn", "tflite-int8") == tmp_path / "build" / "cnn" / "tflite-int8"
    assert ws.data_file("cnn") == tmp_path / "build" / "cnn" / "data.npz"
    assert ws.lambda_dir("cnn") == tmp_path / "dist" / "cnn" / "lambda"
    for read in (ws.model_dir, ws.data_file, ws.selection_file, ws.lambda_dir):
        with pytest.raises(UndeclaredModel, match=r"built-in model 'nlp' is not declared for this module: add it to "
                                                  r"its pytest.mark.models\(...\) \(declared: cnn\)"):
            read("nlp")
    with pytest.raises(UndeclaredModel):
        ws.variant_dir("rnn", "tflite-int8")
    assert ws.model_dir("my-model") == tmp_path / "build" / "my-model"  # not a built-in: the test made it itself
