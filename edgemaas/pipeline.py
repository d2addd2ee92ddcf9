"""The pipeline: train -> convert -> gate -> package -> local smoke invoke, for one spec or many.

Each stage reuses its previous output when the inputs that made it are unchanged (a fingerprint of the relevant spec
sections is recorded in each manifest), so a second `build` does only what changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import convert as converting
from . import gate, training
from .errors import StageFailed, UserError
from .evaluation import format_metric
from .importing import import_model
from .isolate import run_isolated
from .packaging.lambda_zip import LambdaPackage, package_lambda
from .runtime import Manifest, ModelLoadError, read_manifest
from .spec import Spec, load_spec
from .workspace import FLOAT_VARIANT, Workspace

Report = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def fingerprint(spec: Spec, *sections: str) -> str:
    data = {s: getattr(spec, s).model_dump(mode="json") if getattr(spec, s) is not None else None for s in sections}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def resolve_spec(target: str, models_dir: Path = Path("models")) -> Spec | None:
    """A spec file, or the name of a built-in spec in models/. None when target is a model file instead."""
    path = Path(target)
    if path.suffix in (".yaml", ".yml"):
        return load_spec(path)
    if not path.exists() and (models_dir / f"{target}.yaml").exists():
        return load_spec(models_dir / f"{target}.yaml")
    if not path.exists():
        raise UserError(f"{target}: no such spec, model file or built-in model name (built-ins: "
                        f"{', '.join(p.stem for p in sorted(models_dir.glob('*.yaml'))) or 'none found'})")
    return None


def ensure_trained(spec: Spec, ws: Workspace, force: bool = False, report: Report = _quiet) -> Manifest:
    stamp = fingerprint(spec, "model", "data", "train")
    if not force:
        try:
            existing = read_manifest(ws.variant_dir(spec.name, FLOAT_VARIANT))
            if existing.provenance.get("spec_fingerprint") == stamp and ws.data_file(spec.name).exists():
                report("trained model up to date")
                return existing
        except ModelLoadError:
            pass
    report("training")
    log = ws.model_dir(spec.name) / "train.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:  # in its own process: TensorFlow's start-up noise goes to the log, and a crash cannot take the CLI down
        manifest = run_isolated(training.train, spec, ws, timeout=spec.train.timeout_s, log_path=log)
    except StageFailed as exc:
        raise UserError(f"{spec.name}: training failed: {exc}\n(full log: {log})") from None
    manifest.provenance["spec_fingerprint"] = stamp
    manifest.save(ws.variant_dir(spec.name, FLOAT_VARIANT))
    return manifest


def ensure_converted(spec: Spec, ws: Workspace, float_manifest: Manifest, force: bool = False,
                     report: Report = _quiet) -> list[converting.VariantResult]:
    stamp = fingerprint(spec, "convert")
    results = []
    for variant in spec.convert.variants:
        try:
            existing = read_manifest(ws.variant_dir(spec.name, variant))
            if not force and existing.provenance.get("parent") == float_manifest.model.sha256 \
                    and existing.provenance.get("spec_fingerprint") == stamp:
                results.append(converting.VariantResult(variant, existing))
                continue
        except ModelLoadError:
            pass
        report(f"converting {variant}")
        result = converting.convert(spec, ws, [variant])[0]
        if result.ok:
            result.manifest.provenance["spec_fingerprint"] = stamp
            result.manifest.save(ws.variant_dir(spec.name, variant))
        results.append(result)
    return results


def select(spec: Spec, ws: Workspace, float_manifest: Manifest, results: list[converting.VariantResult]) -> dict:
    selection = gate.choose(float_manifest.task, float_manifest, results, spec.gate)
    gate.save_selection(ws.selection_file(spec.name), selection)
    return selection


def variant_dir_for(spec: Spec, ws: Workspace, variant: str | None) -> Path:
    """The variant to package: the one asked for, else the gate's choice."""
    if variant is None:
        selection = gate.load_selection(ws.selection_file(spec.name))
        variant = selection and selection.get("chosen")
        if not variant:
            raise UserError(f"{spec.name}: no variant passed the gate or converted; see build/{spec.name}/"
                            "selection.json, or pass --variant")
    path = ws.variant_dir(spec.name, variant)
    if not (path / "manifest.json").exists():
        available = sorted(p.name for p in ws.model_dir(spec.name).iterdir() if (p / "manifest.json").exists()) \
            if ws.model_dir(spec.name).exists() else []
        raise UserError(f"{spec.name}: no variant {variant!r} was built (built: {', '.join(available) or 'none'})")
    return path


