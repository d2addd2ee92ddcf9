"""`compress`: make every variant, measure each against the float model on held-out data, gate, report.

Each pass and each evaluation runs in its own process (edgemaas.isolate): a converter that crashes or hangs becomes
a recorded failure with its message, and the run goes on. Variants whose inputs did not change are reused.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgemaas import __version__
from edgemaas.errors import StageFailed
from edgemaas import reuse
from edgemaas.compress.records import (MetricSource, Objective, Reference, ReportCard, Selection, VariantResult,
                                       VariantStatus, save_selection)
from edgemaas.fsutil import atomic_dir, atomic_path, atomic_write_json, is_temporary
from edgemaas.compress.cost import LambdaCost, Prices, cost_model_text, format_dollars, lambda_costs, load_prices
from edgemaas.compress import debugger
from edgemaas.compress.multi import METRIC as MULTI_METRIC, multi_input_rows
from edgemaas.compress.latency import LAMBDA_THREADS, measure as measure_latency, record_timings
from edgemaas.compress.evaluation import PRIMARY, metric_drop, metrics, parity_metrics
from edgemaas.isolate import run_isolated
from edgemaas.compress.passes import KERAS_ROOT, ONNX_ROOT, TFLITE_ROOT, Variant, onnx_passes, plan, tflite_passes
from edgemaas.runtime import Manifest, ModelFile, ModelLoadError, load_model, read_manifest
from edgemaas.runtime.manifest import intact, sha256_file
from edgemaas.runtime.processing import InputProcessor, OutputProcessor
from edgemaas.user_models.signature import variant_manifest
from edgemaas.user_models.userdata import needs_named_arrays
from edgemaas.spec import CompressSection, GateSection
from edgemaas.workspace import Workspace

Report = Callable[[str], None]
PARITY_SAMPLES = 100
LAYERS_FILE = "layers.json"
LAYERS_VERSION = 2  # bumped when the per-layer figures change meaning: cached layers.json files are redone
# Full-int8 variants and the selective-precision variant that repairs each when it fails the gate.
MIXED = {"tflite-int8": "tflite-int8-mixed", "onnx-qdq": "onnx-qdq-mixed"}
# "Slower than float32" also needs the difference to matter: a float16 file runs float32's kernels plus a few
# dequantize ops, and came out 1% slower with tight intervals (0.0103 vs 0.0102 ms), which no bill or user sees.
# Below this margin the objective still ranks the variants (cost by price, fastest by p50); above it, a slower
# variant never ships. 5% is well under the slowdowns this rule exists for (int8 on CPUs without fast int8 kernels
# ran 1.4-20x slower) and about the spread of one process's p50 against another's on a quiet machine.
SLOWER_MARGIN = 0.05


@dataclass
class DataFiles:
    """Arrays the passes and evaluations share, written once per compress run under build/<name>/compress-data."""

    directory: Path
    labelled_eval: bool  # y_test exists: the metric is real; otherwise parity with the reference model
    finetune: bool  # labelled training data for the TF-MOT passes

    @property
    def representative(self) -> Path:
        return self.directory / "representative.npy"

    @property
    def finetune_path(self) -> Path:
        return self.directory / "finetune.npz"

    @property
    def parity(self) -> Path:
        return self.directory / "parity.npy"

    @property
    def reference(self) -> Path:
        return self.directory / "reference.npy"

    @property
    def eval_path(self) -> Path:
        return self.directory / "eval.npz"

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in sorted(self.directory.glob("*")):
            if path.name != "reference.npy" and not is_temporary(path):
                digest.update(path.name.encode() + path.read_bytes())
        return digest.hexdigest()[:16]


def prepare_data(ws: Workspace, root: Manifest, compress: CompressSection, seed: int, labelled_train: bool,
                 data_source: Path) -> DataFiles:
    """Preprocess once: calibration samples (with headroom), fine-tuning data, held-out eval and parity inputs."""
    directory = ws.model_dir(root.name) / "compress-data"
    directory.mkdir(parents=True, exist_ok=True)
    with np.load(data_source) as data:
        arrays = {k: data[k] for k in data.files}
    processor = InputProcessor(root.preprocessing[0], root.limits)
    x_train = arrays["x_train"]
    chosen = x_train[np.random.default_rng(seed).permutation(len(x_train))[: compress.representative_samples]]
    if compress.calibration_headroom and chosen.dtype.kind == "f":
        chosen = np.concatenate([chosen, chosen * (1.0 + compress.calibration_headroom)])
    files = DataFiles(directory, labelled_eval="y_test" in arrays, finetune=labelled_train and "y_train" in arrays)
    _save_npy(files.representative, processor.transform(chosen))
    x_test = processor.transform(arrays["x_test"])
    _save_npy(files.parity, x_test[:PARITY_SAMPLES])
    _save_npz(files.eval_path, x=x_test, **({"y": arrays["y_test"]} if files.labelled_eval else {}))
    if files.finetune:
        x, y = processor.transform(x_train), arrays["y_train"]
        if root.postprocessing["kind"] == "regression":
            y = ((y - root.postprocessing["mean"]) / root.postprocessing["std"]).astype(np.float32)
        order = np.random.default_rng(seed).permutation(len(x))
        split = max(1, int(len(x) * 0.9))
        _save_npz(files.finetune_path, x=x[order[:split]], y=y[order[:split]], x_val=x[order[split:]],
                  y_val=y[order[split:]])
    return files


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, keep_suffix=True) as tmp:  # numpy appends .npy to a name without it
        np.save(tmp, array)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path, keep_suffix=True) as tmp:
        np.savez(tmp, **arrays)


# ---------------------------------------------------------------------------------------------------------------
# Jobs run in child processes


def _reference_job(root_dir: str, root_file: str, parity_path: str, eval_path: str) -> dict[str, Any]:
    """Outputs of the reference (float) model on the parity inputs, in the caller's units, and its eval outputs."""
    manifest = read_manifest(Path(root_dir))
    post = OutputProcessor(manifest.postprocessing)
    if manifest.model.format in ("keras", "h5", "savedmodel"):
        from edgemaas.compress.passes.tfmot_passes import load_keras

        model = load_keras(root_file)
        predict = lambda x: model.predict(x, verbose=0)  # noqa: E731
    else:
        serving = load_model(root_dir)
        predict = lambda x: serving.infer([x])[0]  # noqa: E731
    with np.load(eval_path) as data:
        eval_values = post.values(predict(data["x"]))
    return {"parity": post.values(predict(np.load(parity_path))), "eval": eval_values}


