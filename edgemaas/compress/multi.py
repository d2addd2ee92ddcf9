"""Compressing a model with several inputs or dynamic shapes: the data is one feed keyed by input name, the passes
are the ONNX ones that need no single input array, and the metric is parity with the original over every output.

The catalogue's other passes assume one input with a fixed sample shape (a batch of `x` arrays); each is recorded
as skipped with that reason. Every pass and every measurement runs in a child process (edgemaas.isolate).
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgemaas import __version__
from edgemaas.compress.passes import ONNX_ROOT, TFLITE_ROOT, plan
from edgemaas.compress.records import VariantResult, VariantStatus
from edgemaas.errors import StageFailed
from edgemaas.fsutil import atomic_dir, atomic_path
from edgemaas.isolate import run_isolated
from edgemaas.runtime import Manifest, ModelLoadError, load_model
from edgemaas.user_models.signature import variant_manifest
from edgemaas.user_models.userdata import CALIBRATION_PREFIX, EVAL_PREFIX
from edgemaas.workspace import Workspace

METRIC = "output_rmse"  # worst output's RMSE against the original, relative to that output's spread
DYNAMIC_ONLY = ("onnx-float16", "onnx-dynamic", "onnx-qdq")


def multi_input_rows(ws: Workspace, root_manifest: Manifest, root: str, compress: Any, data_source: Path,
                     report: Callable[[str], None]) -> tuple[list[VariantResult], dict[str, Any]]:
    """Make and measure the passes that apply; rows for every wanted variant, and the reference's measurement."""
    name = root_manifest.name
    root_dir = ws.variant_dir(name, root)
    directory = ws.model_dir(name) / "compress-data"
    directory.mkdir(parents=True, exist_ok=True)
    calibration, evaluation = directory / "calibration.npz", directory / "eval.npz"
    with np.load(data_source, allow_pickle=False) as data:
        for path, prefix in ((calibration, CALIBRATION_PREFIX), (evaluation, EVAL_PREFIX)):
            with atomic_path(path, keep_suffix=True) as tmp:
                np.savez(tmp, **{k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)})
    report("measuring the reference model")
    reference = run_isolated(_outputs_job, str(root_dir), str(evaluation), timeout=compress.timeout_s,
                             log_path=ws.model_dir(name) / "reference.log")
    reason = _why_not(root_manifest)
    variants, skipped = plan(list(compress.variants), compress, "parity", root, False)
    rows: list[VariantResult] = []
    for variant in variants:
        if variant.name not in DYNAMIC_ONLY or variant.parent != ONNX_ROOT:
            # tf2onnx's export checks parity on one input array: a TFLite file with several inputs stays TFLite.
            skipped[variant.name] = reason if variant.parent == root else \
                f"its parent {variant.parent} cannot be made: {reason}"
            continue
        report(variant.name)
        try:
            rows.append(_make(ws, root_manifest, root_dir, variant.name, calibration, evaluation, reference,
                              compress))
        except StageFailed as exc:
            rows.append(VariantResult(variant=variant.name, format="onnx", parent=root, status=VariantStatus.FAILED,
                                      reason=str(exc).splitlines()[0][:300]))
    for variant_name, why in skipped.items():
        rows.append(VariantResult(variant=variant_name, format=variant_name.split("-")[0], parent=None,
                                  status=VariantStatus.SKIPPED, reason=why))
    return rows, reference


def _why_not(manifest: Manifest) -> str:
    shapes = ", ".join(f"{s.public_name} [{', '.join(map(str, s.shown_dims()))}]" for s in manifest.inputs)
    kind = "several inputs" if len(manifest.inputs) > 1 else "a dynamic sample shape"
    return f"the pass takes one input with a fixed sample shape; this model has {kind} ({shapes})"


