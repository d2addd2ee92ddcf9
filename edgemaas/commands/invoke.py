"""`edgemaas invoke`: the package here through the real Lambda runtime client, or the deployed function."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edgemaas.errors import UserError
from edgemaas.commands.common import console, handle_errors, out, workspace
from edgemaas.local.runtime_api import MAX_REQUEST_BYTES


@click.command()
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
@handle_errors
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
    from edgemaas.local import invoke_local

    if not local:
        from edgemaas.commands.aws import invoke_remote

        if not batch_file and (data is not None or data_file is not None):
            _check_parsable(read_event_bytes(data, data_file), data_file or "--data")
        invoke_remote(target, data, data_file, stage, function_name, region, profile, logs, batch_file,
                       output_file, concurrency)
        return
    if batch_file:
        raise click.UsageError("--batch invokes the deployed function; drop --local")
    event = read_event_bytes(data, data_file)  # sent as these bytes, as Lambda delivers them
    package = _package_path(target)
    results = invoke_local(package, [event] * repeat, layers=_layers_for(package), memory_mb=memory_mb,
                           timeout_s=timeout_s)
    result = results[0]
    if result.logs.strip():
        console.print(result.logs.rstrip(), markup=False, highlight=False, style="dim")
    out.print_json(json.dumps(result.payload))
    console.print(result.report_line(), markup=False, highlight=False)
    _print_profile(results)
    failed = [r for r in results[1:] if r.function_error]
    if failed:
        raise click.ClickException(f"{len(failed)} of {repeat} invokes failed; first: {failed[0].error_message}")
    if result.function_error:
        raise click.ClickException(f"function error ({result.function_error}): {result.error_message}")
    if isinstance(result.payload, dict) and "error" in result.payload:
        raise click.ClickException(f"the function rejected the request: {result.payload['error'].get('message')}")
    status = result.payload.get("statusCode") if isinstance(result.payload, dict) else None
    if isinstance(status, int) and status >= 400:  # an HTTP event (API Gateway / Function URL) that got a 4xx/5xx
        raise click.ClickException(f"the function answered HTTP {status}: {_http_error_message(result.payload)}")


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
                      workspace().lambda_dir(target) / "function.zip"):
        if candidate.is_file():
            return candidate
    raise UserError(f"{target}: no function zip there, and no dist/{target}/lambda/function.zip; "
                    f"run `edgemaas package {target}` first")


def read_event_bytes(data: str | None, data_file: str | None) -> bytes:
    """The event as the bytes Lambda's Invoke API would get, checked the way it and the CLI check them.

    Refused here, each as a one-line `Error: ...`: more than Lambda's 6 MB request limit, bytes that are not UTF-8,
    text that is not JSON (exit 2, as before), and a repeated key (Lambda's runtime would keep only the last one,
    silently). Nesting deeper than ~1000, integers over 4300 digits and NaN/Infinity are sent as they are: Lambda's
    runtime client refuses them with Runtime.UnmarshalError before the handler runs, and so does `--local`.
    """
    if (data is None) == (data_file is None):
        raise click.UsageError("give the event with exactly one of --data or --data-file")
    source = "--data" if data is not None else str(data_file)
    if data is not None:
        raw = data.encode("utf-8", "surrogateescape")
    else:
        try:
            raw = Path(data_file).read_bytes()
        except OSError as exc:
            raise UserError(f"{source}: cannot read the event: {exc.strerror or exc}") from None
    if len(raw) > MAX_REQUEST_BYTES:
        raise UserError(f"{source}: the event is {len(raw):,} bytes; Lambda refuses synchronous invokes over "
                        f"{MAX_REQUEST_BYTES:,} bytes (6 MB, RequestTooLargeException)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{source}: the event is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                        "Lambda takes the event as UTF-8 JSON") from None
    try:
        json.loads(text, object_pairs_hook=_refuse_repeated_keys)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                                 param_hint=source) from None
    except _RepeatedKey as exc:
        raise UserError(f"{source}: the event repeats the key {exc.key!r}; Lambda's runtime would keep only the "
                        "last one, silently: send each key once") from None
    except (RecursionError, ValueError):
        pass  # Valid JSON that Python's parser refuses: Lambda's runtime refuses it too, and says so.
    return raw


class _RepeatedKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _RepeatedKey(key)
        seen[key] = value
    return seen


def _check_parsable(raw: bytes, source: str) -> None:
    """The remote invoke sends the parsed event, so it needs one Python can parse (else a clean error)."""
    try:
        json.loads(raw)
    except RecursionError:
        raise UserError(f"{source}: the event is nested too deeply for Python's JSON parser; Lambda's Python runtime "
                        "would refuse it too (Runtime.UnmarshalError) before the handler runs") from None
    except ValueError as exc:
        raise UserError(f"{source}: {exc}; Lambda's Python runtime would refuse it too (Runtime.UnmarshalError) "
                        "before the handler runs") from None


def _http_error_message(response: dict[str, Any]) -> str:
    """The error message inside an HTTP response event's body, else the body itself (shortened)."""
    body = response.get("body")
    if response.get("isBase64Encoded") and isinstance(body, str):
        import base64
        import binascii

        try:
            body = base64.b64decode(body).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            pass
    try:
        error = json.loads(body)["error"]
        return str(error.get("message", error))
    except (TypeError, ValueError, KeyError, AttributeError):
        return str(body)[:300]
