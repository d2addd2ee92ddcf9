"""The phone targets: model files and app code for Android and iOS. Full-int8 and float16 TFLite (NPU delegates want
full int8), and an ONNX model as `.ort`: on Android static QDQ int8 when it passed the gate (NNAPI takes a QDQ graph
whole), on iOS float32 (Core ML takes the float graph whole: cnn 40/40 nodes against 10/40 of the QDQ one)."""

from __future__ import annotations

from pathlib import Path

from edgemaas.errors import UserError
from edgemaas.packaging.mobile.phones import MobilePackage, package_mobile
from edgemaas.packaging.sources import Source, file_lines, first_line, source_of, warning_lines
from edgemaas.packaging.target import BuildContext, Cell, PackageRequest, Status, Target
from edgemaas.compress.records import VariantStatus, load_selection
from edgemaas.compress.report import as_card, load_report
from edgemaas.pipeline import chosen_variant
from edgemaas.workspace import Workspace

MOBILE_TFLITE = ("tflite-int8", "tflite-float16")


def mobile_variants(source: Source, ws: Workspace, variant: str | None = None,
                    platform: str = "android") -> tuple[list[Path], Path | None]:
    """The TFLite files and the ONNX model (for `.ort`) a phone app ships on `platform` (android or ios)."""
    if source.imported is not None:
        fmt = _format_of(source.imported)
        return ([source.imported], None) if fmt == "tflite" else ([], source.imported)
    names = [variant] if variant else list(MOBILE_TFLITE)
    tflite = [ws.variant_dir(source.name, v) for v in names if (ws.variant_dir(source.name, v) / "manifest.json")
              .exists()]
    if variant and not tflite:
        chosen_variant(ws, source.name, variant)  # raises, listing what was built
    onnx = None
    for candidate in _phone_onnx_candidates(ws, source.name, platform):
        if (ws.variant_dir(source.name, candidate) / "manifest.json").exists():
            onnx = ws.variant_dir(source.name, candidate)
            break
    return tflite, onnx


def _phone_onnx_candidates(ws: Workspace, name: str, platform: str) -> list[str]:
    """Android: static QDQ int8 when it passed the gate (dynamic quantization's ops NNAPI does not take), else
    float32. iOS: float32. Then the gate's ONNX choice."""
    try:
        rows = as_card(load_report(ws.dist / name / "report")).variants
    except (FileNotFoundError, KeyError, ValueError):
        rows = []
    passed = {row.variant for row in rows if row.status in (VariantStatus.PASSED, VariantStatus.CHOSEN)}
    selection = load_selection(ws.selection_file(name))
    chosen = selection.chosen.get("onnx") if selection else None
    qdq = "onnx-qdq" if platform == "android" and "onnx-qdq" in passed else None
    return [v for v in (qdq, "onnx-float32", chosen) if v]


def _format_of(directory: Path) -> str:
    from edgemaas.runtime import read_manifest

    return read_manifest(directory).model.format


def _package(platform: str, request: PackageRequest) -> list[str]:
    source = source_of(request)
    tflite, onnx = mobile_variants(source, request.ws, request.variant, platform)
    request.report(f"writing {platform} model files and code")
    result = package_mobile(platform, tflite, onnx, request.ws.dist / source.name / platform)
    lines = file_lines(result.files)
    wanted = tuple(result.usability.get("platform_eps") or ())  # NNAPI on Android, CoreML on iOS
    for provider, found in (result.usability.get("execution_providers") or {}).items():
        if wanted and not provider.startswith(wanted):
            continue
        lines.append(f"{provider}: {found.get('supported_nodes')}/{found.get('total_nodes')} nodes in "
                     f"{found.get('partitions')} partition(s), suitable: {found.get('suitability', '-')}")
    lines += [f"[yellow]not packaged:[/yellow] {missing}" for missing in result.missing]
    return lines + warning_lines(result.warnings)


def _build_cell(platform: str, ctx: BuildContext) -> Cell:
    try:
        ctx.report(f"packaging for {platform}")
        tflite, onnx = mobile_variants(Source(ctx.spec.name, ctx.spec), ctx.ws, platform=platform)
        mobile = package_mobile(platform, tflite, onnx, ctx.out_dir(platform))
    except UserError as exc:
        return Cell(Status.REFUSED, f"refused: {first_line(exc)}")
    return Cell(Status.OK, _summary(mobile), list(mobile.warnings))


def _summary(mobile: MobilePackage) -> str:
    parts = [f"{len(mobile.files)} files"]
    wanted = tuple(mobile.usability.get("platform_eps") or ())
    for provider, found in (mobile.usability.get("execution_providers") or {}).items():
        if wanted and provider.startswith(wanted):
            parts.append(f"{provider.split()[0]} {found.get('supported_nodes')}/{found.get('total_nodes')} nodes")
            break
    return ", ".join(parts)


def _target(platform: str, help: str, column: str) -> Target:
    def package(request: PackageRequest) -> list[str]:
        return _package(platform, request)

    def build_cell(ctx: BuildContext) -> Cell:
        return _build_cell(platform, ctx)

    return Target(name=platform, help=help, package=package, build_cell=build_cell, column=column,
                  ships="full-int8 and float16 TFLite, and an ONNX variant as .ort (" +
                        ("static QDQ int8 when it passed the gate, else float32" if platform == "android"
                         else "float32") + ")")


TARGETS: tuple[Target, ...] = (
    _target("android", "model files and code for Android apps", "android (NNAPI)"),
    _target("ios", "model files and code for iOS apps", "ios (CoreML)"),
)
