"""The benchmark's results as files: JSON, a Markdown table (the README's too) and PNG plots.

matplotlib is imported inside the plotting functions, so reading or tabulating results does not pay for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from edgemaas.fsutil import atomic_write_many
from edgemaas.units import human_size
from edgemaas.bench.results import BenchResult, Goal, ServerResult

JSON_NAME, MARKDOWN_NAME = "bench.json", "bench.md"
PLOTS = {"cold_start": "cold_start.png", "warm_latency": "warm_latency.png", "memory": "memory.png"}
# Bar colours by what serves the request.
COLOURS = {"tensorflow": "#d62728", "litert": "#1f77b4", "ort": "#2ca02c", "handler": "#9467bd", "floor": "#7f7f7f"}


# ---------------------------------------------------------------------------------------------------------------
# Text


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} µs"
    if value < 10:
        return f"{value:.2f} ms"
    return f"{value:.0f} ms"


def size(n: int | None) -> str:
    return human_size(n, missing="–")


def _size_cell(server: ServerResult) -> str:
    if server.server == "handler" and server.package_bytes:
        return f"zip {size(server.package_bytes)} ({size(server.package_unzipped_bytes)} unzipped)"
    if server.server == "handler-bytecode" and server.package_unzipped_bytes:
        return f"{size(server.package_unzipped_bytes)} unzipped with the .pyc"
    if server.server == "tensorflow" and server.package_bytes:
        return f"model {size(server.model_bytes)} + TF {size(server.package_bytes)} installed"
    return f"model {size(server.model_bytes)}" if server.model_bytes else "–"


def _row(server: ServerResult, runs: int) -> list[str]:
    name = server.model or "(all)"
    if not server.measured:
        return [name, server.label, f"{server.status}: {server.note}", *[""] * 6]
    cold = ms(server.cold_start_median_ms)
    if len(server.cold_start_ms) < runs:
        cold += f" ({len(server.cold_start_ms)} runs)"
    warm = server.warm
    return [name, server.label, cold, ms(warm.p50_ms) if warm else "–", ms(warm.p99_ms) if warm else "–",
            ms(server.raw.p50_ms) if server.raw else "–",
            f"{server.throughput_rps:,.0f}/s" if server.throughput_rps else "–",
            f"{server.peak_rss_mb:.0f} MB" if server.peak_rss_mb else "–", _size_cell(server)]


def _ordered(result: BenchResult) -> list[ServerResult]:
    """Per model in run order, servers in catalogue order; the floors last."""
    rank = ["tensorflow", "litert-float32", "litert-dynamic", "litert-int8", "ort-float32", "ort-dynamic", "ort-qdq",
            "handler", "handler-bytecode", "floor-litert", "floor-ort"]
    models = {m: i for i, m in enumerate(result.models)}
    return sorted(result.servers, key=lambda s: (s.model is None, models.get(s.model, 0),
                                                   rank.index(s.server) if s.server in rank else 99))


def _table(header: list[str], rows: list[list[str]], align: str) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def servers_table(result: BenchResult) -> str:
    runs = int(result.settings.get("cold_runs", 0))
    header = ["model", "server", f"cold start (median of {runs})", "warm p50", "warm p99", "raw invoke p50",
              f"throughput ({result.settings.get('throughput_workers', 2)} workers)", "peak RSS", "size"]
    return _table(header, [_row(s, runs) for s in _ordered(result)], "llrrrrrrl")


def goal_text(goal: Goal) -> str:
    if goal.met is None:
        return "n/a"
    return "met" if goal.met else "**missed**"


def goals_table(result: BenchResult) -> str:
    """Every goal on its own row, with the measured numbers its ratio comes from."""
    rows = [[g.model, g.description, f"≤ {g.target:.3g}", "–" if g.ratio is None else ratio_text(g.ratio, g.target),
             goal_text(g), g.detail] for g in result.goals]
    return _table(["model", "goal", "target", "ratio", "result", "from"], rows, "llrrll")


def goals_matrix(result: BenchResult) -> str:
    """The goals compactly: one row per model, one column per goal, each cell the ratio and met or missed."""
    columns: dict[str, str] = {}
    for goal in result.goals:  # in evaluation order; a column's heading is its description with the model's target
        columns.setdefault(goal.goal, goal.description.replace("warm p50: ", "p50: ").replace("cold start: ", "cold: "))
    if "litert-int8_vs_float32" in columns and any(g.goal == "litert-int8_vs_float32" and g.target != 1.0
                                                   for g in result.goals):
        columns["litert-int8_vs_float32"] = "p50: LiteRT full int8 ≤ 1× LiteRT float32 (cnn: ≤ 0.7×)"
    rows = []
    for model in result.models:
        found = {g.goal: g for g in result.goals if g.model == model}
        rows.append([model] + [f"{ratio_text(found[c].ratio, found[c].target)} {goal_text(found[c])}"
                               if c in found and found[c].ratio is not None else "n/a" for c in columns])
    return _table(["model", *columns.values()], rows, "l" + "r" * len(columns))


def _keras_call_line(result: BenchResult) -> str:
    calls = [f"{s.model} {ms(s.call.p50_ms)}" for s in result.servers
             if s.server == "tensorflow" and s.measured and s.call]
    return ("TensorFlow rows time `model.predict(x)` on one sample; the eager call `model(x)` has a p50 of "
            + ", ".join(calls) + "." if calls else "")


def _bytecode_line(result: BenchResult) -> str:
    """What the cold-start goals would read with the package's Python precompiled (the `+ .pyc` servers)."""
    cells = []
    for model in result.models:
        compiled, tensorflow = result.server(model, "handler-bytecode"), result.server(model, "tensorflow")
        handler = result.server(model, "handler")
        floor = result.floor("onnx" if handler and (handler.variant or "").startswith("onnx") else "tflite")
        if not (compiled and compiled.measured and compiled.cold_start_median_ms):
            continue
        parts = [f"{compiled.cold_start_median_ms / s.cold_start_median_ms:.3g}{what}"
                 for s, what in ((tensorflow, " of TensorFlow"), (floor, "× the floor"))
                 if s and s.measured and s.cold_start_median_ms]
        if parts:
            cells.append(f"{model} {', '.join(parts)}")
    return ("With its Python precompiled (the `+ .pyc` rows), the packaged handler's cold start would be: "
            + "; ".join(cells) + ".") if cells else ""


