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

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]: ...


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
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{self.name} cannot load this model: {exc}") from exc
        self._in = self._interp.get_input_details()
        self._out = self._interp.get_output_details()
        self.inputs = [_tflite_spec(d) for d in self._in]
        self.outputs = [_tflite_spec(d) for d in self._out]
        self._in_index = [d["index"] for d in self._in]
        self._out_index = [d["index"] for d in self._out]
        first = self.inputs[0].shape
        self._dynamic_batch = bool(first) and first[0] == -1
        self._fixed_batch = first[0] if first and first[0] != -1 else None
        self._batch = None  # batch size the tensors are currently allocated for

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        batch = feeds[0].shape[0]
        fixed = self._fixed_batch
        if fixed is None:
            return self._invoke(feeds, batch)
        # A model frozen with a fixed batch (recurrent models are) runs in chunks of that size, the last one padded.
        results: list[list[np.ndarray]] = []
        for start in range(0, batch, fixed):
            chunk = [f[start:start + fixed] for f in feeds]
            short = fixed - chunk[0].shape[0]
            if short:
                chunk = [np.concatenate([c, np.repeat(c[-1:], short, axis=0)]) for c in chunk]
            outs = self._invoke(chunk, fixed)
            results.append([o[: fixed - short] for o in outs])
        return [np.concatenate([r[i] for r in results]) for i in range(len(self.outputs))]

    def _invoke(self, feeds: list[np.ndarray], batch: int) -> list[np.ndarray]:
        interp = self._interp
        if batch != self._batch and self._dynamic_batch:
            for index, feed in zip(self._in_index, feeds):
                interp.resize_tensor_input(index, list(feed.shape), strict=True)
            interp.allocate_tensors()
            self._batch = batch
        for index, feed in zip(self._in_index, feeds):
            interp.set_tensor(index, feed)
        interp.invoke()
        return [interp.get_tensor(index) for index in self._out_index]  # get_tensor returns a copy already


def _tflite_spec(detail: dict[str, Any]) -> TensorSpec:
    shape = [int(d) for d in detail.get("shape_signature", detail["shape"])]
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(
        name=detail["name"], shape=shape, dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale), zero_point=int(zero_point),
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
        self._input_names = [spec.name for spec in self.inputs]
        self._output_names = [spec.name for spec in self.outputs]  # named once: run(None) looks them up per call

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        return list(self._session.run(self._output_names, dict(zip(self._input_names, feeds))))


def _onnx_spec(node: Any) -> TensorSpec:
    shape = [d if isinstance(d, int) else -1 for d in node.shape]
    return TensorSpec(name=node.name, shape=shape, dtype=_ONNX_DTYPES.get(node.type, node.type))


def open_backend(model_format: str, content: bytes, num_threads: int | None = None) -> Backend:
    if model_format == "tflite":
        return TFLiteBackend(content, num_threads)
    if model_format == "onnx":
        return OnnxBackend(content, num_threads)
    raise ModelLoadError(f"the runtime serves .tflite and .onnx models, not {model_format!r}; convert it first")
