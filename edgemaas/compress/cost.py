"""What a variant costs to serve on AWS Lambda, per 1M requests, from its measured latency.

The model (written into every report, see COST_MODEL):
- Lambda gives a function CPU in proportion to its memory: one full vCPU at `full_vcpu_mb` (1,769 MB). A variant is
  measured with one thread (what a function at or below 1,769 MB can use), so its duration at memory M is
  `p50 * max(1, 1769 / M)`: slower below a full vCPU, no faster above it.
- Billed duration is rounded up to `billing_granularity_ms` (1 ms); cost per request = request price +
  billed seconds x GB (M / 1024) x the GB-second price of the architecture.
- Below 1,769 MB the compute part is nearly constant (half the memory, twice the time), so the rounding and the
  memory the model needs decide: the cheapest memory is usually the smallest that holds the process. That floor is
  the peak RSS measured when the variant was timed, plus headroom.
- Both architectures are priced from the same measured duration (only one CPU is measured); arm64's lower price then
  changes the bill, not which (variant, memory) is cheapest.

Prices live in prices.json (date and source inside); a spec overrides them under `gate.prices`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

PRICES_FILE = Path(__file__).with_name("prices.json")
ARCHES = ("x86_64", "arm64")
# Beyond the model's own peak RSS: the Lambda runtime client and the event/response buffers, then a margin.
HANDLER_ALLOWANCE_MB = 32
MEMORY_HEADROOM = 1.25

COST_MODEL = ("Lambda cost per 1M requests = 1M x (request price + ceil(duration, 1 ms) / 1000 x memory GB x "
              "GB-second price). Duration at memory M = measured single-thread p50 x max(1, {full} MB / M) (Lambda "
              "gives one full vCPU at {full} MB, a share below it). Memory floor = (peak RSS + {allow} MB) x "
              "{headroom}, at least {min} MB. Both architectures priced from the same measured p50. Prices: {region}, "
              "{tier}, taken {taken} from {source}. Inference only: parsing the request and writing the response "
              "add the same to every variant.")


@dataclass(frozen=True)
class Prices:
    request_per_million: float
    gb_second: dict[str, float]
    taken: str = ""
    source: str = ""
    region: str = ""
    tier: str = ""
    billing_granularity_ms: int = 1
    full_vcpu_mb: int = 1769
    min_memory_mb: int = 128
    max_memory_mb: int = 10240

    def to_dict(self) -> dict[str, Any]:
        return {"request_per_million": self.request_per_million, "gb_second": dict(self.gb_second),
                "taken": self.taken, "source": self.source, "region": self.region, "tier": self.tier,
                "billing_granularity_ms": self.billing_granularity_ms, "full_vcpu_mb": self.full_vcpu_mb,
                "min_memory_mb": self.min_memory_mb}


def load_prices(overrides: Mapping[str, Any] | None = None, path: Path = PRICES_FILE) -> Prices:
    """The price table, with a spec's `gate.prices` (request_per_million, x86_64/arm64 GB-second) over it."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    gb_second = {arch: float(data["gb_second"][arch]) for arch in ARCHES}
    request = float(data["request_per_million"])
    source = data.get("source", "")
    if overrides:
        request = float(overrides.get("request_per_million", request))
        for arch in ARCHES:
            if overrides.get(f"{arch}_gb_second") is not None:
                gb_second[arch] = float(overrides[f"{arch}_gb_second"])
        source = f"{source}, overridden by the spec (gate.prices)"
    return Prices(request_per_million=request, gb_second=gb_second, taken=data.get("taken", ""), source=source,
                  region=data.get("region", ""), tier=data.get("tier", ""),
                  billing_granularity_ms=int(data.get("billing_granularity_ms", 1)),
                  full_vcpu_mb=int(data.get("full_vcpu_mb", 1769)), min_memory_mb=int(data.get("min_memory_mb", 128)),
                  max_memory_mb=int(data.get("max_memory_mb", 10240)))


def cost_model_text(prices: Prices) -> str:
    return COST_MODEL.format(full=prices.full_vcpu_mb, allow=HANDLER_ALLOWANCE_MB, headroom=MEMORY_HEADROOM,
                             min=prices.min_memory_mb, region=prices.region or "?", tier=prices.tier or "?",
                             taken=prices.taken or "?", source=prices.source or "?")


@dataclass(frozen=True)
class LambdaCost:
    """One (architecture, memory) configuration of a variant and what 1M requests cost there."""

    arch: str
    memory_mb: int
    duration_ms: float
    billed_ms: int
    cost_per_million: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "memory_mb": self.memory_mb, "duration_ms": round(self.duration_ms, 4),
                "billed_ms": self.billed_ms, "cost_per_million": round(self.cost_per_million, 6)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LambdaCost:
        return cls(arch=str(data["arch"]), memory_mb=int(data["memory_mb"]), duration_ms=float(data["duration_ms"]),
                   billed_ms=int(data["billed_ms"]), cost_per_million=float(data["cost_per_million"]))


