"""What `package` was given (a spec, a built-in name or a model file), the variant a serving target ships, and what
the serving targets (lambda, edge) share: --runtime and --python-version, and the lines they print.

A spec is compressed first when nothing was built yet; a model file the user brings is imported and ships as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from edgemaas.errors import UserError
from edgemaas.packaging.target import PackageRequest, Report, TargetOption, quiet
from edgemaas.compress.records import load_selection
from edgemaas.pipeline import chosen_variant, compress_spec, resolve_spec
from edgemaas.spec import Spec
from edgemaas.units import human_size
from edgemaas.user_models.importing import import_model
from edgemaas.workspace import Workspace

RUNTIMES = ("tflite", "onnx", "auto")
SERVING_PYTHONS = ("3.10", "3.11", "3.12", "3.13")

RUNTIME_OPTION = TargetOption(("--runtime",), dict(
    type=click.Choice(list(RUNTIMES)),
    help="lambda, edge: serve the gate's TFLite (LiteRT) or ONNX (ONNX Runtime) choice, or measure both and take "
         "the faster (auto). Default: the spec's package.format, else tflite."))
PYTHON_OPTION = TargetOption(("--python-version",), dict(
    help="lambda, edge: target Python, 3.10 to 3.13 (edge also 3.9, for 32-bit Raspberry Pi OS); default: this "
         "Python, or the spec's."))


@dataclass
class Source:
    """What `package` was given: a built-in or spec (variants in the workspace) or a model file (imported)."""

    name: str
    spec: Spec | None
    imported: Path | None = None  # the imported model's folder, for a file the user brings


def resolve_source(target: str, ws: Workspace, variant: str | None = None, name: str | None = None,
                   labels: list[str] | None = None, report: Report = quiet, trust_code: bool = False,
                   input_shapes: dict[str, list[int]] | None = None, example_input: Path | None = None) -> Source:
    spec = resolve_spec(target)
    if spec is None:
        from edgemaas.user_models.smoke import smoke_imported

        report("importing model file")
        manifest = import_model(Path(target), ws, name=name, labels=labels, trust_code=trust_code)
        imported = ws.variant_dir(manifest.name, "imported")
        report("smoke-testing every output")
        for line in smoke_imported(imported, input_shapes, example_input):
            report(line)
        return Source(manifest.name, None, imported)
    if input_shapes or example_input:
        raise UserError(f"--input-shape and --example-input are for a model file you bring; {target} is a spec "
                        "whose shapes are fixed")
    if variant is None and not ws.selection_file(spec.name).exists():
        compress_spec(spec, ws, report=report)
    return Source(spec.name, spec)


def source_of(request: PackageRequest) -> Source:
    return resolve_source(request.target, request.ws, request.variant, request.name, request.labels, request.report,
                          request.trust_code, request.input_shapes, request.example_input)


def serving_variant(source: Source, ws: Workspace, variant: str | None = None, runtime: str | None = None,
                    report: Report = quiet) -> tuple[Path, dict[str, Any] | None]:
    """The one variant a server target (lambda, edge) ships, and the runtime choice record when `auto` chose it:
    the gate's choice for the spec's format (`--runtime tflite|onnx`), or the faster runtime (`auto`)."""
    if source.imported is not None:
        return source.imported, None
    assert source.spec is not None
    runtime = runtime or source.spec.package.format
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    variant = variant or source.spec.package.variant
    if variant or runtime != "auto":
        return chosen_variant(ws, source.name, variant, "tflite" if runtime == "auto" else runtime), None
    from edgemaas.packaging.runtime_choice import choose_runtime

    selection = load_selection(ws.selection_file(source.name))
    chosen = selection.chosen if selection else {}
    candidates = {fmt: ws.variant_dir(source.name, v) for fmt, v in chosen.items()
                  if v and (ws.variant_dir(source.name, v) / "manifest.json").exists()}
    report("measuring LiteRT against ONNX Runtime (--runtime auto)")
    fmt, choice = choose_runtime(ws, source.name, candidates)
    return candidates[fmt], choice


def verb(reused: bool) -> str:
    return "[cyan]unchanged, reusing[/cyan]" if reused else "[green]wrote[/green]"


def warning_lines(warnings: list[str]) -> list[str]:
    return [f"[yellow]warning:[/yellow] {warning}" for warning in warnings]


def file_lines(files: list[str]) -> list[str]:
    lines = []
    for path in files:
        size = Path(path).stat().st_size if Path(path).is_file() else 0
        lines.append(f"[green]wrote[/green] {path}" + (f" ({human_size(size)})" if size else ""))
    return lines


def first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [""])[0]
