"""`edgemaas bench`: every way to serve the built models, measured side by side in one run."""

from __future__ import annotations

from pathlib import Path

import click

from edgemaas.errors import UserError
from edgemaas.commands.common import console, handle_errors, workspace


@click.command()
@click.argument("names", nargs=-1)
@click.option("--cold-runs", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Fresh processes per server (cold starts; the median is reported).")
@click.option("--warm-requests", type=click.IntRange(1, 1_000_000), default=1000, show_default=True,
              help="Single warm requests per server, for p50/p99.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where bench.json, bench.md and the plots go (default: dist/bench).")
@handle_errors
def bench(names: tuple[str, ...], cold_runs: int, warm_requests: int, out_dir: Path | None) -> None:
    """Measure NAMES (default: every built model) served every way, side by side in one run, against the goals.

    TensorFlow (what most deploy today), LiteRT float32 / dynamic int8 / full int8, ONNX Runtime float32 / dynamic
    int8 / static QDQ int8, the packaged Lambda handler and each runtime's floor: cold start, warm p50/p99, raw
    invoke, throughput with 2 workers, peak memory and sizes. Build the models first (`edgemaas build`).

    \b
    Example:
      edgemaas bench
      edgemaas bench cnn --cold-runs 3 --warm-requests 200
    """
    from edgemaas.bench import readme_table, run_bench, write_results

    ws = workspace()
    chosen = list(names) or sorted(p.parent.name for p in ws.build.glob("*/selection.json"))
    if not chosen:
        raise UserError(f"no built models in {ws.build}; run `edgemaas build` first")
    with console.status("benchmarking") as spinner:
        result = run_bench(chosen, ws, cold_runs=cold_runs, warm_requests=warm_requests,
                           report=lambda message: spinner.update(message))
    written = write_results(result, out_dir or ws.dist / "bench")
    click.echo(readme_table(result))  # Markdown: never wrapped at the console width
    console.print("wrote " + ", ".join(str(p) for p in written))
