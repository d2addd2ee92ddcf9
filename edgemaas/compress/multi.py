"""Compressing a model with several inputs or dynamic shapes: the data is one feed keyed by input name, the passes
are the ONNX ones that need no single input array (a .tflite file is exported to ONNX first), and the metric is parity
with the original over every output. A converted model may rename its tensors: inputs and outputs match by position.

The catalogue's other passes assume one input with a fixed sample shape (a batch of `x` arrays); each is recorded
as skipped with that reason. Every pass and every measurement runs in a child process (edgemaas.isolate).

Every made variant (and an ONNX original, the float32 model the ONNX variants must beat) is timed like a
single-input model's (edgemaas.compress.latency: fresh processes, interleaved, a Lambda function's threads) on one
request taken from the eval feed, so the gate can price the rows and refuse one slower than float32.
"""

from __future__ import annotations

import gzip
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgemaas import __version__
from edgemaas.compress.latency import LAMBDA_THREADS, measure, record_timings
from edgemaas.compress.passes import ONNX_ROOT, plan
from edgemaas.compress.records import VariantResult, VariantStatus
from edgemaas.errors import StageFailed
from edgemaas.fsutil import atomic_dir, atomic_path
from edgemaas.isolate import run_isolated
from edgemaas.runtime import Manifest, ModelLoadError, TensorSpec, load_model
from edgemaas.user_models.signature import variant_manifest
from edgemaas.user_models.userdata import CALIBRATION_PREFIX, EVAL_PREFIX
from edgemaas.workspace import Workspace

METRIC = "output_rmse"  # worst output's RMSE against the original, relative to that output's spread
DYNAMIC_ONLY = ("onnx-float16", "onnx-dynamic", "onnx-qdq")
# Names a file gives its batch dimension (onnx exporters, hand-made graphs); an unnamed leading -1 counts too.
BATCH_NAMES = ("batch", "batch_size", "batchsize", "bs", "n", "b")


def multi_input_rows(ws: Workspace, root_manifest: Manifest, root: str, compress: Any, data_source: Path,
                     report: Callable[[str], None], max_metric_drop: float | None = None
                     ) -> tuple[list[VariantResult], dict[str, Any], dict[str, Any]]:
    """Make, measure and time the passes that apply; rows for every wanted variant, the reference's measurement,
    and what timed them ({"machine": the CPU, "request": the timed request's tensors}). When onnx-qdq's parity drop
    exceeds `max_metric_drop`, onnx-qdq-mixed keeps its worst layers in float."""
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
    order = [spec.public_name for spec in root_manifest.inputs]
    reference = run_isolated(_outputs_job, str(root_dir), str(evaluation), order, timeout=compress.timeout_s,
                             log_path=ws.model_dir(name) / "reference.log")
    reason = _why_not(root_manifest)
    variants, skipped = plan(list(compress.variants), compress, "parity", root, False)
    rows: list[VariantResult] = []
    made: dict[str, Manifest] = {root: root_manifest}
    for variant in variants:
        if variant.name not in (*DYNAMIC_ONLY, "onnx-float32") or variant.parent not in made:
            why = reason if variant.parent == root else f"its parent {variant.parent} was not made"
            skipped[variant.name] = skipped.get(variant.parent, why) if variant.parent in skipped else why
            continue
        report(variant.name)
        try:
            row, made[variant.name] = _make(ws, root_manifest, made[variant.parent], variant.parent, variant.name,
                                            calibration, evaluation, reference, compress)
            rows.append(row)
            if variant.name == "onnx-qdq":
                report(f"{variant.name}: per-layer quantization error")
                _debug_layers(ws, name, row, variant.parent, made[variant.parent], calibration, compress)
        except StageFailed as exc:
            rows.append(VariantResult(variant=variant.name, format="onnx", parent=variant.parent,
                                      status=VariantStatus.FAILED, reason=str(exc).splitlines()[0][:300]))
    qdq = next((r for r in rows if r.variant == "onnx-qdq" and r.status is VariantStatus.MEASURED), None)
    if qdq is not None and max_metric_drop is not None and (qdq.metric_drop or 0.0) > max_metric_drop:
        mixed = _repair(ws, root_manifest, qdq, made, rows, calibration, evaluation, reference, compress,
                        max_metric_drop, report)
        if mixed is not None:
            rows.append(mixed)
    if root == ONNX_ROOT:  # the float32 model of the ONNX format: what its variants must beat on time and cost
        rows.insert(0, _original_row(root, root_dir / root_manifest.model.file, root_manifest, reference))
    timing = _time_rows(ws, name, rows, evaluation, root_manifest.inputs, order, compress, report)
    for variant_name, why in skipped.items():
        rows.append(VariantResult(variant=variant_name, format=variant_name.split("-")[0], parent=None,
                                  status=VariantStatus.SKIPPED, reason=why))
    return rows, reference, timing


