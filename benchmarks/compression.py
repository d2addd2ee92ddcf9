"""Compression benchmark: compress the built-in models and check them against the compression targets.

Runs `compress_spec` (train if needed, then every TFLite and ONNX variant, measured and gated) for each model in one
workspace on this machine, then checks:

* models with >= 10,000 parameters: full-int8 TFLite size <= 0.27x the float32 TFLite size, and static-QDQ ONNX
  size <= 0.27x the float32 ONNX size (smaller models are listed as "n/a (<10k params)", ratios shown anyway);
* every model: pruned (80%) + int8 TFLite gzipped size <= 0.10x the gzipped float32 TFLite size;
* full-int8 TFLite metric drop: <= 1 accuracy point (cnn, nlp), <= 2% of the float RMSE (rnn, linear).

Prints a rich table, the gate's choices and a one-line, data-drawn explanation for each missed target, then the same
as Markdown (for the README). Exit code 0 even when targets are missed; 1 only if compress itself fails.

    .venv/bin/python benchmarks/compression.py [--workdir DIR] [--models linear cnn ...] [--json PATH] [--force]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import importlib.metadata
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from edgemaas.bench.run import cpu_name  # noqa: E402
from edgemaas.compress.records import ReportCard, VariantResult, VariantStatus  # noqa: E402
from edgemaas.fsutil import atomic_write_json  # noqa: E402
from edgemaas.units import PERCENT_METRICS, format_metric, metric_label  # noqa: E402

BUILTINS = ("linear", "cnn", "rnn", "nlp")
MIN_PARAMS = 10_000
SIZE_TARGET = 0.27
PRUNED_GZIP_TARGET = 0.10
# Full-int8 metric-drop targets, in the report's drop units (accuracy points, or % of the float RMSE).
DROP_TARGETS = {"cnn": 1.0, "nlp": 1.0, "rnn": 2.0, "linear": 2.0}
DEFAULT_DROP_TARGET = {"accuracy points": 1.0, "% of RMSE": 2.0}
VERSIONS = (("tensorflow", ("tensorflow", "tensorflow-cpu")), ("ai-edge-litert", ("ai-edge-litert",)),
            ("onnxruntime", ("onnxruntime",)), ("onnx", ("onnx",)), ("tf2onnx", ("tf2onnx",)),
            ("tensorflow-model-optimization", ("tensorflow-model-optimization",)), ("edgemaas", ("edgemaas",)))

out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


# ---------------------------------------------------------------------------------------------------------------
# Environment


def environment() -> dict[str, Any]:
    versions = {}
    for label, dists in VERSIONS:
        for dist in dists:
            try:
                versions[label] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        else:
            versions[label] = "not installed"
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
    }


# ---------------------------------------------------------------------------------------------------------------
# What the model files hold: constant (weight) bytes vs the rest


def kb(size: float | None) -> str:
    return "-" if size is None else f"{size / 1024:.1f} KB"


def tflite_constants(path: Path) -> dict[str, Any]:
    """Bytes of the non-empty constant buffers of a .tflite file, by tensor type, vs the file size."""
    from ai_edge_litert import schema_py_generated as schema

    raw = path.read_bytes()
    model = schema.ModelT.InitFromPackedBuf(raw, 0)
    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    buffer_type: dict[int, str] = {m.buffer: "metadata" for m in model.metadata or []}
    largest_float: tuple[int, str] = (0, "")
    for graph in model.subgraphs or []:
        for tensor in graph.tensors or []:
            buffer_type.setdefault(tensor.buffer, names.get(tensor.type, str(tensor.type)))
    by_type: dict[str, int] = {}
    chunks = []
    for index, buffer in enumerate(model.buffers or []):
        data = buffer.data
        size = len(data) if data is not None else 0
        if not size and getattr(buffer, "offset", 0) > 1 and getattr(buffer, "size", 0):
            size = int(buffer.size)  # stored outside the flatbuffer (models over 2 GB)
            chunk = raw[buffer.offset: buffer.offset + buffer.size]
        else:
            chunk = bytes(bytearray(data)) if size else b""
        if not size:
            continue
        chunks.append(chunk)
        kind = buffer_type.get(index, "unreferenced")
        by_type[kind] = by_type.get(kind, 0) + size
    for graph in model.subgraphs or []:
        for tensor in graph.tensors or []:
            data = model.buffers[tensor.buffer].data
            if data is not None and names.get(tensor.type) == "FLOAT32" and len(data) > largest_float[0]:
                name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
                largest_float = (len(data), name)
    constants = sum(by_type.values())
    operators = sum(len(graph.operators or []) for graph in model.subgraphs or [])
    while_code = getattr(schema.BuiltinOperator, "WHILE", None)
    loops = sum(1 for graph in model.subgraphs or [] for op in graph.operators or []
                if while_code is not None and max(model.operatorCodes[op.opcodeIndex].builtinCode,
                                                  model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode)
                == while_code)
    subgraphs = len(model.subgraphs or [])
    return {"file_bytes": len(raw), "constant_bytes": constants, "other_bytes": len(raw) - constants,
            "by_type": by_type, "constant_gzip_bytes": len(gzip.compress(b"".join(chunks), 9)),
            "structure": f"{_plural(operators, 'operator')} in {_plural(subgraphs, 'subgraph')}"
                         + (f" ({_plural(loops, 'WHILE loop')})" if loops else ""),
            "largest_float": {"bytes": largest_float[0], "name": largest_float[1]} if largest_float[0] else None}


def onnx_constants(path: Path) -> dict[str, Any]:
    """Bytes of the initializers (and Constant-node tensors) of an .onnx file, by data type, vs the file size."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            tensors += [a.t for a in node.attribute if a.name == "value" and a.HasField("t")]
    by_type: dict[str, int] = {}
    largest_float: tuple[int, str] = (0, "")
    chunks = []
    for tensor in tensors:
        array = numpy_helper.to_array(tensor)
        kind = onnx.TensorProto.DataType.Name(tensor.data_type)
        by_type[kind] = by_type.get(kind, 0) + array.nbytes
        chunks.append(array.tobytes())
        if kind == "FLOAT" and array.nbytes > largest_float[0]:
            largest_float = (array.nbytes, tensor.name)
    size = path.stat().st_size
    constants = sum(by_type.values())
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {"file_bytes": size, "constant_bytes": constants, "other_bytes": size - constants, "by_type": by_type,
            "constant_gzip_bytes": len(gzip.compress(b"".join(chunks), 9)), "ops": ops,
            "structure": f"{sum(ops.values())} nodes"
                         + (f" ({ops.get('QuantizeLinear', 0)} QuantizeLinear, {ops.get('DequantizeLinear', 0)} "
                            "DequantizeLinear)" if "DequantizeLinear" in ops else ""),
            "largest_float": {"bytes": largest_float[0], "name": largest_float[1]} if largest_float[0] else None}


