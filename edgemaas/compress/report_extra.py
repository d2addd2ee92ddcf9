"""Report card sections for what a compress run measured beyond size and metric: Lambda cost per 1M requests (with
the cost model and the CPU that measured the latency) and per-layer quantization error. Markdown and plots; each
section is present only when the card carries its data (older report.json files have neither)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from edgemaas.compress.cost import ARCHES, format_dollars
from edgemaas.compress.latency import describe_cpu, target_differs
from edgemaas.compress.records import ReportCard, VariantResult, VariantStatus
from edgemaas.units import format_metric

COST_PLOT = "cost_vs_metric.png"
LAYERS_PLOT = "layer_error.png"
WORST_LAYERS = 10


def priced_rows(card: ReportCard) -> list[VariantResult]:
    return [r for r in card.variants if (r.extra.get("lambda") or {}).get("x86_64")]


def layer_rows(card: ReportCard) -> list[VariantResult]:
    return [r for r in card.variants if (r.extra.get("layers") or {}).get("layers")]


def _ci(row: VariantResult) -> str:
    latency = row.extra.get("latency") or {}
    ci = latency.get("ci95_ms")
    p50 = row.latency_p50_ms
    if p50 is None:
        return "-"
    return f"{p50:.4g} ({ci[0]:.4g}–{ci[1]:.4g})" if ci else f"{p50:.4g}"


def cost_markdown(card: ReportCard) -> list[str]:
    rows = priced_rows(card)
    if not rows:
        return []
    lines = ["## Lambda cost per 1M requests", "",
             "Each variant at its cheapest memory (1 MB steps up to one full vCPU); the gate's objective is "
             f"**{card.gate.objective.value}**.", ""]
    formats = ((card.gate.lambda_choice or {}).get("formats") or {})
    for fmt, entry in formats.items():
        for arch in ARCHES:
            mine, base = (entry.get("costs") or {}).get(arch), (entry.get("float_costs") or {}).get(arch)
            if not mine:
                continue
            ratio = f", {mine['cost_per_million'] / base['cost_per_million']:.2f}× float" if base else ""
            lines.append(f"- {fmt} on {arch}: `{entry['variant']}` {format_dollars(mine['cost_per_million'])} at "
                         f"{mine['memory_mb']} MB" + (f" vs `{entry.get('float_variant')}` "
                                                       f"{format_dollars(base['cost_per_million'])} at "
                                                       f"{base['memory_mb']} MB{ratio}" if base else ""))
    lines += ["", "| variant | status | p50 ms (95% CI) | samples | memory | duration ms | x86_64 $/1M | arm64 $/1M |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in sorted(rows, key=lambda r: (r.format, r.extra["lambda"]["x86_64"]["cost_per_million"], r.variant)):
        cells = row.extra["lambda"]
        x86, arm = cells.get("x86_64") or {}, cells.get("arm64") or {}
        name = f"**{row.variant}**" if row.status is VariantStatus.CHOSEN else row.variant
        samples = (row.extra.get("latency") or {}).get("samples", "-")
        lines.append(f"| {name} | {row.status.value} | {_ci(row)} | {samples} | {x86.get('memory_mb', '-')} MB | "
                     f"{x86.get('duration_ms', float('nan')):.3g} | {format_dollars(x86.get('cost_per_million'))} | "
                     f"{format_dollars(arm.get('cost_per_million'))} |")
    lines.append("")
    model = (card.gate.lambda_choice or {}).get("model")
    if model:
        lines += [f"**Cost model.** {model}", ""]
    machine = card.extra.get("machine")
    if machine:
        latency = next((r.extra.get("latency") for r in rows if r.extra.get("latency")), {}) or {}
        lines.append(f"**Latency measured on** {describe_cpu(machine)}, {machine.get('cores', '?')} cores, "
                     f"{latency.get('threads', 1)} thread per variant (a Lambda function below 1,769 MB has at most "
                     f"one vCPU), in fresh processes, interleaved ({latency.get('processes', '?')} per variant); the "
                     "95% interval of each p50 is distribution-free (order statistics).")
        if card.extra.get("timed_request"):  # several inputs or dynamic shapes: say what one request was
            lines.append("One timed request, from the eval feed: " + ", ".join(
                f"`{t}`" for t in card.extra["timed_request"]) + ".")
        for arch in ARCHES:
            warning = target_differs(machine, arch)
            if warning:
                lines.append(f"⚠ {warning}.")
        lines.append("")
    lines += [f"![cost per 1M requests vs {card.metric}]({COST_PLOT})", ""]
    return lines


def layers_markdown(card: ReportCard) -> list[str]:
    rows = layer_rows(card)
    kept = [r for r in card.variants if r.extra.get("kept_float")]
    if not rows and not kept:
        return []
    lines = ["## Per-layer quantization error", ""]
    for row in rows:
        info = row.extra["layers"]
        worst = sorted(info["layers"], key=lambda l: -_num(l.get("error")))[:WORST_LAYERS]
        lines += [f"`{row.variant}` ({info.get('method', '?')}; error = {info.get('metric', '?')}), worst "
                  f"{len(worst)} of {len(info['layers'])} layers:", "", "| layer | op | error |", "|---|---|---:|"]
        lines += [f"| {l['layer']} | {l.get('op', '-')} | {_num(l.get('error')):.4g} |" for l in worst]
        lines.append("")
    for row in kept:
        lines.append(f"- `{row.variant}` kept in float: {', '.join(row.extra['kept_float'])}"
                     + (f" ({row.reason})" if row.status is VariantStatus.REJECTED else ""))
    if kept:
        lines.append("")
    if rows:
        lines += [f"![quantization error by layer]({LAYERS_PLOT})", ""]
    return lines


def _num(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on build machines; before pyplot
    import matplotlib.pyplot as plt

    return plt


def plot_cost(card: ReportCard, path: Path) -> None:
    """Cost per 1M requests (x86_64, cheapest memory) against the metric, one marker per format."""
    plt = pyplot()
    rows = priced_rows(card)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    markers = {"tflite": "o", "onnx": "s"}
    for row in rows:
        x = row.extra["lambda"]["x86_64"]["cost_per_million"]
        y = row.metric_value
        if y is None:
            continue
        chosen = row.status is VariantStatus.CHOSEN
        ax.scatter([x], [y], marker=markers.get(row.format, "^"), s=90 if chosen else 40,
                   edgecolors="black" if chosen else "none", alpha=0.45 if row.status is VariantStatus.REJECTED else 1)
        ax.annotate(("★ " if chosen else "") + row.variant, (x, y), xytext=(4, 3), textcoords="offset points",
                    fontsize=7)
    ax.set_xlabel("x86_64 Lambda $ per 1M requests (cheapest memory; lower is better)")
    ax.set_ylabel(card.metric)
    ax.set_title(f"{card.model}: cost against {card.metric} (metric of the reference: "
                 f"{format_metric(card.metric, card.reference.metric_value)})", fontsize=10)
    ax.grid(True, alpha=0.3)
    try:
        fig.savefig(path, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_layers(card: ReportCard, path: Path) -> None:
    """Quantization error per layer (graph order), one line per int8 variant."""
    plt = pyplot()
    rows = layer_rows(card)
    width = max(8.0, 0.3 * max(len(r.extra["layers"]["layers"]) for r in rows))
    fig, ax = plt.subplots(figsize=(min(width, 30), 4.5), dpi=110)
    names: list[str] = []
    for row in rows:
        layers = row.extra["layers"]["layers"]
        names = names if len(names) >= len(layers) else [l["layer"] for l in layers]
        ax.plot(range(len(layers)), [_num(l.get("error")) for l in layers], marker="o", ms=3, label=row.variant)
    ax.set_xticks(range(len(names)), names, rotation=75, fontsize=6)
    ax.set_ylabel("error added by the layer")
    ax.set_title(f"{card.model}: quantization error by layer", fontsize=11)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    try:
        fig.savefig(path, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)


def layers_text(report: ReportCard, limit: int | None = None) -> str:
    """`edgemaas report NAME --layers`: per int8 variant, every layer's added error, worst first, and what each
    mixed variant kept in float. Plain text; an explanation when the card has no per-layer data."""
    rows = layer_rows(report)
    kept = [r for r in report.variants if r.extra.get("kept_float")]
    if not rows and not kept:
        return (f"{report.model}: no per-layer quantization data (only full-int8 TFLite variants made from a Keras "
                "model have it; run `edgemaas compress` again to add it)")
    lines = []
    for row in rows:
        info = row.extra["layers"]
        ranked = sorted(info["layers"], key=lambda l: -_num(l.get("error")))
        lines.append(f"{row.variant} ({row.status.value}): {info.get('metric', '?')}, {info.get('method', '?')}")
        width = max(len(str(l["layer"])) for l in ranked)
        for entry in ranked[:limit] if limit else ranked:
            lines.append(f"  {str(entry['layer']).ljust(width)}  {str(entry.get('op', '')).ljust(16)}  "
                         f"{_num(entry.get('error')):.4g}")
    for row in kept:
        lines.append(f"{row.variant} ({row.status.value}): kept in float: {', '.join(row.extra['kept_float'])}")
    return "\n".join(lines)
