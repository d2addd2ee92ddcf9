"""Shared fixtures: one trained-and-converted workspace for the four built-in models, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgemaas.pipeline import prepare_spec
from edgemaas.spec import Spec, load_spec
from edgemaas.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
BUILTINS = ("linear", "cnn", "rnn", "nlp")


@pytest.fixture(scope="session")
def specs() -> dict[str, Spec]:
    return {name: load_spec(MODELS / f"{name}.yaml") for name in BUILTINS}


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, specs: dict[str, Spec]) -> Workspace:
    """All four built-in models trained, converted (float32 + full int8) and gated, in a session workspace."""
    ws = Workspace(tmp_path_factory.mktemp("workspace"))
    for spec in specs.values():
        prepare_spec(spec, ws)
    return ws


@pytest.fixture(scope="session")
def packaged_cnn(trained: Workspace, specs: dict[str, Spec]) -> Path:
    from edgemaas.pipeline import variant_dir_for
    from edgemaas.packaging.lambda_zip import package_lambda

    package = package_lambda(variant_dir_for(specs["cnn"], trained, None), trained.lambda_dir("cnn"),
                             trained.cache())
    return Path(package.zip_path)
