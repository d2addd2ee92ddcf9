"""Microcontroller packages for TensorFlow Lite Micro (TFLM), from a full-int8 .tflite variant.

`package_mcu` writes to out_dir:
- `<name>_model_data.h` / `.cc`: the model as a 16-byte aligned `g_<name>_model_data[]` with its length, the tensor
  arena size `k<Name>TensorArenaSize` and each input's and output's quantization, in C that also compiles as C++;
- `<name>_op_resolver.h`: `<Name>OpResolver` (a `MicroMutableOpResolver<N>`, N the exact op count) and
  `Register<Name>Ops()`, which adds exactly the ops the model uses;
- `model.tflite` + `manifest.json`: the array's bytes as a file, which `edgemaas.runtime.load_model` serves on a host;
- `summary.json` + `SUMMARY.md`: flash, RAM (the arena estimate and how it was made), ops, tensors, quantization.

A float model, an op TFLM has no kernel for, or a custom op TFLM does not ship is refused with what to do instead,
before anything is written. TFLM runs fixed shapes, so the shape arithmetic a dynamic batch leaves in the graph is
folded into constants first (batch 1; see `tflite_graph.freeze_shapes`), and ops are checked on the folded graph:
SHAPE/REDUCE_PROD/... that fold away (every Dense on a 3-D tensor leaves some) are no reason to refuse.
"""

from __future__ import annotations

import bisect
import json
import re
import textwrap
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgemaas import __version__
from edgemaas.errors import UserError
from edgemaas.fsutil import atomic_dir
from edgemaas.runtime import MANIFEST_NAME
from edgemaas.runtime.errors import ModelLoadError
from edgemaas.runtime.manifest import Manifest, ModelFile, TensorSpec, read_manifest, read_verified_model, sha256_bytes
from edgemaas.packaging.common.templates import register_filters, render
from edgemaas.packaging.mcu.tflite_graph import FLOAT_TYPES, Graph, Tensor, freeze_shapes, read_graph
from edgemaas.packaging.mcu.tflm_ops import AVOID, GENERIC_AVOID, TFLM_BUILTIN_OPS, TFLM_CUSTOM_OPS, TFLM_SOURCE

MODEL_FILE = "model.tflite"
ARENA_ALIGNMENT = 16  # TFLM's MicroArenaBufferAlignment()
ARENA_MARGIN = 0.10
ARENA_ROUNDING = 1024
# TFLM's own records in the arena, in bytes, measured with TFLM's Python interpreter (tflite-micro 0.dev20261023,
# x86-64, RecordingMicroAllocator) on the four built-in int8 models. A 32-bit MCU has 4-byte pointers, so there
# they over-count: the estimate errs on the side of a working AllocateTensors().
_PER_TENSOR = 24  # a TfLiteEvalTensor for every tensor
_PER_OP = 64 + 112  # NodeAndRegistration, plus kernel OpData and parsed options (measured 53-111 per op)
_PER_CHANNEL = 8  # per-channel output multiplier and shift (int32 each) of a convolution or per-channel FC
_PER_IO_TENSOR = 96  # the persistent TfLiteTensor and quantization record of each model input and output
_FIXED = 528  # allocator, subgraph and context records
# AllocateTensors' temporaries while it plans: a record per tensor and the greedy planner's per-buffer lists.
# They are freed before the activations move in, so the arena needs the larger of the two, not the sum.
_PLAN_PER_TENSOR = 32
_PLAN_PER_BUFFER = 48
_PLAN_FIXED = 160
_CONVOLUTIONS = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"}
# Flash for TFLM's own code, approximate: the TFLM documentation cites 16 KB for the core runtime on a Cortex-M3
# and 22 KB with a keyword-spotting model's kernels; more kernels, CMSIS-NN and error logging add tens of KB.
CODE_FOOTPRINT_KB = (16, 100)
_FLOAT_ADVICE = "package the full-int8 variant: `edgemaas compress {name}` builds tflite-int8; or `--variant tflite-int8`"