def _repair(ws: Workspace, root: Manifest, broken: VariantResult, made: dict[str, Manifest],
            rows: list[VariantResult], calibration: Path, evaluation: Path, reference: dict[str, Any], compress: Any,
            budget: float, report: Callable[[str], None]) -> VariantResult | None:
    """Selective precision as for a single-input model: onnx-qdq with its worst 1, 2, 4, ... layers kept in float
    (nodes_to_exclude), until the result passes the budget or is no longer smaller than the smallest float model
    within it. The last attempt is the row onnx-qdq-mixed; its notes list every attempt."""
    ranked = sorted((entry for entry in (broken.extra.get("layers") or {}).get("layers", [])
                     if math.isfinite(entry.get("error", math.nan)) and entry.get("tensors")),
                    key=lambda e: -e["error"])
    if not ranked or broken.parent not in made:
        return None
    limit = min((r.size_bytes for r in rows if r.variant in ("onnx-float32", "onnx-float16", ONNX_ROOT)
                 and r.size_bytes and (r.metric_drop or 0.0) <= budget), default=None)
    if broken.parent == ONNX_ROOT:
        limit = min(limit or root.model.size_bytes, root.model.size_bytes)
    attempts: list[str] = []
    mixed: VariantResult | None = None
    count = 1
    while True:
        keep = ranked[:count]
        names = [entry["layer"] for entry in keep]
        report(f"onnx-qdq-mixed: int8 with {', '.join(names)} in float")
        try:
            mixed, made["onnx-qdq-mixed"] = _make(ws, root, made[broken.parent], broken.parent, "onnx-qdq-mixed",
                                                  calibration, evaluation, reference, compress,
                                                  [t for entry in keep for t in entry["tensors"]])
        except StageFailed as exc:
            attempts.append(f"{len(names)} in float: failed ({str(exc).splitlines()[0][:200]})")
            break
        mixed.extra["kept_float"] = names
        attempts.append(f"{len(names)} in float: drop {mixed.metric_drop:.2f}, {mixed.size_bytes} bytes")
        if (mixed.metric_drop or 0.0) <= budget or count == len(ranked):
            break
        if limit is not None and mixed.size_bytes and mixed.size_bytes >= limit:
            attempts.append(f"stopped: no longer smaller than the smallest float model within the budget ({limit} "
                            "bytes)")
            break
        count = min(count * 2, len(ranked))
    if mixed is None:
        broken.notes.append("selective precision failed: " + "; ".join(attempts))
        return None
    mixed.notes.append(f"repairs {broken.variant} (drop {broken.metric_drop:.2f}) by keeping in float: "
                       + ", ".join(mixed.extra["kept_float"]) + "; attempts: " + "; ".join(attempts))
    return mixed


def _debug_layers(ws: Workspace, name: str, row: VariantResult, parent_variant: str, parent: Manifest,
                  calibration: Path, compress: Any) -> None:
    """The error each layer adds in the QDQ model (onnxruntime's qdq_loss_debug on the whole calibration feed), by
    the float graph's node names: row.extra["layers"], as for a single-input model."""
    from edgemaas.compress.passes.onnx_passes import qdq_layer_errors

    folder = ws.variant_dir(name, row.variant)
    try:
        row.extra["layers"] = run_isolated(
            qdq_layer_errors, str(ws.variant_dir(name, parent_variant) / parent.model.file), str(folder / "model.onnx"),
            str(calibration), True, timeout=compress.timeout_s, log_path=folder / "layers.log")
    except StageFailed as exc:
        row.notes.append(f"per-layer debugging failed: {str(exc).splitlines()[0][:300]}")