def heading(result: BenchResult) -> str:
    m, v, s = result.machine, result.versions, result.settings
    load = f"load average {m.get('load_average_before')} before, {m.get('load_average_after')} after"
    return (f"Measured {result.date[:10]} on {m.get('cpu')} ({m.get('cores')} cores, {m.get('arch')}), "
            f"Python {m.get('python')}; numpy {v.get('numpy')}, ai-edge-litert {v.get('ai-edge-litert')}, "
            f"onnxruntime {v.get('onnxruntime')}, tensorflow {v.get('tensorflow')} (tf-keras {v.get('tf-keras')}). "
            f"Each server ran {s.get('cold_runs')} times in a fresh process, interleaved with the others; warm "
            f"latency pools {s.get('warm_requests_measured')} single requests ({s.get('requests_per_process')} per "
            f"process after {s.get('warmup_per_process')} uncounted); {load}.")


def readme_table(result: BenchResult) -> str:
    """The Markdown the README carries: when and where, every server side by side, and each goal met or missed."""
    met = sum(1 for g in result.goals if g.met)
    missed = sum(1 for g in result.goals if g.met is False)
    parts = [heading(result), "", servers_table(result)]
    call = _keras_call_line(result)
    if call:
        parts += ["", call]
    bytecode = _bytecode_line(result)
    if bytecode:
        parts += ["", bytecode]
    parts += ["", f"Goals, as ratios of this run's numbers: {met} met, {missed} missed (the numbers behind each "
              "ratio are in bench.md).", "", goals_matrix(result)]
    return "\n".join(parts) + "\n"


def _modules_cell(modules: list[str], shown: int = 6) -> str:
    if len(modules) <= shown:
        return ", ".join(modules)
    return ", ".join(modules[:shown]) + f", … ({len(modules)} in all)"


def ratio_text(ratio: float, target: float) -> str:
    """The ratio to 3 significant digits, or more when 3 would round it onto the other side of its target."""
    for digits in range(3, 8):
        text = f"{ratio:.{digits}g}"
        if (float(text) <= target) == (ratio <= target):
            return text
    return repr(ratio)


def markdown_report(result: BenchResult) -> str:
    """bench.md: the README table, then where each cold start went, and the run's notes."""
    rows = []
    for s in _ordered(result):
        if not s.measured:
            continue
        p = s.phases_ms
        load = p.get("import_and_load_ms", (p.get("import_ms") or 0) + (p.get("load_ms") or 0))
        rows.append([s.model or "(all)", s.label, ms(p.get("spawn_ms")), ms(load), ms(p.get("first_request_ms")),
                     ms(s.cold_start_median_ms), _modules_cell(s.third_party_modules)])
    phases = _table(["model", "server", "interpreter start", "imports + model load (from start)", "first request",
                     "cold start", "third-party modules imported"], rows, "llrrrrl")
    notes = "\n".join(f"- {n}" for n in result.notes)
    return (f"# edgemaas bench\n\n{readme_table(result)}\n## Each goal and its numbers\n\n{goals_table(result)}\n\n"
            f"## Where the cold start goes (medians)\n\n{phases}\n\n## Notes\n\n{notes}\n")