def _make(ws: Workspace, root: Manifest, root_dir: Path, variant: str, calibration: Path, evaluation: Path,
          reference: dict[str, Any], compress: Any) -> VariantResult:
    out_dir = ws.variant_dir(root.name, variant)
    source = root_dir / root.model.file
    started = time.perf_counter()
    with atomic_dir(out_dir) as tmp:  # built beside it and swapped in whole: never half a variant
        out = tmp / "model.onnx"
        run_isolated(_pass_job, variant, str(source), str(out), str(calibration), bool(compress.onnx.per_channel),
                     timeout=compress.timeout_s, log_path=tmp / "pass.log")
        provenance = {"created_by": f"edgemaas {__version__}", "pass": variant, "parent": root.model.sha256,
                      "parent_variant": ONNX_ROOT, "notes": {"data": "one feed per input name (.npz)"},
                      "seconds": round(time.perf_counter() - started, 2)}
        try:
            manifest = variant_manifest(root, out, variant, provenance)
        except ModelLoadError as exc:
            raise StageFailed(f"the runtime cannot load the result: {exc}") from None
        manifest.save(tmp)
        measured = run_isolated(_outputs_job, str(tmp), str(evaluation), timeout=compress.timeout_s,
                                log_path=tmp / "evaluate.log")
        per_output = output_parity(reference["outputs"], measured["outputs"])
        worst = max(per_output.values()) if per_output else 0.0
        max_abs = max((float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                       for a, b in zip(reference["outputs"].values(), measured["outputs"].values())), default=0.0)
        manifest.metrics = {"held_out": {METRIC: worst, "per_output": per_output}, "parity_max_abs": max_abs,
                            "metric_drop": worst * 100.0, "gzip_bytes": len(gzip.compress(out.read_bytes(), 9))}
        manifest.save(tmp)
    return VariantResult(
        variant=variant, format="onnx", parent=ONNX_ROOT, status=VariantStatus.MEASURED, metric_value=worst,
        metric_drop=worst * 100.0, size_bytes=manifest.model.size_bytes, gzip_bytes=manifest.metrics["gzip_bytes"],
        parity_max_abs=max_abs, runtime=measured["backend"],
        notes=["parity per output (RMSE / spread): " + ", ".join(f"{k} {v:.3g}" for k, v in per_output.items())])


def output_parity(reference: dict[str, Any], candidate: dict[str, Any]) -> dict[str, float]:
    """Each output's RMSE against the original, relative to the original's spread (0 = identical)."""
    result = {}
    for name, ref in reference.items():
        ref, got = np.asarray(ref, np.float64), np.asarray(candidate[name], np.float64)
        if ref.shape != got.shape:
            raise StageFailed(f"output {name} has shape {list(got.shape)}; the original gives {list(ref.shape)}")
        result[name] = float(np.sqrt(np.mean((got - ref) ** 2)) / (float(ref.std()) or 1.0)) if ref.size else 0.0
    return result


# ---------------------------------------------------------------------------------------------------------------
# Jobs run in child processes


def _outputs_job(model_dir: str, feed_path: str) -> dict[str, Any]:
    """Every output of the served model on the feed, by output name, through the serving runtime."""
    model = load_model(model_dir)
    with np.load(feed_path, allow_pickle=False) as data:
        arrays = [data[t.name] for t in model.tensor_inputs]
    values = model.run_tensors(arrays)
    return {"outputs": {t.name: np.asarray(v) for t, v in zip(model.tensor_outputs, values)},
            "backend": model.backend.name}


def _pass_job(variant: str, source: str, out: str, calibration: str, per_channel: bool) -> dict[str, Any]:
    """float16, dynamic int8 or static QDQ int8 of an ONNX model whose calibration feeds every named input."""
    import onnx

    if variant == "onnx-float16":
        try:
            from onnxruntime.transformers.float16 import convert_float_to_float16
        except ImportError:
            from onnxconverter_common.float16 import convert_float_to_float16
        onnx.save(convert_float_to_float16(onnx.load(source), keep_io_types=True), out)
        return {}
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    if variant == "onnx-dynamic":
        quantize_dynamic(source, out, per_channel=per_channel, weight_type=QuantType.QInt8)
        return {}
    import onnxruntime as ort

    inputs = ort.InferenceSession(source, providers=["CPUExecutionProvider"]).get_inputs()
    with np.load(calibration, allow_pickle=False) as data:
        feed = {i.name: data[i.name].astype(_dtype(i.type)) for i in inputs}
    quantize_static(source, out, _OneFeed(feed), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return {}


def _dtype(ort_type: str) -> type:
    return {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
            "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
            "tensor(int8)": np.int8, "tensor(bool)": np.bool_}.get(ort_type, np.float32)


class _OneFeed:
    """onnxruntime's CalibrationDataReader protocol: the user's one feed (every input by name), then None."""

    def __init__(self, feed: dict[str, np.ndarray]) -> None:
        self._feeds = iter([feed])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)
