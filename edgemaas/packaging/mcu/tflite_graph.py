"""A .tflite flatbuffer read as a graph without TensorFlow, and frozen to the fixed shapes TFLite Micro runs.

`read_graph` gives the ops in execution order and the tensors with their sizes and quantization, from the schema
that ai-edge-litert ships. `freeze_shapes` folds the shape arithmetic a dynamic batch leaves in a converted graph
(SHAPE -> STRIDED_SLICE -> PACK -> FILL/RESHAPE): TFLite Micro has no dynamic shapes, and its FILL kernel refuses a
`dims` tensor computed at run time, which is how the unrolled GRUs build their initial state.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgemaas.errors import StageFailed, UserError

TFLITE_IDENTIFIER = b"TFL3"
BUFFER_ALIGNMENT = 16  # the schema's force_align for Buffer.data; TFLM kernels read weights in place
_BYTES = {"FLOAT32": 4, "FLOAT16": 2, "BFLOAT16": 2, "FLOAT64": 8, "INT64": 8, "UINT64": 8, "INT32": 4, "UINT32": 4,
          "INT16": 2, "UINT16": 2, "INT8": 1, "UINT8": 1, "BOOL": 1, "COMPLEX64": 8, "COMPLEX128": 16}
FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16", "BFLOAT16", "FLOAT64"})
# Ops whose output depends on more than their inputs' values: never folded into constants.
_STATEFUL = frozenset({"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE", "IF", "WHILE", "CUSTOM",
                       "RANDOM_UNIFORM", "RANDOM_STANDARD_NORMAL", "MULTINOMIAL"})


@cache
def _enum_names(enum: type) -> dict[int, str]:
    return {value: name for name, value in vars(enum).items() if not name.startswith("_")}


def builtin_operator_names() -> frozenset[str]:
    """Every builtin op name the TFLite schema knows (`CONV_2D`, ...)."""
    return frozenset(_enum_names(schema.BuiltinOperator).values())


@dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]  # as TFLite Micro sees it: the stored shape, batch 1 where the signature says -1
    dtype: str  # schema name: "INT8", "FLOAT32", ...
    constant: bool  # has data in the flatbuffer (weights, biases, folded shapes)
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    variable: bool = False

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * _BYTES.get(self.dtype, 1)


@dataclass(frozen=True)
class Op:
    name: str  # builtin name, or the custom code for a custom op
    custom: bool
    inputs: tuple[int, ...]  # tensor indices; -1 marks an omitted optional input
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class Graph:
    tensors: tuple[Tensor, ...]  # of the main subgraph
    ops: tuple[Op, ...]  # of the main subgraph, in execution order
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    subgraph_ops: tuple[tuple[Op, ...], ...]  # every subgraph's ops (control flow bodies included)

    def op_names(self) -> list[str]:
        """The distinct ops of every subgraph, in order of first use."""
        return list(dict.fromkeys(op.name for ops in self.subgraph_ops for op in ops))


def _load(data: bytes) -> schema.ModelT:
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise UserError("not a TFLite flatbuffer (no 'TFL3' identifier): package a .tflite variant")
    try:
        return schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:  # a truncated or corrupt flatbuffer fails anywhere inside the generated reader
        raise UserError(f"the .tflite file is corrupt ({type(exc).__name__}: {exc}); rebuild the variant") from None


def _op_name(model: schema.ModelT, op: schema.OperatorT) -> tuple[str, bool]:
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)  # codes above 127 live only in builtinCode
    if builtin == schema.BuiltinOperator.CUSTOM:
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
        return custom, True
    return _enum_names(schema.BuiltinOperator).get(builtin, f"BUILTIN_{builtin}"), False


def _has_data(model: schema.ModelT, tensor: schema.TensorT) -> bool:
    buffer = model.buffers[tensor.buffer] if 0 < tensor.buffer < len(model.buffers) else None
    return buffer is not None and ((buffer.data is not None and len(buffer.data) > 0) or (buffer.size or 0) > 0)


def _ints(values: object) -> tuple[int, ...]:
    return tuple(int(v) for v in values) if values is not None else ()


def _tensor(model: schema.ModelT, index: int, tensor: schema.TensorT) -> Tensor:
    quant = tensor.quantization
    scales = tuple(float(s) for s in quant.scale) if quant is not None and quant.scale is not None else ()
    zero_points = _ints(quant.zeroPoint) if quant is not None and quant.zeroPoint is not None else ()
    name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name or "")
    return Tensor(index=index, name=name, shape=_ints(tensor.shape), dtype=_enum_names(schema.TensorType)[tensor.type],
                  constant=_has_data(model, tensor), scales=scales, zero_points=zero_points,
                  variable=bool(tensor.isVariable))


def _ops(model: schema.ModelT, subgraph: schema.SubGraphT) -> tuple[Op, ...]:
    ops = []
    for op in subgraph.operators or []:
        name, custom = _op_name(model, op)
        ops.append(Op(name=name, custom=custom, inputs=_ints(op.inputs), outputs=_ints(op.outputs)))
    return tuple(ops)


def read_graph(data: bytes) -> Graph:
    """The main subgraph's tensors and ops in execution order, and every subgraph's ops."""
    model = _load(data)
    if not model.subgraphs:
        raise UserError("the .tflite file has no subgraph; rebuild the variant")
    main = model.subgraphs[0]
    tensors = tuple(_tensor(model, i, t) for i, t in enumerate(main.tensors or []))
    return Graph(tensors=tensors, ops=_ops(model, main), inputs=_ints(main.inputs), outputs=_ints(main.outputs),
                 subgraph_ops=tuple(_ops(model, sg) for sg in model.subgraphs))


def _static_ops(model: schema.ModelT) -> list[int]:
    """Indices of the main subgraph's ops whose outputs do not depend on the input values: SHAPE of a fixed-shape
    tensor, and any op fed only by constants or by such ops. TFLite Micro's shapes are fixed, so these are
    constants in all but name."""
    main = model.subgraphs[0]
    static = {i for i, t in enumerate(main.tensors) if _has_data(model, t) and not t.isVariable}
    outputs = set(_ints(main.inputs)) | set(_ints(main.outputs))
    folded = []
    for index, op in enumerate(main.operators or []):
        name, custom = _op_name(model, op)
        ins = [i for i in _ints(op.inputs) if i >= 0]
        if custom or name in _STATEFUL or outputs & set(_ints(op.outputs)):
            continue
        if name == "SHAPE" or (ins and all(i in static for i in ins)):
            folded.append(index)
            static.update(_ints(op.outputs))
    return folded


def _interpreter(data: bytes):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Builtin kernels only: no XNNPACK delegate (it would hide intermediate tensors and print a banner).
    interpreter = Interpreter(model_content=data, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    return interpreter


def _run(interpreter, inputs: list[np.ndarray]) -> list[np.ndarray]:
    for detail, value in zip(interpreter.get_input_details(), inputs):
        interpreter.set_tensor(detail["index"], value)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]


def _probe_inputs(interpreter, count: int, seed: int = 0) -> list[list[np.ndarray]]:
    """Seeded inputs in each input's own range: any int8 value, and token ids 0/1 (valid for any vocabulary)."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        batch = []
        for detail in interpreter.get_input_details():
            dtype = np.dtype(detail["dtype"])
            if dtype.kind == "f":
                batch.append(rng.standard_normal(detail["shape"]).astype(dtype))
            elif dtype.itemsize == 1:
                info = np.iinfo(dtype)
                batch.append(rng.integers(info.min, info.max, detail["shape"], endpoint=True).astype(dtype))
            else:
                batch.append(rng.integers(0, 1, detail["shape"], endpoint=True).astype(dtype))
        batches.append(batch)
    return batches