def constants_of(ws: Any, model: str, variant: str) -> dict[str, Any] | None:
    directory = ws.variant_dir(model, variant)
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        path = directory / manifest["model"]["file"]
        return tflite_constants(path) if path.suffix == ".tflite" else onnx_constants(path)
    except Exception as exc:  # a measurement aid only: never let it break the benchmark
        return {"error": f"{type(exc).__name__}: {exc}"}


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _types(by_type: dict[str, int]) -> str:
    return ", ".join(f"{k.lower()} {kb(v)}" for k, v in sorted(by_type.items(), key=lambda kv: -kv[1]))


# ---------------------------------------------------------------------------------------------------------------
# Checks


def analyse(ws: Any, name: str, data: dict[str, Any]) -> dict[str, Any]:
    """Target rows and explanations for one model's report card."""
    card = ReportCard.from_dict(data)
    rows_by = card.rows_by_name()
    params = parameters(ws, name)
    small = params is not None and params < MIN_PARAMS
    checks = []

    for variant, base, label in (("tflite-int8", "tflite-float32", "full-int8 TFLite size / float32 TFLite size"),
                                 ("onnx-qdq", "onnx-float32", "static-QDQ ONNX size / float32 ONNX size")):
        check = _ratio_check(ws, name, rows_by, variant, base, "size_bytes", SIZE_TARGET, label)
        if small and check["result"] != "error":
            check["result"] = "n/a (<10k params)"
            check["explanation"] = None
        checks.append(check)

    checks.append(_ratio_check(ws, name, rows_by, "tflite-pruned-int8", "tflite-float32", "gzip_bytes",
                               PRUNED_GZIP_TARGET, "pruned (80%) + int8 TFLite gzip / float32 TFLite gzip"))
    checks.append(_drop_check(name, card, rows_by))
    return {"model": name, "parameters": params, "task": card.task, "metric": card.metric,
            "drop_unit": card.drop_unit, "reference": card.reference.to_dict(), "gate": card.gate.to_dict(),
            "checks": checks, "variants": [r.to_dict() for r in card.variants]}


