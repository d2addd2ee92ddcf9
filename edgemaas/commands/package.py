"""`edgemaas package`: a model to what ships (AWS Lambda now; edge, microcontroller and phone targets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import UserError
from .common import console, handle_errors, mb, status_printer, workspace


@click.command()
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
@handle_errors
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
    from ..pipeline import package_target

    if python_version and python_version not in ("3.10", "3.11", "3.12", "3.13"):
        raise click.BadParameter("Lambda runs Python 3.10 to 3.13", param_hint="--python-version")
    result = package_target(target, workspace(), variant, python_version, arch, name,
                            labels.split(",") if labels else None, layout, status_printer("package"))
    if result.layout_reason:
        console.print(f"layout {result.layout_reason}")
    verb = "[cyan]unchanged, reusing[/cyan]" if result.reused else "[green]wrote[/green]"
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
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if serverless_file or sam_file:
        _write_service_files(target, result, serverless_file, sam_file, function_url)


def _write_service_files(target: str, result: Any, serverless_file: Path | None, sam_file: Path | None,
                         function_url: bool) -> None:
    from ..packaging.serverless import (
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
