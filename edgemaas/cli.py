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
@click.option("--local", is_flag=True, help="Run the package here through the real Lambda runtime client "
                                            "(without it: invoke the deployed function).")
@click.option("--data", help='The event as JSON, e.g. \'{"inputs": [[1, 2, 3]]}\'.')
@click.option("--data-file", type=click.Path(exists=True, dir_okay=False), help="A file holding the event JSON.")
@click.option("--memory", "memory_mb", type=click.IntRange(128, 10240), default=512, show_default=True,
              help="With --local: memory size in MB; the function is stopped if it uses more.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.1, 900), default=30, show_default=True,
              help="With --local: seconds before the invoke is stopped, as Lambda does.")
@click.option("--repeat", type=click.IntRange(1, 100_000), default=1, show_default=True,
              help="With --local: send the event N times to one execution environment: a cold start, then warm "
                   "p50/p99.")
@click.option("--stage", default="dev", show_default=True, help="Remote: the alias (stage) to invoke.")
@click.option("--function-name", help="Remote: the Lambda function's name (default: edgemaas-<model>).")
@click.option("--region", help="Remote: AWS region (default: AWS_REGION or your profile's).")
@click.option("--profile", help="Remote: AWS profile from ~/.aws/config (default: AWS_PROFILE or the default chain).")
@click.option("--logs", is_flag=True, help="Remote: also print the invoke's log tail (last 4 KB).")
@click.option("--batch", "batch_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Remote: a JSONL file, one event per line (an \"id\" field, if any, names the line and is not "
                   "sent); needs --output.")
@click.option("--output", "output_file", type=click.Path(dir_okay=False, path_type=Path),
              help="With --batch: where answers go (JSONL, one line per input; lines already answered there are "
                   "skipped on a re-run).")
@click.option("--concurrency", type=click.IntRange(1, 1000), default=8, show_default=True,
              help="With --batch: invokes in flight at once.")
@_handle_errors
def invoke(target: str, local: bool, data: str | None, data_file: str | None, memory_mb: int,
           timeout_s: float, repeat: int, stage: str, function_name: str | None, region: str | None,
           profile: str | None, logs: bool, batch_file: Path | None, output_file: Path | None,
           concurrency: int) -> None:
    """Invoke a function: the package here (--local) or the deployed one (its --stage alias on AWS).

    TARGET is a model name, a function zip or its dist folder.

    \b
    Example:
      edgemaas invoke cnn --local --data '{"inputs": [[[0, 0, 5, 13, 9, 1, 0, 0], ...]]}'
      edgemaas invoke dist/nlp/lambda/function.zip --local --data '{"inputs": ["turn on the lights"]}'
      edgemaas invoke nlp --stage dev --data '{"inputs": ["turn on the lights"]}' --logs
      edgemaas invoke nlp --batch requests.jsonl --output answers.jsonl --concurrency 16
    """
    from .lambda_local import invoke_local

    if not local:
        _invoke_remote(target, data, data_file, stage, function_name, region, profile, logs, batch_file,
                       output_file, concurrency)
        return
    if batch_file:
        raise click.UsageError("--batch invokes the deployed function; drop --local")
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


def _remote_function(target: str, override: str | None) -> str:
    """The Lambda function for TARGET: --function-name, edgemaas-<model> of a package path, or of a model name."""
    from .aws import FUNCTION_PREFIX, function_name

    if override:
        return override
    if target.startswith(FUNCTION_PREFIX):
        return target
    path = Path(target)
    if path.exists():
        from .aws.deploy import find_record

        record = json.loads(find_record(target, _workspace().dist).read_text())
        return function_name(record["model"])
    return function_name(target)


def _invoke_remote(target: str, data: str | None, data_file: str | None, stage: str, function_override: str | None,
                   region: str | None, profile: str | None, logs: bool, batch_file: Path | None,
                   output_file: Path | None, concurrency: int) -> None:
    from .aws import aws_errors, connect
    from .aws.invoke import check_deployed, invoke_client
    from .aws.invoke import invoke as invoke_remote

    if batch_file and (data is not None or data_file is not None):
        raise click.UsageError("give the events with --batch, or one event with --data / --data-file, not both")
    if batch_file and not output_file:
        raise click.UsageError("--batch needs --output FILE for the answers")
    if output_file and not batch_file:
        raise click.UsageError("--output is for --batch")
    event = None if batch_file else _event(data, data_file)
    function = _remote_function(target, function_override)
    with aws_errors():
        aws = connect(profile, region)
        client = invoke_client(aws)
        version = check_deployed(client, function, stage)
        if batch_file:
            _run_batch(client, function, stage, batch_file, output_file, concurrency)
            return
        result = invoke_remote(client, function, stage, event, logs=logs)
    if logs and result.logs.strip():
        console.print(result.logs.rstrip(), markup=False, highlight=False, style="dim")
    out.print_json(json.dumps(result.payload))
    console.print(f"{function}:{stage} (version {result.version or version}, {aws.region})", style="dim")
    if result.function_error:
        raise click.ClickException(f"function error ({result.function_error}): {result.error_message}")
    if result.error_message:
        raise click.ClickException(result.error_message)


