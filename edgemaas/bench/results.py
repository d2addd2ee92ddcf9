"""The benchmark's records: what each server measured, the goals, and the run's machine. Plain data, no behaviour
beyond lookups and the JSON round trip."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np


@dataclass
class Stats:
    """Latency over `n` requests, in milliseconds."""

    n: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float

    @classmethod
    def of(cls, samples: list[float]) -> "Stats | None":
        if not samples:
            return None
        values = np.asarray(samples, dtype=np.float64)
        p50, p99 = np.percentile(values, [50, 99])
        return cls(len(values), float(p50), float(p99), float(values.mean()), float(values.min()))


@dataclass
class ServerResult:
    """One server of one model (or a floor, `model` None), measured in fresh processes."""

    model: str | None
    server: str  # tensorflow, litert-float32, ..., handler, floor-litert, floor-ort
    label: str
    variant: str | None
    runtime: str  # what serves it, with its version
    status: str = "measured"  # measured | skipped | failed
    note: str = ""
    cold_start_ms: list[float] = field(default_factory=list)  # one per fresh process
    cold_start_median_ms: float | None = None
    phases_ms: dict[str, float] = field(default_factory=dict)  # medians: imports, model load, first request
    warm: Stats | None = None  # through the server: the handler, or Keras model.predict
    call: Stats | None = None  # Keras only: model(x)
    raw: Stats | None = None  # the runtime's interpreter/session alone on the same model file
    throughput_rps: float | None = None  # requests/s with `workers` processes serving back to back
    peak_rss_mb: float | None = None  # the largest VmHWM over the runs
    model_bytes: int | None = None
    package_bytes: int | None = None  # the function zip (handler), or the installed runtime (TensorFlow)
    package_unzipped_bytes: int | None = None
    third_party_modules: list[str] = field(default_factory=list)  # top-level non-stdlib modules it imported

    @property
    def measured(self) -> bool:
        return self.status == "measured"


@dataclass
class Goal:
    model: str
    goal: str  # an id, e.g. cold_vs_tensorflow
    description: str
    target: float  # the ratio must be at most this
    ratio: float | None  # None: a server it needs was not measured
    met: bool | None
    detail: str  # the measured numbers the ratio comes from


@dataclass
class BenchResult:
    date: str
    machine: dict[str, Any]
    versions: dict[str, str]
    settings: dict[str, Any]
    models: list[str]
    servers: list[ServerResult]
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def server(self, model: str | None, server: str) -> ServerResult | None:
        return next((s for s in self.servers if s.model == model and s.server == server), None)

    def floor(self, model_format: str) -> ServerResult | None:
        return self.server(None, "floor-litert" if model_format == "tflite" else "floor-ort")

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BenchResult":
        servers = []
        for raw in data["servers"]:
            values = {f.name: raw.get(f.name) for f in fields(ServerResult) if f.name in raw}
            for key in ("warm", "call", "raw"):
                values[key] = Stats(**raw[key]) if raw.get(key) else None
            servers.append(ServerResult(**values))
        return cls(date=data["date"], machine=data["machine"], versions=data["versions"], settings=data["settings"],
                   models=data["models"], servers=servers, goals=[Goal(**g) for g in data.get("goals", [])],
                   notes=data.get("notes", []))


def _finite(value: Any) -> Any:
    """JSON has no NaN: a number that could not be measured is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
