"""Shared fixtures and the test tiers.

Tiers, by folder (each test gets the marker of its folder, so `-m unit` and `-m "not integration"` work too):
  tests/unit/         no TensorFlow import, no subprocess, no trained model: the fast loop (`./dev.sh test tests/unit`)
  tests/functional/   the pipeline in process on trained built-in models; CLI through CliRunner; short child processes
  tests/integration/  real servers and processes: edge servers, awslambdaric, moto_server, the Serverless CLI, signals

Trained built-in models are made lazily: `trained_model("cnn")` trains and compresses cnn the first time any test asks
for it in this session and reuses it afterwards. A module that uses `trained` declares the models it reads with
`pytestmark = pytest.mark.models("cnn", ...)` (no marker: all four); reading an undeclared model fails the test.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgemaas.spec import Spec, load_spec
from edgemaas.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
BUILTINS = ("linear", "cnn", "rnn", "nlp")
TEST_VARIANTS = ("tflite-float32", "tflite-float16", "tflite-int8", "onnx-float32")
TIERS = {
    "unit": "no TensorFlow import, no subprocess, no trained model (tests/unit)",
    "functional": "the pipeline in process on trained built-in models (tests/functional)",
    "integration": "real servers and processes: edge, awslambdaric, moto_server, Serverless CLI (tests/integration)",
}
TESTS = Path(__file__).resolve().parent

TrainedModel = Callable[[str], Workspace]


def pytest_configure(config: pytest.Config) -> None:
    for tier, meaning in TIERS.items():
        config.addinivalue_line("markers", f"{tier}: {meaning}")
    config.addinivalue_line("markers", "models(*names): the built-in models a module's `trained` fixture trains and "
                                       "lets it read (default: all four)")


def tier_of(path: Path) -> str | None:
    try:
        parts = path.resolve().relative_to(TESTS).parts
    except ValueError:
        return None  # not under tests/ (e.g. a path given on the command line elsewhere)
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    misplaced = sorted({str(item.path.relative_to(REPO)) for item in items
                        if item.path.resolve().is_relative_to(TESTS) and tier_of(item.path) is None})
    if misplaced:
        raise pytest.UsageError(f"tests live in tests/unit, tests/functional or tests/integration; move "
                                f"{', '.join(misplaced)}")
    for item in items:
        tier = tier_of(item.path)
        if tier:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def specs() -> dict[str, Spec]:
    return {name: load_spec(MODELS / f"{name}.yaml") for name in BUILTINS}


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The session workspace the built-in models are trained into (by `trained_model`, only those asked for).

    EDGEMAAS_TEST_WORKSPACE=DIR keeps this workspace between runs while developing: every stage is reused when its
    inputs are unchanged, so a second run skips training. CI leaves it unset and starts from nothing."""
    kept = os.environ.get("EDGEMAAS_TEST_WORKSPACE")
    return Workspace(Path(kept).resolve() if kept else tmp_path_factory.mktemp("workspace"))


@pytest.fixture(scope="session")
def trained_model(workspace: Workspace, specs: dict[str, Spec]) -> TrainedModel:
    """`trained_model(name)`: the session workspace, with built-in `name` trained, compressed to the variants the
    targets ship (float32, float16 and full-int8 TFLite, float32 ONNX) and gated. Done once per model per session,
    on first request. (Every other variant is tested on one model in test_compress.py, to keep the suite quick.)"""
    from edgemaas.pipeline import compress_spec  # not at import: the unit tier never trains

    done: set[str] = set()

    def make(name: str) -> Workspace:
        if name not in specs:
            raise ValueError(f"{name!r} is not a built-in model ({', '.join(BUILTINS)})")
        if name not in done:
            quick = specs[name].model_copy(deep=True)
            quick.compress.variants = list(TEST_VARIANTS)
            compress_spec(quick, workspace)
            done.add(name)
        return workspace

    return make


class UndeclaredModel(LookupError):
    """A test read a built-in model its module did not declare with `pytest.mark.models(...)`."""


@dataclass(frozen=True)
class DeclaredWorkspace(Workspace):
    """The session workspace, limited to the models a module declared: they are the only ones trained for it, so
    reading another would pass or fail depending on which modules ran before."""

    models: frozenset[str] = frozenset()

    def model_dir(self, name: str) -> Path:
        if name in BUILTINS and name not in self.models:
            raise UndeclaredModel(f"built-in model {name!r} is not declared for this module: add it to its "
                                  f"pytest.mark.models(...) (declared: {', '.join(sorted(self.models))})")
        return super().model_dir(name)

    def variant_dir(self, name: str, variant: str) -> Path:
        return self.model_dir(name) / variant

    def data_file(self, name: str) -> Path:
        return self.model_dir(name) / "data.npz"

    def selection_file(self, name: str) -> Path:
        return self.model_dir(name) / "selection.json"

    def lambda_dir(self, name: str) -> Path:
        self.model_dir(name)
        return super().lambda_dir(name)


def declared_models(node: pytest.Item | pytest.Collector) -> tuple[str, ...]:
    marker = node.get_closest_marker("models")
    return tuple(marker.args) if marker else BUILTINS


@pytest.fixture(scope="module")
def trained(request: pytest.FixtureRequest, workspace: Workspace, trained_model: TrainedModel) -> Workspace:
    """The built-in models this module declares (`pytestmark = pytest.mark.models("cnn", ...)`; default all four),
    trained and compressed as `trained_model` does, in the session workspace."""
    names = declared_models(request.node)
    for name in names:
        trained_model(name)
    return DeclaredWorkspace(workspace.root, frozenset(names))


@pytest.fixture(scope="session")
def packaged_cnn(trained_model: TrainedModel) -> Path:
    """The cnn Lambda zip of its full-int8 variant (quantized input and output, the case the packaging tests cover;
    the gate's cost objective may choose another), packaged once per session; trains only cnn. It has a folder of its
    own: modules that package the gate's choice into `lambda_dir("cnn")` must not replace it under a later test."""
    from edgemaas.packaging.awslambda.lambda_zip import package_lambda

    ws = trained_model("cnn")
    package = package_lambda(ws.variant_dir("cnn", "tflite-int8"), ws.root / "dist" / "cnn-int8-fixture" / "lambda",
                             ws.cache())
    return Path(package.zip_path)
