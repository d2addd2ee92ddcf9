"""Typed records of a compress run: the report card (`dist/<name>/report/report.json`), one row per variant, and
the gate's selection (`build/<name>/selection.json`).

The JSON on disk is unchanged: `to_dict()` writes the same keys in the same order as before, `from_dict()` reads
what older runs wrote (missing keys get defaults, unknown keys are kept in `extra` and written back), so
`Cls.from_dict(d).to_dict() == d` for every record edgemaas writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from edgemaas.errors import UserError
from edgemaas.fsutil import atomic_write_json

class VariantStatus(str, Enum):
    """Where a variant ended up. `measured` is the state before the gate; the gate makes it passed, chosen or
    rejected. A str, so it compares equal to (and serialises as) its value."""

    MEASURED = "measured"
    PASSED = "passed"
    CHOSEN = "chosen"
    REJECTED = "rejected"
    FAILED = "failed"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value


# Statuses of rows that did not make it, in the order the report lists them.
NOT_SHIPPED = (VariantStatus.REJECTED, VariantStatus.FAILED, VariantStatus.SKIPPED)


class MetricSource(str, Enum):
    """What the metric was measured against: labels (real accuracy/RMSE), or the original model's outputs."""

    LABELS = "labels"
    PARITY = "parity"

    def __str__(self) -> str:
        return self.value


class Objective(str, Enum):
    """What the gate minimises among passing variants: Lambda cost per 1M requests (the default), file size, p50."""

    COST = "cost"
    SMALLEST = "smallest"
    FASTEST = "fastest"

    def __str__(self) -> str:
        return self.value


def _enum(kind: type[Enum], value: Any, default: Enum) -> Any:
    if value is None:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"unknown {kind.__name__} {value!r}") from None


def _split(data: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in known}


@dataclass
class VariantResult:
    """One row of the report card: a variant and what was measured (None where nothing was)."""

    variant: str
    format: str = ""
    parent: str | None = None
    status: VariantStatus = VariantStatus.MEASURED
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    metric_value: float | None = None
    metric_drop: float | None = None
    size_bytes: int | None = None
    gzip_bytes: int | None = None
    size_ratio: float | None = None
    gzip_ratio: float | None = None
    sparsity: float | None = None
    parity_max_abs: float | None = None
    latency_p50_ms: float | None = None
    runtime: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # The order report.json has always had.
    KEYS = ("variant", "format", "parent", "status", "reason", "metric_value", "metric_drop", "size_bytes",
            "gzip_bytes", "size_ratio", "gzip_ratio", "sparsity", "parity_max_abs", "latency_p50_ms", "runtime",
            "notes")

    @property
    def measured(self) -> bool:
        return self.size_bytes is not None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariantResult:
        return cls(variant=str(data["variant"]), format=data.get("format") or "", parent=data.get("parent"),
                   status=_enum(VariantStatus, data.get("status"), VariantStatus.MEASURED),
                   reason=data.get("reason") or "", notes=list(data.get("notes") or []),
                   metric_value=data.get("metric_value"), metric_drop=data.get("metric_drop"),
                   size_bytes=data.get("size_bytes"), gzip_bytes=data.get("gzip_bytes"),
                   size_ratio=data.get("size_ratio"), gzip_ratio=data.get("gzip_ratio"),
                   sparsity=data.get("sparsity"), parity_max_abs=data.get("parity_max_abs"),
                   latency_p50_ms=data.get("latency_p50_ms"), runtime=data.get("runtime"),
                   extra=_split(data, cls.KEYS))

    def to_dict(self) -> dict[str, Any]:
        out = {key: getattr(self, key) for key in self.KEYS}
        out["status"] = self.status.value
        out["notes"] = list(self.notes)
        return {**out, **self.extra}