def _evaluate_job(variant_dir: str, eval_path: str, parity_path: str, reference: dict[str, Any],
                  latency_runs: int = 200) -> dict[str, Any]:
    """A shipped variant through the serving runtime: metric, parity with the reference, sparsity, p50 latency."""
    model = load_model(variant_dir)
    with np.load(eval_path) as data:
        x, y = data["x"], (data["y"] if "y" in data.files else None)
    values = model.output_values([x])
    parity = model.output_values([np.load(parity_path)])
    result: dict[str, Any] = {
        "parity_max_abs": float(np.max(np.abs(parity - reference["parity"]))),
        "sparsity": model_sparsity(Path(variant_dir) / model.manifest.model.file),
        "backend": model.backend.name,
    }
    if y is not None:
        result["held_out"] = metrics(model.manifest.task, y, values)
    else:
        result["held_out"] = parity_metrics(reference["eval"], values)
    single = [x[:1]]
    model.infer(single)  # the first invoke allocates
    timings = []
    for _ in range(latency_runs):
        start = time.perf_counter()
        model.infer(single)
        timings.append(time.perf_counter() - start)
    result["latency_p50_ms"] = float(np.median(timings) * 1000)
    return result


def model_sparsity(path: Path) -> float:
    """Fraction of exact zeros over the weight tensors (2-D and up) stored in a .tflite or .onnx file."""
    weights: list[np.ndarray] = []
    if path.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        weights = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    elif path.suffix == ".tflite":
        from ai_edge_litert import schema_py_generated as schema

        model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
        # TensorType -> dtype (as values, so that -0.0 counts as zero): FLOAT32, FLOAT16, INT32, UINT8, INT64,
        # INT16, INT8.
        dtypes = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8}
        for graph in model.subgraphs:
            for tensor in graph.tensors:
                data = model.buffers[tensor.buffer].data
                shape = tensor.shape if tensor.shape is not None else []
                if data is None or len(shape) < 2 or tensor.type not in dtypes:
                    continue
                weights.append(np.frombuffer(np.asarray(data, dtype=np.uint8).tobytes(), dtype=dtypes[tensor.type]))
    kernels = [w for w in weights if w.size > 1]
    total = sum(w.size for w in kernels)
    return float(sum(int(np.count_nonzero(w == 0)) for w in kernels) / total) if total else 0.0


# ---------------------------------------------------------------------------------------------------------------


def compress_model(ws: Workspace, root_manifest: Manifest, root: str, compress: CompressSection, gate: GateSection,
                   data_source: Path, labelled_train: bool, eval_description: str, seed: int = 0,
                   force: bool = False, report: Report = lambda _: None) -> dict[str, Any]:
    """`compress_model_card` as the dict report.json holds (what callers that index by key still expect)."""
    return compress_model_card(ws, root_manifest, root, compress, gate, data_source, labelled_train, eval_description,
                               seed, force, report).to_dict()


