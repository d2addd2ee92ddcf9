"""Shared fixtures: one trained-and-converted workspace for the four built-in models, made once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgemaas.pipeline import compress_spec
from edgemaas.spec import Spec, load_spec
from edgemaas.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
BUILTINS = ("linear", "cnn", "rnn", "nlp")
TEST_VARIANTS = ("tflite-float32", "tflite-float16", "tflite-int8", "onnx-float32")


@pytest.fixture(scope="session")
def specs() -> dict[str, Spec]:
    return {name: load_spec(MODELS / f"{name}.yaml") for name in BUILTINS}


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, specs: dict[str, Spec]) -> Workspace:
    """All four built-in models trained, compressed to the variants the targets ship (float32, float16 and full-int8
    TFLite, float32 ONNX) and gated, in a session workspace. (Every other variant is tested on one model in
    test_compress.py, to keep the suite quick.)

    EDGEMAAS_TEST_WORKSPACE=DIR keeps this workspace between runs while developing: every stage is reused when its
    inputs are unchanged, so a second run skips training. CI leaves it unset and starts from nothing."""
    kept = os.environ.get("EDGEMAAS_TEST_WORKSPACE")
    ws = Workspace(Path(kept).resolve() if kept else tmp_path_factory.mktemp("workspace"))
    for spec in specs.values():
        quick = spec.model_copy(deep=True)
        quick.compress.variants = list(TEST_VARIANTS)
        compress_spec(quick, ws)
    return ws


@pytest.fixture(scope="session")
def packaged_cnn(trained: Workspace, specs: dict[str, Spec]) -> Path:
    from edgemaas.packaging.awslambda.lambda_zip import package_lambda
    from edgemaas.pipeline import chosen_variant

    package = package_lambda(chosen_variant(trained, "cnn"), trained.lambda_dir("cnn"), trained.cache())
    return Path(package.zip_path)