def _original_row(root: str, path: Path, manifest: Manifest, reference: dict[str, Any]) -> VariantResult:
    return VariantResult(
        variant=root, format="onnx", parent=None, status=VariantStatus.MEASURED, metric_value=0.0, metric_drop=0.0,
        size_bytes=manifest.model.size_bytes, gzip_bytes=len(gzip.compress(path.read_bytes(), 9)),
        parity_max_abs=0.0, runtime=reference["backend"],
        notes=["the model you brought: the float32 model the ONNX variants are timed and priced against"])


def _time_rows(ws: Workspace, name: str, rows: list[VariantResult], evaluation: Path, inputs: list[TensorSpec],
               order: list[str], compress: Any, report: Callable[[str], None]) -> dict[str, Any]:
    """Every measured row's p50 in fresh, interleaved processes (edgemaas.compress.latency) on one request."""
    timed = {r.variant: ws.variant_dir(name, r.variant) for r in rows
             if r.status is VariantStatus.MEASURED and r.measured}
    if not timed:
        return {}
    with np.load(evaluation, allow_pickle=False) as data:
        request = one_request({key: data[key] for key in order}, inputs)
    path = evaluation.with_name("request.npz")
    with atomic_path(path, keep_suffix=True) as tmp:
        np.savez(tmp, **request)
    report(f"timing {len(timed)} variants (fresh processes, interleaved, {LAMBDA_THREADS} thread)")
    machine = record_timings(rows, measure(timed, path, timeout=compress.timeout_s, order=order))
    return {"machine": machine, "request": [f"{key} [{', '.join(map(str, a.shape))}]" for key, a in request.items()]}