def compress_model_card(ws: Workspace, root_manifest: Manifest, root: str, compress: CompressSection,
                        gate: GateSection, data_source: Path, labelled_train: bool, eval_description: str,
                        seed: int = 0, force: bool = False, report: Report = lambda _: None) -> ReportCard:
    """Make, measure and gate every wanted variant of the model whose root variant is `root`."""
    if needs_named_arrays(root_manifest):
        return _named_inputs_card(ws, root_manifest, root, compress, gate, data_source, eval_description, report)
    name, task = root_manifest.name, root_manifest.task
    root_dir = ws.variant_dir(name, root)
    data = prepare_data(ws, root_manifest, compress, seed, labelled_train, data_source)
    report("measuring the reference model")
    reference = run_isolated(_reference_job, str(root_dir), str(root_dir / root_manifest.model.file),
                             str(data.parity), str(data.eval_path), timeout=compress.timeout_s,
                             log_path=ws.model_dir(name) / "reference.log")
    if data.labelled_eval:
        with np.load(data.eval_path) as arrays:
            reference_metric = metrics(task, arrays["y"], reference["eval"])
    else:
        reference_metric = parity_metrics(reference["eval"], reference["eval"])
    metric_name = PRIMARY[task][0] if data.labelled_eval else reference_metric["metric"]

    variants, skipped = plan(compress.variants, compress, task, root, data.finetune)
    stamp = data.fingerprint()
    manifests: dict[str, Manifest] = {root: root_manifest}
    rows: list[VariantResult] = []
    failed: dict[str, str] = {}
    for variant in variants:
        if variant.parent in failed:
            failed[variant.name] = f"its parent {variant.parent} failed"
            rows.append(_row(variant, VariantStatus.SKIPPED, failed[variant.name]))
            continue
        report(f"{variant.name}")
        try:
            manifest = _make_variant(ws, variant, manifests, root_manifest, data, reference, reference_metric,
                                     compress, stamp, force)
        except StageFailed as exc:
            failed[variant.name] = _first_lines(str(exc))
            rows.append(_row(variant, VariantStatus.FAILED, failed[variant.name]))
            continue
        manifests[variant.name] = manifest
        if variant.ships:
            row = _measured_row(variant, manifest, task, reference_metric, data.labelled_eval)
            skipped_layers = manifests[variant.parent].provenance.get("notes", {}).get("layers_skipped") \
                if variant.parent in manifests else None
            if skipped_layers:  # the TF-MOT pass upstream left these layers alone: say which and why
                row.notes.append("layers left alone by " + variant.parent + ": " +
                                 "; ".join(f"{k} ({v})" for k, v in skipped_layers.items()))
            rows.append(row)
    if root == ONNX_ROOT:  # the float32 model of the ONNX format: what its variants must beat on time and cost
        rows.insert(0, _original_row(root_manifest, root_dir, reference_metric[metric_name]))
    _debug_layers(ws, name, rows, variants, manifests, data, compress, report)
    _repair(ws, rows, manifests, root_manifest, data, reference, reference_metric, compress, gate, stamp, force,
            report)
    machine = _time_variants(ws, name, rows, data, compress, report)
    for variant_name, reason in skipped.items():
        rows.append(VariantResult(variant=variant_name, format=variant_name.split("-")[0], parent=None,
                                  status=VariantStatus.SKIPPED, reason=reason))
    _size_ratios(rows)
    selection = gate_variants(rows, gate, task, data.labelled_eval, root)
    return ReportCard(
        model=name, task=task, metric=metric_name, higher_is_better=_higher(metric_name),
        metric_source=MetricSource.LABELS if data.labelled_eval else MetricSource.PARITY,
        eval_data=eval_description, drop_unit=_unit(metric_name),
        reference=Reference(variant=root, metric_value=reference_metric[metric_name],
                            size_bytes=root_manifest.model.size_bytes, gzip_bytes=_gzip_size(root_dir, root_manifest)),
        gate=selection, variants=rows,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), edgemaas_version=__version__,
        extra={"machine": machine} if machine else {},
    )


def _original_row(manifest: Manifest, directory: Path, metric_value: float) -> VariantResult:
    """The ONNX float32 file the user brought, as a row: the variant its ONNX passes are timed and priced against,
    and the one that ships when none of them is cheaper."""
    return VariantResult(
        variant=ONNX_ROOT, format="onnx", parent=None, status=VariantStatus.MEASURED, metric_value=metric_value,
        metric_drop=0.0, size_bytes=manifest.model.size_bytes, gzip_bytes=_gzip_size(directory, manifest),
        sparsity=model_sparsity(directory / manifest.model.file), parity_max_abs=0.0, runtime="onnxruntime",
        notes=["the model you brought: the float32 model the ONNX variants are timed and priced against"])


def _named_inputs_card(ws: Workspace, root_manifest: Manifest, root: str, compress: CompressSection,
                       gate: GateSection, data_source: Path, eval_description: str, report: Report) -> ReportCard:
    """Several inputs or dynamic shapes (edgemaas.compress.multi): parity over every output is the metric."""
    rows, _, timing = multi_input_rows(ws, root_manifest, root, compress, data_source, report, gate.max_metric_drop)
    _size_ratios(rows)
    root_dir = ws.variant_dir(root_manifest.name, root)
    return ReportCard(
        model=root_manifest.name, task=root_manifest.task, metric=MULTI_METRIC, higher_is_better=False,
        metric_source=MetricSource.PARITY, eval_data=eval_description, drop_unit=_unit(MULTI_METRIC),
        reference=Reference(variant=root, metric_value=0.0, size_bytes=root_manifest.model.size_bytes,
                            gzip_bytes=_gzip_size(root_dir, root_manifest)),
        gate=gate_variants(rows, gate, root_manifest.task, False, root), variants=rows,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), edgemaas_version=__version__,
        extra={"inputs": [_tensor_line(s) for s in root_manifest.inputs],
               "outputs": [_tensor_line(s) for s in root_manifest.outputs],
               **({"machine": timing["machine"], "timed_request": timing["request"]}
                  if timing.get("machine") else {})},
    )


