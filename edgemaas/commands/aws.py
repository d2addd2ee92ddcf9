"""The commands that talk to AWS: deploy, status, rollback, destroy, and invoking a deployed function."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import click
from rich.table import Table

from edgemaas.commands.common import console, handle_errors, mb, out, read_event, workspace


def _remote_function(target: str, override: str | None) -> str:
    """The Lambda function for TARGET: --function-name, edgemaas-<model> of a package path, or of a model name."""
    from edgemaas.aws import FUNCTION_PREFIX, function_name

    if override:
        return override
    if target.startswith(FUNCTION_PREFIX):
        return target
    path = Path(target)
    if path.exists():
        from edgemaas.aws.deploy import find_record

        record = json.loads(find_record(target, workspace().dist).read_text())
        return function_name(record["model"])
    return function_name(target)


def invoke_remote(target: str, data: str | None, data_file: str | None, stage: str, function_override: str | None,
                   region: str | None, profile: str | None, logs: bool, batch_file: Path | None,
                   output_file: Path | None, concurrency: int) -> None:
    from edgemaas.aws import aws_errors, connect
    from edgemaas.aws.invoke import check_deployed, invoke_client
    from edgemaas.aws.invoke import invoke as invoke_remote

    if batch_file and (data is not None or data_file is not None):
        raise click.UsageError("give the events with --batch, or one event with --data / --data-file, not both")
    if batch_file and not output_file:
        raise click.UsageError("--batch needs --output FILE for the answers")
    if output_file and not batch_file:
        raise click.UsageError("--output is for --batch")
    event = None if batch_file else read_event(data, data_file)
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
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from edgemaas.aws.invoke import run_batch

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


class MemoryParam(click.ParamType):
    """--memory: MB within Lambda's 128-10240, or "auto"."""

    name = "MB|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int) or str(value).lower() != "auto":
            try:
                number = int(value)
            except ValueError:
                self.fail(f"{value!r} is not a number of MB nor auto", param, ctx)
            if not 128 <= number <= 10240:
                self.fail(f"{number} is not in the range 128<=x<=10240", param, ctx)
            return number
        return "auto"


@click.command()
@click.argument("target")
@click.option("--stage", default="dev", show_default=True, callback=_stage_name,
              help="The alias that will point at the new version (dev, prod, ...).")
@_aws_options
@click.option("--s3-bucket", help="Upload the code through this S3 bucket (automatic, to a default bucket, when a zip "
                                  "is over 50 MB).")
@click.option("--memory", "memory_mb", type=MemoryParam(),
              help="Memory size in MB (128-10240), or auto: the cheapest the gate priced for the shipped variant "
                   "(default: the package's).")
@click.option("--timeout", "timeout_s", type=click.IntRange(1, 900), help="Timeout in seconds (default: the "
                                                                           "package's).")
@click.option("--url/--no-url", default=True, show_default=True, help="Give the stage a function URL.")
@click.option("--auth", type=click.Choice(["AWS_IAM", "NONE"]), default="AWS_IAM", show_default=True,
              help="Function URL auth: AWS_IAM (signed requests) or NONE (public).")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default="INFO",
              show_default=True, help="EDGEMAAS_LOG_LEVEL in the function's environment.")
@click.option("--snapstart", is_flag=True,
              help="Turn on SnapStart for published versions (python3.12+ packages): Lambda snapshots the "
                   "initialised function, warmed by one inference, and restores it on cold starts.")
@click.option("--dry-run", is_flag=True, help="Print the plan and stop: nothing in the account changes.")
@handle_errors
def deploy(target: str, stage: str, function_name: str | None, region: str | None, profile: str | None,
           s3_bucket: str | None, memory_mb: int | str | None, timeout_s: int | None, url: bool, auth: str,
           log_level: str, snapstart: bool, dry_run: bool) -> None:
    """Deploy a package (from `edgemaas package`) to AWS Lambda: plan, print the plan, then carry it out.

    TARGET is a model name (dist/<name>/lambda), a dist folder or its package.json. The plan uses describe and
    list calls only; the deploy then creates or updates the execution role (logging only), the runtime layer (when
    its content changed), the function, its configuration and tags, publishes a version, points the alias STAGE at
    it and gives the alias a function URL. Run it again: what is unchanged stays unchanged, and a deploy that was
    interrupted or gave up (AWS throttling or failing beyond the retries) completes. The identity needs the policy
    `edgemaas deploy-policy` prints.

    \b
    Example:
      edgemaas deploy cnn --stage dev
      edgemaas deploy nlp --stage prod --region eu-west-1 --memory 1024 --auth NONE
      edgemaas deploy cnn --dry-run
      edgemaas deploy cnn --memory auto --snapstart
    """
    from edgemaas.aws import aws_errors, connect
    from edgemaas.aws.deploy import changes, execute, load_request, plan

    ws = workspace()
    request = load_request(target, ws.dist, stage, function_name, memory_mb, timeout_s, s3_bucket, url, auth,
                           log_level, snapstart, ws.build)
    if memory_mb == "auto":
        console.print(f"memory {request.memory_mb} MB: {request.memory_source}")
    started: list[Any] = []  # the steps execute has begun, in order
    todo: list[Any] = []
    try:
        with aws_errors(RERUN_DEPLOY):
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
                def report(step: Any) -> None:
                    started.append(step)
                    spinner.update(f"{step.action} {step.resource} {step.name}")

                result = execute(aws, planned, report)
    except KeyboardInterrupt:
        console.print(_interrupted(started, len(todo)), highlight=False)
        raise SystemExit(130) from None
    console.print(f"[green]deployed[/green] {result.function_name} version {result.version} → alias {stage} "
                  f"({aws.region}): {len(result.done)} change(s)")
    if result.url:
        console.print(f"  URL: {result.url}" + (" (AWS_IAM: sign requests with SigV4)" if auth == "AWS_IAM" else ""))
    console.print(f"  invoke: edgemaas invoke {request.model} --stage {stage} --data '{{\"inputs\": [...]}}'")


