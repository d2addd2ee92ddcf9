"""Model specs (`models/*.yaml`): what to train or import, on which data, and what to convert and package.

Validated with pydantic, strictly: an unknown key, a wrong type or a missing file is an error that names the file,
the key and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgemaas.errors import UserError

# Every variant `compress` can make, in the order it makes them. Intermediate Keras models (pruned, clustered,
# quantization-aware) are made on the way when a variant needs them.
DEFAULT_VARIANTS = (
    "tflite-float32", "tflite-float16", "tflite-dynamic", "tflite-int8", "tflite-int16x8",
    "tflite-pruned", "tflite-pruned-dynamic", "tflite-pruned-int8",
    "tflite-clustered", "tflite-clustered-int8", "tflite-qat-int8",
    "onnx-float32", "onnx-float16", "onnx-dynamic", "onnx-qdq",
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ModelSection(_Section):
    architecture: Literal["linear", "cnn", "rnn", "nlp", "attention"] | None = None
    path: str | None = Field(None, description="a model file you bring: .keras, .h5, SavedModel dir, .tflite, .onnx")
    params: dict[str, int | float | str] = Field(default_factory=dict)
    trust_code: bool = Field(False, description="load Python code stored in a Keras file at path (Lambda layers)")

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSection":
        if (self.architecture is None) == (self.path is None):
            raise ValueError("give exactly one of architecture (a built-in) or path (a model file)")
        return self


class DataSection(_Section):
    dataset: Literal["diabetes", "digits", "sunspots", "smart_home"] | None = None
    path: str | None = Field(None, description=".npz with x_train, y_train[, x_test, y_test]")
    task: Literal["classification", "regression"] | None = None
    labels: list[str] | None = None
    test_fraction: float = Field(0.2, gt=0, lt=1)
    window: int = Field(12, ge=2, description="sunspots: years of history per sample")
    samples: int = Field(4000, ge=100, description="smart_home: utterances to generate")
    max_length: int = Field(16, ge=1, description="text: tokens per utterance")

    @model_validator(mode="after")
    def _one_source(self) -> "DataSection":
        if (self.dataset is None) == (self.path is None):
            raise ValueError("give exactly one of dataset (a built-in) or path (an .npz file)")
        if self.path is not None and self.task is None:
            raise ValueError("a dataset from path needs task: classification or regression")
        return self


class TrainSection(_Section):
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    seed: int = 0
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    early_stopping_patience: int = Field(10, ge=0, description="0 turns early stopping off")
    timeout_s: int = Field(3600, ge=10, description="training runs in its own process, stopped after this")


class PruningSection(_Section):
    target_sparsity: float = Field(0.8, gt=0, lt=1)
    epochs: int = Field(4, ge=1, description="fine-tuning epochs while sparsity ramps up")


class ClusteringSection(_Section):
    clusters: int = Field(16, ge=2, le=256)
    epochs: int = Field(3, ge=1)


class QatSection(_Section):
    epochs: int = Field(3, ge=1)


class OnnxSection(_Section):
    opset: int = Field(17, ge=17, le=21)
    per_channel: bool = False
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"


class CompressSection(_Section):
    variants: list[str] = Field(default_factory=lambda: list(DEFAULT_VARIANTS))
    representative_samples: int = Field(200, ge=1, description="calibration samples from the training split")
    calibration_headroom: float = Field(0.0, ge=0, le=10, description="widen int8 ranges by this fraction")
    timeout_s: int = Field(900, ge=10, description="per pass, each run in its own process")
    pruning: PruningSection = Field(default_factory=PruningSection)
    clustering: ClusteringSection = Field(default_factory=ClusteringSection)
    qat: QatSection = Field(default_factory=QatSection)
    onnx: OnnxSection = Field(default_factory=OnnxSection)

    @model_validator(mode="after")
    def _known_variants(self) -> "CompressSection":
        unknown = [v for v in self.variants if v not in DEFAULT_VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(DEFAULT_VARIANTS)}")
        return self


class PricesSection(_Section):
    """Overrides of edgemaas/compress/prices.json (AWS Lambda, USD)."""

    request_per_million: float | None = Field(None, ge=0)
    x86_64_gb_second: float | None = Field(None, ge=0)
    arm64_gb_second: float | None = Field(None, ge=0)


class GateSection(_Section):
    max_metric_drop: float = Field(1.0, ge=0, description="accuracy points, or percent of RMSE")
    objective: Literal["cost", "smallest", "fastest"] = Field(
        "cost", description="cost: lowest Lambda cost per 1M requests; smallest: file size; fastest: p50 latency")
    size: Literal["raw", "gzip"] = Field("gzip", description="which size 'smallest' compares")
    max_p50_ms: float | None = Field(None, gt=0, description="latency limit (ms): on Lambda, at the chosen memory")
    edge: Literal["latency", "flash"] = Field("latency", description="what an edge box's variant minimises")
    prices: PricesSection = Field(default_factory=PricesSection)


class PackageSection(_Section):
    variant: str | None = Field(None, description="override the gate's choice")
    format: Literal["tflite", "onnx", "auto"] = Field(
        "tflite", description="which format's gate choice ships by default; auto: the faster runtime, measured")
    python_version: str | None = Field(None, pattern=r"^3\.(1[0-3])$")
    arch: Literal["x86_64", "arm64"] = "x86_64"
    layout: Literal["auto", "zip", "layer", "image"] = "auto"
    memory_mb: int = Field(512, ge=128, le=10240)
    timeout_s: int = Field(30, ge=1, le=900)


class Spec(_Section):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,39}$")
    description: str = ""
    model: ModelSection
    data: DataSection | None = None
    train: TrainSection = Field(default_factory=TrainSection)
    compress: CompressSection = Field(default_factory=CompressSection)
    gate: GateSection = Field(default_factory=GateSection)
    package: PackageSection = Field(default_factory=PackageSection)
    source: Path | None = Field(None, exclude=True)  # the YAML file this came from

    @model_validator(mode="after")
    def _data_for_training(self) -> "Spec":
        if self.model.architecture and self.data is None:
            raise ValueError("a built-in architecture needs a data section to train on")
        return self

    def resolve(self, relative: str | None) -> Path | None:
        """A path in the spec, relative to the spec file's folder."""
        if relative is None:
            return None
        path = Path(relative).expanduser()
        return path if path.is_absolute() or self.source is None else self.source.parent / path


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such spec file") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a spec is a YAML mapping with keys name, model, data, ...; got {type(raw).__name__}")
    try:
        spec = Spec.model_validate({**raw, "source": path}, strict=False)
    except ValidationError as exc:
        raise UserError(f"{path}: invalid spec:\n" + "\n".join(_describe(e, raw) for e in exc.errors())) from None
    for key, relative in (("model.path", spec.model.path), ("data.path", spec.data.path if spec.data else None)):
        resolved = spec.resolve(relative)
        if resolved is not None and not resolved.exists():
            raise UserError(f"{path}: {key}: file {resolved} does not exist")
    return spec


def _describe(error: dict[str, Any], raw: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(error["loc"][:-1])
        return f"  {where}: unknown key; expected one of: {', '.join(allowed)}"
    if error["type"] == "missing":
        return f"  {where}: required key is missing"
    message = error["msg"].replace("Value error, ", "")
    got = error.get("input")
    if error["type"] in ("model_type", "dict_type") or isinstance(got, (dict, list)) and len(repr(got)) > 60:
        return f"  {where}: {message}"
    return f"  {where}: {message} (got {got!r})"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Spec
    for part in loc:
        annotation = model.model_fields[str(part)].annotation
        model = next(a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)
                     and issubclass(a, BaseModel))
    return [name for name, f in model.model_fields.items() if not f.exclude]


def builtin_specs(models_dir: Path) -> list[Path]:
    return sorted(models_dir.glob("*.yaml"))