def _tensor_line(spec: Any) -> str:
    return f"{spec.public_name} [{', '.join(map(str, spec.shown_dims()))}]"


def _debug_layers(ws: Workspace, name: str, rows: list[VariantResult], variants: list[Variant],
                  manifests: dict[str, Manifest], data: DataFiles, compress: CompressSection, report: Report) -> None:
    """Per-layer error of every full-int8 TFLite variant made from a Keras model (edgemaas.compress.debugger), kept
    beside the variant (layers.json) and reused while the variant is unchanged."""
    by_name = {v.name: v for v in variants}
    for row in rows:
        variant = by_name.get(row.variant)
        if variant is None or row.status is not VariantStatus.MEASURED:
            continue
        parent = ws.variant_dir(name, variant.parent) / manifests[variant.parent].model.file
        model = ws.variant_dir(name, row.variant) / manifests[row.variant].model.file
        if variant.format == "tflite" and variant.settings.get("mode") == "int8" and variant.parent != "keras-qat" \
                and manifests[variant.parent].model.format in ("keras", "h5"):
            job, args = debugger.tflite_layer_errors, (str(parent), str(data.representative))
        elif variant.job is onnx_passes.quantize_static:
            job, args = onnx_passes.qdq_layer_errors, (str(parent), str(model), str(data.representative))
        else:
            continue
        out = ws.variant_dir(name, row.variant) / LAYERS_FILE
        stamp = f"{manifests[row.variant].provenance.get('fingerprint')}/{LAYERS_VERSION}"
        cached = _read_json(out)
        if cached and cached.get("fingerprint") == stamp:
            row.extra["layers"] = cached["result"]
            continue
        report(f"{row.variant}: per-layer quantization error")
        try:
            result = run_isolated(job, *args, timeout=compress.timeout_s, log_path=out.with_suffix(".log"))
        except StageFailed as exc:
            row.notes.append(f"per-layer debugging failed: {_first_lines(str(exc))}")
            continue
        row.extra["layers"] = result
        atomic_write_json(out, {"fingerprint": stamp, "result": result})


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _repair(ws: Workspace, rows: list[VariantResult], manifests: dict[str, Manifest], root: Manifest,
            data: DataFiles, reference: dict[str, Any], reference_metric: dict[str, Any], compress: CompressSection,
            gate: GateSection, stamp: str, force: bool, report: Report) -> None:
    """Selective precision for each int8 variant that failed the metric budget (tflite-int8, onnx-qdq)."""
    for broken_name, mixed_name in MIXED.items():
        broken = next((r for r in rows if r.variant == broken_name and r.status is VariantStatus.MEASURED), None)
        if broken is not None and broken.metric_drop is not None and broken.metric_drop > gate.max_metric_drop:
            _repair_one(ws, broken, mixed_name, rows, manifests, root, data, reference, reference_metric, compress,
                        gate, stamp, force, report)


def _mixed_variant(broken: VariantResult, mixed_name: str, keep: list[dict[str, Any]], compress: CompressSection,
                   manifests: dict[str, Manifest]) -> Variant:
    names = [entry["layer"] for entry in keep]
    tensors = [t for entry in keep for t in entry["tensors"]]
    if broken.format == "tflite":
        return Variant(mixed_name, "tflite", broken.parent or KERAS_ROOT, debugger.convert_mixed, "model.tflite",
                       ("representative",), {"keep_float": names, "tensors": tensors})
    settings = manifests[broken.variant].provenance.get("settings") or {}
    return Variant(mixed_name, "onnx", broken.parent or "onnx-float32", onnx_passes.quantize_static, "model.onnx",
                   ("representative",), {"method": settings.get("method", compress.onnx.calibration_method),
                                         "per_channel": settings.get("per_channel", compress.onnx.per_channel),
                                         "keep_float": names, "nodes_to_exclude": tensors})


