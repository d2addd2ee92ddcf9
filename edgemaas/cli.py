"""The `edgemaas` command line. Thin: parse options, call the library, print with rich.

User mistakes (UserError, bad options) print `Error: ...` and exit 1 (usage errors 2), with no traceback unless
--debug is given.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import UserError
from .workspace import Workspace

# Wide enough for the build table when output goes to a file or CI log (rich assumes 80 columns there).
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
out = Console(width=None if sys.stdout.isatty() else 160)


def _handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into click's `Error: ...` at the command boundary."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            if click.get_current_context().find_root().params.get("debug"):
                raise
            raise click.ClickException(str(exc)) from None

    return wrapper


def _workspace() -> Workspace:
    return Workspace(Path("."))


def _status(message: str) -> Callable[[str], None]:
    return lambda step: console.print(f"[dim]{message}: {step}[/dim]")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="edgemaas")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """edgemaas: train, compress, package and serve ML models where TensorFlow never goes.

    \b
    Example, everything for the four built-in models:
      edgemaas build
    """


@cli.command()
@click.argument("specs", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Retrain and reconvert even when nothing changed.")
@_handle_errors
def train(specs: tuple[str, ...], force: bool) -> None:
    """Train the models of SPECS (default: every models/*.yaml) and report held-out metrics.

    \b
    Example:
      edgemaas train models/cnn.yaml
    """
    from .evaluation import format_metric
    from .pipeline import ensure_trained

    for spec in _specs(specs):
        manifest = ensure_trained(spec, _workspace(), force, _status(spec.name))
        console.print(f"[green]{spec.name}[/green]: {format_metric(manifest.task, manifest.metrics['held_out'])} "
                      f"on {manifest.metrics['held_out']['samples']} held-out samples")


@cli.command()
@click.argument("targets", nargs=-1)
@click.option("--calibration-data", type=click.Path(path_type=Path),
              help="For a model file: inputs like those it will serve (.npy, .npz or CSV), for int8 calibration.")
@click.option("--eval-data", type=click.Path(path_type=Path),
              help="For a model file: inputs with targets (.npz with x and y, or CSV with a last target column).")
@click.option("--name", help="Name for a model file you bring (default: from the file name).")
@click.option("--labels", help="Comma-separated class labels for a classifier file you bring.")
@click.option("--force", is_flag=True, help="Redo every pass even when nothing changed.")
@_handle_errors
def compress(targets: tuple[str, ...], calibration_data: Path | None, eval_data: Path | None, name: str | None,
             labels: str | None, force: bool) -> None:
    """Make every TFLite and ONNX variant, measure each against the float model, and gate what ships.

    TARGETS are specs, built-in names or model files (.keras, .h5, SavedModel dir, .tflite, .onnx); default:
    every models/*.yaml. Writes dist/<name>/report/ (report.json, report.md, plots).

    \b
    Examples:
      edgemaas compress cnn
      edgemaas compress my_model.keras --calibration-data x.npy --eval-data test.npz
    """
    from .pipeline import compress_file, compress_spec, resolve_spec
    from .report import report_table

    ws = _workspace()
    cards = []
    for target in targets or [str(p) for p in _spec_paths()]:
        spec = resolve_spec(target)
        status = _status(spec.name if spec else Path(target).name)
        if spec is None:
            cards.append(compress_file(Path(target), ws, name, labels.split(",") if labels else None,
                                       calibration_data, eval_data, force=force, report=status))
        elif calibration_data or eval_data:
            raise click.UsageError("--calibration-data and --eval-data are for model files; a spec names its data")
        else:
            cards.append(compress_spec(spec, ws, force, status))
    for card in cards:
        out.print(report_table(card))
        for fmt in card["gate"]["fallback"]:
            console.print(f"[bold red]No variant passed the gate for {fmt}: the float model ships.[/bold red]")
        console.print(f"report: {ws.dist / card['model'] / 'report' / 'report.md'}")


cli.add_command(compress, "convert")


@cli.command()
@click.argument("name")
@_handle_errors
def report(name: str) -> None:
    """Print the compression report card of NAME and where its files and plots are.

    \b
    Example:
      edgemaas report cnn
    """
    from .report import load_report, report_table

    directory = _workspace().dist / name / "report"
    card = load_report(directory)
    out.print(report_table(card))
    for path in sorted(directory.glob("*")):
        console.print(f"  {path}")


@cli.command()
@click.argument("target")
@click.option("--target", "platform", type=click.Choice(["lambda"]), default="lambda", show_default=True,
              help="What to package for.")
@click.option("--variant", help="Package this variant instead of the gate's choice (e.g. tflite-float32).")
@click.option("--python-version", help="Target Python, 3.10 to 3.13 (default: this Python, or the spec's).")
@click.option("--arch", type=click.Choice(["x86_64", "arm64"]), help="Target architecture (default x86_64).")
@click.option("--layout", type=click.Choice(["auto", "zip", "layer", "image"]),
              help="zip: one zip; layer: runtime in a shared layer; image: container build context; auto (default): "
                   "the first that fits Lambda's limits.")
@click.option("--name", help="Name for a model file you bring (default: from the file name).")
@click.option("--labels", help="Comma-separated class labels for a classifier file you bring.")
@click.option("--serverless", "serverless_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a Serverless Framework v3 service for the package here (e.g. serverless.yml).")
@click.option("--sam", "sam_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write an AWS SAM template for the package here (e.g. template.yaml).")
@click.option("--function-url", is_flag=True, help="With --serverless/--sam: also give the function a public URL.")
@_handle_errors
def package(target: str, platform: str, variant: str | None, python_version: str | None, arch: str | None,
            layout: str | None, name: str | None, labels: str | None, serverless_file: Path | None,
            sam_file: Path | None, function_url: bool) -> None:
    """Package TARGET (a spec, a built-in model name, or a model file) as an AWS Lambda function zip.

    \b
    Examples:
      edgemaas package models/cnn.yaml
      edgemaas package cnn --variant tflite-float32 --python-version 3.12 --arch arm64
      edgemaas package my_model.tflite --labels cat,dog
      edgemaas package nlp --layout layer --python-version 3.12 --sam template.yaml
    """
    from .pipeline import package_target

    if python_version and python_version not in ("3.10", "3.11", "3.12", "3.13"):
        raise click.BadParameter("Lambda runs Python 3.10 to 3.13", param_hint="--python-version")
    result = package_target(target, _workspace(), variant, python_version, arch, name,
                            labels.split(",") if labels else None, layout, _status("package"))
    if result.layout_reason:
        console.print(f"layout {result.layout_reason}")
    verb = "[cyan]unchanged, reusing[/cyan]" if result.reused else "[green]wrote[/green]"
    if result.layout == "image":
        console.print(f"{verb} container build context {result.image_context} ({result.variant}, Python "
                      f"{result.python_version} {result.arch}): {_mb(result.unzipped_bytes)} installed")
    else:
        console.print(f"{verb} {result.zip_path} ({result.variant}, Python {result.python_version} {result.arch}, "
                      f"layout {result.layout}): {_mb(result.zipped_bytes)} zipped, {_mb(result.unzipped_bytes)} "
                      "unzipped (Lambda limits: 50 MB zipped direct upload, 250 MB unzipped with layers)")
    if result.layer:
        console.print(f"  runtime layer {result.layer['zip_path']}: {_mb(result.layer['zipped_bytes'])} zipped, "
                      f"{_mb(result.layer['unzipped_bytes'])} unzipped")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if serverless_file or sam_file:
        _write_service_files(target, result, serverless_file, sam_file, function_url)


def _write_service_files(target: str, result: Any, serverless_file: Path | None, sam_file: Path | None,
                         function_url: bool) -> None:
    from .packaging.serverless import link_artifacts, load_records, render_sam, render_serverless, write_atomic

    records = load_records(_workspace().dist, [result.model])
    command = (f"edgemaas package {target} --layout {result.layout} --python-version {result.python_version} "
               f"--arch {result.arch}")
    try:
        if serverless_file:
            write_atomic(serverless_file, render_serverless(records, base_dir=serverless_file.parent,
                                                            function_url=function_url,
                                                            command=f"{command} --serverless {serverless_file}"))
            link_artifacts(records)
            console.print(f"[green]wrote[/green] {serverless_file}")
        if sam_file:
            write_atomic(sam_file, render_sam(records, base_dir=sam_file.parent, function_url=function_url,
                                              command=f"{command} --sam {sam_file}"))
            console.print(f"[green]wrote[/green] {sam_file}")
    except ValueError as exc:
        raise UserError(str(exc)) from None


@cli.command()
@click.argument("target")
@click.option("--local", is_flag=True, help="Run the package here through the real Lambda runtime client.")
@click.option("--data", help='The event as JSON, e.g. \'{"inputs": [[1, 2, 3]]}\'.')
@click.option("--data-file", type=click.Path(exists=True, dir_okay=False), help="A file holding the event JSON.")
@click.option("--memory", "memory_mb", type=click.IntRange(128, 10240), default=512, show_default=True,
              help="Memory size in MB; the function is stopped if it uses more.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.1, 900), default=30, show_default=True,
              help="Seconds before the invoke is stopped, as Lambda does.")
@click.option("--repeat", type=click.IntRange(1, 100_000), default=1, show_default=True,
              help="Send the event N times to one execution environment: a cold start, then warm p50/p99.")
@_handle_errors
def invoke(target: str, local: bool, data: str | None, data_file: str | None, memory_mb: int,
           timeout_s: float, repeat: int) -> None:
    """Invoke a packaged function. TARGET is a function zip, its dist folder, or a model name.

    \b
    Example:
      edgemaas invoke cnn --local --data '{"inputs": [[[0, 0, 5, 13, 9, 1, 0, 0], ...]]}'
      edgemaas invoke dist/nlp/lambda/function.zip --local --data '{"inputs": ["turn on the lights"]}'
    """
    from .lambda_local import invoke_local

    if not local:
        raise UserError("remote invoke needs a deployed function, which this version cannot make yet; "
                        "add --local to run the package here through the Lambda runtime client")
    event = _event(data, data_file)
    package = _package_path(target)
    results = invoke_local(package, [event] * repeat, layers=_layers_for(package), memory_mb=memory_mb,
                           timeout_s=timeout_s)
    result = results[0]
    if result.logs.strip():
        console.print(result.logs.rstrip(), markup=False, highlight=False, style="dim")
    out.print_json(json.dumps(result.payload) if not isinstance(result.payload, str) else json.dumps(result.payload))
    console.print(result.report_line(), markup=False, highlight=False)
    _print_profile(results)
    failed = [r for r in results[1:] if r.function_error]
    if failed:
        raise click.ClickException(f"{len(failed)} of {repeat} invokes failed; first: {failed[0].error_message}")
    if result.function_error:
        raise click.ClickException(f"function error ({result.function_error}): {result.error_message}")
    if isinstance(result.payload, dict) and "error" in result.payload:
        raise click.ClickException(f"the function rejected the request: {result.payload['error'].get('message')}")


@cli.command()
@click.argument("specs", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Retrain and reconvert even when nothing changed.")
@_handle_errors
def build(specs: tuple[str, ...], force: bool) -> None:
    """Train, compress, gate, package for Lambda and smoke-invoke locally: SPECS, or every models/*.yaml.

    \b
    Example:
      edgemaas build
      edgemaas build models/cnn.yaml models/nlp.yaml
    """
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .pipeline import build_one

    loaded = _specs(specs)
    rows = []
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total} models"), TimeElapsedColumn(), console=console, transient=True) as progress:
        overall = progress.add_task("building", total=len(loaded))
        for spec in loaded:
            def report(step: str, name: str = spec.name) -> None:
                progress.update(overall, description=f"[bold]{name}[/bold]: {step}")

            rows.append(build_one(spec, _workspace(), force, report))
            progress.advance(overall)
    out.print(_build_table(rows))
    warnings: dict[str, list[str]] = {}
    for row in rows:
        for warning in row.warnings:
            warnings.setdefault(warning, []).append(row.name)
    for warning, names in warnings.items():
        console.print(f"[yellow]warning[/yellow] ({', '.join(names)}): {warning}")
    failed = [row for row in rows if row.error or not row.invoke.startswith("ok")]
    if failed:
        raise click.ClickException("; ".join(f"{r.name}: {r.error or r.invoke}" for r in failed))


def _build_table(rows: list[Any]) -> Table:
    table = Table(title="edgemaas build")
    for column in ("model", "gate's choice (tflite / onnx)", "gzipped f32 → shipped", "held-out f32 → shipped",
                   "zip", "local invoke (awslambdaric)", "duration"):
        table.add_column(column)
    for row in rows:
        if row.error:
            table.add_row(row.name, "-", "-", "-", "-", f"[red]{row.error}[/red]", "-")
            continue
        chosen = " / ".join(f"{v or '-'}" + (" [red](float: none passed)[/red]" if f in row.fallback else "")
                            for f, v in sorted(row.chosen.items()))
        table.add_row(
            row.name, chosen,
            f"{_kb(row.sizes.get('tflite-float32'))} → {_kb(row.sizes.get(row.shipped))}",
            f"{row.metrics.get('tflite-float32', '-')} → {row.metrics.get(row.shipped, '-')}",
            _mb(row.zip_bytes) if row.zip_bytes else "-",
            row.invoke if row.invoke.startswith("ok") else f"[red]{row.invoke}[/red]",
            f"{row.invoke_ms:.1f} ms" if row.invoke_ms is not None else "-",
        )
    return table


def _spec_paths() -> list[Path]:
    found = sorted(Path("models").glob("*.yaml"))
    if not found:
        raise UserError("no specs given and no models/*.yaml here; run from the edgemaas repository or name a spec")
    return found


def _specs(paths: tuple[str, ...]) -> list[Any]:
    from .spec import load_spec

    return [load_spec(p) for p in (paths or _spec_paths())]


def _event(data: str | None, data_file: str | None) -> Any:
    if (data is None) == (data_file is None):
        raise click.UsageError("give the event with exactly one of --data or --data-file")
    text = data if data is not None else Path(data_file).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        source = "--data" if data is not None else data_file
        raise click.BadParameter(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                                 param_hint=source) from None


def _layers_for(package: Path) -> list[Path]:
    """The runtime layer a function zip needs, from the package.json written beside it."""
    try:
        record = json.loads((package.parent / "package.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    layer = record.get("layer") if record.get("zip_path") and Path(record["zip_path"]).name == package.name else None
    return [Path(layer["zip_path"])] if layer else []


def _print_profile(results: list[Any]) -> None:
    """Cold start (where init time went: imports, model load) and, with --repeat, warm p50/p99."""
    import re

    import numpy as np

    first = results[0]
    init = re.search(r"edgemaas init: imports ([\d.]+) ms, model load ([\d.]+) ms", first.logs)
    if first.init_duration_ms is not None:
        parts = f"imports {init.group(1)} ms, model load {init.group(2)} ms, " if init else ""
        console.print(f"cold start: {parts}Init Duration {first.init_duration_ms:.1f} ms, first invoke "
                      f"{first.duration_ms:.2f} ms, Max Memory Used {first.max_memory_used_mb} MB")
    warm = [r.duration_ms for r in results[1:] if not r.function_error and r.init_duration_ms is None]
    if warm:
        console.print(f"warm: {len(warm)} invokes, p50 {np.percentile(warm, 50):.3f} ms, "
                      f"p99 {np.percentile(warm, 99):.3f} ms, max {max(warm):.3f} ms")


def _package_path(target: str) -> Path:
    path = Path(target)
    if path.is_file():
        return path
    for candidate in (path / "function.zip", path / "lambda" / "function.zip",
                      _workspace().lambda_dir(target) / "function.zip"):
        if candidate.is_file():
            return candidate
    raise UserError(f"{target}: no function zip there, and no dist/{target}/lambda/function.zip; "
                    f"run `edgemaas package {target}` first")


def _kb(size: int | None) -> str:
    return f"{size / 1024:.1f} KB" if size else "-"


def _mb(size: int | None) -> str:
    if not size:
        return "-"
    return f"{size / (1024 * 1024):.1f} MB" if size >= 1024 * 1024 else f"{size / 1024:.1f} KB"


def main() -> None:
    cli(prog_name="edgemaas")


if __name__ == "__main__":
    main()
