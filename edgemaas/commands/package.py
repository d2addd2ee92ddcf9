"""`edgemaas package`: a model to what ships (AWS Lambda now; edge, microcontroller and phone targets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgemaas.errors import UserError
from edgemaas.commands.common import console, handle_errors, mb, status_printer, workspace

LAMBDA_ONLY = ("arch", "layout", "serverless_file", "sam_file", "function_url")
PLATFORMS = ("linux_x86_64", "linux_aarch64", "linux_armv7l")


@click.command()
@click.argument("target")
@click.option("--target", "kind", type=click.Choice(["lambda", "edge", "mcu", "android", "ios"]), default="lambda",
              show_default=True, help="lambda: an AWS Lambda function; edge: a bundle for IoT Linux boards; mcu: C "
                                      "source for TensorFlow Lite Micro; android/ios: model files and code for apps.")
@click.option("--variant", help="Package this variant instead of the target's default (e.g. tflite-float32).")
@click.option("--runtime", type=click.Choice(["tflite", "onnx", "auto"]),
              help="lambda, edge: serve the gate's TFLite (LiteRT) or ONNX (ONNX Runtime) choice, or measure both "
                   "and take the faster (auto). Default: the spec's package.format, else tflite.")
@click.option("--python-version", help="lambda, edge: target Python, 3.10 to 3.13 (edge also 3.9, for 32-bit "
                                       "Raspberry Pi OS); default: this Python, or the spec's.")
@click.option("--arch", type=click.Choice(["x86_64", "arm64"]), help="lambda: target architecture (default x86_64).")
@click.option("--layout", type=click.Choice(["auto", "zip", "layer", "image"]),
              help="lambda: zip: one zip; layer: runtime in a shared layer; image: container build context; auto "
                   "(default): the first that fits Lambda's limits.")
@click.option("--platform", type=click.Choice(PLATFORMS), default="linux_x86_64", show_default=True,
              help="edge: the board's platform (Raspberry Pi OS 64-bit and Jetson: linux_aarch64).")
@click.option("--with-deps", is_flag=True, help="edge: vendor the runtime's wheels in the bundle, for offline "
                                                "installs.")
@click.option("--name", help="Name for a model file you bring (default: from the file name).")
@click.option("--labels", help="Comma-separated class labels for a classifier file you bring.")
@click.option("--trust-model-code", is_flag=True,
              help="Load a Keras file you bring even though it stores Python code (Lambda layers), which runs when "
                   "it loads. Only for files from a source you trust.")
@click.option("--serverless", "serverless_file", type=click.Path(dir_okay=False, path_type=Path),
              help="lambda: also write a Serverless Framework v3 service for the package here (e.g. serverless.yml).")
@click.option("--sam", "sam_file", type=click.Path(dir_okay=False, path_type=Path),
              help="lambda: also write an AWS SAM template for the package here (e.g. template.yaml).")
@click.option("--function-url", is_flag=True, help="With --serverless/--sam: also give the function a public URL.")
@handle_errors
def package(target: str, kind: str, variant: str | None, runtime: str | None, python_version: str | None,
            arch: str | None, layout: str | None, platform: str, with_deps: bool, name: str | None,
            labels: str | None, trust_model_code: bool, serverless_file: Path | None, sam_file: Path | None, function_url: bool) -> None:
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
    """
    supported = ("3.9", "3.10", "3.11", "3.12", "3.13") if kind == "edge" else ("3.10", "3.11", "3.12", "3.13")
    if python_version and python_version not in supported:
        raise click.BadParameter(f"give a Python from {supported[0]} to {supported[-1]}"
                                 + (" (3.9 for 32-bit Raspberry Pi OS)" if kind == "edge" else ""),
                                 param_hint="--python-version")
    ctx = click.get_current_context()
    if kind != "lambda":
        given = [f"--{p.replace('_file', '').replace('_', '-')}" for p in LAMBDA_ONLY
                 if ctx.get_parameter_source(p) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"{', '.join(given)} apply to --target lambda only")
    if kind != "edge":
        given = [f"--{p.replace('_', '-')}" for p in ("platform", "with_deps")
                 if ctx.get_parameter_source(p) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"{', '.join(given)} apply to --target edge only")
    if kind in ("mcu", "android", "ios") and (runtime or python_version):
        raise click.UsageError(f"--runtime and --python-version apply to --target lambda and edge, not {kind}")
    label_list = labels.split(",") if labels else None
    status = status_printer("package")

    def source_of(variant: str | None) -> Any:
        from edgemaas.targets import resolve_source

        return resolve_source(target, workspace(), variant, name, label_list, status, trust_model_code)

    if kind == "lambda":
        _package_lambda(target, variant, runtime, python_version, arch, layout, name, label_list, serverless_file,
                        sam_file, function_url, status, trust_model_code)
    elif kind == "edge":
        _package_edge(source_of(variant), variant, runtime, python_version, platform, with_deps, status)
    elif kind == "mcu":
        _package_mcu(source_of(variant), variant, status)
    else:
        _package_mobile(kind, source_of(variant), variant, status)


