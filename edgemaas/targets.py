"""`edgemaas package --target T`: which built variant(s) each target ships, and the packager that makes it.

- lambda, edge: the gate's choice for the spec's format (`--runtime tflite|onnx`), or the faster runtime (`auto`);
- mcu: the full-int8 TFLite variant (TFLite Micro runs integer models only);
- android, ios: full-int8 and float16 TFLite (NPU delegates want full int8) and the gate's ONNX choice as `.ort`.
A spec is compressed first when nothing was built yet; a model file the user brings is imported and ships as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgemaas.errors import UserError
from edgemaas.user_models.importing import import_model
from edgemaas.packaging.awslambda.lambda_zip import LambdaPackage, package_lambda
from edgemaas.pipeline import chosen_variant, compress_spec, load_selection, resolve_spec
from edgemaas.spec import Spec
from edgemaas.units import human_size
from edgemaas.workspace import Workspace

TARGETS = ("lambda", "edge", "mcu", "android", "ios")
RUNTIMES = ("tflite", "onnx", "auto")
MCU_VARIANT = "tflite-int8"
MOBILE_TFLITE = ("tflite-int8", "tflite-float16")
Report = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class Source:
    """What `package` was given: a built-in or spec (variants in the workspace) or a model file (imported)."""

    name: str
    spec: Spec | None
    imported: Path | None = None  # the imported model's folder, for a file the user brings


def resolve_source(target: str, ws: Workspace, variant: str | None = None, name: str | None = None,
                   labels: list[str] | None = None, report: Report = _quiet, trust_code: bool = False) -> Source:
    spec = resolve_spec(target)
    if spec is None:
        report("importing model file")
        manifest = import_model(Path(target), ws, name=name, labels=labels, trust_code=trust_code)
        return Source(manifest.name, None, ws.variant_dir(manifest.name, "imported"))
    if variant is None and not ws.selection_file(spec.name).exists():
        compress_spec(spec, ws, report=report)
    return Source(spec.name, spec)


def serving_variant(source: Source, ws: Workspace, variant: str | None = None, runtime: str | None = None,
                    report: Report = _quiet) -> tuple[Path, dict[str, Any] | None]:
    """The one variant a server target (lambda, edge) ships, and the runtime choice record when `auto` chose it."""
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

    chosen = (load_selection(ws.selection_file(source.name)) or {}).get("chosen") or {}
    candidates = {fmt: ws.variant_dir(source.name, v) for fmt, v in chosen.items()
                  if v and (ws.variant_dir(source.name, v) / "manifest.json").exists()}
    report("measuring LiteRT against ONNX Runtime (--runtime auto)")
    fmt, choice = choose_runtime(ws, source.name, candidates)
    return candidates[fmt], choice


def package_for_lambda(target: str, ws: Workspace, variant: str | None = None, python_version: str | None = None,
                       arch: str | None = None, name: str | None = None, labels: list[str] | None = None,
                       layout: str | None = None, runtime: str | None = None,
                       report: Report = _quiet, trust_code: bool = False) -> LambdaPackage:
    """`edgemaas package` (--target lambda): a spec (compressed as needed) or a model file, to a Lambda zip."""
    source = resolve_source(target, ws, variant, name, labels, report, trust_code)
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


def mcu_variant(source: Source, ws: Workspace, variant: str | None = None) -> Path:
    if source.imported is not None:
        return source.imported
    path = ws.variant_dir(source.name, variant or MCU_VARIANT)
    if not (path / "manifest.json").exists():
        raise UserError(f"{source.name}: no {path.name} variant was built; TFLite Micro runs full-int8 models: add "
                        f"{MCU_VARIANT} to compress.variants in the spec and run `edgemaas compress {source.name}`")
    return path


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
    """Android: static QDQ int8 when it passed the gate (NNAPI takes a QDQ graph whole; dynamic quantization's ops it
    does not), else float32. iOS: float32 (Core ML takes the float graph whole and few of the QDQ nodes: cnn 40/40
    against 10/40). Then the gate's ONNX choice."""
    from edgemaas.compress.report import load_report

    try:
        rows = load_report(ws.dist / name / "report")["variants"]
    except (FileNotFoundError, KeyError, ValueError):
        rows = []
    passed = {row["variant"] for row in rows if row.get("status") in ("passed", "chosen")}
    chosen = ((load_selection(ws.selection_file(name)) or {}).get("chosen") or {}).get("onnx")
    qdq = "onnx-qdq" if platform == "android" and "onnx-qdq" in passed else None
    return [v for v in (qdq, "onnx-float32", chosen) if v]