RERUN_DEPLOY = "run the same command again: the deploy continues from what the account holds"


def _interrupted(started: list[Any], total: int) -> str:
    if not started:
        return "deploy stopped (interrupted) before changing anything; run the same command again to deploy"
    step = started[-1]
    return (f"deploy stopped (interrupted) during {step.action} {step.resource} {step.name}, after "
            f"{len(started) - 1} of {total} change(s). Nothing is lost: run the same command again and it "
            "completes the deploy from what the account holds")


@click.command("deploy-policy")
@click.option("--account", default="*", show_default=True, help="The AWS account id the policy is for.")
@click.option("--region", default="*", show_default=True, help="The region deploys go to.")
@click.option("--partition", default="aws", show_default=True, help="aws, aws-cn or aws-us-gov.")
@click.option("--s3-bucket", help="The bucket given to deploy --s3-bucket (default: the bucket deploy makes, "
                                  "edgemaas-artifacts-<account>-<region>).")
@click.option("--deploy-only", is_flag=True, help="Leave out what status, rollback, destroy and invoke need.")
@handle_errors
def deploy_policy(account: str, region: str, partition: str, s3_bucket: str | None, deploy_only: bool) -> None:
    """Print the least IAM policy that lets an identity (a person, CI) run `edgemaas deploy` (JSON).

    Every action is named (no wildcards); resources are the edgemaas-* functions and layers, the one execution
    role (passed to Lambda only) and the artifacts bucket. Attach it to the deploying user or role.

    \b
    Example:
      edgemaas deploy-policy --account 123456789012 --region eu-west-1 > edgemaas-deploy-policy.json
      aws iam put-user-policy --user-name ci --policy-name edgemaas-deploy \\
        --policy-document file://edgemaas-deploy-policy.json
    """
    import re

    from edgemaas.aws.policy import deploy_policy as make_policy
    from edgemaas.aws.policy import render
    from edgemaas.errors import UserError

    if account != "*" and not re.fullmatch(r"\d{12}", account):
        raise UserError(f"--account {account!r}: an AWS account id is 12 digits")
    if region != "*" and not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region):
        raise UserError(f"--region {region!r}: not a region name like eu-west-1")
    click.echo(render(make_policy(account, region, partition, s3_bucket, operate=not deploy_only)))


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


@click.command()
@click.argument("target")
@_aws_options
@handle_errors
def status(target: str, function_name: str | None, region: str | None, profile: str | None) -> None:
    """Show a deployed function: its versions, which version each stage points at, URLs, code size, last update.

    \b
    Example:
      edgemaas status cnn
      edgemaas status nlp --region eu-west-1
    """
    from edgemaas.aws import aws_errors, connect
    from edgemaas.aws.operate import status as get_status

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
                      version.code_sha256[:16], mb(version.code_size), f"{version.memory_mb} MB", version.runtime,
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


@click.command()
@click.argument("target")
@click.option("--stage", default="dev", show_default=True, callback=_stage_name, help="The alias to move.")
@click.option("--to", "to", default="previous", show_default=True,
              help="A published version number, or 'previous' (the newest version older than the current one).")
@_aws_options
@handle_errors
def rollback(target: str, stage: str, to: str, function_name: str | None, region: str | None,
             profile: str | None) -> None:
    """Point a stage back at an earlier published version (the alias moves; no code is uploaded).

    \b
    Example:
      edgemaas rollback cnn --stage dev --to previous
      edgemaas rollback cnn --stage prod --to 3
    """
    from edgemaas.aws import aws_errors, connect
    from edgemaas.aws.operate import rollback as do_rollback

    function = _remote_function(target, function_name)
    with aws_errors():
        before, after = do_rollback(connect(profile, region), function, stage, to)
    if before == after:
        console.print(f"{function}:{stage} already points at version {after}; nothing changed")
    else:
        console.print(f"[green]rolled back[/green] {function}:{stage}: version {before} → {after}")


@click.command()
@click.argument("target")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--all", "everything", is_flag=True,
              help="Also delete the runtime layer versions and the execution role, when no other function uses them.")
@_aws_options
@handle_errors
def destroy(target: str, yes: bool, everything: bool, function_name: str | None, region: str | None,
            profile: str | None) -> None:
    """Delete a deployed function: its function URLs, aliases (stages) and every version.

    The shared runtime layer and execution role stay, unless --all.

    \b
    Example:
      edgemaas destroy cnn
      edgemaas destroy cnn --yes --all
    """
    from edgemaas.aws import aws_errors, connect
    from edgemaas.aws.operate import get_function
    from edgemaas.aws.operate import destroy as do_destroy

    function = _remote_function(target, function_name)
    with aws_errors():
        aws = connect(profile, region)
        get_function(aws.client("lambda"), function, aws)  # a clear error before asking about nothing
        if not yes:
            click.confirm(f"Delete {function} in {aws.region} (every version, stage and URL)"
                          + (", and its layer and role if unused" if everything else "") + "?", abort=True,
                          err=True)
        result = do_destroy(aws, function, everything)
    for item in result.deleted:
        console.print(f"[red]deleted[/red] {item}")
    for item in result.kept:
        console.print(f"kept {item}")
