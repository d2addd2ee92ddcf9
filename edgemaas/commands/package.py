"""`edgemaas package`: a model to what ships, for any target in the registry (`edgemaas/targets.py`).

The command's own options apply to every target; each target adds its own (`Target.options`). An option given for
a target that does not take it is a usage error that names the targets it applies to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from edgemaas.commands.common import console, handle_errors, status_printer, workspace
from edgemaas.packaging.target import PackageRequest, Target, TargetOption
from edgemaas.targets import TARGETS, target_options


def _explain_runtime(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from edgemaas.packaging.common.matrix import explain_runtime

    click.echo(explain_runtime(), nl=False)  # plain Markdown: pastes into docs as is
    ctx.exit(0)


def _target_help() -> str:
    return "; ".join(f"{t.name}: {t.help}" for t in TARGETS.values()) + "."


def _with_target_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(target_options()):
        command = click.option(*option.decls, **option.attrs)(command)
    return command


@click.command()
@click.argument("target")
@click.option("--target", "kind", type=click.Choice(list(TARGETS)), default="lambda", show_default=True,
              help=_target_help())
@click.option("--variant", help="Package this variant instead of the target's default (e.g. tflite-float32).")
@_with_target_options
@click.option("--name", help="Name for a model file you bring (default: from the file name).")
@click.option("--labels", help="Comma-separated class labels for a classifier file you bring.")
@click.option("--input-shape", "input_shape", multiple=True, metavar="NAME=D1,D2,...",
              help="A model file you bring whose shapes are open: the concrete shape of one input for the "
                   "package-time smoke test (repeatable), e.g. images=1,3,160,256; dynamic dimensions not given are "
                   "set to 1.")
@click.option("--example-input", type=click.Path(dir_okay=False, path_type=Path),
              help="A model file you bring: a .npz with one array per input, keyed by the input's name, for the "
                   "package-time smoke test.")
@click.option("--explain-runtime", is_flag=True, is_eager=True, expose_value=False, callback=_explain_runtime,
              help="Print which inference runtime and wheels each Lambda Python runtime and architecture gets, and "
                   "why (glibc of Amazon Linux 2 / 2023), then exit. Needs no TARGET.")
@click.option("--trust-model-code", is_flag=True,
              help="Load a Keras file you bring even though it stores Python code (Lambda layers), which runs when "
                   "it loads. Only for files from a source you trust.")
@handle_errors
def package(target: str, kind: str, variant: str | None, name: str | None, labels: str | None,
            input_shape: tuple[str, ...], example_input: Path | None, trust_model_code: bool,
            **options: Any) -> None:
    """Package TARGET (a spec, a built-in model name, or a model file) for where it will run.

    \b
    Examples:
      edgemaas package models/cnn.yaml
      edgemaas package cnn --variant tflite-float32 --python-version 3.12 --arch arm64
      edgemaas package cnn --runtime auto
      edgemaas package my_model.tflite --labels cat,dog
      edgemaas package nlp --layout layer --python-version 3.12 --sam template.yaml
      edgemaas package cnn --target edge --platform linux_aarch64 --with-deps
      edgemaas package cnn --target mcu
      edgemaas package nlp --target android
      edgemaas package --explain-runtime
    """
    from edgemaas.user_models.smoke import parse_input_shapes

    chosen = TARGETS[kind]
    _check_python_version(chosen, options.get("python_version"))
    _refuse_foreign_options(chosen)
    own = {option.name for option in chosen.options}
    request = PackageRequest(target, workspace(), variant, name, labels.split(",") if labels else None,
                             trust_model_code, {k: v for k, v in options.items() if k in own},
                             status_printer("package"), parse_input_shapes(input_shape), example_input)
    for line in chosen.package(request):
        console.print(line)


def _check_python_version(target: Target, python_version: str | None) -> None:
    supported = target.python_versions
    if python_version and supported and python_version not in supported:
        raise click.BadParameter(f"give a Python from {supported[0]} to {supported[-1]}{target.python_note}",
                                 param_hint="--python-version")


def _refuse_foreign_options(target: Target) -> None:
    """Options given on the command line that `target` does not take, grouped by the targets that take them:
    one target's own options first (registry order), then shared ones."""
    ctx = click.get_current_context()
    given = [o for o in target_options()
             if o not in target.options and ctx.get_parameter_source(o.name) == click.core.ParameterSource.COMMANDLINE]
    groups: dict[tuple[str, ...], list[TargetOption]] = {}
    for option in given:
        groups.setdefault(_takers(option), []).append(option)
    for takers in sorted(groups, key=len):
        if len(takers) == 1:
            flags = ", ".join(o.flag for o in groups[takers])
            raise click.UsageError(f"{flags} apply to --target {takers[0]} only")
        shared = [o for o in target_options() if _takers(o) == takers]
        raise click.UsageError(f"{' and '.join(o.flag for o in shared)} apply to --target {' and '.join(takers)}, "
                               f"not {target.name}")


def _takers(option: TargetOption) -> tuple[str, ...]:
    return tuple(t.name for t in TARGETS.values() if option in t.options)
