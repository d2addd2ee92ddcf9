"""Inference backends: LiteRT (or tflite_runtime, or tf.lite as a last resort) for .tflite, onnxruntime for .onnx.

Each backend takes model bytes and runs a batch of already-prepared tensors. Quantization and pre/post-processing
live in `model.py`, so the backends stay thin and interchangeable.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

from .errors import ModelLoadError
from .manifest import TensorSpec


class Backend(Protocol):
    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    signature_key: str | None
    metadata: dict[str, Any]
    output_order: list[int]  # positions in `outputs`, in the order callers get them (the model's declared order)

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        """A batch of samples (the first dimension), chunked to a fixed batch when the model has one."""
        ...

    def run_exact(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        """Tensors exactly as given (any dynamic dimension resized); raises the runtime's own error when the model
        cannot run on them."""
        ...


# Lightest first. tf.lite is reached only on a development machine with neither light runtime installed.
_TFLITE_INTERPRETERS = (
    ("ai-edge-litert", "ai_edge_litert.interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow.lite"),
)


def _tflite_interpreter_class() -> tuple[str, Any]:
    for dist, module in _TFLITE_INTERPRETERS:
        try:
            return dist, importlib.import_module(module).Interpreter
        except ImportError:
            continue
    raise ModelLoadError("no TFLite interpreter is installed: pip install ai-edge-litert")


class TFLiteBackend:
    def __init__(self, content: bytes, num_threads: int | None = None) -> None:
        self.name, interpreter_class = _tflite_interpreter_class()
        try:
            self._interp = interpreter_class(model_content=content, num_threads=num_threads)
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{self.name} cannot load this model: {exc}") from exc
        self._in = self._interp.get_input_details()
        self._out = self._interp.get_output_details()
        self.signature_key, names = _signature_names(self._interp, self._in, self._out)

        self.metadata: dict[str, Any] = {}
        self.inputs = [_tflite_spec(d, names.get(d["index"], "")) for d in self._in]
        self.outputs = [_tflite_spec(d, names.get(d["index"], "")) for d in self._out]
        self._in_index = [d["index"] for d in self._in]
        self._out_index = [d["index"] for d in self._out]
        # Outputs as a caller sees them: in the signature's order (a Keras model's output_0, output_1, ...), which
        # the converter's subgraph order may shuffle ([output_1, output_0]); positions stay the subgraph's.
        signature_rank = {index: rank for rank, index in enumerate(names)}
        self.output_order = sorted(range(len(self._out)),
                                   key=lambda i: signature_rank.get(self._out_index[i], i))
        # Shapes the tensors are allocated for; None until allocated. A model whose signature is dynamic may not
        # allocate at the placeholder shape (1 for every -1): it is allocated at the first request's shapes instead.
        self._shapes: list[tuple[int, ...]] | None = None
        self.allocations = 0  # how many times tensors were (re)allocated: once per change of request shapes
        try:
            self._interp.allocate_tensors()
            self.allocations += 1
            self._shapes = [tuple(int(n) for n in d["shape"]) for d in self._in]
        except (ValueError, RuntimeError) as exc:
            # An op the interpreter lacks fails at any shape; a shape-dependent failure waits for a real shape.
            if "custom op" in str(exc) or not any(spec.dynamic for spec in self.inputs):
                raise ModelLoadError(f"{self.name} cannot load this model: {exc}") from exc
        first = self.inputs[0].shape if self.inputs else []
        self._fixed_batch = first[0] if first and first[0] != -1 else None

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        batch = feeds[0].shape[0]
        fixed = self._fixed_batch
        if fixed is None:
            return self._invoke(feeds)
        # A model frozen with a fixed batch (recurrent models are) runs in chunks of that size, the last one padded.
        results: list[list[np.ndarray]] = []
        for start in range(0, batch, fixed):
            chunk = [f[start:start + fixed] for f in feeds]
            short = fixed - chunk[0].shape[0]
            if short:
                chunk = [np.concatenate([c, np.repeat(c[-1:], short, axis=0)]) for c in chunk]
            outs = self._invoke(chunk)
            results.append([o[: fixed - short] for o in outs])
        return [np.concatenate([r[i] for r in results]) for i in range(len(self.outputs))]

    def run_exact(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        return self._invoke(feeds)

    def _invoke(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        interp = self._interp
        shapes = [feed.shape for feed in feeds]
        if shapes != self._shapes:
            # Resized only when the shapes change: a steady stream of one shape never reallocates.
            self._shapes = None  # until allocation succeeds: a failed one leaves the tensors unallocated
            for index, shape in zip(self._in_index, shapes):
                interp.resize_tensor_input(index, list(shape), strict=True)
            interp.allocate_tensors()
            self.allocations += 1
            self._shapes = shapes
        for index, feed in zip(self._in_index, feeds):
            interp.set_tensor(index, feed)
        interp.invoke()
        return [interp.get_tensor(index) for index in self._out_index]  # get_tensor returns a copy already


def _signature_names(interp: Any, inputs: list[dict[str, Any]],
                     outputs: list[dict[str, Any]]) -> tuple[str | None, dict[int, str]]:
    """The signature whose tensors are exactly the model's inputs and outputs, and its name for each tensor index
    (inputs, then outputs, each in the signature's order).

    Signature names ("regressors") say more than tensor names ("StatefulPartitionedCall:1")."""
    wanted_in = {d["index"] for d in inputs}
    wanted_out = {d["index"] for d in outputs}
    try:
        keys = list(interp.get_signature_list())
    except (AttributeError, ValueError, RuntimeError):
        return None, {}
    for key in sorted(keys, key=lambda k: k != "serving_default"):
        try:
            runner = interp.get_signature_runner(key)
            ins = {detail["index"]: name for name, detail in runner.get_input_details().items()}
            outs = {detail["index"]: name for name, detail in runner.get_output_details().items()}
        except (AttributeError, ValueError, RuntimeError, KeyError):
            continue
        if set(ins) == wanted_in and set(outs) == wanted_out:
            return key, {**ins, **outs}
    return None, {}


def _tflite_spec(detail: dict[str, Any], key: str = "") -> TensorSpec:
    shape = [int(d) for d in detail.get("shape_signature", detail["shape"])]
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(
        name=detail["name"], shape=shape, dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale), zero_point=int(zero_point), key=key if key != detail["name"] else "",
    )


_ONNX_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(bool)": "bool", "tensor(string)": "str",
}


class OnnxBackend:
    def __init__(self, content: bytes, num_threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelLoadError("onnxruntime is not installed: pip install onnxruntime") from None
        self.name = "onnxruntime"
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        try:
            self._session = ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
            raise ModelLoadError(f"onnxruntime cannot load this model: {exc}") from exc
        self.inputs = [_onnx_spec(n) for n in self._session.get_inputs()]
        self.outputs = [_onnx_spec(n) for n in self._session.get_outputs()]
        self.signature_key = None
        self.metadata = _onnx_metadata(self._session)
        self.output_order = list(range(len(self.outputs)))  # ONNX declares its outputs' order
        self._input_names = [spec.name for spec in self.inputs]
        self._output_names = [spec.name for spec in self.outputs]  # named once: run(None) looks them up per call

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        # Fed and fetched by name: an ONNX file may list its outputs in any order relative to their names.
        return list(self._session.run(self._output_names, dict(zip(self._input_names, feeds))))

    run_exact = run


def _onnx_spec(node: Any) -> TensorSpec:
    """Symbolic dimensions keep their names ("batch", "height"); unnamed ones show as "?". An output whose rank
    the graph does not say (a value from inside an If) has the shape []."""
    raw = list(node.shape) if node.shape is not None else []
    shape = [d if isinstance(d, int) and d >= 0 else -1 for d in raw]
    dims: list[int | str] = [d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) and d else "?")
                             for d in raw]
    return TensorSpec(name=node.name, shape=shape, dtype=_ONNX_DTYPES.get(node.type, node.type),
                      dims=dims if -1 in shape else None)


def _onnx_metadata(session: Any) -> dict[str, Any]:
    """The file's own metadata_props (a label dictionary, a version...), verbatim."""
    try:
        props = dict(session.get_modelmeta().custom_metadata_map)
    except (AttributeError, RuntimeError):
        return {}
    return {"props": props} if props else {}


def open_backend(model_format: str, content: bytes, num_threads: int | None = None) -> Backend:
    if model_format == "tflite":
        return TFLiteBackend(content, num_threads)
    if model_format == "onnx":
        return OnnxBackend(content, num_threads)
    raise ModelLoadError(f"the runtime serves .tflite and .onnx models, not {model_format!r}; convert it first")