class _AlignedBuilder(flatbuffers.Builder):
    """Places byte vectors (buffer data, custom options) on 16-byte boundaries, as the converter's schema asks
    (`force_align: 16`); the generated Python packer would align them to 1 byte."""

    __slots__ = ()

    def CreateNumpyVector(self, x: np.ndarray) -> int:
        if x.dtype != np.uint8:
            return super().CreateNumpyVector(x)
        payload = x.tobytes()
        self.StartVector(1, len(payload), BUFFER_ALIGNMENT)
        self.head -= len(payload)
        self.Bytes[self.head:self.head + len(payload)] = payload
        return self.EndVector()


def freeze_shapes(data: bytes, parity_samples: int = 8) -> tuple[bytes, list[str]]:
    """Fold the ops whose outputs are fixed once shapes are fixed into constant tensors (evaluated by the LiteRT
    interpreter at the stored batch-1 shapes), drop them and their now-unused op codes. Returns the new flatbuffer
    and the folded ops' names; the model comes back unchanged when nothing folds. Every shape of the frozen graph
    is fixed (no -1 signature): it runs batch 1, as TFLite Micro does.

    The frozen graph must give the same outputs as the original on seeded inputs, or this raises StageFailed."""
    model = _load(data)
    if len(model.subgraphs) != 1:
        return data, []  # control flow: subgraphs share tensors by index, so leave the graph as it was converted
    folded = _static_ops(model)
    if not folded:
        return data, []
    original = _interpreter(data)
    probes = _probe_inputs(original, parity_samples)
    expected = [_run(original, batch) for batch in probes]  # the first run also computes the static tensors
    main = model.subgraphs[0]
    names = []
    for index in folded:
        op = main.operators[index]
        names.append(_op_name(model, op)[0])
        for out in _ints(op.outputs):
            value = np.ascontiguousarray(original.get_tensor(out))
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(value.tobytes(), dtype=np.uint8)
            model.buffers.append(buffer)
            tensor = main.tensors[out]
            tensor.buffer = len(model.buffers) - 1
            tensor.shape = np.array(value.shape, dtype=np.int32)
    for i, tensor in enumerate(main.tensors):  # the frozen graph holds batch-1 constants: it no longer resizes
        if tensor.shapeSignature is not None and not _has_data(model, tensor):
            # The converter stores placeholder dims (1) where the signature says -1, and TFLM's RESHAPE trusts the
            # stored output shape: record the shape LiteRT actually used at batch 1.
            used = _used_shape(original, i)
            if used is not None:
                tensor.shape = used
        tensor.shapeSignature = None
    drop = set(folded)
    main.operators = [op for i, op in enumerate(main.operators) if i not in drop]
    used = sorted({op.opcodeIndex for sg in model.subgraphs for op in sg.operators or []})
    renumber = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[i] for i in used]
    for op in main.operators:
        op.opcodeIndex = renumber[op.opcodeIndex]
    builder = _AlignedBuilder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    frozen = bytes(builder.Output())
    check = _interpreter(frozen)
    for batch, want in zip(probes, expected):
        got = _run(check, batch)
        if any(not np.array_equal(g, w) for g, w in zip(got, want)):
            raise StageFailed("freezing the shape ops changed the model's outputs; package the model as converted "
                              "and report this as a bug")
    return frozen, names


def _used_shape(interpreter, index: int) -> np.ndarray | None:
    """The shape tensor `index` had in the interpreter's last run; None for a tensor it did not keep."""
    try:
        return np.array(interpreter.get_tensor(index).shape, dtype=np.int32)
    except ValueError:
        return None


def buffer_offsets(data: bytes) -> list[tuple[int, int]]:
    """(offset in the file, length) of every non-empty buffer's data: where weights sit relative to the start."""
    model = schema.Model.GetRootAs(data, 0)
    spans = []
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        field = buffer._tab.Offset(4)  # Buffer.data, the table's first field
        if field and buffer.DataLength():
            spans.append((buffer._tab.Vector(field), buffer.DataLength()))
    return spans