def one_request(feed: dict[str, np.ndarray], inputs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """One request from a feed of several samples: the first along each input's batch dimension (the one the file
    names "batch" (or N, batch_size...), else a dynamic leading one), when every input that has one agrees on the
    count. Otherwise the feed as it is (a request is then whatever the data holds). Other dynamic dimensions keep
    the data's sizes."""
    axes: dict[str, int] = {}
    for spec, (key, array) in zip(inputs, feed.items()):
        if array.ndim != len(spec.shape):
            continue
        dims = spec.shown_dims()
        named = [i for i, d in enumerate(dims) if spec.shape[i] < 0 and str(d).lower() in BATCH_NAMES]
        if named:
            axes[key] = named[0]
        elif spec.shape and spec.shape[0] < 0 and str(dims[0]) in ("?", "-1"):
            axes[key] = 0
    counts = {feed[key].shape[axis] for key, axis in axes.items()}
    if len(counts) != 1 or counts == {0}:
        return dict(feed)
    return {key: np.take(a, [0], axis=axes[key]) if key in axes else a for key, a in feed.items()}


def _why_not(manifest: Manifest) -> str:
    shapes = ", ".join(f"{s.public_name} [{', '.join(map(str, s.shown_dims()))}]" for s in manifest.inputs)
    kind = "several inputs" if len(manifest.inputs) > 1 else "a dynamic sample shape"
    return f"the pass takes one input with a fixed sample shape; this model has {kind} ({shapes})"


def _make(ws: Workspace, root: Manifest, parent: Manifest, parent_variant: str, variant: str, calibration: Path,
          evaluation: Path, reference: dict[str, Any], compress: Any,
          exclude: list[str] | None = None) -> tuple[VariantResult, Manifest]:
    out_dir = ws.variant_dir(root.name, variant)
    source = ws.variant_dir(root.name, parent_variant) / parent.model.file
    order = [spec.public_name for spec in root.inputs]  # a converted model may rename its inputs: match by position
    started = time.perf_counter()
    with atomic_dir(out_dir) as tmp:  # built beside it and swapped in whole: never half a variant
        out = tmp / "model.onnx"
        # A TFLite file exported to ONNX keeps tensor names ("serving_default_a:0"); its inputs and outputs are
        # renamed to the ones callers use on the original ("a", "output_0"), so requests work on every variant.
        public = ([spec.public_name for spec in parent.inputs], [spec.public_name for spec in parent.outputs]) \
            if variant == "onnx-float32" and source.suffix == ".tflite" else None
        run_isolated(_pass_job, variant, str(source), str(out), str(calibration), order,
                     bool(compress.onnx.per_channel), int(compress.onnx.opset), exclude, public,
                     timeout=compress.timeout_s, log_path=tmp / "pass.log")
        notes: dict[str, Any] = {"data": "one feed per input name (.npz)"}
        if exclude:
            notes["excluded"] = list(exclude)
        provenance = {"created_by": f"edgemaas {__version__}", "pass": variant, "parent": root.model.sha256,
                      "parent_variant": parent_variant, "notes": notes,
                      "seconds": round(time.perf_counter() - started, 2)}
        try:
            manifest = variant_manifest(root, out, variant, provenance)
        except ModelLoadError as exc:
            raise StageFailed(f"the runtime cannot load the result: {exc}") from None
        manifest.save(tmp)
        measured = run_isolated(_outputs_job, str(tmp), str(evaluation), order, timeout=compress.timeout_s,
                                log_path=tmp / "evaluate.log")
        per_output = output_parity(reference["outputs"], measured["outputs"])
        worst = max(per_output.values()) if per_output else 0.0
        max_abs = max((float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                       for a, b in zip(reference["outputs"].values(), measured["outputs"].values())), default=0.0)
        manifest.metrics = {"held_out": {METRIC: worst, "per_output": per_output}, "parity_max_abs": max_abs,
                            "metric_drop": worst * 100.0, "gzip_bytes": len(gzip.compress(out.read_bytes(), 9))}
        manifest.save(tmp)
    return VariantResult(
        variant=variant, format="onnx", parent=parent_variant, status=VariantStatus.MEASURED, metric_value=worst,
        metric_drop=worst * 100.0, size_bytes=manifest.model.size_bytes, gzip_bytes=manifest.metrics["gzip_bytes"],
        parity_max_abs=max_abs, runtime=measured["backend"],
        notes=["parity per output (RMSE / spread): " + ", ".join(f"{k} {v:.3g}" for k, v in per_output.items())]), \
        manifest


def output_parity(reference: dict[str, Any], candidate: dict[str, Any]) -> dict[str, float]:
    """Each output's RMSE against the original, relative to the original's spread (0 = identical)."""
    result = {}
    if len(candidate) != len(reference):
        raise StageFailed(f"the result has {len(candidate)} outputs; the original has {len(reference)}")
    for (name, ref), got in zip(reference.items(), candidate.values()):  # by position: a conversion may rename
        ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
        if ref.shape != got.shape:
            raise StageFailed(f"output {name} has shape {list(got.shape)}; the original gives {list(ref.shape)}")
        result[name] = float(np.sqrt(np.mean((got - ref) ** 2)) / (float(ref.std()) or 1.0)) if ref.size else 0.0
    return result


# ---------------------------------------------------------------------------------------------------------------
# Jobs run in child processes


def _outputs_job(model_dir: str, feed_path: str, order: list[str]) -> dict[str, Any]:
    """Every output of the served model on the feed (the original's inputs, in `order`), through the serving
    runtime."""
    model = load_model(model_dir)
    with np.load(feed_path, allow_pickle=False) as data:
        arrays = [data[name] for name in order]
    values = model.run_tensors(arrays)
    # In the file's own order: output_parity matches a converted variant's outputs by position (tf2onnx keeps a
    # TFLite subgraph's order, which its signature's order, the one callers see, may differ from).
    in_file_order = sorted(zip(model.output_positions, model.tensor_outputs, values), key=lambda row: row[0])
    return {"outputs": {t.name: np.asarray(v) for _, t, v in in_file_order}, "backend": model.backend.name}


def _pass_job(variant: str, source: str, out: str, calibration: str, order: list[str], per_channel: bool,
              opset: int, exclude: list[str] | None = None,
              public: tuple[list[str], list[str]] | None = None) -> dict[str, Any]:
    """ONNX export of a TFLite file, float16, dynamic int8 or static QDQ int8 whose calibration feeds every input
    (`exclude`: nodes kept in float, onnx-qdq-mixed; `public`: the export's input and output names, by position)."""
    import onnx

    if variant == "onnx-float32":
        from edgemaas.compress.passes.onnx_passes import export_onnx

        return export_onnx(source, "tflite", out, opset, io_names=public)

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
        feed = {i.name: data[name].astype(_dtype(i.type)) for i, name in zip(inputs, order)}
    quantize_static(source, out, _OneFeed(feed), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude or [])
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