def duration_ms(p50_ms: float, memory_mb: int, prices: Prices) -> float:
    """Single-thread duration at `memory_mb`: a share of a vCPU below full_vcpu_mb stretches it."""
    return p50_ms * max(1.0, prices.full_vcpu_mb / memory_mb)


def billed_ms(duration: float, prices: Prices) -> int:
    step = prices.billing_granularity_ms
    return max(step, int(math.ceil(duration / step - 1e-9)) * step)


def cost_per_million(p50_ms: float, memory_mb: int, arch: str, prices: Prices) -> LambdaCost:
    duration = duration_ms(p50_ms, memory_mb, prices)
    billed = billed_ms(duration, prices)
    compute = billed / 1000.0 * memory_mb / 1024.0 * prices.gb_second[arch]
    return LambdaCost(arch, memory_mb, duration, billed, prices.request_per_million + compute * 1_000_000)


def memory_floor_mb(peak_rss_mb: float | None, prices: Prices) -> int:
    """The least memory to configure for a process that peaked at `peak_rss_mb` (None: Lambda's minimum)."""
    if peak_rss_mb is None:
        return prices.min_memory_mb
    return max(prices.min_memory_mb, int(math.ceil((peak_rss_mb + HANDLER_ALLOWANCE_MB) * MEMORY_HEADROOM)))


def cheapest(p50_ms: float, floor_mb: int, arch: str, prices: Prices,
             max_duration_ms: float | None = None) -> LambdaCost | None:
    """The memory (1 MB steps, floor..full vCPU) with the lowest cost per 1M requests whose duration is within
    `max_duration_ms`; ties go to the faster. None when no memory meets the limit. Above one full vCPU a
    single-thread function gets no faster, only dearer, so the search stops there (or at the floor, if higher)."""
    best: LambdaCost | None = None
    top = max(floor_mb, prices.full_vcpu_mb)
    for memory in range(min(floor_mb, prices.max_memory_mb), min(top, prices.max_memory_mb) + 1):
        candidate = cost_per_million(p50_ms, memory, arch, prices)
        if max_duration_ms is not None and candidate.duration_ms > max_duration_ms:
            continue
        if best is None or (round(candidate.cost_per_million, 9), candidate.duration_ms) < \
                (round(best.cost_per_million, 9), best.duration_ms):
            best = candidate
    return best


def lambda_costs(p50_ms: float | None, peak_rss_mb: float | None, prices: Prices,
                 max_duration_ms: float | None = None) -> dict[str, LambdaCost | None]:
    """Per architecture, the cheapest configuration of a variant (None where the latency limit cannot be met)."""
    if p50_ms is None or not math.isfinite(p50_ms) or p50_ms <= 0:
        return {}
    floor = memory_floor_mb(peak_rss_mb, prices)
    return {arch: cheapest(p50_ms, floor, arch, prices, max_duration_ms) for arch in ARCHES}


# ---------------------------------------------------------------------------------------------------------------
# For the packaging side (build table, deploy --memory auto, serverless.yml / SAM template)


def priced_entry(selection: Any, fmt: str | None = None) -> dict[str, Any] | None:
    """The gate's Lambda pricing record for the variant that ships in `fmt` (default: the default format), or None.
    `selection` is a records.Selection or its dict."""
    data = selection.to_dict() if hasattr(selection, "to_dict") else dict(selection or {})
    formats = (data.get("lambda") or {}).get("formats") or {}
    if fmt is None:
        default = data.get("default")
        fmt = next((f for f, name in (data.get("chosen") or {}).items() if name and name == default), None)
    return formats.get(fmt) if fmt else None


def chosen_memory(selection: Any, fmt: str | None = None) -> int | None:
    """The Lambda memory (MB) the gate chose for the variant that ships in `fmt` (default: the default format).
    `selection` is a records.Selection or its dict; None when the gate priced nothing (an old selection)."""
    entry = priced_entry(selection, fmt)
    memory = (entry or {}).get("memory_mb")
    return int(memory) if memory else None


def cost_cells(selection: Any, fmt: str | None = None) -> dict[str, str]:
    """Text cells for a build table: cost per 1M requests of the shipped and the float variant, per architecture,
    e.g. {"x86_64": "$0.21 (float $0.26)", "arm64": "$0.21 (float $0.25)", "memory": "128 MB"}; {} if unpriced."""
    entry = priced_entry(selection, fmt)
    if not entry:
        return {}
    cells = {}
    for arch in ARCHES:
        shipped = (entry.get("costs") or {}).get(arch)
        floated = (entry.get("float_costs") or {}).get(arch)
        if shipped:
            text = format_dollars(shipped["cost_per_million"])
            if floated:
                text += f" (float {format_dollars(floated['cost_per_million'])})"
            cells[arch] = text
    cells["memory"] = f"{entry.get('memory_mb')} MB"
    return cells


def format_dollars(value: float | None) -> str:
    """$ per 1M requests: four significant digits below $1 (most models cost cents), cents above."""
    if value is None:
        return "-"
    return f"${value:.4g}" if value < 1 else f"${value:,.2f}"