def parameters(ws: Any, name: str) -> int | None:
    from edgemaas.workspace import FLOAT_VARIANT

    try:
        manifest = json.loads((ws.variant_dir(name, FLOAT_VARIANT) / "manifest.json").read_text())
        return int(manifest["provenance"]["parameters"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def _unusable(row: VariantResult | None, variant: str) -> str | None:
    if row is None:
        return f"{variant} is not in the report"
    if row.status in (VariantStatus.FAILED, VariantStatus.SKIPPED) or row.size_bytes is None:
        return f"{variant} {row.status.value}: {row.reason or 'no measurement'}"
    return None


def _ratio_check(ws: Any, name: str, rows_by: dict[str, VariantResult], variant: str, base: str, key: str,
                 target: float, label: str) -> dict[str, Any]:
    row, ref = rows_by.get(variant), rows_by.get(base)
    check: dict[str, Any] = {"model": name, "check": label, "variant": variant, "target": f"<= {target:.2f}x",
                             "target_value": target, "value": None, "measured": "-", "result": "MISSED",
                             "explanation": None}
    problem = _unusable(row, variant) or _unusable(ref, base)
    if problem:
        check["explanation"] = problem
        check["measured"] = "not measured"
        return check
    mine_bytes, base_bytes = getattr(row, key), getattr(ref, key)
    value = mine_bytes / base_bytes
    check["value"] = value
    check["measured"] = f"{value:.3f}x ({kb(mine_bytes)} / {kb(base_bytes)})"
    check["result"] = "met" if value <= target else "MISSED"
    if row.status is VariantStatus.REJECTED:
        check["note"] = f"{variant} was rejected by the gate: {row.reason}"
    mine, theirs = constants_of(ws, name, variant), constants_of(ws, name, base)
    check["constants"] = {variant: mine, base: theirs}
    if check["result"] == "MISSED":
        check["explanation"] = (_gzip_explanation(row, ref, mine, theirs, target) if key == "gzip_bytes"
                                else _size_explanation(variant, mine, theirs, target))
        if check.get("note"):
            check["explanation"] += f" (also: {check['note']})"
    return check


def _size_explanation(variant: str, mine: dict[str, Any] | None, theirs: dict[str, Any] | None,
                      target: float) -> str:
    if not mine or "error" in mine or not theirs or "error" in theirs:
        return f"could not read the model files: {(mine or {}).get('error') or (theirs or {}).get('error')}"
    file_bytes, weights, other = mine["file_bytes"], mine["constant_bytes"], mine["other_bytes"]
    floats = mine["by_type"].get("FLOAT32", 0) + mine["by_type"].get("FLOAT", 0)
    weights_only = weights / theirs["file_bytes"] if theirs["file_bytes"] else float("nan")
    detail = (f"{variant}: constants {kb(weights)} of the {kb(file_bytes)} file ({_types(mine['by_type'])}), "
              f"other {kb(other)}; float32 file: constants {kb(theirs['constant_bytes'])} of "
              f"{kb(theirs['file_bytes'])}, other {kb(theirs['other_bytes'])}; graph: {mine['structure']} vs "
              f"{theirs['structure']} in float32")
    if other >= weights:
        lead = (f"graph structure dominates: weights are {kb(weights)} of {kb(file_bytes)} "
                f"(weights alone would be {weights_only:.3f}x the float32 file)")
    elif weights_only <= target:
        lead = (f"non-weight bytes decide it: weights are {kb(weights)} of {kb(file_bytes)}, {weights_only:.3f}x the "
                f"float32 file alone; the other {kb(other)} (graph structure, quantization parameters, metadata) "
                f"compare with {kb(theirs['other_bytes'])} in the float32 file")
    elif floats > weights / 2:
        largest = mine.get("largest_float") or {}
        lead = (f"float32 constants remain: {kb(floats)} of the {kb(weights)} of constants"
                + (f" (largest: {largest['name']}, {kb(largest['bytes'])})" if largest else ""))
    else:
        lead = f"quantized constants alone are {weights_only:.3f}x the float32 file"
    return f"{lead}. {detail}"


def _gzip_explanation(row: VariantResult, ref: VariantResult, mine: dict[str, Any] | None,
                      theirs: dict[str, Any] | None, target: float) -> str:
    sparsity = row.sparsity
    leads = []
    if mine and "error" not in mine and mine["other_bytes"] > mine["constant_bytes"]:
        leads.append(f"graph structure dominates ({kb(mine['other_bytes'])} of the {kb(mine['file_bytes'])} raw file "
                     "is not constant data)")
    if sparsity is not None and sparsity < 0.75:
        leads.append(f"weights are only {sparsity:.1%} zeros")
    if mine and "error" not in mine and mine["constant_gzip_bytes"] / ref.gzip_bytes <= target:
        leads.append("the constants alone would meet it")
    text = (f"{row.variant}: weight sparsity {sparsity:.1%}, " if sparsity is not None else f"{row.variant}: ")
    text += f"gzip {kb(row.gzip_bytes)} of raw {kb(row.size_bytes)}"
    if mine and "error" not in mine:
        share = mine["constant_gzip_bytes"] / ref.gzip_bytes
        text += (f"; its constants are {kb(mine['constant_bytes'])} raw, {kb(mine['constant_gzip_bytes'])} gzipped "
                 f"alone ({share:.3f}x the float32 gzip), the other {kb(mine['other_bytes'])} raw bytes are graph "
                 "structure and quantization parameters")
    if theirs and "error" not in theirs:
        text += (f"; float32: gzip {kb(ref.gzip_bytes)}, constants {kb(theirs['constant_bytes'])} of "
                 f"{kb(theirs['file_bytes'])}")
        if mine and "error" not in mine:
            text += f"; graph: {mine['structure']} vs {theirs['structure']} in float32"
    return (f"{'; '.join(leads)}. " if leads else "") + text


def _drop_check(name: str, card: ReportCard, rows_by: dict[str, VariantResult]) -> dict[str, Any]:
    unit = card.drop_unit
    target = DROP_TARGETS.get(name, DEFAULT_DROP_TARGET.get(unit, card.gate.max_metric_drop))
    short = "pt" if unit == "accuracy points" else "% RMSE" if unit == "% of RMSE" else unit
    row = rows_by.get("tflite-int8")
    check: dict[str, Any] = {"model": name, "check": f"full-int8 TFLite metric drop ({unit})", "variant": "tflite-int8",
                             "target": f"<= {target:g} {short}", "target_value": target, "value": None,
                             "measured": "not measured", "result": "MISSED", "explanation": None}
    problem = _unusable(row, "tflite-int8")
    if problem or row.metric_drop is None:
        check["explanation"] = problem or "tflite-int8 has no metric"
        return check
    drop = row.metric_drop
    check["value"] = drop
    check["measured"] = f"{drop:+.2f} {short} ({_metric(card, card.reference.metric_value)} -> " \
                        f"{_metric(card, row.metric_value)})"
    check["result"] = "met" if drop <= target else "MISSED"
    if check["result"] == "MISSED":
        others = [f"{v} {rows_by[v].metric_drop:+.2f}" for v in ("tflite-int16x8", "tflite-qat-int8",
                                                                 "tflite-clustered-int8", "tflite-dynamic")
                  if v in rows_by and rows_by[v].metric_drop is not None]
        notes = "; ".join(row.notes)
        check["explanation"] = (f"tflite-int8 {card.metric} {_metric(card, row.metric_value)} vs float "
                                f"{_metric(card, card.reference.metric_value)} on {card.eval_data}"
                                + (f"; notes: {notes}" if notes else "")
                                + (f"; other drops ({short}): {', '.join(others)}" if others else ""))
    return check


def _metric(card: ReportCard, value: float | None) -> str:
    text = format_metric(card.metric, value)
    return text if card.metric in PERCENT_METRICS else f"{metric_label(card.metric).upper()} {text}"


# ---------------------------------------------------------------------------------------------------------------
# Output


def header_lines(env: dict[str, Any]) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    return [f"Date: {env['date']}",
            f"Machine: {env['platform']} ({env['machine']}), {env['processor']}, {env['cpu_count']} CPUs, "
            f"Python {env['python']}",
            f"Versions: {versions}"]


def rich_table(results: list[dict[str, Any]]) -> Table:
    table = Table(title="Compression targets", show_lines=False)
    for column in ("Model", "Params", "Target", "Check", "Measured", "Result"):
        table.add_column(column, overflow="fold")
    for result in results:
        for check in result["checks"]:
            style = "green" if check["result"] == "met" else "red" if check["result"] in ("MISSED", "error") \
                else "dim"
            table.add_row(result["model"], _params(result["parameters"]), check["target"], check["check"],
                          check["measured"], f"[{style}]{check['result']}[/{style}]")
    return table


def _params(params: int | None) -> str:
    return "?" if params is None else f"{params:,}"


def markdown(env: dict[str, Any], results: list[dict[str, Any]], errors: dict[str, str],
             seconds: dict[str, float]) -> str:
    lines = ["<!-- generated by benchmarks/compression.py -->",
             f"Measured {env['date'][:10]} on {env['platform']}, {env['cpu_count']} CPUs ({env['processor']}); "
             + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if k in ("tensorflow", "ai-edge-litert",
                                                                                  "onnxruntime")) + ".",
             "",
             "| Model | Params | Check | Target | Measured | Result |",
             "|---|---:|---|---|---|---|"]
    for result in results:
        for check in result["checks"]:
            res = check["result"]
            res = f"**{res}**" if res == "MISSED" else res
            lines.append(f"| {result['model']} | {_params(result['parameters'])} | {_md(check['check'])} | "
                         f"{_md(check['target'])} | {_md(check['measured'])} | {res} |")
    for model, message in errors.items():
        lines.append(f"| {model} | ? | compress | - | {_md(_one_line(message))} | **error** |")
    lines += ["", "Gate choices (smallest gzipped variant within the metric budget):", ""]
    for result in results:
        gate = result["gate"]
        chosen = ", ".join(f"{fmt}: `{v}`" for fmt, v in sorted(gate["chosen"].items()))
        fallback = f" (no variant passed for {', '.join(gate['fallback'])}: float ships)" if gate["fallback"] else ""
        took = f", compress took {seconds[result['model']]:.0f} s" if result["model"] in seconds else ""
        lines.append(f"- **{result['model']}** (budget {gate['max_metric_drop']:g} {gate['unit']}{took}): "
                     f"{chosen}{fallback}")
    noted = [(r["model"], c) for r in results for c in r["checks"] if c["result"] != "MISSED" and c.get("note")]
    if noted:
        lines += ["", "Notes:", ""]
        lines += [f"- {model}, {_md(check['check'])}: {_md(check['note'])}" for model, check in noted]
    missed = [(r["model"], c) for r in results for c in r["checks"] if c["result"] == "MISSED"]
    if missed:
        lines += ["", "Why targets were missed:", ""]
        for model, check in missed:
            lines.append(f"- {model}, {_md(check['check'])}: {_md(check['explanation'] or 'no detail')}")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _one_line(text: str) -> str:
    return " / ".join(line.strip() for line in text.strip().splitlines() if line.strip())[:400]


# ---------------------------------------------------------------------------------------------------------------


def resolve_models(names: list[str]) -> list[Path]:
    paths = []
    for name in names:
        path = Path(name)
        if path.suffix not in (".yaml", ".yml"):
            path = REPO / "models" / f"{name}.yaml"
        if not path.exists():
            available = ", ".join(p.stem for p in sorted((REPO / "models").glob("*.yaml")))
            raise SystemExit(f"error: {name}: no such model spec (built-ins: {available})")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("build") / "bench-compression",
                        help="workspace for the builds (build/ and dist/ are made under it; default: "
                             "build/bench-compression under the current directory). Reused: unchanged variants "
                             "are not rebuilt; use --force for a from-scratch run")
    parser.add_argument("--models", nargs="+", default=list(BUILTINS), metavar="MODEL",
                        help=f"built-in names (models/<name>.yaml in the repo) or spec paths; default: "
                             f"{' '.join(BUILTINS)}")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--force", action="store_true", help="retrain and rebuild every variant")
    args = parser.parse_args(argv)

    from edgemaas.errors import UserError
    from edgemaas.pipeline import compress_spec
    from edgemaas.spec import DEFAULT_VARIANTS, load_spec
    from edgemaas.workspace import Workspace

    specs = resolve_models(args.models)
    env = environment()
    for line in header_lines(env):
        out.print(line, highlight=False)
    out.print(f"Workspace: {args.workdir.resolve()}", highlight=False)

    ws = Workspace(args.workdir)
    results: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for path in specs:
        spec = load_spec(path)
        if list(spec.compress.variants) != list(DEFAULT_VARIANTS):
            err.print(f"{spec.name}: the spec lists {len(spec.compress.variants)} variants; benchmarking all of them")
            spec.compress = spec.compress.model_copy(update={"variants": list(DEFAULT_VARIANTS)})
        started = time.perf_counter()
        err.print(f"[bold]{spec.name}[/bold]: compressing", highlight=False)
        status = lambda step, n=spec.name, t0=started: err.print(  # noqa: E731
            f"[dim]{n} [{time.perf_counter() - t0:6.1f}s]: {step}[/dim]", highlight=False)
        try:
            card = compress_spec(spec, ws, force=args.force, report=status)
        except UserError as exc:
            errors[spec.name] = str(exc)
            err.print(f"[bold red]{spec.name}: compress failed:[/bold red] {exc}", highlight=False)
            continue
        except Exception:
            errors[spec.name] = traceback.format_exc()
            err.print(f"[bold red]{spec.name}: compress raised:[/bold red]\n{errors[spec.name]}", highlight=False)
            continue
        seconds[spec.name] = time.perf_counter() - started
        results.append(analyse(ws, spec.name, card))

    out.print()
    out.print(rich_table(results))
    for result in results:
        gate = result["gate"]
        chosen = ", ".join(f"{fmt}: {v}" for fmt, v in sorted(gate["chosen"].items()))
        took = f" ({seconds[result['model']]:.0f} s)" if result["model"] in seconds else ""
        out.print(f"[bold]{result['model']}[/bold]{took}: gate chose {chosen}"
                  + (f"; [red]fallback to float for {', '.join(gate['fallback'])}[/red]" if gate["fallback"] else ""),
                  highlight=False)
        for check in result["checks"]:
            if check["result"] == "MISSED":
                out.print(f"  [red]MISSED[/red] {check['check']}: {check['explanation']}", highlight=False)
            elif check.get("note"):
                out.print(f"  note, {check['check']}: {check['note']}", highlight=False)
    for model, message in errors.items():
        out.print(f"[bold red]{model}: compress error[/bold red]: {message}", highlight=False)

    text = markdown(env, results, errors, seconds)
    out.print("\n--- Markdown ---\n", highlight=False)
    print(text)

    if args.json:
        atomic_write_json(args.json, {"environment": env, "workdir": str(args.workdir.resolve()),
                                      "targets": {"size_ratio": SIZE_TARGET, "min_parameters": MIN_PARAMS,
                                                  "pruned_int8_gzip_ratio": PRUNED_GZIP_TARGET,
                                                  "int8_metric_drop": DROP_TARGETS},
                                      "compress_seconds": seconds, "errors": errors, "models": results,
                                      "markdown": text}, default=str)
        err.print(f"JSON: {args.json}", highlight=False)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