def _format_of(directory: Path) -> str:
    from edgemaas.runtime import read_manifest

    return read_manifest(directory).model.format


@dataclass
class TargetsRow:
    """What `edgemaas build` made for the targets besides Lambda, one short text per target."""

    edge: str = "-"
    mcu: str = "-"
    android: str = "-"
    ios: str = "-"
    warnings: list[str] = field(default_factory=list)


def package_other_targets(spec: Spec, ws: Workspace, smoke_event: dict[str, Any],
                          report: Report = _quiet) -> TargetsRow:
    """The edge bundle (smoke-tested with its own `predict`), the MCU sources and the phone packages of a built spec.
    A target that refuses the model says why in its cell; the others still get made."""
    from edgemaas.packaging.edge.bundle import package_edge
    from edgemaas.packaging.mcu.sources import package_mcu
    from edgemaas.packaging.mobile.phones import package_mobile

    row, source = TargetsRow(), Source(spec.name, spec)
    try:
        report("packaging for edge devices")
        variant_dir = serving_variant(source, ws)[0]
        bundle = package_edge(variant_dir, ws.dist / spec.name / "edge", ws.cache())
        row.edge = f"{human_size(bundle.bytes)}, predict {_edge_smoke(Path(bundle.tar_path), bundle.module, smoke_event)}"
    except UserError as exc:
        row.edge = f"refused: {exc}"
    try:
        report("writing TensorFlow Lite Micro sources")
        mcu = package_mcu(mcu_variant(source, ws), ws.dist / spec.name / "mcu")
        row.mcu = f"{human_size(mcu.model_bytes)} flash, ~{human_size(mcu.arena_bytes)} arena, {len(mcu.ops)} ops"
    except UserError as exc:
        row.mcu = f"refused: {str(exc).splitlines()[0]}"
    for platform in ("android", "ios"):
        try:
            report(f"packaging for {platform}")
            tflite, onnx = mobile_variants(source, ws, platform=platform)
            mobile = package_mobile(platform, tflite, onnx, ws.dist / spec.name / platform)
            setattr(row, platform, _mobile_text(mobile))
            row.warnings += mobile.warnings
        except UserError as exc:
            setattr(row, platform, f"refused: {str(exc).splitlines()[0]}")
    return row


def _edge_smoke(tar_path: Path, module: str, event: dict[str, Any]) -> str:
    """Extract the bundle to a scratch folder and run its own `predict` (with this Python's numpy and runtime)."""
    import json
    import subprocess
    import sys
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgemaas-edge-smoke-") as scratch:
        with tarfile.open(tar_path) as archive:
            archive.extractall(scratch, filter="data")  # refuses absolute paths, '..' and links out of the folder
        top = next(Path(scratch).iterdir())
        request = Path(scratch) / "request.json"
        request.write_text(json.dumps(event))
        done = subprocess.run([sys.executable, "-E", "-s", "-m", module, "predict", "--input", str(request)], cwd=top,
                              capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return f"FAILED: {(done.stderr.strip().splitlines() or ['no output'])[-1]}"
    predictions = json.loads(done.stdout)["predictions"]
    first = predictions[0]
    shown = f"{first['label']} (p={first['probability']:.2f})" if "label" in first else \
        ", ".join(f"{v:.4g}" for v in first.values() if isinstance(v, float))
    return f"ok: {shown}"


def _mobile_text(mobile: Any) -> str:
    parts = [f"{len(mobile.files)} files"]
    wanted = tuple(mobile.usability.get("platform_eps") or ())
    for provider, found in (mobile.usability.get("execution_providers") or {}).items():
        if wanted and provider.startswith(wanted):
            parts.append(f"{provider.split()[0]} {found.get('supported_nodes')}/{found.get('total_nodes')} nodes")
            break
    return ", ".join(parts)

