"""The compression report card: what `edgemaas compress` measured for every variant, and what the gate chose.

Input is a `records.ReportCard` (or its JSON-able dict, as report.json holds it: model, metric, reference, gate,
variants).
Output is `report.json`, `report.md` and two PNG plots, plus a rich table for the terminal. No TensorFlow here, and
matplotlib is imported inside the plotting functions, so commands that never plot do not pay for it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgemaas.compress import report_extra
from edgemaas.compress.records import NOT_SHIPPED, ReportCard, VariantResult, VariantStatus
from edgemaas.errors import UserError
from edgemaas.fsutil import atomic_write_many
from edgemaas.units import PERCENT_METRICS, format_drop, format_metric

if TYPE_CHECKING:
    from rich.table import Table

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
SIZE_PLOT = "size_vs_metric.png"
LATENCY_PLOT = "latency.png"

METRIC_LABELS = {
    "accuracy": "accuracy",
    "agreement": "agreement with the original model",
    "rmse": "RMSE",
    "output_rmse": "output RMSE vs the original model",
}
STATUS_STYLES = {"chosen": "bold green", "passed": "", "rejected": "yellow", "failed": "red", "skipped": "dim"}
TABLE_COLUMNS = ("variant", "format", "status", "metric", "drop", "size", "gzipped", "ratio", "sparsity", "parity",
                 "p50 latency", "runtime")
# Converter messages can be whole tracebacks; the report keeps the start and the end (where the error is).
MAX_REASON_CHARS = 4000


class ReportNotFoundError(UserError, FileNotFoundError):
    """No report.json where one was expected. A UserError too, so the CLI prints it without a traceback."""


AnyReport = ReportCard | dict[str, Any]


def as_card(report: AnyReport) -> ReportCard:
    """The typed card, from a ReportCard or its dict (partial dicts get the defaults the report shows)."""
    return report if isinstance(report, ReportCard) else ReportCard.from_dict(report)


# ---------------------------------------------------------------------------------------------------------------
# Formatting


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


format_metric_value = format_metric  # the name this module has always exported; one formatter in edgemaas.units


def format_size(size_bytes: int | None) -> str:
    """Bytes as KB with one decimal (1 KB = 1024 bytes, as the CLI's `_kb`)."""
    return "-" if size_bytes is None else f"{size_bytes / 1024:.1f} KB"


def format_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def format_latency(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.3f} ms"


def format_sparsity(sparsity: float | None) -> str:
    return "-" if sparsity is None else f"{sparsity * 100:.0f}%"


def format_parity(max_abs: float | None) -> str:
    return "-" if max_abs is None else f"{max_abs:.3g}"


def gate_threshold(report: AnyReport) -> float | None:
    """The metric value a variant must reach to pass: the reference metric moved by the gate's budget.

    Accuracy-point budgets are absolute (1.0 point = 0.01 of a 0..1 metric); `% of ...` budgets are relative to the
    reference (`ref * (1 + budget/100)` for an RMSE). A relative budget means nothing around a reference of 0, which is
    what an output RMSE against the original model is; there the drop must be scaled by something else, so the
    threshold is read off the measured rows instead (drops are linear in the metric). None when nothing tells.
    """
    card = as_card(report)
    ref, budget = card.reference.metric_value, card.gate.max_metric_drop
    if not _finite(ref) or not _finite(budget):
        return None
    higher = card.higher_is_better
    if "point" in card.drop_unit:
        return ref - budget / 100 if higher else ref + budget / 100
    if ref != 0:
        return ref * (1 - budget / 100) if higher else ref * (1 + budget / 100)
    for row in card.variants:
        value, drop = row.metric_value, row.metric_drop
        if _finite(value) and _finite(drop) and drop != 0 and value != ref:
            return ref + (value - ref) * budget / drop
    return None


def _row_cells(card: ReportCard, row: VariantResult) -> list[str]:
    """One variant as the strings of TABLE_COLUMNS (shared by the Markdown and the rich table)."""
    metric = card.metric
    return [
        row.variant, row.format or "-", row.status.value,
        format_metric_value(metric, row.metric_value), format_drop(row.metric_drop, card.drop_unit),
        format_size(row.size_bytes), format_size(row.gzip_bytes), format_ratio(row.size_ratio),
        format_sparsity(row.sparsity), format_parity(row.parity_max_abs),
        format_latency(row.latency_p50_ms), str(row.runtime or "-"),
    ]


def sorted_variants(report: AnyReport) -> list[VariantResult]:
    """Variants by format, then size (unmeasured rows last within their format), then name."""
    def key(row: VariantResult) -> tuple[str, int, float, str]:
        size = row.size_bytes
        return (row.format, size is None, size or 0, row.variant)

    return sorted(as_card(report).variants, key=key)


def gate_summary(report: AnyReport) -> str:
    """One line: the budget, the objective and what ships per format."""
    card = as_card(report)
    gate = card.gate
    ships = ", ".join(f"{fmt}: {name or 'nothing passed'}" for fmt, name in gate.chosen.items()) or "nothing chosen"
    return (f"gate: drop ≤ {gate.max_metric_drop} {card.drop_unit}, "
            f"{gate.objective.value} wins; ships {ships}")


# ---------------------------------------------------------------------------------------------------------------
# Markdown


def _md_cell(text: str) -> str:
    # A `|` or a newline inside a cell would break the table row.
    return " ".join(text.split()).replace("|", "\\|")


def _clip_reason(reason: str) -> str:
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    half = MAX_REASON_CHARS // 2
    return f"{reason[:half]}\n… ({len(reason) - MAX_REASON_CHARS} characters left out) …\n{reason[-half:]}"


def _md_reason(text: str, indent: str = "  ") -> str:
    """A reason or note as Markdown: inline when it is one line, a fenced block (verbatim) when it is a traceback."""
    text = _clip_reason(text.strip())
    if "\n" not in text:
        return f" {text}"
    fence = "````" if "```" in text else "```"
    body = "\n".join(f"{indent}{line}" for line in text.splitlines())
    return f"\n\n{indent}{fence}text\n{body}\n{indent}{fence}"


def render_markdown(report: AnyReport) -> str:
    """The report card as Markdown (what `write_report` saves as report.md)."""
    card = as_card(report)
    metric, unit, gate, ref = card.metric, card.drop_unit, card.gate, card.reference
    parity = card.metric_source.value == "parity"
    threshold = gate_threshold(card)
    direction = "higher is better" if card.higher_is_better else "lower is better"
    lines = [f"# Compression report: {card.model}", ""]

    if parity:
        lines += ["> **⚠ No labelled eval data was given, so the metric is agreement with the original model, not "
                  "accuracy against ground truth.** A variant that copies the original's mistakes scores perfectly; "
                  "give eval data to measure real accuracy.", ""]
    source = "compared with the original model's outputs" if parity else "against its labels"
    lines += [f"Task: {card.task}. Metric: **{METRIC_LABELS.get(metric, metric)}** ({direction}), "
              f"measured on {card.eval_data or 'unspecified data'}, {source}. Reference: "
              f"`{ref.variant}`, {format_metric_value(metric, ref.metric_value)}, "
              f"{format_size(ref.size_bytes)} ({format_size(ref.gzip_bytes)} gzipped). Ratios are "
              f"against the float32 TFLite size (or the reference's when there is none).", ""]

    lines.append(f"**Gate:** ship the {gate.objective.value} variant of each format whose "
                 f"{METRIC_LABELS.get(metric, metric)} is at most {gate.max_metric_drop} {unit} worse than the "
                 "reference's" + (f" (threshold {format_metric_value(metric, threshold)})." if threshold is not None
                                  else "."))
    lines.append("")
    for fmt, name in gate.chosen.items():
        default = " (the default for `edgemaas package`)" if name and name == gate.default else ""
        lines.append(f"- {fmt}: **{name}**{default}" if name else
                     f"- {fmt}: none" + (" passed; the float model ships" if fmt in gate.fallback else ""))
    if gate.default and gate.default not in gate.chosen.values():
        lines.append(f"- default for `edgemaas package`: **{gate.default}**")
    lines.append("")
    for fmt in gate.fallback:
        lines += [f"**No variant passed the gate for {fmt}: the float model ships.**", ""]

    lines += ["## Variants", "", "| " + " | ".join(TABLE_COLUMNS) + " |",
              "|" + "|".join(["---"] * 3 + ["---:"] * 8 + ["---"]) + "|"]
    rows = sorted_variants(card)
    for row in rows:
        cells = [_md_cell(c) for c in _row_cells(card, row)]
        if row.status is VariantStatus.CHOSEN:
            cells[0], cells[2] = f"**{cells[0]}**", f"**{cells[2]}**"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")

    dropped = [r for status in NOT_SHIPPED for r in rows if r.status is status]
    if dropped:
        lines += ["## Not shipped", ""]
        for row in dropped:
            why = row.reason.strip() or "; ".join(row.notes) or "no reason recorded"
            lines.append(f"- `{row.variant}` ({row.status.value}):{_md_reason(why)}")
        lines.append("")
    # Notes the section above did not already show (it shows them only for a row without a reason).
    noted = [r for r in rows if r.notes and (r.status not in NOT_SHIPPED or r.reason.strip())]
    if noted:
        lines += ["## Notes", ""]
        for row in noted:
            for note in row.notes:
                lines.append(f"- `{row.variant}`:{_md_reason(str(note))}")
        lines.append("")

    if card.extra.get("inputs"):  # a model with several inputs or outputs: every tensor, as it is served
        lines += ["## Tensors", "", *(f"- input `{t}`" for t in card.extra["inputs"]),
                  *(f"- output `{t}`" for t in card.extra.get("outputs", [])), ""]
    lines += report_extra.cost_markdown(card)
    lines += report_extra.layers_markdown(card)
    lines += ["## Plots", "", f"![gzipped size vs {metric}]({SIZE_PLOT})", "", f"![p50 latency]({LATENCY_PLOT})", "",
              f"<sub>edgemaas {card.edgemaas_version or '?'}, {card.created or '?'}</sub>", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Plots


def _chosen_names(card: ReportCard) -> set[str]:
    """Variants the gate picked: its record, or a row's status (a fallback float row may have only the latter)."""
    names = {v for v in card.gate.chosen.values() if v}
    return names | {r.variant for r in card.variants if r.status is VariantStatus.CHOSEN}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on build machines and CI; must come before pyplot
    import matplotlib.pyplot as plt

    return plt


def _place_labels(fig: Any, ax: Any, points: list[tuple[float, float, str, dict[str, Any], float, bool]]) -> int:
    """Annotate (x, y, name, text style, marker radius in points, must show) with the names, trying offsets around
    each point until the label overlaps no marker and no label placed so far. Returns how many were left out.

    Compressed variants bunch together (int8 and int16x8 differ by a few KB and a fraction of a point), so fixed
    offsets would stack the names on each other.
    """
    renderer = fig.canvas.get_renderer()
    axes_box = ax.get_window_extent(renderer)
    px_per_pt = fig.dpi / 72
    taken = []
    for x, y, _, _, size, _ in points:  # the markers themselves
        px, py = ax.transData.transform((x, y))
        r = size * px_per_pt
        taken.append(_box(px - r, py - r, px + r, py + r))
    directions = [(1, 0.3), (1, -1), (-1, 0.3), (-1, -1), (0, 1), (0, -1.6), (1, 1), (-1, 1), (1, -1.8), (-1, -1.8)]
    omitted = 0
    for x, y, text, style, size, must in points:
        placed = None
        for step, extra in enumerate((3, 11, 21, 33)):
            radius = size + extra
            for dx, dy in directions:
                ha = "left" if dx > 0 else "right" if dx < 0 else "center"
                arrow = {"arrowstyle": "-", "color": "0.6", "lw": 0.6, "shrinkB": size} if step else None
                ann = ax.annotate(text, (x, y), xytext=(dx * radius, dy * radius), textcoords="offset points",
                                  ha=ha, va="center", fontsize=8, arrowprops=arrow, **style)
                box = ann.get_window_extent(renderer)
                if axes_box.contains(box.x0, box.y0) and axes_box.contains(box.x1, box.y1) and not any(
                        box.overlaps(t) for t in taken):
                    placed = box
                    break
                ann.remove()
            if placed is not None:
                break
        if placed is None:
            if not must:  # a pile of overprinted names reads worse than none; the table has them all
                omitted += 1
                continue
            ann = ax.annotate(text, (x, y), xytext=(size + 3, 2), textcoords="offset points", fontsize=8, **style)
            placed = ann.get_window_extent(renderer)
        taken.append(placed)
    return omitted


def _box(x0: float, y0: float, x1: float, y1: float) -> Any:
    from matplotlib.transforms import Bbox

    return Bbox([[x0, y0], [x1, y1]])


def _padded_range(values: list[float], log: bool, pad: float = 0.08) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if log:
        llo, lhi = math.log10(lo), math.log10(hi)
        span = (lhi - llo) or 0.5
        return 10 ** (llo - span * pad), 10 ** (lhi + span * pad)
    span = (hi - lo) or (abs(hi) * 0.05 or 0.01)
    return lo - span * pad, hi + span * pad


def plot_size_vs_metric(report: AnyReport, path: Path) -> None:
    """Scatter of gzipped size (KB) vs metric for every measured variant, chosen ones starred, gate line dashed."""
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import PercentFormatter

    card = as_card(report)
    metric = card.metric
    chosen = _chosen_names(card)
    rows = [r for r in card.variants if _finite(r.gzip_bytes) and r.gzip_bytes > 0 and _finite(r.metric_value)]
    formats = sorted({r.format for r in rows})
    colours = {fmt: plt.get_cmap("tab10")(i % 10) for i, fmt in enumerate(formats)}
    ref = card.reference
    threshold = gate_threshold(card)

    fig, ax = plt.subplots(figsize=(10, 6), dpi=110)
    xs = [r.gzip_bytes / 1024 for r in rows]
    ys = [r.metric_value for r in rows]
    has_ref = _finite(ref.gzip_bytes) and ref.gzip_bytes > 0 and _finite(ref.metric_value)
    all_x = xs + ([ref.gzip_bytes / 1024] if has_ref else [])
    all_y = ys + ([ref.metric_value] if has_ref else []) + ([threshold] if threshold is not None else [])
    if not all_x:
        ax.text(0.5, 0.5, "no measured variants", ha="center", va="center", transform=ax.transAxes)
    else:
        log = max(all_x) / min(all_x) >= 8  # a linear axis would squash every compressed variant into one corner
        if log:
            ax.set_xscale("log")
        ax.set_xlim(*_padded_range(all_x, log))
        ax.set_ylim(*_padded_range(all_y, False, pad=0.15))
        if threshold is not None:
            # Shade the side of the line where variants fail, so pass/fail reads at a glance.
            higher = card.higher_is_better
            lo, hi = ax.get_ylim()
            ax.axhspan(lo if higher else threshold, threshold if higher else hi, color="tab:red", alpha=0.06, lw=0)
            ax.axhline(threshold, color="tab:red", ls="--", lw=1.2)
            ax.set_ylim(lo, hi)
        for r, x, y in zip(rows, xs, ys):
            is_chosen = r.variant in chosen
            marker = "*" if is_chosen else "X" if r.status is VariantStatus.REJECTED else "o"
            ax.scatter([x], [y], s=260 if is_chosen else 55, marker=marker,
                       color=colours[r.format], edgecolors="black" if is_chosen else "none",
                       linewidths=0.8, zorder=3 if is_chosen else 2)
        if has_ref:
            ax.scatter([ref.gzip_bytes / 1024], [ref.metric_value], marker="D", s=45, color="black", zorder=2)
        # Marker radius in points: a scatter size `s` is an area in points², the star needs room around it.
        labels = [(x, y, r.variant, {"fontweight": "bold"} if r.variant in chosen else {},
                   8.0 if r.variant in chosen else 4.0, r.variant in chosen)
                  for r, x, y in zip(rows, xs, ys)]
        if has_ref:
            labels.append((ref.gzip_bytes / 1024, ref.metric_value, f"{ref.variant} (reference)",
                           {"color": "0.3"}, 4.0, False))
        fig.canvas.draw()  # fix the layout so label positions are measured where they end up
        # Chosen variants first, so they always get a clear spot; then left to right.
        omitted = _place_labels(fig, ax, sorted(labels, key=lambda p: (not p[5], p[0], p[1])))
        if omitted:
            ax.text(0.99, 0.01, f"{omitted} names left out where points crowd; report.md lists every variant",
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="0.4")

    if metric in PERCENT_METRICS:
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=1))
    direction = "higher is better" if card.higher_is_better else "lower is better"
    ax.set_xlabel("gzipped size (KB" + (", log scale)" if ax.get_xscale() == "log" else ")"))
    ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} ({direction})")
    ax.set_title(f"{card.model}: gzipped size vs {metric}\n"
                 f"gate: drop ≤ {card.gate.max_metric_drop} {card.drop_unit}, "
                 f"{card.gate.objective.value} passing variant ships", fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    handles = [Line2D([], [], ls="", marker="o", color=colours[f], label=f) for f in formats]
    handles += [Line2D([], [], ls="", marker="*", markersize=13, color="0.5", markeredgecolor="black",
                       label="chosen"),
                Line2D([], [], ls="", marker="o", color="0.5", label="passed"),
                Line2D([], [], ls="", marker="X", color="0.5", label="rejected")]
    if has_ref:
        handles.append(Line2D([], [], ls="", marker="D", color="black", label="reference"))
    if threshold is not None:
        handles.append(Line2D([], [], ls="--", color="tab:red",
                              label=f"gate threshold ({format_metric_value(metric, threshold)})"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9, frameon=False)
    try:
        fig.savefig(path, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)  # pyplot keeps every open figure alive; a long compress run makes many reports


def plot_latency(report: AnyReport, path: Path) -> None:
    """Horizontal bars of p50 latency per measured variant, grouped and coloured by runtime, chosen ones marked."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    card = as_card(report)
    chosen = _chosen_names(card)
    rows = [r for r in card.variants if _finite(r.latency_p50_ms)]
    rows.sort(key=lambda r: (str(r.runtime or "-"), r.latency_p50_ms, r.variant))
    runtimes = list(dict.fromkeys(str(r.runtime or "-") for r in rows))
    colours = {rt: plt.get_cmap("Set2")(i % 8) for i, rt in enumerate(runtimes)}

    # One slot per bar plus a blank slot between runtime groups; the first row is drawn at the top.
    positions, slot, previous = [], 0.0, None
    for r in rows:
        runtime = str(r.runtime or "-")
        if previous is not None and runtime != previous:
            slot += 0.6
        positions.append(slot)
        slot += 1
        previous = runtime
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.38 * max(len(rows), 2) + 0.25 * len(runtimes)), dpi=110)
    if not rows:
        ax.text(0.5, 0.5, "no latency measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    else:
        values = [r.latency_p50_ms for r in rows]
        is_chosen = [r.variant in chosen for r in rows]
        positive = [v for v in values if v > 0]
        log = bool(positive) and len(positive) == len(values) and max(values) / min(values) >= 50
        bars = ax.barh(positions, values, color=[colours[str(r.runtime or "-")] for r in rows],
                       edgecolor=["black" if c else "none" for c in is_chosen],
                       linewidth=[1.6 if c else 0 for c in is_chosen], height=0.75)
        for bar, r in zip(bars, rows):
            if r.status is VariantStatus.REJECTED:  # fast but not shippable: keep it visible, mark it out
                bar.set_alpha(0.45)
                bar.set_hatch("///")
        if log:  # orders of magnitude apart: a linear axis would hide the fast variants
            ax.set_xscale("log")
        ax.set_yticks(positions, [f"★ {r.variant}" if c else r.variant
                                  for r, c in zip(rows, is_chosen)])
        for label, c in zip(ax.get_yticklabels(), is_chosen):
            if c:
                label.set_fontweight("bold")
        for bar, value, c in zip(bars, values, is_chosen):
            ax.annotate(f"{value:.3f} ms", (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                        xytext=(4, 0), textcoords="offset points", va="center", fontsize=8,
                        fontweight="bold" if c else "normal")
        lo, hi = ax.get_xlim()
        ax.set_xlim(lo if log else 0, hi * (3 if log else 1.18))  # room for the value labels
        ax.invert_yaxis()
        # Outside the axes: inside, it covers the longest bars' value labels.
        ax.legend(handles=[Patch(color=colours[rt], label=rt) for rt in runtimes]
                  + [Patch(facecolor="white", edgecolor="black", lw=1.6, label="★ chosen"),
                     Patch(facecolor="white", edgecolor="0.4", hatch="///", lw=0, label="rejected by the gate")],
                  loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9, frameon=False)
    ax.set_xlabel("p50 latency (ms, lower is better" + (", log scale)" if ax.get_xscale() == "log" else ")"))
    ax.set_title(f"{card.model}: p50 latency per variant, by runtime", fontsize=11)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    try:
        fig.savefig(path, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)  # pyplot keeps every open figure alive; a long compress run makes many reports


# ---------------------------------------------------------------------------------------------------------------
# Files


def _json_default(value: Any) -> Any:
    # Measurements often arrive as numpy scalars, and paths as Path; both have an obvious JSON form.
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_report(report: AnyReport, directory: Path) -> dict[str, Path]:
    """Write report.json, report.md, size_vs_metric.png and latency.png into `directory` (created if needed).

    Every file is rendered to a temporary name first and only then moved into place, report.json last: a run that
    fails or is interrupted while rendering leaves the previous report (or none) untouched and no half-written
    files, and a report.json on disk means the rest of its report is there too.
    """
    # A dict is written as given (keys it has, in its order); a ReportCard as its to_dict().
    data = report.to_dict() if isinstance(report, ReportCard) else report
    text = json.dumps(data, indent=2, default=_json_default) + "\n"  # before any file: fail early if not JSON-able
    card = as_card(data)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    targets = {"size_vs_metric": directory / SIZE_PLOT, "latency": directory / LATENCY_PLOT,
               "markdown": directory / REPORT_MD, "json": directory / REPORT_JSON}
    writers: dict[str, Callable[[Path], None]] = {
        "size_vs_metric": lambda p: plot_size_vs_metric(card, p),
        "latency": lambda p: plot_latency(card, p),
        "markdown": lambda p: p.write_text(render_markdown(card), encoding="utf-8"),
        "json": lambda p: p.write_text(text, encoding="utf-8"),
    }
    # Present only when the card has their data (a priced gate, per-layer errors): older cards keep four files.
    if report_extra.priced_rows(card):
        targets = {"cost": directory / report_extra.COST_PLOT, **targets}
        writers["cost"] = lambda p: report_extra.plot_cost(card, p)
    if report_extra.layer_rows(card):
        targets = {"layers": directory / report_extra.LAYERS_PLOT, **targets}
        writers["layers"] = lambda p: report_extra.plot_layers(card, p)
    atomic_write_many({target: writers[key] for key, target in targets.items()})
    paths = {"json": targets["json"], "markdown": targets["markdown"], "size_vs_metric": targets["size_vs_metric"],
             "latency": targets["latency"]}
    for key in ("cost", "layers"):
        if key in targets:
            paths[key] = targets[key]
    return paths


def load_report(directory: Path) -> dict[str, Any]:
    """Read `directory`/report.json as written by `write_report`."""
    directory = Path(directory)
    path = directory / REPORT_JSON
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        raise ReportNotFoundError(f"no report in {directory}; run `edgemaas compress NAME` first") from None
    try:
        report = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                         f"run `edgemaas compress NAME` again") from None
    if not isinstance(report, dict) or "variants" not in report:
        raise ValueError(f"{path} is not an edgemaas compression report; run `edgemaas compress NAME` again")
    return report


# ---------------------------------------------------------------------------------------------------------------
# Terminal


def report_table(report: AnyReport) -> Table:
    """The variants table for the terminal: same columns as report.md, statuses coloured."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    card = as_card(report)
    table = Table(title=escape(f"{card.model}: {gate_summary(card)}"), title_justify="left")
    for column in TABLE_COLUMNS:
        table.add_column(column, justify="right" if column not in ("variant", "format", "status", "runtime")
                         else "left", no_wrap=column == "variant")
    for row in sorted_variants(card):
        style = STATUS_STYLES.get(row.status.value, "")
        cells = _row_cells(card, row)
        # Text, not markup strings: variant names or runtimes with [brackets] must print as they are.
        rendered = [Text(c) for c in cells]
        rendered[2] = Text(cells[2], style=style)
        if row.status in (VariantStatus.CHOSEN, VariantStatus.SKIPPED):
            rendered[0] = Text(cells[0], style=style)
        table.add_row(*rendered)
    ref = card.reference
    caption = [escape(f"{METRIC_LABELS.get(card.metric, card.metric)} on "
                      f"{card.eval_data or 'unspecified data'}; reference {ref.variant} "
                      f"{format_metric_value(card.metric, ref.metric_value)}")]
    if card.metric_source.value == "parity":
        caption.append("[bold yellow]no labelled eval data: metric is agreement with the original model[/]")
    caption += [f"[bold red]no variant passed the gate for {escape(str(fmt))}: the float model ships[/]"
                for fmt in card.gate.fallback]
    table.caption = "\n".join(caption)
    table.caption_justify = "left"
    return table