@dataclass
class ArenaEstimate:
    """The tensor arena TFLM's AllocateTensors() needs, estimated from the graph alone (bytes)."""

    activations: int  # the greedy plan's peak: the arena's head once AllocateTensors() is done
    largest_activation: int
    activations_sum: int  # every activation side by side: what a plan without reuse would take
    persistent: int  # TFLM's records: per tensor, per op, per channel, per input/output, fixed
    planning: int  # temporaries while planning, freed before the activations move in
    margin_bytes: int
    total: int  # persistent + max(activations, planning), plus the margin, rounded up to ARENA_ROUNDING
    channels: int = 0  # per-channel quantization records counted in persistent


@dataclass
class McuPackage:
    name: str
    variant: str
    out_dir: str
    files: list[str]  # paths under out_dir
    model_bytes: int  # the array's length: what the model takes in flash
    sha256: str  # of the array's bytes (model.tflite here)
    source_sha256: str  # of the variant's model.tflite; differs from sha256 when shape ops were frozen
    frozen_ops: list[str]  # ops folded into constants so every shape is fixed (batch 1)
    ops: list[str]  # the ops the model runs, in order of first use
    op_counts: dict[str, int]  # nodes per op
    resolver_methods: list[str]  # MicroMutableOpResolver::AddXxx, one per op
    resolver_size: int  # the MicroMutableOpResolver template parameter
    arena_bytes: int  # k<Name>TensorArenaSize
    arena: ArenaEstimate
    tensors: int
    operators: int
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    code_footprint_kb: tuple[int, int] = CODE_FOOTPRINT_KB
    tflm_ops_source: str = TFLM_SOURCE
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def package_mcu(variant_dir: Path, out_dir: Path) -> McuPackage:
    """Package the full-int8 TFLite model in variant_dir for TensorFlow Lite Micro into out_dir (replaced whole).

    Raises UserError, with nothing written, for a float or int16 model, an op TFLM has no kernel for, or a custom
    op TFLM does not ship."""
    variant_dir, out_dir = Path(variant_dir), Path(out_dir)
    manifest, source = _read_variant(variant_dir)
    label = f"{manifest.name}/{manifest.variant}"
    graph = read_graph(source)
    refusal = type_refusal(graph, manifest.name)  # float/int16 first: freezing would run a model TFLM refuses anyway
    if refusal:
        raise UserError(f"{label}: {refusal}")
    try:
        model, frozen_ops = freeze_shapes(source)
    except (ValueError, RuntimeError) as exc:  # the LiteRT interpreter could not load or run it
        # An op neither runtime has (a custom op, say) is better named than LiteRT's load error.
        refusal = op_refusal(graph)
        raise UserError(f"{label}: {refusal}" if refusal else
                        f"{label}: LiteRT cannot run this model ({exc}); rebuild the variant") from None
    graph = read_graph(model) if frozen_ops else graph
    # Ops are checked after freezing: the shape arithmetic of a dynamic batch (SHAPE, REDUCE_PROD, ...) folds
    # away at batch 1, so only ops that really run on the device can be refused.
    refusal = op_refusal(graph)
    if refusal:
        raise UserError(f"{label}: {refusal}")
    ops = graph.op_names()
    methods = [resolver_method(op) for op in ops]
    arena = estimate_arena(graph)
    ident = c_identifier(manifest.name)
    package = McuPackage(
        name=manifest.name, variant=manifest.variant, out_dir=str(out_dir), files=[], model_bytes=len(model),
        sha256=sha256_bytes(model), source_sha256=manifest.model.sha256, frozen_ops=frozen_ops, ops=ops,
        op_counts=dict(Counter(op.name for sg in graph.subgraph_ops for op in sg)),
        resolver_methods=methods, resolver_size=len(methods), arena_bytes=arena.total, arena=arena,
        tensors=len(graph.tensors), operators=sum(len(ops) for ops in graph.subgraph_ops),
        inputs=[_tensor_record(graph.tensors[i]) for i in graph.inputs],
        outputs=[_tensor_record(graph.tensors[i]) for i in graph.outputs],
        warnings=_warnings(graph, arena, len(model)))
    files: dict[str, str | bytes] = dict(_render(package, manifest, ident, model))
    files[MODEL_FILE] = model
    files[MANIFEST_NAME] = json.dumps(_shipped_manifest(manifest, package, graph).to_dict(), indent=2) + "\n"
    package.files = [str(out_dir / name) for name in sorted([*files, "summary.json"])]
    files["summary.json"] = json.dumps(package.to_dict(), indent=2) + "\n"
    _replace_dir(out_dir, files)
    return package