def _run_batch(client: Any, function: str, stage: str, source: Path, output: Path, concurrency: int) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .aws.invoke import run_batch

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields["
                  "failed]} failed"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(f"{function}:{stage}", total=None, failed=0)
        failed = [0]

        def start(total: int, done: int) -> None:
            progress.update(task, total=total, completed=done)

        def advance(ok: bool) -> None:
            failed[0] += not ok
            progress.update(task, advance=1, failed=failed[0])

        summary = run_batch(client, function, stage, source, output, concurrency, progress=start, advance=advance)
    skipped = f", {summary.skipped} answered by an earlier run" if summary.skipped else ""
    console.print(f"{summary.total} lines{skipped}: {summary.succeeded} answered now, {summary.failed} failed → "
                  f"{output}")
    if summary.failed:
        raise click.ClickException(f"{summary.failed} of {summary.total} lines failed (their errors are in {output}); "
                                   "run the same command again to retry them")


def _aws_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option("--profile", help="AWS profile from ~/.aws/config (default: AWS_PROFILE or the "
                                             "default chain).")(command)
    command = click.option("--region", help="AWS region (default: AWS_REGION or your profile's).")(command)
    command = click.option("--function-name", help="The Lambda function's name (default: edgemaas-<model>).")(command)
    return command


def _stage_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    import re

    if not re.fullmatch(r"(?!^[0-9]+$)[A-Za-z0-9_-]{1,128}", value):
        raise click.BadParameter("a stage is an alias name: letters, digits, - and _, not only digits")
    return value


@cli.command()
@click.argument("target")
@click.option("--stage", default="dev", show_default=True, callback=_stage_name,
              help="The alias that will point at the new version (dev, prod, ...).")
@_aws_options
@click.option("--s3-bucket", help="Upload the code through this S3 bucket (automatic, to a default bucket, when a zip "
                                  "is over 50 MB).")
@click.option("--memory", "memory_mb", type=click.IntRange(128, 10240),
              help="Memory size in MB (default: the package's).")
@click.option("--timeout", "timeout_s", type=click.IntRange(1, 900), help="Timeout in seconds (default: the "
                                                                           "package's).")
@click.option("--url/--no-url", default=True, show_default=True, help="Give the stage a function URL.")
@click.option("--auth", type=click.Choice(["AWS_IAM", "NONE"]), default="AWS_IAM", show_default=True,
              help="Function URL auth: AWS_IAM (signed requests) or NONE (public).")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default="INFO",
              show_default=True, help="EDGEMAAS_LOG_LEVEL in the function's environment.")
@click.option("--dry-run", is_flag=True, help="Print the plan and stop: nothing in the account changes.")
@_handle_errors
def deploy(target: str, stage: str, function_name: str | None, region: str | None, profile: str | None,
           s3_bucket: str | None, memory_mb: int | None, timeout_s: int | None, url: bool, auth: str,
           log_level: str, dry_run: bool) -> None:
    """Deploy a package (from `edgemaas package`) to AWS Lambda: plan, print the plan, then carry it out.

    TARGET is a model name (dist/<name>/lambda), a dist folder or its package.json. The plan uses describe and
    list calls only; the deploy then creates or updates the execution role (logging only), the runtime layer (when
    its content changed), the function, its configuration and tags, publishes a version, points the alias STAGE at
    it and gives the alias a function URL. Run it again: what is unchanged stays unchanged.

    \b
    Example:
      edgemaas deploy cnn --stage dev
      edgemaas deploy nlp --stage prod --region eu-west-1 --memory 1024 --auth NONE
      edgemaas deploy cnn --dry-run
    """
    from .aws import aws_errors, connect
    from .aws.deploy import changes, execute, load_request, plan

    request = load_request(target, _workspace().dist, stage, function_name, memory_mb, timeout_s, s3_bucket, url,
                           auth, log_level)
    with aws_errors():
        aws = connect(profile, region)
        planned = plan(aws, request)
        out.print(_plan_table(planned))
        todo = changes(planned)
        if not todo:
            console.print(f"[green]nothing changed[/green]: {request.function_name}:{stage} is up to date "
                          f"(version {planned.version})" + (f", {planned.url}" if planned.url else ""))
            return
        if dry_run:
            console.print(f"dry run: {len(todo)} change(s) planned; nothing was changed")
            return
        with console.status("deploying") as spinner:
            result = execute(aws, planned, lambda step: spinner.update(
                f"{step.action} {step.resource} {step.name}"))
    console.print(f"[green]deployed[/green] {result.function_name} version {result.version} → alias {stage} "
                  f"({aws.region}): {len(result.done)} change(s)")
    if result.url:
        console.print(f"  URL: {result.url}" + (" (AWS_IAM: sign requests with SigV4)" if auth == "AWS_IAM" else ""))
    console.print(f"  invoke: edgemaas invoke {request.model} --stage {stage} --data '{{\"inputs\": [...]}}'")


