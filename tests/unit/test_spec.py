"""Spec validation: every mistake names the file, the key and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgemaas.errors import UserError
from edgemaas.spec import load_spec
from tests.conftest import BUILTINS, MODELS


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(UserError) as caught:
        load_spec(path)
    return str(caught.value)


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_specs_are_valid(name: str) -> None:
    spec = load_spec(MODELS / f"{name}.yaml")
    assert spec.name == name
    assert spec.model.architecture == name


def test_unknown_key_lists_the_allowed_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "name: m\nmodel: {architecture: cnn, filterz: 3}\ndata: {dataset: digits}\n")
    assert error_of(path) == (f"{path}: invalid spec:\n"
                              "  model.filterz: unknown key; expected one of: architecture, path, params, trust_code")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "name: m\nmodel: {architecture: cnn}\ndata: {dataset: digits}\ntrainning: {}\n")
    assert "  trainning: unknown key; expected one of: name, description, model, data, train, compress, gate, " \
           "package" in error_of(path)


def test_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, "name: m\nmodel: {architecture: cnn}\ndata: {dataset: digits}\ntrain: {epochs: ten}\n")
    assert error_of(path) == (f"{path}: invalid spec:\n  train.epochs: Input should be a valid integer, unable to "
                              "parse string as an integer (got 'ten')")


def test_every_error_is_listed_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "name: m\nmodel: {architecture: transformer}\ndata: {dataset: digits}\n"
                           "package: {arch: x86, memory_mb: 64}\n")
    message = error_of(path)
    assert "  model.architecture: Input should be 'linear', 'cnn', 'rnn', 'nlp' or 'attention' (got 'transformer')" in message
    assert "  package.arch: Input should be 'x86_64' or 'arm64' (got 'x86')" in message
    assert "  package.memory_mb: Input should be greater than or equal to 128 (got 64)" in message


def test_missing_required_key(tmp_path: Path) -> None:
    path = write(tmp_path, "model: {architecture: cnn}\ndata: {dataset: digits}\n")
    assert error_of(path) == f"{path}: invalid spec:\n  name: required key is missing"


def test_model_needs_exactly_one_source(tmp_path: Path) -> None:
    path = write(tmp_path, "name: m\nmodel: {params: {}}\n")
    assert "model: give exactly one of architecture (a built-in) or path (a model file)" in error_of(path)


def test_missing_model_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "name: m\nmodel: {path: nowhere.tflite}\n")
    assert error_of(path) == f"{path}: model.path: file {tmp_path / 'nowhere.tflite'} does not exist"


def test_missing_spec_file(tmp_path: Path) -> None:
    assert error_of(tmp_path / "none.yaml") == f"{tmp_path / 'none.yaml'}: no such spec file"


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "name: [unclosed\n")
    assert error_of(path).startswith(f"{path}: not valid YAML:")


def test_spec_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- just\n- a list\n")
    assert error_of(path) == f"{path}: a spec is a YAML mapping with keys name, model, data, ...; got list"