def _read_variant(variant_dir: Path) -> tuple[Manifest, bytes]:
    try:
        manifest = read_manifest(variant_dir)
        if manifest.model.format != "tflite":
            raise UserError(f"{manifest.name}/{manifest.variant} is an {manifest.model.format} model, and --target "
                            "mcu packages a full-int8 .tflite for TensorFlow Lite Micro. To fix it, "
                            + _FLOAT_ADVICE.format(name=manifest.name))
        return manifest, read_verified_model(variant_dir, manifest)
    except ModelLoadError as exc:
        raise UserError(f"{variant_dir}: {exc}") from None


def refusal_reason(graph: Graph, name: str) -> str | None:
    """Why TFLM cannot run this graph as an int8 model, with what to do instead; None when it can."""
    return type_refusal(graph, name) or op_refusal(graph)


def type_refusal(graph: Graph, name: str) -> str | None:
    """Why TFLM cannot run this graph's tensor types (float, int16 activations); None when it can."""
    floats = [t for t in graph.tensors if t.dtype in FLOAT_TYPES]
    if floats:
        io = [f"{kind} '{graph.tensors[i].name}' is {graph.tensors[i].dtype.lower()}"
              for kind, indices in (("input", graph.inputs), ("output", graph.outputs))
              for i in indices if graph.tensors[i].dtype in FLOAT_TYPES]
        weights = sum(t.constant for t in floats)
        what = ", ".join(io + ([f"{weights} weight tensors are float"] if weights else [])) or \
            f"{len(floats)} tensors are float"
        return (f"this is a float model ({what}), and --target mcu takes full-int8 models for TensorFlow Lite "
                f"Micro. To fix it, {_FLOAT_ADVICE.format(name=name)}")
    wide = [t for t in graph.tensors if t.dtype == "INT16" and not t.constant]
    if wide:
        return (f"{len(wide)} activations are int16 (int16x8 quantization), which only some TFLM kernels take. "
                f"To fix it, {_FLOAT_ADVICE.format(name=name)}")
    return None


def op_refusal(graph: Graph) -> str | None:
    """Which of this graph's ops TFLM has no kernel for (or custom ops it does not ship); None when it has all."""
    problems = []
    for op, count in Counter(op.name for ops in graph.subgraph_ops for op in ops if not _runnable(op)).items():
        custom = any(o.custom and o.name == op for ops in graph.subgraph_ops for o in ops)
        uses = f"{count} node{'s' if count > 1 else ''}"
        if custom:
            problems.append(f"custom op '{op}' ({uses}) is not one TFLM ships: convert with builtin ops only, or "
                            f"implement it and register it with resolver.AddCustom(\"{op}\", ...)")
        else:
            problems.append(f"TensorFlow Lite Micro has no kernel for {op} ({uses}): {AVOID.get(op, GENERIC_AVOID)}")
    return "; ".join(problems) if problems else None


def _runnable(op: Any) -> bool:
    return op.name in (TFLM_CUSTOM_OPS if op.custom else TFLM_BUILTIN_OPS)


def resolver_method(op: str) -> str:
    """The MicroMutableOpResolver method that registers `op` (a builtin name or a custom code TFLM ships)."""
    return TFLM_BUILTIN_OPS.get(op) or TFLM_CUSTOM_OPS[op]