def _plan_table(planned: Any) -> Table:
    table = Table(title=f"deploy plan: {planned.request.function_name}:{planned.request.stage} in {planned.region}")
    for column in ("resource", "name", "action", "why"):
        table.add_column(column)
    colour = {"no-op": "dim", "create": "green", "publish": "green", "upload": "green", "update": "yellow",
              "delete": "red"}
    for step in planned.steps:
        style = colour.get(step.action, "")
        table.add_row(step.resource, step.name, f"[{style}]{step.action}[/{style}]" if style else step.action,
                      step.why)
    return table


@cli.command()
@click.argument("target")
@_aws_options
@_handle_errors
def status(target: str, function_name: str | None, region: str | None, profile: str | None) -> None:
    """Show a deployed function: its versions, which version each stage points at, URLs, code size, last update.

    \b
    Example:
      edgemaas status cnn
      edgemaas status nlp --region eu-west-1
    """
    from .aws import aws_errors, connect
    from .aws.operate import status as get_status

    function = _remote_function(target, function_name)
    with aws_errors():
        info = get_status(connect(profile, region), function)
    stages: dict[str, list[str]] = {}
    for alias in info.aliases:
        stages.setdefault(alias.version, []).append(alias.name)
    table = Table(title=f"{info.function} ({info.region})")
    for column in ("version", "stages", "code sha256", "code size", "memory", "runtime", "last modified"):
        table.add_column(column)
    for version in info.versions:
        table.add_row(version.version, ", ".join(stages.get(version.version, [])) or "-",
                      version.code_sha256[:16], _mb(version.code_size), f"{version.memory_mb} MB", version.runtime,
                      version.last_modified)
    out.print(table)
    for alias in info.aliases:
        url = f"{alias.url} (auth {alias.auth})" if alias.url else "no URL"
        out.print(f"stage {alias.name} → version {alias.version}: {url}", highlight=False)
    if not info.aliases:
        out.print("no stages (aliases)")
    model = info.tags.get("edgemaas:model")
    if model:
        out.print(f"model {model} {info.tags.get('edgemaas:variant', '')}, model sha256 "
                  f"{info.tags.get('edgemaas:model-sha256', '-')[:16]}", highlight=False)


@cli.command()
@click.argument("target")
@click.option("--stage", default="dev", show_default=True, callback=_stage_name, help="The alias to move.")
@click.option("--to", "to", default="previous", show_default=True,
              help="A published version number, or 'previous' (the newest version older than the current one).")
@_aws_options
@_handle_errors
def rollback(target: str, stage: str, to: str, function_name: str | None, region: str | None,
             profile: str | None) -> None:
    """Point a stage back at an earlier published version (the alias moves; no code is uploaded).

    \b
    Example:
      edgemaas rollback cnn --stage dev --to previous
      edgemaas rollback cnn --stage prod --to 3
    """
    from .aws import aws_errors, connect
    from .aws.operate import rollback as do_rollback

    function = _remote_function(target, function_name)
    with aws_errors():
        before, after = do_rollback(connect(profile, region), function, stage, to)
    if before == after:
        console.print(f"{function}:{stage} already points at version {after}; nothing changed")
    else:
        console.print(f"[green]rolled back[/green] {function}:{stage}: version {before} → {after}")


@cli.command()
@click.argument("target")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--all", "everything", is_flag=True,
              help="Also delete the runtime layer versions and the execution role, when no other function uses them.")
@_aws_options
@_handle_errors
def destroy(target: str, yes: bool, everything: bool, function_name: str | None, region: str | None,
            profile: str | None) -> None:
    """Delete a deployed function: its function URLs, aliases (stages) and every version.

    The shared runtime layer and execution role stay, unless --all.

    \b
    Example:
      edgemaas destroy cnn
      edgemaas destroy cnn --yes --all
    """
    from .aws import aws_errors, connect
    from .aws.operate import _get_function, destroy as do_destroy

    function = _remote_function(target, function_name)
    with aws_errors():
        aws = connect(profile, region)
        _get_function(aws.client("lambda"), function, aws)  # a clear error before asking about nothing
        if not yes:
            click.confirm(f"Delete {function} in {aws.region} (every version, stage and URL)"
                          + (", and its layer and role if unused" if everything else "") + "?", abort=True,
                          err=True)
        result = do_destroy(aws, function, everything)
    for item in result.deleted:
        console.print(f"[red]deleted[/red] {item}")
    for item in result.kept:
        console.print(f"kept {item}")


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
                            for f, v in sorted(row.chosen.items(), key=lambda kv: kv[0] != "tflite"))
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
