"""The AWS Lambda target: the gate's choice (or the faster runtime, `--runtime auto`) as a zip, a zip plus a shared
runtime layer, or a container build context; optionally a Serverless or SAM service for it. In `edgemaas build` the
package is invoked locally through awslambdaric (the build's main table)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from edgemaas.errors import UserError
from edgemaas.packaging.awslambda.lambda_zip import LambdaPackage, package_lambda
from edgemaas.packaging.sources import (
    PYTHON_OPTION,
    RUNTIME_OPTION,
    SERVING_PYTHONS,
    serving_variant,
    verb,
    warning_lines,
    resolve_source,
)
from edgemaas.packaging.target import PackageRequest, Report, Status, Target, TargetOption, quiet
from edgemaas.spec import Spec
from edgemaas.units import human_size
from edgemaas.workspace import Workspace

OPTIONS = (
    RUNTIME_OPTION,
    PYTHON_OPTION,
    TargetOption(("--arch",), dict(type=click.Choice(["x86_64", "arm64"]),
                                   help="lambda: target architecture (default x86_64).")),
    TargetOption(("--layout",), dict(
        type=click.Choice(["auto", "zip", "layer", "image"]),
        help="lambda: zip: one zip; layer: runtime in a shared layer; image: container build context; auto "
             "(default): the first that fits Lambda's limits.")),
    TargetOption(("--serverless", "serverless_file"), dict(
        type=click.Path(dir_okay=False, path_type=Path),
        help="lambda: also write a Serverless Framework v3 service for the package here (e.g. serverless.yml).")),
    TargetOption(("--sam", "sam_file"), dict(
        type=click.Path(dir_okay=False, path_type=Path),
        help="lambda: also write an AWS SAM template for the package here (e.g. template.yaml).")),
    TargetOption(("--function-url",), dict(is_flag=True,
                                           help="With --serverless/--sam: also give the function a public URL.")),
)


def package_for_lambda(target: str, ws: Workspace, variant: str | None = None, python_version: str | None = None,
                       arch: str | None = None, name: str | None = None, labels: list[str] | None = None,
                       layout: str | None = None, runtime: str | None = None,
                       report: Report = quiet, trust_code: bool = False,
                       input_shapes: dict[str, list[int]] | None = None,
                       example_input: Path | None = None) -> LambdaPackage:
    """`edgemaas package` (--target lambda): a spec (compressed as needed) or a model file, to a Lambda zip."""
    source = resolve_source(target, ws, variant, name, labels, report, trust_code, input_shapes, example_input)
    source_dir, choice = serving_variant(source, ws, variant, runtime, report)
    memory_mb, timeout_s = 512, 30
    if source.spec is not None:
        python_version = python_version or source.spec.package.python_version
        arch = arch or source.spec.package.arch
        layout = layout or source.spec.package.layout
        memory_mb, timeout_s = source.spec.package.memory_mb, source.spec.package.timeout_s
    report("packaging for AWS Lambda")
    package = package_lambda(source_dir, ws.lambda_dir(source.name), ws.cache(), python_version, arch or "x86_64",
                             layout or "auto", ws.dist / "layers", memory_mb, timeout_s)
    if choice != package.runtime_choice:
        package.runtime_choice = choice
        package.save(ws.lambda_dir(source.name) / "package.json")
    return package


def package(request: PackageRequest) -> list[str]:
    options = request.options
    result = package_for_lambda(request.target, request.ws, request.variant, options.get("python_version"),
                                options.get("arch"), request.name, request.labels, options.get("layout"),
                                options.get("runtime"), request.report, request.trust_code, request.input_shapes,
                                request.example_input)
    lines = []
    if result.runtime_choice:
        lines.append(f"runtime: {result.runtime_choice['why']}")
    if result.layout_reason:
        lines.append(f"layout {result.layout_reason}")
    if result.layout == "image":
        lines.append(f"{verb(result.reused)} container build context {result.image_context} ({result.variant}, "
                     f"Python {result.python_version} {result.arch}): {human_size(result.unzipped_bytes)} installed")
    else:
        lines.append(f"{verb(result.reused)} {result.zip_path} ({result.variant}, Python {result.python_version} "
                     f"{result.arch}, layout {result.layout}): {human_size(result.zipped_bytes)} zipped, "
                     f"{human_size(result.unzipped_bytes)} unzipped (Lambda limits: 50 MB zipped direct upload, "
                     "250 MB unzipped with layers)")
    if result.layer:
        lines.append(f"  runtime layer {result.layer['zip_path']}: {human_size(result.layer['zipped_bytes'])} "
                     f"zipped, {human_size(result.layer['unzipped_bytes'])} unzipped")
    lines += checked_lines(result)
    lines += warning_lines(result.warnings)
    if options.get("serverless_file") or options.get("sam_file"):
        lines += _write_service_files(request, result)
    return lines


def checked_lines(package: LambdaPackage) -> list[str]:
    """What was proven before upload, and how: the glibc check and the model run with the shipped runtime."""
    from edgemaas.packaging.awslambda.loadcheck import LoadCheck

    lines = []
    if package.glibc:
        glibc = package.glibc
        lines.append(f"glibc: its {glibc['elf_files']} ELF files need {glibc['needed']} at most; "
                     f"{glibc['target']} has {glibc['target_glibc']}")
    if package.load_check:
        lines.append(f"model: {LoadCheck(**package.load_check).summary()}")
    return lines


def _write_service_files(request: PackageRequest, result: LambdaPackage) -> list[str]:
    from edgemaas.packaging.awslambda.serverless import (
        link_artifacts,
        load_records,
        render_sam,
        render_serverless,
        write_atomic,
    )

    serverless_file, sam_file = request.options.get("serverless_file"), request.options.get("sam_file")
    function_url = bool(request.options.get("function_url"))
    records = load_records(request.ws.dist, [result.model])
    command = (f"edgemaas package {request.target} --layout {result.layout} --python-version {result.python_version} "
               f"--arch {result.arch}")
    lines = []
    try:
        if serverless_file:
            write_atomic(serverless_file, render_serverless(records, base_dir=serverless_file.parent,
                                                            function_url=function_url,
                                                            command=f"{command} --serverless {serverless_file}"))
            link_artifacts(records)
            lines.append(f"[green]wrote[/green] {serverless_file}")
        if sam_file:
            write_atomic(sam_file, render_sam(records, base_dir=sam_file.parent, function_url=function_url,
                                              command=f"{command} --sam {sam_file}"))
            lines.append(f"[green]wrote[/green] {sam_file}")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return lines


def build_package(spec: Spec, ws: Workspace, variant_dir: Path, report: Report = quiet) -> LambdaPackage:
    """`edgemaas build`: the spec's shipped variant as its spec says (python, arch, layout, memory, timeout)."""
    report("packaging for AWS Lambda")
    return package_lambda(variant_dir, ws.lambda_dir(spec.name), ws.cache(), spec.package.python_version,
                          spec.package.arch, spec.package.layout, ws.dist / "layers", spec.package.memory_mb,
                          spec.package.timeout_s)


