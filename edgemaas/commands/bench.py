"""`edgemaas bench`: every way to serve the built models, measured side by side in one run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
@click.option("--serving", is_flag=True,
              help="Instead: our edge server against BentoML, LitServe, MLServer and KServe under load (each peer "
                   "in its own venv under build/peers/, made on first use; run from a checkout).")
@click.option("--requests", "serving_requests", type=click.IntRange(10, 1_000_000), default=1000, show_default=True,
              help="--serving: measured requests per server, model and concurrency.")
@click.option("--servers", "serving_servers", multiple=True,
              help="--serving: only these servers (repeatable; default all: edgemaas, edgemaas-nobatch, "
                   "litserve-batch, litserve, bentoml-batch, bentoml, mlserver-batch, mlserver, kserve).")
@handle_errors
def bench(names: tuple[str, ...], cold_runs: int, warm_requests: int, out_dir: Path | None, serving: bool,
          serving_requests: int, serving_servers: tuple[str, ...]) -> None:
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
    if serving:
        _serving(ws, names, serving_requests, serving_servers, out_dir)
        return
    chosen = list(names) or sorted(p.parent.name for p in ws.build.glob("*/selection.json"))
    if not chosen:
        raise UserError(f"no built models in {ws.build}; run `edgemaas build` first")
    with console.status("benchmarking") as spinner:
        result = run_bench(chosen, ws, cold_runs=cold_runs, warm_requests=warm_requests,
                           report=lambda message: spinner.update(message))
    written = write_results(result, out_dir or ws.dist / "bench")
    click.echo(readme_table(result))  # Markdown: never wrapped at the console width
    console.print("wrote " + ", ".join(str(p) for p in written))


def _serving(ws: Any, names: tuple[str, ...], requests: int, servers: tuple[str, ...], out_dir: Path | None) -> None:
    from edgemaas.bench.serving_report import write_serving
    from edgemaas.bench.serving_run import DEFAULT_MODELS, run_serving

    with console.status("serving benchmark") as spinner:
        result = run_serving(ws, models=list(names) or list(DEFAULT_MODELS), servers=list(servers) or None,
                             requests=requests, warmup=max(10, requests // 10),
                             report=lambda message: spinner.update(message))
    out = out_dir or ws.dist / "bench"
    written = write_serving(result, out)
    click.echo((out / "serving.md").read_text())
    console.print("wrote " + ", ".join(str(p) for p in written))
