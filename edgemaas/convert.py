"""Keras -> TFLite conversion (float32, full int8), each variant converted and evaluated in its own process."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import StageFailed, UserError
from .evaluation import metric_drop, metrics
from .isolate import run_isolated
from .runtime import Manifest, ModelFile, ModelLoadError, TensorSpec, load_model, read_manifest
from .runtime.manifest import sha256_file
from .runtime.processing import InputProcessor
from .spec import Spec
from .workspace import FLOAT_VARIANT, Workspace


@dataclass
class VariantResult:
    variant: str
    manifest: Manifest | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.manifest is not None


def _convert_job(keras_path: str, out_path: str, mode: str, representative_path: str | None) -> int:
    """Runs in a child process: may crash the interpreter, which the parent records as a failure."""
    from .tf import keras, tensorflow

    tf, tfk = tensorflow(), keras()
    model = tfk.models.load_model(keras_path, compile=False)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "int8":
        samples = np.load(representative_path)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([s[None]] for s in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if samples.dtype.kind == "f":  # token ids stay int32: only float inputs take the int8 interface
            converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    content = converter.convert()
    tmp = Path(out_path).with_suffix(".partial")
    tmp.write_bytes(content)
    os.replace(tmp, out_path)
    return len(content)


def _evaluate_job(variant_dir: str, data_path: str, latency_runs: int = 100) -> dict[str, Any]:
    """Runs in a child process: the held-out metric through the serving runtime, and single-sample p50 latency."""
    model = load_model(variant_dir)
    with np.load(data_path) as data:
        x_test, y_test = data["x_test"], data["y_test"]
    arrays = model.transform([x_test])
    values = model.output_values(arrays)
    single = [a[:1] for a in arrays]
    model.infer(single)  # warm-up: the first invoke allocates
    timings = []
    for _ in range(latency_runs):
        start = time.perf_counter()
        model.infer(single)
        timings.append(time.perf_counter() - start)
    return {"held_out": metrics(model.manifest.task, y_test, values),
            "latency_p50_ms": float(np.median(timings) * 1000), "backend": model.backend.name}


def representative_samples(ws: Workspace, float_manifest: Manifest, count: int, seed: int,
                           headroom: float = 0.0) -> np.ndarray:
    """Preprocessed samples from the training split, for calibrating full-int8 quantization.

    `headroom` adds copies of the numeric samples scaled by (1 + headroom): int8 ranges come from calibration, and
    a series that later exceeds its training maximum (sunspot cycles do) would otherwise be clipped.
    """
    with np.load(ws.data_file(float_manifest.name)) as data:
        x_train = data["x_train"]
    chosen = x_train[np.random.default_rng(seed).permutation(len(x_train))[:count]]
    if headroom and chosen.dtype.kind == "f":
        chosen = np.concatenate([chosen, chosen * (1.0 + headroom)])
    return InputProcessor(float_manifest.preprocessing[0], float_manifest.limits).transform(chosen)


def convert(spec: Spec, ws: Workspace, variants: list[str] | None = None) -> list[VariantResult]:
    float_dir = ws.variant_dir(spec.name, FLOAT_VARIANT)
    try:
        parent = read_manifest(float_dir)
    except Exception:
        raise UserError(f"{spec.name}: no trained model in {float_dir}; run `edgemaas train {spec.source}` first") \
            from None
    results = []
    for variant in variants or spec.convert.variants:
        try:
            results.append(VariantResult(variant, convert_variant(spec, ws, parent, variant)))
        except StageFailed as exc:
            results.append(VariantResult(variant, error=str(exc)))
    return results


def convert_variant(spec: Spec, ws: Workspace, parent: Manifest, variant: str) -> Manifest:
    mode = variant.removeprefix("tflite-")
    out = ws.variant_dir(spec.name, variant)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rep_path = None
    if mode == "int8":
        rep_path = tmp / "representative.npy"
        np.save(rep_path, representative_samples(ws, parent, spec.convert.representative_samples, spec.train.seed,
                                                     spec.convert.calibration_headroom))
    model_path = tmp / "model.tflite"
    started = time.perf_counter()
    run_isolated(_convert_job, str(ws.variant_dir(spec.name, FLOAT_VARIANT) / parent.model.file), str(model_path),
                 mode, str(rep_path) if rep_path else None, timeout=spec.convert.timeout_s,
                 log_path=tmp / "convert.log")
    seconds = time.perf_counter() - started
    if rep_path:
        rep_path.unlink()

    manifest = variant_manifest(parent, model_path, variant, {"pass": f"tflite-{mode}", "settings": {
        "representative_samples": spec.convert.representative_samples,
        "calibration_headroom": spec.convert.calibration_headroom} if mode == "int8" else {},
        "convert_seconds": round(seconds, 2)})
    manifest.save(tmp)
    measured = run_isolated(_evaluate_job, str(tmp), str(ws.data_file(spec.name)), timeout=spec.convert.timeout_s)
    manifest.metrics = {**measured, "metric_drop": metric_drop(parent.task, parent.metrics["held_out"],
                                                               measured["held_out"])}
    manifest.save(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return manifest


def variant_manifest(parent: Manifest, model_path: Path, variant: str, provenance: dict[str, Any]) -> Manifest:
    """A manifest for a converted model: its own signature and hash, the parent's processing and provenance."""
    backend = load_model_signature(model_path)
    return Manifest(
        name=parent.name, variant=variant, task=parent.task,
        model=ModelFile(file=model_path.name, format=model_path.suffix.lstrip("."), sha256=sha256_file(model_path),
                        size_bytes=model_path.stat().st_size),
        inputs=backend.inputs, outputs=backend.outputs,
        preprocessing=parent.preprocessing, postprocessing=parent.postprocessing, limits=parent.limits,
        provenance={"created_by": f"edgemaas {__version__}", "parent": parent.model.sha256,
                    "parent_variant": parent.variant, **provenance},
    )


@dataclass
class Signature:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


def _signature_job(model_path: str) -> Signature:
    from .runtime.backends import open_backend

    path = Path(model_path)
    backend = open_backend(path.suffix.lstrip("."), path.read_bytes())
    return Signature(backend.inputs, backend.outputs)


def load_model_signature(model_path: Path) -> Signature:
    """The model's tensors as the serving backend sees them, read in a child process (a malformed file can crash an
    interpreter). Raises ModelLoadError with the loader's reason."""
    try:
        return run_isolated(_signature_job, str(model_path), timeout=120)
    except StageFailed as exc:
        raise ModelLoadError(str(exc).splitlines()[0].removeprefix("ModelLoadError: ")) from None