def _package_lambda(target: str, variant: str | None, runtime: str | None, python_version: str | None,
                    arch: str | None, layout: str | None, name: str | None, labels: list[str] | None,
                    serverless_file: Path | None, sam_file: Path | None, function_url: bool, report: Any,
                    trust_code: bool) -> None:
    from edgemaas.targets import package_for_lambda

    result = package_for_lambda(target, workspace(), variant, python_version, arch, name, labels, layout, runtime,
                                report, trust_code)
    if result.runtime_choice:
        console.print(f"runtime: {result.runtime_choice['why']}")
    if result.layout_reason:
        console.print(f"layout {result.layout_reason}")
    verb = _verb(result.reused)
    if result.layout == "image":
        console.print(f"{verb} container build context {result.image_context} ({result.variant}, Python "
                      f"{result.python_version} {result.arch}): {mb(result.unzipped_bytes)} installed")
    else:
        console.print(f"{verb} {result.zip_path} ({result.variant}, Python {result.python_version} {result.arch}, "
                      f"layout {result.layout}): {mb(result.zipped_bytes)} zipped, {mb(result.unzipped_bytes)} "
                      "unzipped (Lambda limits: 50 MB zipped direct upload, 250 MB unzipped with layers)")
    if result.layer:
        console.print(f"  runtime layer {result.layer['zip_path']}: {mb(result.layer['zipped_bytes'])} zipped, "
                      f"{mb(result.layer['unzipped_bytes'])} unzipped")
    _warn(result.warnings)
    if serverless_file or sam_file:
        _write_service_files(target, result, serverless_file, sam_file, function_url)


def _package_edge(source: Any, variant: str | None, runtime: str | None, python_version: str | None, platform: str,
                  with_deps: bool, report: Any) -> None:
    from edgemaas.packaging.edge.bundle import package_edge
    from edgemaas.targets import serving_variant

    ws = workspace()
    source_dir, choice = serving_variant(source, ws, variant, runtime, report)
    if choice:
        console.print(f"runtime: {choice['why']}")
    report(f"bundling for {platform}")
    result = package_edge(source_dir, ws.dist / source.name / "edge", ws.cache(), platform, with_deps,
                          python_version)
    console.print(f"{_verb(result.reused)} {result.tar_path} ({source_dir.name}, {platform}, Python "
                  f"{result.python_version}{', wheels included' if with_deps else ''}): {mb(result.bytes)}")
    _warn(result.warnings)


def _package_mcu(source: Any, variant: str | None, report: Any) -> None:
    from edgemaas.packaging.mcu.sources import package_mcu
    from edgemaas.targets import mcu_variant

    ws = workspace()
    source_dir = mcu_variant(source, ws, variant)
    report("writing TensorFlow Lite Micro sources")
    result = package_mcu(source_dir, ws.dist / source.name / "mcu")
    _print_files(result.files)
    console.print(f"TensorFlow Lite Micro: {len(result.ops)} ops ({', '.join(result.ops)}); flash: model "
                  f"{mb(result.model_bytes)}; RAM: tensor arena ~{mb(result.arena_bytes)} (an estimate: see "
                  "SUMMARY.md)")
    _warn(result.warnings)


def _package_mobile(kind: str, source: Any, variant: str | None, report: Any) -> None:
    from edgemaas.packaging.mobile.phones import package_mobile
    from edgemaas.targets import mobile_variants

    ws = workspace()
    tflite, onnx = mobile_variants(source, ws, variant, kind)
    report(f"writing {kind} model files and code")
    result = package_mobile(kind, tflite, onnx, ws.dist / source.name / kind)
    _print_files(result.files)
    wanted = tuple(result.usability.get("platform_eps") or ())  # NNAPI on Android, CoreML on iOS
    for provider, found in (result.usability.get("execution_providers") or {}).items():
        if wanted and not provider.startswith(wanted):
            continue
        console.print(f"{provider}: {found.get('supported_nodes')}/{found.get('total_nodes')} nodes in "
                      f"{found.get('partitions')} partition(s), suitable: {found.get('suitability', '-')}")
    for missing in result.missing:
        console.print(f"[yellow]not packaged:[/yellow] {missing}")
    _warn(result.warnings)


def _verb(reused: bool) -> str:
    return "[cyan]unchanged, reusing[/cyan]" if reused else "[green]wrote[/green]"


def _print_files(files: Any) -> None:
    for path in files:
        size = Path(path).stat().st_size if Path(path).is_file() else 0
        console.print(f"[green]wrote[/green] {path}" + (f" ({mb(size)})" if size else ""))


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")


def _write_service_files(target: str, result: Any, serverless_file: Path | None, sam_file: Path | None,
                         function_url: bool) -> None:
    from edgemaas.packaging.awslambda.serverless import (
        link_artifacts,
        load_records,
        render_sam,
        render_serverless,
        write_atomic,
    )

    records = load_records(workspace().dist, [result.model])
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