def prepare_spec(spec: Spec, ws: Workspace, force: bool = False, report: Report = _quiet) -> dict[str, Any]:
    """Train (or import) and convert as needed, run the gate; return the selection."""
    if spec.model.path:
        manifest = import_model(spec.resolve(spec.model.path), ws, name=spec.name,
                                labels=spec.data.labels if spec.data else None)
        return {"chosen": manifest.variant, "reason": "the model you brought, as given", "candidates": []}
    float_manifest = ensure_trained(spec, ws, force, report)
    results = ensure_converted(spec, ws, float_manifest, force, report)
    return select(spec, ws, float_manifest, results)


def package_target(target: str, ws: Workspace, variant: str | None = None, python_version: str | None = None,
                   arch: str | None = None, name: str | None = None, labels: list[str] | None = None,
                   report: Report = _quiet) -> LambdaPackage:
    """`edgemaas package`: a spec (trained and converted as needed) or a model file, to a Lambda zip."""
    spec = resolve_spec(target)
    if spec is None:
        report("importing model file")
        manifest = import_model(Path(target), ws, name=name, labels=labels)
        source_dir = ws.variant_dir(manifest.name, "imported")
        model_name = manifest.name
    else:
        prepare_spec(spec, ws, report=report)
        source_dir = ws.variant_dir(spec.name, "imported") if spec.model.path else variant_dir_for(spec, ws, variant)
        model_name = spec.name
        python_version = python_version or spec.package.python_version
        arch = arch or spec.package.arch
    report("packaging for AWS Lambda")
    return package_lambda(source_dir, ws.lambda_dir(model_name), ws.cache(), python_version, arch or "x86_64")


def smoke_event(ws: Workspace, name: str, samples: int = 2) -> dict[str, Any]:
    """A direct-invoke event with the first held-out samples, raw, as a caller would send them."""
    with np.load(ws.data_file(name)) as data:
        x = data["x_test"][:samples]
    return {"inputs": x.tolist()}


@dataclass
class BuildRow:
    name: str
    task: str = ""
    chosen: str | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)
    zip_bytes: int | None = None
    invoke: str = ""
    invoke_ms: float | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


def build_one(spec: Spec, ws: Workspace, force: bool = False, report: Report = _quiet) -> BuildRow:
    from .lambda_local import invoke_local

    row = BuildRow(spec.name)
    try:
        selection = prepare_spec(spec, ws, force, report)
        row.chosen = selection["chosen"]
        for variant in [FLOAT_VARIANT, *spec.convert.variants]:
            try:
                manifest = read_manifest(ws.variant_dir(spec.name, variant))
            except ModelLoadError:
                continue
            row.task = manifest.task
            row.sizes[variant] = manifest.model.size_bytes
            row.metrics[variant] = format_metric(manifest.task, manifest.metrics["held_out"])
        report("packaging for AWS Lambda")
        package = package_lambda(variant_dir_for(spec, ws, None), ws.lambda_dir(spec.name), ws.cache(),
                                 spec.package.python_version, spec.package.arch)
        row.zip_bytes, row.warnings = package.zipped_bytes, package.warnings
        report("invoking locally through awslambdaric")
        result = invoke_local(Path(package.zip_path), [smoke_event(ws, spec.name)],
                              memory_mb=spec.package.memory_mb, timeout_s=spec.package.timeout_s)[0]
        row.invoke_ms = result.duration_ms
        if result.function_error or (isinstance(result.payload, dict) and "error" in result.payload):
            row.invoke = f"FAILED: {result.error_message or result.payload}"
        else:
            predictions = result.payload["predictions"]
            row.invoke = f"ok: {_short(predictions[0])}" + (f" (+{len(predictions) - 1} more)" if len(predictions) > 1
                                                            else "")
    except UserError as exc:
        row.error = str(exc)
    return row


def _short(prediction: dict[str, Any]) -> str:
    if "label" in prediction:
        return f"{prediction['label']} (p={prediction['probability']:.2f})"
    return ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in prediction.values())