@dataclass
class Selection:
    """What the gate chose per output format (`chosen[fmt]` is None when nothing passed) and the default to ship."""

    max_metric_drop: float | None
    objective: Objective = Objective.SMALLEST
    size: str = "gzip"
    chosen: dict[str, str | None] = field(default_factory=dict)
    default: str | None = None
    fallback: list[str] = field(default_factory=list)  # formats where nothing passed and the float model ships
    unit: str = ""
    # Written only when set (older selections have neither): per format, the Lambda configuration the gate priced
    # ({"prices", "model", "formats": {fmt: {"variant", "memory_mb", "costs", "float_variant", "float_costs"}}}),
    # and per format the variant an edge box runs (lowest latency, or size when flash matters).
    lambda_choice: dict[str, Any] | None = None
    edge: dict[str, str | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    KEYS = ("max_metric_drop", "objective", "size", "chosen", "default", "fallback", "unit", "lambda", "edge")

    def variant_for(self, fmt: str = "tflite") -> str | None:
        """The variant to ship for `fmt`: the gate's choice for it, else the default."""
        return self.chosen.get(fmt) or self.default

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Selection:
        chosen = data.get("chosen")
        return cls(max_metric_drop=data.get("max_metric_drop"),
                   objective=_enum(Objective, data.get("objective"), Objective.SMALLEST),
                   size=data.get("size") or "gzip", chosen=dict(chosen) if isinstance(chosen, dict) else {},
                   default=data.get("default"), fallback=list(data.get("fallback") or []),
                   unit=data.get("unit") or "", lambda_choice=data.get("lambda"), edge=data.get("edge"),
                   extra=_split(data, cls.KEYS))

    def to_dict(self) -> dict[str, Any]:
        out = {"max_metric_drop": self.max_metric_drop, "objective": self.objective.value, "size": self.size,
               "chosen": dict(self.chosen), "default": self.default, "fallback": list(self.fallback),
               "unit": self.unit}
        if self.lambda_choice is not None:
            out["lambda"] = self.lambda_choice
        if self.edge is not None:
            out["edge"] = dict(self.edge)
        return {**out, **self.extra}


@dataclass
class Reference:
    """The model the variants are measured against (the float model the user gave or trained)."""

    variant: str
    metric_value: float | None = None
    size_bytes: int | None = None
    gzip_bytes: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reference:
        return cls(variant=str(data.get("variant", "?")), metric_value=data.get("metric_value"),
                   size_bytes=data.get("size_bytes"), gzip_bytes=data.get("gzip_bytes"))

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "metric_value": self.metric_value, "size_bytes": self.size_bytes,
                "gzip_bytes": self.gzip_bytes}


@dataclass
class ReportCard:
    """Everything `edgemaas compress` measured for one model, and what the gate chose."""

    model: str
    task: str
    metric: str
    higher_is_better: bool
    metric_source: MetricSource
    eval_data: str
    drop_unit: str
    reference: Reference
    gate: Selection
    variants: list[VariantResult]
    created: str = ""
    edgemaas_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    KEYS = ("model", "task", "metric", "higher_is_better", "metric_source", "eval_data", "drop_unit", "reference",
            "gate", "variants", "created", "edgemaas_version")

    def row(self, variant: str) -> VariantResult | None:
        return next((r for r in self.variants if r.variant == variant), None)

    def rows_by_name(self) -> dict[str, VariantResult]:
        return {r.variant: r for r in self.variants}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReportCard:
        return cls(model=str(data.get("model", "?")), task=str(data.get("task", "?")),
                   metric=str(data.get("metric", "metric")), higher_is_better=bool(data.get("higher_is_better", True)),
                   metric_source=_enum(MetricSource, data.get("metric_source"), MetricSource.LABELS),
                   eval_data=data.get("eval_data") or "", drop_unit=data.get("drop_unit") or "",
                   reference=Reference.from_dict(data.get("reference") or {}),
                   gate=Selection.from_dict(data.get("gate") or {}),
                   variants=[VariantResult.from_dict(r) for r in data.get("variants") or []],
                   created=data.get("created") or "", edgemaas_version=data.get("edgemaas_version") or "",
                   extra=_split(data, cls.KEYS))

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "task": self.task, "metric": self.metric,
                "higher_is_better": self.higher_is_better, "metric_source": self.metric_source.value,
                "eval_data": self.eval_data, "drop_unit": self.drop_unit, "reference": self.reference.to_dict(),
                "gate": self.gate.to_dict(), "variants": [r.to_dict() for r in self.variants],
                "created": self.created, "edgemaas_version": self.edgemaas_version, **self.extra}


def load_selection(path: Path) -> Selection | None:
    """The gate's selection saved by `edgemaas compress` (build/<name>/selection.json); None if there is none."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return Selection.from_dict(data)
    except ValueError as exc:
        raise UserError(f"{path} is not a selection edgemaas wrote ({exc}); run `edgemaas compress` again") from None


def save_selection(path: Path, selection: Selection) -> Path:
    """Write the selection atomically (a reader sees the previous one or this one, never half)."""
    return atomic_write_json(path, selection.to_dict())