def _repair_one(ws: Workspace, broken: VariantResult, mixed_name: str, rows: list[VariantResult],
                manifests: dict[str, Manifest], root: Manifest, data: DataFiles, reference: dict[str, Any],
                reference_metric: dict[str, Any], compress: CompressSection, gate: GateSection, stamp: str,
                force: bool, report: Report) -> None:
    """Keep the broken variant's worst layers in float (1, 2, 4, ... of them, worst first) until the result passes,
    or is no longer smaller than the best passing float model of its format. The last attempt becomes the row
    `mixed_name` (its notes list every attempt)."""
    ranked = sorted((entry for entry in (broken.extra.get("layers") or {}).get("layers", [])
                     if math.isfinite(entry.get("error", math.nan)) and entry.get("tensors")),
                    key=lambda e: -e["error"])
    if not ranked:
        return
    fmt = broken.format
    floats = [r.size_bytes for r in rows if r.variant in (f"{fmt}-float32", f"{fmt}-float16", f"{fmt}-original")
              and r.status is VariantStatus.MEASURED and r.metric_drop is not None
              and r.metric_drop <= gate.max_metric_drop and r.size_bytes]
    limit = min(floats) if floats else None
    attempts: list[str] = []
    count, mixed, manifest = 1, None, None
    while count <= len(ranked):
        variant = _mixed_variant(broken, mixed_name, ranked[:count], compress, manifests)
        names = variant.settings["keep_float"]
        report(f"{mixed_name}: int8 with {', '.join(names)} in float")
        try:
            manifest = _make_variant(ws, variant, manifests, root, data, reference, reference_metric, compress,
                                     stamp, force)
        except StageFailed as exc:
            attempts.append(f"{len(names)} in float: failed ({_first_lines(str(exc), 1)})")
            break
        mixed = _measured_row(variant, manifest, root.task, reference_metric, data.labelled_eval)
        mixed.extra["kept_float"] = names
        attempts.append(f"{len(names)} in float: drop {mixed.metric_drop:.2f}, {mixed.size_bytes} bytes")
        if mixed.metric_drop <= gate.max_metric_drop:
            break
        if limit is not None and mixed.size_bytes >= limit:
            attempts.append(f"stopped: no longer smaller than the best passing float model ({limit} bytes)")
            break
        if count == len(ranked):
            break
        count = min(count * 2, len(ranked))
    if mixed is None or manifest is None:
        broken.notes.append("selective precision failed: " + "; ".join(attempts))
        return
    manifests[mixed_name] = manifest
    mixed.notes.append(f"repairs {broken.variant} (drop {broken.metric_drop:.2f}) by keeping in float: "
                       + ", ".join(mixed.extra["kept_float"]) + "; attempts: " + "; ".join(attempts))
    rows.append(mixed)


def _time_variants(ws: Workspace, name: str, rows: list[VariantResult], data: DataFiles, compress: CompressSection,
                   report: Report) -> dict[str, Any] | None:
    """Replace each measured row's in-process p50 by one measured in fresh, interleaved processes with a Lambda
    function's threads (edgemaas.compress.latency); returns the CPU that measured it."""
    timed = {r.variant: ws.variant_dir(name, r.variant) for r in rows
             if r.status is VariantStatus.MEASURED and r.measured}
    if not timed:
        return None
    report(f"timing {len(timed)} variants (fresh processes, interleaved, {LAMBDA_THREADS} thread)")
    return record_timings(rows, measure_latency(timed, data.parity, timeout=compress.timeout_s))


def _row(variant: Variant, status: VariantStatus, reason: str) -> VariantResult:
    return VariantResult(variant=variant.name, format=variant.format, parent=variant.parent, status=status,
                         reason=reason)


def _measured_row(variant: Variant, manifest: Manifest, task: str, reference: dict, labelled: bool) -> VariantResult:
    m = manifest.metrics
    metric_name = PRIMARY[task][0] if labelled else reference["metric"]
    notes = manifest.provenance.get("notes", {})
    return VariantResult(
        variant=variant.name, format=variant.format, parent=variant.parent, status=VariantStatus.MEASURED,
        reason="", metric_value=m["held_out"][metric_name], metric_drop=m["metric_drop"],
        size_bytes=manifest.model.size_bytes, gzip_bytes=m["gzip_bytes"], sparsity=m["sparsity"],
        parity_max_abs=m["parity_max_abs"], latency_p50_ms=m["latency_p50_ms"], runtime=m["backend"],
        notes=[f"{k}: {v}" for k, v in notes.items() if k in ("recurrent", "layers_skipped", "excluded",
                                                                "preprocess", "fixed_batch", "warnings") and v],
    )


def _make_variant(ws: Workspace, variant: Variant, manifests: dict[str, Manifest], root: Manifest, data: DataFiles,
                  reference: dict[str, Any], reference_metric: dict[str, Any], compress: CompressSection, stamp: str,
                  force: bool) -> Manifest:
    parent = manifests[variant.parent]
    parent_dir = ws.variant_dir(root.name, variant.parent)
    fingerprint = hashlib.sha256(json.dumps([variant.name, variant.parent, variant.settings, parent.model.sha256,
                                             stamp], sort_keys=True, default=str).encode()).hexdigest()[:16]
    out_dir = ws.variant_dir(root.name, variant.name)
    if not force:
        existing = _reusable(out_dir, variant.file, fingerprint)
        if existing is not None:
            return existing
    with atomic_dir(out_dir) as tmp:  # built beside it and swapped in whole: never half a variant
        manifest = _build_variant(variant, parent, parent_dir, root, tmp, data, reference, reference_metric,
                                  compress, fingerprint)
        reuse.record(tmp / variant.file, fingerprint)  # published together with the model it describes
    return manifest