@dataclass
class Invoked:
    """The local smoke invoke of a Lambda package: how it went, the text for the table, how long it took."""

    status: Status
    text: str
    duration_ms: float | None = None


def smoke(spec: Spec, package: LambdaPackage, event: dict[str, Any], report: Report = quiet) -> Invoked:
    """Invoke the zip once through awslambdaric in a clean process, as Lambda would."""
    if package.layout == "image":
        return Invoked(Status.SKIPPED, "image: build it with docker (no local invoke)")
    from edgemaas.local import invoke_local

    report("invoking locally through awslambdaric")
    layers = [Path(package.layer["zip_path"])] if package.layer else []
    result = invoke_local(Path(package.zip_path), [event], layers=layers, memory_mb=spec.package.memory_mb,
                          timeout_s=spec.package.timeout_s)[0]
    if result.function_error or (isinstance(result.payload, dict) and "error" in result.payload):
        return Invoked(Status.FAILED, f"FAILED: {result.error_message or result.payload}", result.duration_ms)
    predictions = result.payload["predictions"]
    text = f"ok: {short_prediction(predictions[0])}" + (f" (+{len(predictions) - 1} more)" if len(predictions) > 1
                                                        else "")
    return Invoked(Status.OK, text, result.duration_ms)


def short_prediction(prediction: dict[str, Any]) -> str:
    if "label" in prediction:
        return f"{prediction['label']} (p={prediction['probability']:.2f})"
    return ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in prediction.values())


TARGETS: tuple[Target, ...] = (Target(
    name="lambda",
    help="an AWS Lambda function",
    ships="the gate's choice for the spec's format (--runtime tflite|onnx), or the faster runtime (auto)",
    package=package,
    options=OPTIONS,
    python_versions=SERVING_PYTHONS,
),)
