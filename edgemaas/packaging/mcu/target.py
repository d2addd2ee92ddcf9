"""The microcontroller target: C sources for TensorFlow Lite Micro from the full-int8 TFLite variant (TFLite Micro
runs integer models only): model data, an op resolver with exactly the model's ops, and a tensor-arena estimate."""

from __future__ import annotations

from pathlib import Path

from edgemaas.errors import UserError
from edgemaas.packaging.mcu.sources import package_mcu
from edgemaas.packaging.sources import Source, file_lines, first_line, source_of, warning_lines
from edgemaas.packaging.target import BuildContext, Cell, PackageRequest, Status, Target
from edgemaas.units import human_size
from edgemaas.workspace import Workspace

MCU_VARIANT = "tflite-int8"


def mcu_variant(source: Source, ws: Workspace, variant: str | None = None) -> Path:
    if source.imported is not None:
        return source.imported
    path = ws.variant_dir(source.name, variant or MCU_VARIANT)
    if not (path / "manifest.json").exists():
        raise UserError(f"{source.name}: no {path.name} variant was built; TFLite Micro runs full-int8 models: add "
                        f"{MCU_VARIANT} to compress.variants in the spec and run `edgemaas compress {source.name}`")
    return path


def package(request: PackageRequest) -> list[str]:
    source = source_of(request)
    source_dir = mcu_variant(source, request.ws, request.variant)
    request.report("writing TensorFlow Lite Micro sources")
    result = package_mcu(source_dir, request.ws.dist / source.name / "mcu")
    return [*file_lines(result.files),
            f"TensorFlow Lite Micro: {len(result.ops)} ops ({', '.join(result.ops)}); flash: model "
            f"{human_size(result.model_bytes)}; RAM: tensor arena ~{human_size(result.arena_bytes)} (an estimate: "
            "see SUMMARY.md)",
            *warning_lines(result.warnings)]


def build_cell(ctx: BuildContext) -> Cell:
    try:
        ctx.report("writing TensorFlow Lite Micro sources")
        mcu = package_mcu(mcu_variant(Source(ctx.spec.name, ctx.spec), ctx.ws), ctx.out_dir("mcu"))
    except UserError as exc:
        return Cell(Status.REFUSED, f"refused: {first_line(exc)}")
    return Cell(Status.OK, f"{human_size(mcu.model_bytes)} flash, ~{human_size(mcu.arena_bytes)} arena, "
                           f"{len(mcu.ops)} ops")


TARGETS: tuple[Target, ...] = (Target(
    name="mcu",
    help="C source for TensorFlow Lite Micro",
    ships=f"the full-int8 TFLite variant ({MCU_VARIANT})",
    package=package,
    build_cell=build_cell,
    column="mcu (TFLite Micro, full int8)",
),)