def _reusable(out_dir: Path, model_file: str, fingerprint: str) -> Manifest | None:
    """The variant already built from these inputs, if it is still there and unchanged."""
    try:
        existing = read_manifest(out_dir)
    except ModelLoadError:
        return None
    if existing.model.file != model_file:
        return None
    if reuse.is_fresh(out_dir / model_file, fingerprint):
        return existing
    # Built before reuse records existed: the manifest's own fingerprint and checksum say the same; record it.
    if reuse.read_record(out_dir / model_file) is None and existing.provenance.get("fingerprint") == fingerprint \
            and intact(out_dir, existing):
        reuse.record(out_dir / model_file, fingerprint)
        return existing
    return None


def _build_variant(variant: Variant, parent: Manifest, parent_dir: Path, root: Manifest, tmp: Path, data: DataFiles,
                   reference: dict[str, Any], reference_metric: dict[str, Any], compress: CompressSection,
                   fingerprint: str) -> Manifest:
    """Run the pass into the folder `tmp` and, for a shipped variant, evaluate it there; returns its manifest."""
    source = parent_dir / parent.model.file
    out = tmp / variant.file
    started = time.perf_counter()
    notes = run_isolated(variant.job, *_job_args(variant, source, parent, out, data, compress),
                         timeout=compress.timeout_s, log_path=tmp / "pass.log")
    provenance = {"created_by": f"edgemaas {__version__}", "pass": variant.name, "parent": parent.model.sha256,
                  "parent_variant": variant.parent, "settings": variant.settings, "notes": notes,
                  "seconds": round(time.perf_counter() - started, 2), "fingerprint": fingerprint}
    if variant.ships:
        try:
            manifest = variant_manifest(root, out, variant.name, provenance)
        except ModelLoadError as exc:
            raise StageFailed(f"the runtime cannot load the result: {exc}") from None
        manifest.save(tmp)
        measured = run_isolated(_evaluate_job, str(tmp), str(data.eval_path), str(data.parity), reference,
                                timeout=compress.timeout_s, log_path=tmp / "evaluate.log")
        task = root.task if data.labelled_eval else "parity"
        manifest.metrics = {**measured, "gzip_bytes": len(gzip.compress(out.read_bytes(), 9)),
                            "metric_drop": metric_drop(task, reference_metric, measured["held_out"])}
    else:
        manifest = Manifest(name=root.name, variant=variant.name, task=root.task,
                            model=ModelFile(variant.file, "keras", sha256_file(out), out.stat().st_size),
                            inputs=root.inputs, outputs=root.outputs, preprocessing=root.preprocessing,
                            postprocessing=root.postprocessing, limits=root.limits, provenance=provenance)
    manifest.save(tmp)
    return manifest


def _job_args(variant: Variant, source: Path, parent: Manifest, out: Path, data: DataFiles,
              compress: CompressSection) -> tuple:
    settings = variant.settings
    if variant.job is tflite_passes.convert_keras:
        return (str(source), str(out), settings["mode"],
                str(data.representative) if "representative" in variant.inputs else None)
    if variant.trains:
        return (str(source), str(out), str(data.finetune_path), settings["task"], settings)
    if variant.job is onnx_passes.export_onnx:
        if parent.model.format != "tflite":
            return (str(source), "keras", str(out), settings["opset"], str(data.parity), 1e-3)
        # The ONNX file answers to the names callers use on the TFLite file (its signature's), not tf2onnx's.
        names = ([spec.public_name for spec in parent.inputs], [spec.public_name for spec in parent.outputs])
        return (str(source), "tflite", str(out), settings["opset"], str(data.parity), 1e-3, names)
    if variant.job is onnx_passes.quantize_static:
        return (str(source), str(out), str(data.representative), settings["method"], settings["per_channel"],
                "qint8", "qint8", settings.get("nodes_to_exclude"))
    if variant.job is debugger.convert_mixed:
        return (str(source), str(out), str(data.representative), settings["keep_float"], settings["tensors"])
    if variant.job is onnx_passes.quantize_dynamic:
        return (str(source), str(out), settings["per_channel"])
    return (str(source), str(out))


def _size_ratios(rows: list[VariantResult]) -> None:
    """Sizes relative to the float32 model of the same format, as a user compares them."""
    base: dict[str, VariantResult] = {}
    for row in rows:
        if row.variant in ("tflite-float32", "onnx-float32", TFLITE_ROOT, ONNX_ROOT) and row.size_bytes:
            base[row.format] = row
    for row in rows:
        ref = base.get(row.format)
        if ref and row.size_bytes:
            row.size_ratio = row.size_bytes / ref.size_bytes
            row.gzip_ratio = row.gzip_bytes / ref.gzip_bytes


FLOAT_VARIANTS = ("{fmt}-float32", "{fmt}-original")