def estimate_arena(graph: Graph) -> ArenaEstimate:
    """Activations planned like TFLM's GreedyMemoryPlanner, plus TFLM's records, plus the margin."""
    buffers = _lifetimes(graph)
    sizes = {t: _aligned(graph.tensors[t].nbytes) for t in buffers}
    activations = _greedy_peak(buffers, sizes)
    channels = sum(_channels(graph, op) for op in graph.ops)
    io = len(set(graph.inputs) | set(graph.outputs))
    variables = sum(_aligned(t.nbytes) for t in graph.tensors if t.variable)  # persistent, outside the plan
    persistent = (_FIXED + _PER_TENSOR * len(graph.tensors) + _PER_OP * len(graph.ops) + _PER_CHANNEL * channels
                  + _PER_IO_TENSOR * io + variables)
    planning = _PLAN_FIXED + _PLAN_PER_TENSOR * len(graph.tensors) + _PLAN_PER_BUFFER * len(buffers)
    needed = persistent + max(activations, planning)
    total = -(-int(needed * (1 + ARENA_MARGIN)) // ARENA_ROUNDING) * ARENA_ROUNDING
    return ArenaEstimate(activations=activations, largest_activation=max(sizes.values(), default=0),
                         activations_sum=sum(sizes.values()), persistent=persistent, planning=planning,
                         margin_bytes=total - needed, total=total, channels=channels)


def _aligned(size: int) -> int:
    return -(-size // ARENA_ALIGNMENT) * ARENA_ALIGNMENT


def _lifetimes(graph: Graph) -> dict[int, tuple[int, int]]:
    """(first, last) op index of every tensor TFLM plans: non-constant, non-variable, used by an op or the graph.
    As TFLM's AllocationInfoBuilder: inputs live from op 0, outputs to the last op."""
    last_op = max(len(graph.ops) - 1, 0)
    planned = {i for i, t in enumerate(graph.tensors) if not t.constant and not t.variable}
    first: dict[int, int] = {i: 0 for i in graph.inputs if i in planned}
    last: dict[int, int] = {i: last_op for i in graph.outputs if i in planned}
    for step, op in enumerate(graph.ops):
        for i in (*op.inputs, *op.outputs):
            if i in planned:
                first.setdefault(i, step)
                last[i] = max(last.get(i, step), step)
    return {i: (first[i], last[i]) for i in first}


def _greedy_peak(lifetimes: dict[int, tuple[int, int]], sizes: dict[int, int]) -> int:
    """TFLM's GreedyMemoryPlanner: largest first (ties: the later tensor first, as its stable sort of a list filled
    from the tail leaves them), each at the lowest offset clear of every placed buffer alive at the same time."""
    placed: list[tuple[int, int, int, int]] = []  # offset, size, first, last; kept in offset order
    for tensor in sorted(lifetimes, key=lambda t: (-sizes[t], -t)):
        size, (first, last) = sizes[tensor], lifetimes[tensor]
        offset = 0
        for other_offset, other_size, other_first, other_last in placed:
            if other_first > last or first > other_last:
                continue  # never alive together: may share memory
            if other_offset - offset >= size:
                break
            offset = max(offset, other_offset + other_size)
        at = bisect.bisect_right([entry[0] for entry in placed], offset)
        placed.insert(at, (offset, size, first, last))
    return max((offset + size for offset, size, _, _ in placed), default=0)


def _channels(graph: Graph, op: Any) -> int:
    """Per-channel quantization records a kernel keeps: a convolution's output channels, a per-channel FC's."""
    if op.name in _CONVOLUTIONS and op.outputs:
        shape = graph.tensors[op.outputs[0]].shape
        return shape[-1] if shape else 0
    if op.name == "FULLY_CONNECTED" and len(op.inputs) > 1 and op.inputs[1] >= 0:
        scales = graph.tensors[op.inputs[1]].scales
        return len(scales) if len(scales) > 1 else 0
    return 0


def _tensor_record(tensor: Tensor) -> dict[str, Any]:
    return {"name": tensor.name, "shape": list(tensor.shape), "dtype": tensor.dtype.lower(),
            "scale": tensor.scales[0] if len(tensor.scales) == 1 else 0.0,
            "zero_point": tensor.zero_points[0] if len(tensor.zero_points) == 1 else 0, "bytes": tensor.nbytes}


def _warnings(graph: Graph, arena: ArenaEstimate, model_bytes: int) -> list[str]:
    notes = []
    if len(graph.subgraph_ops) > 1:
        notes.append(f"the model has {len(graph.subgraph_ops)} subgraphs (control flow); the arena estimate "
                     "plans the main one only: measure it on the device")
    if arena.total > 512 * 1024:
        notes.append(f"the tensor arena estimate is {arena.total // 1024} KB, more RAM than most microcontrollers "
                     "have: use a smaller model")
    if model_bytes > 2 * 1024 * 1024:
        notes.append(f"the model is {model_bytes / 1024 / 1024:.1f} MB, more flash than most microcontrollers have")
    return notes


def c_identifier(name: str) -> str:
    """A lower-case C identifier from a model name (`my-model` -> `my_model`, `3d` -> `m_3d`)."""
    ident = re.sub(r"[^0-9a-zA-Z_]", "_", name).lower()
    return ident if ident and not ident[0].isdigit() else f"m_{ident}"


def c_camel(ident: str) -> str:
    """`my_model` -> `MyModel`, for k<Name>TensorArenaSize and <Name>OpResolver."""
    return "".join(part[:1].upper() + part[1:] for part in ident.split("_") if part)


def _comment(text: object) -> str:
    """Text safe inside a C block comment."""
    return str(text).replace("*/", "* /").replace("\n", " ")


def _g9(value: float) -> str:
    return f"{value:.9g}"


def _kb(n: float) -> str:
    return f"{n / 1024:.1f} KB"


def _render(package: McuPackage, manifest: Manifest, ident: str, model: bytes) -> dict[str, str]:
    context = {
        "p": package, "ident": ident, "camel": c_camel(ident), "version": __version__, "task": manifest.task,
        "model_file": MODEL_FILE, "source_dir": f"build/{manifest.name}/{manifest.variant}",
        "inputs": [{**t, "recipe": _input_recipe(manifest, i)} for i, t in enumerate(package.inputs)],
        "outputs": [{**t, "recipe": _output_recipe(manifest, i)} for i, t in enumerate(package.outputs)],
        "resolver": list(zip(package.ops, package.resolver_methods)),
        "frozen": sorted(Counter(package.frozen_ops).items()),
        "margin_percent": round(ARENA_MARGIN * 100), "rounding": ARENA_ROUNDING,
        "per_tensor": _PER_TENSOR, "per_op": _PER_OP, "per_channel": _PER_CHANNEL, "per_io": _PER_IO_TENSOR,
        "fixed": _FIXED,
    }
    return {
        f"{ident}_model_data.h": render("mcu/model_data.h.j2", context),
        f"{ident}_model_data.cc": render("mcu/model_data.cc.j2", context, rows=_hex_rows(model)),
        f"{ident}_op_resolver.h": render("mcu/op_resolver.h.j2", context),
        "SUMMARY.md": render("mcu/SUMMARY.md.j2", context),
    }


def _hex_rows(data: bytes, per_row: int = 12) -> str:
    """The bytes as `xxd -i` lays them out: 12 per row, two-space indent, a comma after each."""
    cells = [f"0x{byte:02x}," for byte in data]
    return "\n".join("  " + " ".join(cells[i:i + per_row]) for i in range(0, len(cells), per_row))


def _wrap_comment(text: str, prefix: str, width: int = 110) -> str:
    """Wrap text for a comment block whose lines start with prefix."""
    return ("\n" + prefix).join(textwrap.wrap(_comment(text), width=width - len(prefix), break_on_hyphens=False))


def _c_float(value: float) -> str:
    """A float literal that round-trips a float32 (9 significant digits)."""
    text = f"{value:.9g}"
    return f"{text}f" if any(c in text for c in ".en") else f"{text}.0f"


def _number(value: Any) -> str:
    """A mean/std from the manifest for a comment: a scalar, or a short per-feature list."""
    if isinstance(value, (int, float)):
        return f"{value:.6g}"
    values = list(value)
    if len(values) <= 12:
        return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"
    return f"per feature ({len(values)} values in manifest.json)"


def _input_recipe(manifest: Manifest, index: int) -> str:
    """How a raw sample becomes this input tensor, from the manifest's preprocessing."""
    steps = manifest.preprocessing
    step = steps[index] if index < len(steps) else {}
    if step.get("kind") == "text":
        return (f"int32 token ids: {'lower-case the text, ' if step.get('lowercase', True) else ''}split it into "
                f"words ([a-z0-9]+('[a-z]+)?), id = the word's position in manifest.json's {len(step['vocabulary'])}-"
                f"word vocabulary (unknown: 1), truncate or pad with 0 to {step['max_length']}")
    if step.get("kind") == "numeric":
        return f"x = (raw - mean) / std with mean {_number(step.get('mean', 0.0))}, std {_number(step.get('std', 1.0))}"
    return "x as the model was trained on"


def _output_recipe(manifest: Manifest, index: int) -> str:
    post = manifest.postprocessing
    if index > 0 or not post:
        return "y = (q - zero_point) * scale"
    if post.get("kind") == "classification":
        labels = [str(label) for label in post.get("labels", [])]
        shown = ", ".join(labels[:20]) + (f", ... ({len(labels)} labels)" if len(labels) > 20 else "")
        return f"probabilities p = (q - zero_point) * scale, one per label: {shown}"
    if post.get("kind") == "regression":
        return (f"value = ((q - zero_point) * scale) * {_number(post.get('std', 1.0))} + "
                f"{_number(post.get('mean', 0.0))} ({', '.join(map(str, post.get('names', ['value'])))})")
    return "y = (q - zero_point) * scale"


def _shipped_manifest(manifest: Manifest, package: McuPackage, graph: Graph) -> Manifest:
    """The source manifest, re-pointed at the shipped bytes: the frozen model's hash, fixed shapes, provenance."""
    def specs(indices: tuple[int, ...]) -> list[TensorSpec]:
        return [TensorSpec(name=graph.tensors[i].name, shape=list(graph.tensors[i].shape),
                           dtype=graph.tensors[i].dtype.lower(), scale=r["scale"], zero_point=r["zero_point"])
                for i, r in zip(indices, [_tensor_record(graph.tensors[i]) for i in indices])]

    provenance = dict(manifest.provenance)
    if package.frozen_ops:
        provenance = {"created_by": f"edgemaas {__version__}", "parent": manifest.model.sha256,
                      "parent_variant": manifest.variant, "pass": "mcu-freeze-shapes", "settings": {"batch": 1},
                      "notes": {"folded_ops": package.frozen_ops,
                                "parity": "outputs identical to the parent on seeded inputs"}}
    return Manifest(name=manifest.name, variant=manifest.variant, task=manifest.task,
                    model=ModelFile(file=MODEL_FILE, format="tflite", sha256=package.sha256,
                                    size_bytes=package.model_bytes),
                    inputs=specs(graph.inputs) if package.frozen_ops else manifest.inputs,
                    outputs=specs(graph.outputs) if package.frozen_ops else manifest.outputs,
                    preprocessing=manifest.preprocessing, postprocessing=manifest.postprocessing,
                    limits=manifest.limits, provenance=provenance, metrics=manifest.metrics)


def _replace_dir(out_dir: Path, files: dict[str, str | bytes]) -> None:
    """Write every file into a fresh sibling directory, then swap it in: out_dir is old or new, never half."""
    with atomic_dir(out_dir) as staging:
        for name, content in files.items():
            (staging / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))


register_filters(c=_comment, cfloat=_c_float, g9=_g9, wrap=_wrap_comment, kb=_kb)
