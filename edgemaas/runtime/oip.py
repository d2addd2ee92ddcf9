"""The Open Inference Protocol (KServe v2, Triton's HTTP/REST): request bodies in, response bodies out.

Only the JSON form: tensors as "data" arrays (flat row-major, or nested). Triton's binary-data extension is not
taken (a client sets binary_data=False). The routes themselves are in service.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import RequestError
from .tensors import TensorInput, TensorOutput, element_count, leaves_to_array, too_many

MODEL_VERSION = "1"
DATATYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "int64": "INT64", "int32": "INT32",
             "int16": "INT16", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL"}
_REQUEST_KEYS = {"id", "inputs", "outputs", "parameters"}
_INPUT_KEYS = {"name", "shape", "datatype", "data", "parameters"}
PLATFORMS = {"tflite": "tensorflow_lite", "onnx": "onnxruntime_onnx"}


def is_oip_request(request: Any) -> bool:
    """An inference request in the protocol's shape: "inputs" a list of objects with a "name" (a batch of samples
    never holds objects, so the two forms cannot be confused)."""
    if not isinstance(request, dict):
        return False
    inputs = request.get("inputs")
    return (isinstance(inputs, list) and bool(inputs)
            and all(isinstance(item, dict) and "name" in item for item in inputs))


def tensor_metadata(tensor: TensorInput | TensorOutput) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": DATATYPES.get(tensor.dtype, tensor.dtype.upper()),
            "shape": list(tensor.spec.shape)}


def parse_request(request: Any, inputs: list[TensorInput], outputs: list[TensorOutput],
                  budget: int) -> tuple[list[np.ndarray], list[str] | None, Any]:
    """(arrays in the model's input order, the output names asked for or None for all, the request id)."""
    if not isinstance(request, dict):
        raise RequestError("body", 'an inference request is a JSON object like {"inputs": [{"name": ..., "shape": '
                                   '[...], "datatype": "FP32", "data": [...]}]}')
    unknown = sorted(str(k) for k in request if k not in _REQUEST_KEYS)
    if unknown:
        raise RequestError("body", f"unknown key(s) {', '.join(map(repr, unknown[:5]))}; an inference request has "
                                   "inputs, and optionally outputs, id and parameters")
    items = request.get("inputs")
    if not isinstance(items, list) or not items:
        raise RequestError("inputs", "expected a list of input tensors, each {\"name\", \"shape\", \"datatype\", "
                                     "\"data\"}")
    by_name = {tensor.name: tensor for tensor in inputs}
    given: dict[str, np.ndarray] = {}
    remaining = budget
    for i, item in enumerate(items):
        field = f"inputs[{i}]"
        if not isinstance(item, dict):
            raise RequestError(field, "expected an object {\"name\", \"shape\", \"datatype\", \"data\"}")
        name = item.get("name")
        if not isinstance(name, str) or name not in by_name:
            raise RequestError(f"{field}.name", f"{_clip(name)} is not an input of this model; its inputs are "
                                                f"{', '.join(by_name)}")
        if name in given:
            raise RequestError(f"{field}.name", f"input {name!r} is given twice")
        field = f"inputs.{name}"
        extra = sorted(str(k) for k in item if k not in _INPUT_KEYS)
        if extra:
            raise RequestError(field, f"unknown key(s) {', '.join(map(repr, extra[:5]))}")
        missing = [k for k in ("shape", "datatype", "data") if k not in item]
        if missing:
            binary = isinstance(item.get("parameters"), dict) and "binary_data_size" in item["parameters"]
            raise RequestError(field, f"missing {', '.join(missing)}" + (
                "; binary tensor data (Triton's binary extension) is not taken: send it as JSON \"data\" "
                "(tritonclient: binary_data=False)" if binary else ""))
        tensor = by_name[name]
        array = _input_array(item, tensor, field, remaining)
        remaining -= array.size
        given[name] = array
    absent = [tensor.name for tensor in inputs if tensor.name not in given]
    if absent:
        raise RequestError("inputs", f"missing input(s) {', '.join(absent)}; this model takes "
                                     f"{', '.join(t.name for t in inputs)}")
    return [given[tensor.name] for tensor in inputs], _requested_outputs(request.get("outputs"), outputs), \
        request.get("id")


def _input_array(item: dict[str, Any], tensor: TensorInput, field: str, budget: int) -> np.ndarray:
    datatype, shape, data = item["datatype"], item["shape"], item["data"]
    expected = DATATYPES.get(tensor.dtype, tensor.dtype.upper())
    if datatype != expected:
        raise RequestError(f"{field}.datatype", f"{_clip(datatype)} does not match the model's {expected}"
                                                + (" (a quantized input: send real values as FP32)"
                                                   if tensor.spec.quantized else ""))
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise RequestError(f"{field}.shape", "expected a list of non-negative integers")
    count = element_count(shape)
    if count > budget:
        raise too_many(field, count, budget)
    tensor.check_shape(tuple(shape), f"{field}.shape")
    leaves = _flatten(data, len(shape), field)
    if len(leaves) != count:
        raise RequestError(f"{field}.data", f"holds {len(leaves)} values; shape {shape} needs {count}")
    return leaves_to_array(leaves, tensor.dtype, f"{field}.data").reshape(shape)


def _flatten(data: Any, rank: int, field: str) -> list[Any]:
    """Row-major values from flat or nested "data" (a 0-d tensor may also be a bare value)."""
    if not isinstance(data, list):
        if rank == 0:
            return [data]
        raise RequestError(f"{field}.data", "expected a list of values (flat, row-major)")
    level: list[Any] = data
    for _ in range(rank):  # nesting deeper than the rank is refused by the value check
        if not any(isinstance(v, list) for v in level):
            break
        if not all(isinstance(v, list) for v in level):
            raise RequestError(f"{field}.data", "mixes lists and values; send it flat (row-major) or nested evenly")
        level = [v for sub in level for v in sub]
    return level


def _requested_outputs(value: Any, outputs: list[TensorOutput]) -> list[str] | None:
    if value is None:
        return None
    names = [tensor.name for tensor in outputs]
    if not isinstance(value, list) or not all(isinstance(v, dict) and isinstance(v.get("name"), str) for v in value):
        raise RequestError("outputs", "expected a list of objects like {\"name\": \"...\"}")
    wanted = [v["name"] for v in value]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise RequestError("outputs", f"{_clip(unknown[0])} is not an output of this model; its outputs are "
                                      f"{', '.join(names)}")
    return wanted


def response(model_name: str, outputs: list[tuple[TensorOutput, np.ndarray]], wanted: list[str] | None,
             request_id: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model_name": model_name, "model_version": MODEL_VERSION}
    if request_id is not None:
        body["id"] = request_id
    body["outputs"] = [
        {"name": tensor.name, "datatype": DATATYPES.get(str(array.dtype), str(array.dtype).upper()),
         "shape": list(array.shape), "data": array.reshape(-1).tolist()}
        for tensor, array in outputs if wanted is None or tensor.name in wanted
    ]
    return body


def model_metadata(model_name: str, model_format: str, inputs: list[TensorInput],
                   outputs: list[TensorOutput]) -> dict[str, Any]:
    return {"name": model_name, "versions": [MODEL_VERSION], "platform": PLATFORMS.get(model_format, model_format),
            "inputs": [tensor_metadata(t) for t in inputs], "outputs": [tensor_metadata(t) for t in outputs]}


def _clip(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