# ---------------------------------------------------------------------------------------------------------------
# Plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on build machines and CI; before pyplot
    import matplotlib.pyplot as plt

    return plt


def _colour(server: ServerResult) -> str:
    for prefix, colour in COLOURS.items():
        if server.server.startswith(prefix):
            return colour
    return "#333333"


def _bars(result: BenchResult, path: Path, title: str, xlabel: str, value: Callable[[ServerResult], float | None],
          marks: dict[str, tuple[str, Callable[[ServerResult], float | None]]] | None = None) -> None:
    """One horizontal bar per measured server (log scale), with optional extra marks (label: (marker, value))."""
    plt = _pyplot()
    rows = [(s, value(s)) for s in _ordered(result) if s.measured and value(s)]
    fig, ax = plt.subplots(figsize=(9, 1.3 + 0.26 * max(1, len(rows))))
    positions = list(range(len(rows)))[::-1]
    ax.barh(positions, [v for _, v in rows], color=[_colour(s) for s, _ in rows], height=0.7)
    right = [v for _, v in rows]
    for label, (marker, mark) in (marks or {}).items():
        points = [(i, p, mark(s)) for i, (p, (s, _)) in enumerate(zip(positions, rows)) if mark(s)]
        if points:
            ax.scatter([x for _, _, x in points], [p for _, p, _ in points], marker=marker, s=60, color="black",
                       facecolors="none" if marker == "o" else None, label=label, zorder=3)
            for i, _, x in points:
                right[i] = max(right[i], x)
    if marks:
        ax.legend(loc="lower right", fontsize=8)
    for p, (_, v), x in zip(positions, rows, right):
        text = ms(v) if "ms" in xlabel else f"{v:.0f}"
        ax.annotate(text, (x, p), xytext=(6, 0), textcoords="offset points", va="center", fontsize=7)
    ax.set_yticks(positions, [f"{s.model} · {s.label}" if s.model else s.label for s, _ in rows], fontsize=7)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on a short log axis
    ax.margins(x=0.15)
    ax.set_xlabel(xlabel)
    ax.set_title(f"{title} — {result.date[:10]}, {result.machine.get('cores')} cores", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def plot_cold_start(result: BenchResult, path: Path) -> None:
    _bars(result, path, "Cold start: fresh process to first result (median)", "ms (log scale)",
          lambda s: s.cold_start_median_ms)


def plot_warm_latency(result: BenchResult, path: Path) -> None:
    _bars(result, path, "Warm latency, one sample per request (p50 bars)", "ms (log scale)",
          lambda s: s.warm.p50_ms if s.warm else None,
          {"p99": ("|", lambda s: s.warm.p99_ms if s.warm else None),
           "raw invoke p50": ("o", lambda s: s.raw.p50_ms if s.raw else None)})


def plot_memory(result: BenchResult, path: Path) -> None:
    _bars(result, path, "Peak resident memory (VmHWM)", "MB (log scale)", lambda s: s.peak_rss_mb)


# ---------------------------------------------------------------------------------------------------------------
# Files


def write_results(result: BenchResult, out_dir: Path) -> list[Path]:
    """bench.json, bench.md and the PNG plots in `out_dir`. Each is rendered under a temporary name and moved into
    place only when all are ready (bench.json last), so a failure leaves the previous results whole."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result.to_dict(), indent=2) + "\n"
    writers: dict[str, Callable[[Path], Any]] = {
        PLOTS["cold_start"]: lambda p: plot_cold_start(result, p),
        PLOTS["warm_latency"]: lambda p: plot_warm_latency(result, p),
        PLOTS["memory"]: lambda p: plot_memory(result, p),
        MARKDOWN_NAME: lambda p: p.write_text(markdown_report(result), encoding="utf-8"),
        JSON_NAME: lambda p: p.write_text(text, encoding="utf-8"),
    }
    return atomic_write_many({out_dir / name: write for name, write in writers.items()})


def load_results(out_dir: Path) -> BenchResult:
    return BenchResult.from_dict(json.loads((Path(out_dir) / JSON_NAME).read_text()))