def gate_variants(rows: list[VariantResult], gate: GateSection, task: str, labelled: bool, root: str,
                  prices: Prices | None = None) -> Selection:
    """Per output format, the best variant within the metric budget (and the latency limit); every row that did not
    ship says why. Sets each measured row's status to passed, chosen or rejected.

    Objectives: `cost` (lowest Lambda cost per 1M requests at its cheapest memory; ties to the smaller file),
    `fastest` (p50), `smallest` (file size). Unless the objective is `smallest`, a variant slower than its format's
    float32 model never ships: compressing is meant to make inference cheaper."""
    prices = prices or load_prices(gate.prices.model_dump(exclude_none=True))
    objective = Objective(gate.objective)
    unit = _unit(PRIMARY[task][0] if labelled else ("agreement" if task == "classification" else "output_rmse"))
    size_key = "gzip_bytes" if gate.size == "gzip" else "size_bytes"
    chosen: dict[str, str | None] = {}
    edge: dict[str, str | None] = {}
    priced: dict[str, Any] = {}
    fallback = []
    # A format whose every row was skipped (an .onnx file cannot become TFLite) has nothing to choose and no float
    # model to fall back to: it is left out, not reported as "none passed, the float model ships".
    for fmt in sorted({r.format for r in rows
                       if r.format in ("tflite", "onnx") and r.status is not VariantStatus.SKIPPED}):
        measured = [r for r in rows if r.format == fmt and r.status is VariantStatus.MEASURED]
        float_row = next((r for r in measured if r.variant in [f.format(fmt=fmt) for f in FLOAT_VARIANTS]), None)
        costs = {r.variant: _price_row(r, prices, gate.max_p50_ms if objective is Objective.COST else None)
                 for r in measured}
        passing = []
        for row in measured:
            why = _rejection(row, float_row, costs[row.variant], gate, objective, unit)
            if why:
                row.status, row.reason = VariantStatus.REJECTED, why
            else:
                row.status = VariantStatus.PASSED
                passing.append(row)

        def rank(row: VariantResult, by: Objective) -> tuple:
            size = getattr(row, size_key) or 0
            if by is Objective.COST:
                best = costs[row.variant].get("x86_64")
                return (round(best.cost_per_million, 9) if best else math.inf, size, row.variant)
            if by is Objective.FASTEST:
                return (row.latency_p50_ms if row.latency_p50_ms is not None else math.inf, size, row.variant)
            return (size, row.variant)

        if passing:
            best = min(passing, key=lambda r: rank(r, objective))
            best.status = VariantStatus.CHOSEN
            chosen[fmt] = best.variant
            for row in passing:
                if row is not best:
                    row.reason = _lost(row, best, objective, costs, size_key)
            at_edge = Objective.SMALLEST if gate.edge == "flash" else Objective.FASTEST
            edge[fmt] = min(passing, key=lambda r: rank(r, at_edge)).variant
        else:
            chosen[fmt] = float_row.variant if float_row else None
            edge[fmt] = chosen[fmt]
            fallback.append(fmt)
        shipped = chosen[fmt]
        if shipped and costs.get(shipped, {}).get("x86_64"):
            priced[fmt] = {"variant": shipped, "memory_mb": costs[shipped]["x86_64"].memory_mb,
                           "costs": {a: c.to_dict() for a, c in costs[shipped].items() if c},
                           "float_variant": float_row.variant if float_row else None,
                           "float_costs": {a: c.to_dict() for a, c in costs.get(
                               float_row.variant if float_row else "", {}).items() if c}}
    default = chosen.get("tflite") or chosen.get("onnx")
    pricing = {"prices": prices.to_dict(), "model": cost_model_text(prices), "formats": priced} if priced else None
    return Selection(max_metric_drop=gate.max_metric_drop, objective=objective, size=gate.size,
                     chosen=chosen, default=default, fallback=fallback, unit=unit, lambda_choice=pricing, edge=edge)


def _price_row(row: VariantResult, prices: Prices, max_duration_ms: float | None) -> dict[str, LambdaCost | None]:
    """The row's cheapest Lambda configuration per architecture, also recorded on the row (extra["lambda"])."""
    latency = row.extra.get("latency") or {}
    costs = lambda_costs(row.latency_p50_ms, latency.get("peak_rss_mb"), prices, max_duration_ms)
    if costs:
        row.extra["lambda"] = {arch: (c.to_dict() if c else None) for arch, c in costs.items()}
    return costs


def measurably_slower(row: VariantResult, reference: VariantResult) -> bool:
    """Whether `row`'s p50 is above `reference`'s by more than SLOWER_MARGIN and beyond what the measurement can tell
    apart: when both carry the 95% confidence interval of their median (fresh-process timing), the intervals must not
    overlap and every interleaved round must agree; a float16 file that runs the float32 kernels is otherwise rejected
    or not by a coin toss. Without intervals, the p50s compare as is (with the margin)."""
    if not row.latency_p50_ms > reference.latency_p50_ms * (1 + SLOWER_MARGIN):
        return False
    mine, theirs = (r.extra.get("latency") or {} for r in (row, reference))
    if mine.get("ci95_ms") and theirs.get("ci95_ms"):
        apart = float(mine["ci95_ms"][0]) > float(theirs["ci95_ms"][1])
        # The rounds are interleaved, so round k of both ran side by side: on a shared machine the process is the
        # unit of noise (pooled samples understate it), and a real slowdown shows in every round.
        rounds = list(zip(mine.get("process_p50s_ms") or [], theirs.get("process_p50s_ms") or []))
        return apart and (len(rounds) < 2 or all(a > b for a, b in rounds))
    return True


