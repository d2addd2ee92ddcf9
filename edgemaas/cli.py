"""The `edgemaas` command line. Thin: parse options, call the library, print with rich.

User mistakes (UserError, bad options) print `Error: ...` and exit 1 (usage errors 2), with no traceback unless
--debug is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from edgemaas import __version__
from edgemaas.commands import aws, bench, invoke, package
from edgemaas.commands.common import (
    console,
    handle_errors,
    out,
    status_printer,
    workspace,
)
from edgemaas.errors import UserError

if TYPE_CHECKING:
    from edgemaas.spec import Spec


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
@handle_errors
def train(specs: tuple[str, ...], force: bool) -> None:
    """Train the models of SPECS (default: every models/*.yaml) and report held-out metrics.

    \b
    Example:
      edgemaas train models/cnn.yaml
    """
    from edgemaas.compress.evaluation import format_metric
    from edgemaas.pipeline import ensure_trained

    for spec in _specs(specs):
        manifest = ensure_trained(spec, workspace(), force, status_printer(spec.name))
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
@click.option("--trust-model-code", is_flag=True,
              help="Load a Keras file you bring even though it stores Python code (Lambda layers), which runs when "
                   "it loads. Only for files from a source you trust.")
@handle_errors
def compress(targets: tuple[str, ...], calibration_data: Path | None, eval_data: Path | None, name: str | None,
             labels: str | None, force: bool, trust_model_code: bool) -> None:
    """Make every TFLite and ONNX variant, measure each against the float model, and gate what ships.

    TARGETS are specs, built-in names or model files (.keras, .h5, SavedModel dir, .tflite, .onnx); default:
    every models/*.yaml. Writes dist/<name>/report/ (report.json, report.md, plots).

    \b
    Examples:
      edgemaas compress cnn
      edgemaas compress my_model.keras --calibration-data x.npy --eval-data test.npz
    """
    from edgemaas.pipeline import compress_file, compress_spec, resolve_spec
    from edgemaas.compress.report import as_card, report_table

    ws = workspace()
    cards = []
    for target in targets or [str(p) for p in _spec_paths()]:
        spec = resolve_spec(target)
        status = status_printer(spec.name if spec else Path(target).name)
        if spec is None:
            cards.append(compress_file(Path(target), ws, name, labels.split(",") if labels else None,
                                       calibration_data, eval_data, force=force, report=status,
                                       trust_code=trust_model_code))
        elif calibration_data or eval_data:
            raise click.UsageError("--calibration-data and --eval-data are for model files; a spec names its data")
        else:
            cards.append(compress_spec(spec, ws, force, status))
    for card in map(as_card, cards):
        out.print(report_table(card))
        for fmt in card.gate.fallback:
            console.print(f"[bold red]No variant passed the gate for {fmt}: the float model ships.[/bold red]")
        console.print(f"report: {ws.dist / card.model / 'report' / 'report.md'}")


cli.add_command(compress, "convert")


@cli.command()
@click.argument("name")
@click.option("--layers", is_flag=True,
              help="Print the error each layer adds in every int8 variant (worst first, the model's own layer "
                   "names) and which layers each -mixed variant kept in float, instead of the variants table.")
@handle_errors
def report(name: str, layers: bool) -> None:
    """Print the compression report card of NAME and where its files and plots are.

    \b
    Examples:
      edgemaas report cnn
      edgemaas report cnn --layers
    """
    from edgemaas.compress.records import ReportCard
    from edgemaas.compress.report import load_report, report_table
    from edgemaas.compress.report_extra import layers_text

    directory = workspace().dist / name / "report"
    card = load_report(directory)
    if layers:
        click.echo(layers_text(ReportCard.from_dict(card)).rstrip("\n"))
        return
    out.print(report_table(card))
    for path in sorted(directory.glob("*")):
        console.print(f"  {path}")


@cli.command()
@click.argument("specs", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Retrain and reconvert even when nothing changed.")
@handle_errors
def build(specs: tuple[str, ...], force: bool) -> None:
    """Train, compress, gate, package for Lambda and smoke-invoke locally: SPECS, or every models/*.yaml.

    \b
    Example:
      edgemaas build
      edgemaas build models/cnn.yaml models/nlp.yaml
    """
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from edgemaas.build import build_one, build_table, collected_warnings, targets_table

    loaded = _specs(specs)
    rows = []
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total} models"), TimeElapsedColumn(), console=console, transient=True) as progress:
        overall = progress.add_task("building", total=len(loaded))
        for spec in loaded:
            def report(step: str, name: str = spec.name) -> None:
                progress.update(overall, description=f"[bold]{name}[/bold]: {step}")

            rows.append(build_one(spec, workspace(), force, report))
            progress.advance(overall)
    out.print(build_table(rows))
    if any(row.cells for row in rows):
        out.print(targets_table(rows))
    for warning, names in collected_warnings(rows).items():
        console.print(f"[yellow]warning[/yellow] ({', '.join(names)}): {warning}")
    failed = [row for row in rows if not row.ok]
    if failed:
        raise click.ClickException("; ".join(f"{r.name}: {r.problem}" for r in failed))


def _spec_paths() -> list[Path]:
    """Every built-in spec: models/*.yaml here, else the specs that ship with edgemaas."""
    from edgemaas.pipeline import spec_dirs

    found = next((sorted(d.glob("*.yaml")) for d in spec_dirs() if any(d.glob("*.yaml"))), [])
    if not found:
        raise UserError("no specs given and no models/*.yaml here; run from the edgemaas repository or name a spec")
    return found


def _specs(paths: tuple[str, ...]) -> list[Spec]:
    from edgemaas.spec import load_spec

    return [load_spec(p) for p in (paths or _spec_paths())]


for command in (package.package, bench.bench, invoke.invoke, aws.deploy, aws.deploy_policy, aws.status, aws.rollback, aws.destroy):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="edgemaas")


if __name__ == "__main__":
    main()
