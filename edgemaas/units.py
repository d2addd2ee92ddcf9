"""How sizes and metrics read in everything edgemaas prints: one formatter each for the CLI, deploy plans, build
tables, compression reports and benchmarks."""

from __future__ import annotations

KB, MB, GB = 1 << 10, 1 << 20, 1 << 30

# Metrics in 0..1 that read as a percent; every other metric (RMSE, output RMSE) is printed as a number.
PERCENT_METRICS = frozenset({"accuracy", "agreement"})
_SHORT = {"accuracy": "acc", "agreement": "agr"}


def human_size(size: int | None, missing: str = "-") -> str:
    """Bytes as KB or MB with one decimal, GB with two; `missing` for None or 0."""
    if not size:
        return missing
    if size < MB:
        return f"{size / KB:.1f} KB"
    if size < GB:
        return f"{size / MB:.1f} MB"
    return f"{size / GB:.2f} GB"


def format_metric(metric: str, value: float | None, missing: str = "-") -> str:
    """A metric value: accuracy and agreement as a percent with 2 decimals, others with 4 significant digits."""
    if value is None:
        return missing
    if metric in PERCENT_METRICS:
        return f"{value * 100:.2f}%"
    return f"{value:.4g}"


def metric_label(metric: str) -> str:
    """A metric's short name for narrow tables: `acc`, `agr`, `rmse`, `output-rmse`."""
    return _SHORT.get(metric, metric.replace("_", "-"))


def labelled_metric(metric: str, value: float | None, missing: str = "-") -> str:
    """Short name and value, as a build table cell: `acc 99.16%`, `rmse 0.1234`."""
    return f"{metric_label(metric)} {format_metric(metric, value, missing)}"


def format_drop(drop: float | None, unit: str, missing: str = "-") -> str:
    """A metric drop with its sign and unit: `+0.28 accuracy points`, `-0.10 % of RMSE`."""
    return missing if drop is None else f"{drop:+.2f} {unit}"
