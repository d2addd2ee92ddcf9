"""The pipeline: resolve a spec, train, convert and gate (compress), and read the gate's selection.

Packaging and the local smoke invoke are above it: `edgemaas/targets.py` (the registry) and `edgemaas/build.py`.

Each stage reuses its previous output when the inputs that made it are unchanged (a fingerprint of the relevant spec
sections is recorded in each manifest), so a second `build` does only what changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgemaas.train import training
from edgemaas import reuse
from edgemaas.compress.records import load_selection
from edgemaas.compress.run import compress_model, save_report
from edgemaas.errors import StageFailed, UserError
from edgemaas.user_models.importing import import_root
from edgemaas.isolate import run_isolated
from edgemaas.compress.passes import KERAS_ROOT
from edgemaas.runtime import Manifest, ModelLoadError, read_manifest
from edgemaas.runtime.manifest import intact
from edgemaas.resources import builtin_specs_dir
from edgemaas.spec import Spec, load_spec
from edgemaas.workspace import FLOAT_VARIANT, Workspace

Report = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def fingerprint(spec: Spec, *sections: str) -> str:
    """What training depends on in a spec: the stages' one fingerprint of those sections, shortened."""
    data = {s: getattr(spec, s).model_dump(mode="json") if getattr(spec, s) is not None else None for s in sections}
    return reuse.fingerprint(data)[:16]


def spec_dirs(models_dir: Path | None = None) -> list[Path]:
    """Where built-in spec names are looked up: models/ in the current directory first, then the specs that ship
    with edgemaas (the same folder in a checkout)."""
    if models_dir is not None:
        return [models_dir]
    folders = [Path("models")]
    try:
        folders.append(builtin_specs_dir())
    except FileNotFoundError:
        pass
    return folders


def resolve_spec(target: str, models_dir: Path | None = None) -> Spec | None:
    """A spec file, or the name of a built-in spec (`spec_dirs`). None when target is a model file instead."""
    path = Path(target)
    if path.suffix in (".yaml", ".yml"):
        return load_spec(path)
    if path.exists():
        return None
    folders = spec_dirs(models_dir)
    for folder in folders:
        if (folder / f"{target}.yaml").exists():
            return load_spec(folder / f"{target}.yaml")
    names = sorted({p.stem for folder in folders for p in folder.glob("*.yaml")})
    raise UserError(f"{target}: no such spec, model file or built-in model name (built-ins: "
                    f"{', '.join(names) or 'none found'})")


def ensure_trained(spec: Spec, ws: Workspace, force: bool = False, report: Report = _quiet) -> Manifest:
    stamp = fingerprint(spec, "model", "data", "train")
    if not force:
        try:
            existing = read_manifest(ws.variant_dir(spec.name, FLOAT_VARIANT))
            if existing.provenance.get("spec_fingerprint") == stamp and ws.data_file(spec.name).exists() \
                    and intact(ws.variant_dir(spec.name, FLOAT_VARIANT), existing):
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


def compress_spec(spec: Spec, ws: Workspace, force: bool = False, report: Report = _quiet) -> dict[str, Any]:
    """Train if needed, then make, measure and gate every variant; write the report card and the selection."""
    if spec.model.path:
        return compress_file(spec.resolve(spec.model.path), ws, spec.name, spec.data.labels if spec.data else None,
                             spec=spec, force=force, report=report)
    float_manifest = ensure_trained(spec, ws, force, report)
    held_out = float_manifest.metrics["held_out"]["samples"]
    card = compress_model(ws, float_manifest, KERAS_ROOT, spec.compress, spec.gate, ws.data_file(spec.name),
                          labelled_train=True, seed=spec.train.seed, force=force, report=report,
                          eval_description=f"held-out split of {float_manifest.provenance['dataset']} "
                                           f"({held_out} samples)")
    save_report(ws, card)
    return card


def compress_file(path: Path, ws: Workspace, name: str | None = None, labels: list[str] | None = None,
                  calibration_data: Path | None = None, eval_data: Path | None = None, spec: Spec | None = None,
                  force: bool = False, report: Report = _quiet, trust_code: bool = False) -> dict[str, Any]:
    """Compress a model file the user brings, with their calibration and eval data (or a spec's dataset)."""
    from edgemaas.spec import CompressSection, GateSection
    from edgemaas.user_models.userdata import dataset_for_model

    report("reading the model")
    root, manifest = import_root(path, ws, name, labels, trust_code=trust_code or bool(spec and spec.model.trust_code))
    if spec is not None and spec.data is not None:
        ds = training.load_dataset(spec)
        source, description = _save_spec_data(ws, manifest.name, ds), f"held-out split of {ds.source}"
    else:
        source, description = dataset_for_model(manifest, ws, calibration_data, eval_data)
    manifest = _with_task(ws, root, manifest, source)
    compress = spec.compress if spec else CompressSection()
    gate = spec.gate if spec else GateSection()
    card = compress_model(ws, manifest, root, compress, gate, source, labelled_train=False,
                          eval_description=description, force=force, report=report)
    save_report(ws, card)
    return card


def _save_spec_data(ws: Workspace, name: str, ds: Any) -> Path:
    training._save_data(ws.data_file(name), ds)
    return ws.data_file(name)


def _with_task(ws: Workspace, root: str, manifest: Manifest, data_source: Path) -> Manifest:
    """A model you bring says nothing of its task: labelled eval data with integer targets and several outputs make
    it a classifier, float targets a regressor; without labels it is served as raw values."""
    with np.load(data_source) as data:
        y = data["y_test"] if "y_test" in data.files else None
    outputs = abs(int(np.prod(manifest.outputs[0].shape[1:]))) if manifest.outputs[0].shape[1:] else 1
    if y is not None and y.dtype.kind in "iu" and outputs > 1:
        manifest.task = "classification"
        labels = manifest.postprocessing.get("labels") or [str(i) for i in range(outputs)]
        manifest.postprocessing = {"kind": "classification", "labels": labels}
    elif y is not None:
        manifest.task = "regression"
        manifest.postprocessing = {"kind": "regression", "names": ["value"], "mean": 0.0, "std": 1.0}
    manifest.save(ws.variant_dir(manifest.name, root))
    return manifest


def chosen_variant(ws: Workspace, name: str, variant: str | None = None, fmt: str = "tflite") -> Path:
    """The variant folder to package: the one asked for, else the gate's choice for the format."""
    if variant is None:
        selection = load_selection(ws.selection_file(name))
        variant = selection.variant_for(fmt) if selection else None
        if not variant:
            raise UserError(f"{name}: nothing chosen to package; run `edgemaas compress {name}` first, or pass "
                            "--variant")
    path = ws.variant_dir(name, variant)
    if not (path / "manifest.json").exists():
        available = sorted(p.name for p in ws.model_dir(name).iterdir() if (p / "manifest.json").exists()) \
            if ws.model_dir(name).exists() else []
        raise UserError(f"{name}: no variant {variant!r} was built (built: {', '.join(available) or 'none'})")
    return path


def smoke_event(ws: Workspace, name: str, samples: int = 2) -> dict[str, Any]:
    """A direct-invoke event with the first held-out samples, raw, as a caller would send them."""
    with np.load(ws.data_file(name)) as data:
        x = data["x_test"][:samples]
    return {"inputs": x.tolist()}