def _rejection(row: VariantResult, float_row: VariantResult | None, costs: dict[str, LambdaCost | None],
               gate: GateSection, objective: Objective, unit: str) -> str:
    """Why the row cannot ship ("" when it can)."""
    if row.metric_drop is None or not row.metric_drop <= gate.max_metric_drop:
        return f"metric drop {row.metric_drop:.2f} {unit} exceeds the budget of {gate.max_metric_drop} {unit}" \
            if row.metric_drop is not None else "no metric was measured"
    p50 = row.latency_p50_ms
    if objective is not Objective.SMALLEST and row is not float_row and float_row is not None \
            and p50 is not None and float_row.latency_p50_ms is not None and measurably_slower(row, float_row):
        mine, theirs = _apart(p50, float_row.latency_p50_ms)
        return (f"slower than {float_row.variant} ({mine} ms vs {theirs} ms p50): "
                f"it would make inference dearer, not cheaper")
    if gate.max_p50_ms is not None and p50 is not None:
        if objective is Objective.COST and costs and not any(costs.values()):
            return f"p50 {p50:.3g} ms: no Lambda memory size brings it within max_p50_ms {gate.max_p50_ms:g}"
        if objective is not Objective.COST and p50 > gate.max_p50_ms:
            return f"p50 {p50:.3g} ms exceeds max_p50_ms {gate.max_p50_ms:g}"
    return ""


def _apart(a: float, b: float) -> tuple[str, str]:
    """Two p50s with enough digits to tell them apart (0.1054 vs 0.105, not 0.105 vs 0.105)."""
    for digits in range(3, 7):
        left, right = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if left != right:
            break
    return left, right


def _lost(row: VariantResult, best: VariantResult, objective: Objective, costs: dict[str, dict],
          size_key: str) -> str:
    """Why a passing row was not chosen, in the objective's terms."""
    if objective is Objective.COST:
        mine, theirs = costs[row.variant].get("x86_64"), costs[best.variant].get("x86_64")
        if mine and theirs:
            if round(mine.cost_per_million, 9) == round(theirs.cost_per_million, 9):
                return f"costs the same as {best.variant} per 1M requests; the smaller file wins the tie"
            return (f"costs {format_dollars(mine.cost_per_million)} per 1M requests (x86_64, {mine.memory_mb} MB) "
                    f"vs {format_dollars(theirs.cost_per_million)} for {best.variant}")
        return "no latency measured, so it cannot be priced"
    if objective is Objective.FASTEST:
        return f"p50 {row.latency_p50_ms:.3g} ms vs {best.latency_p50_ms:.3g} ms for {best.variant}"
    return f"{getattr(row, size_key)} bytes vs {getattr(best, size_key)} for {best.variant}"


def choose(rows: list[dict[str, Any]], gate: GateSection, task: str, labelled: bool, root: str) -> dict[str, Any]:
    """`gate_variants` on rows as report.json holds them: their status and reason are updated in place."""
    typed = [VariantResult.from_dict(row) for row in rows]
    selection = gate_variants(typed, gate, task, labelled, root)
    for row, result in zip(rows, typed):
        row["status"], row["reason"] = result.status.value, result.reason
        if "lambda" in result.extra:
            row["lambda"] = result.extra["lambda"]
    return selection.to_dict()


def _higher(metric_name: str) -> bool:
    return metric_name in ("accuracy", "agreement")


def _unit(metric_name: str) -> str:
    return {"accuracy": "accuracy points", "agreement": "agreement points", "rmse": "% of RMSE",
            "output_rmse": "% of output scale"}[metric_name]


def _gzip_size(directory: Path, manifest: Manifest) -> int | None:
    path = directory / manifest.model.file
    return len(gzip.compress(path.read_bytes(), 9)) if path.is_file() else None


def _first_lines(message: str, count: int = 3) -> str:
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return " / ".join(lines[:count])[:600]


def save_report(ws: Workspace, report: ReportCard | dict[str, Any]) -> dict[str, Path]:
    """The report card under dist/<name>/report, then the gate's selection under build/<name> (what packaging reads)."""
    from edgemaas.compress.report import write_report

    card = report if isinstance(report, ReportCard) else ReportCard.from_dict(report)
    paths = write_report(report, ws.dist / card.model / "report")
    save_selection(ws.selection_file(card.model), card.gate)
    return paths


__all__ = ["compress_model", "compress_model_card", "choose", "gate_variants", "save_report", "model_sparsity"]
