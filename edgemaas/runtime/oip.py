"""The Open Inference Protocol (KServe v2, Triton's HTTP/REST): request bodies in, response bodies out.

Tensors come as JSON "data" arrays (flat row-major, or nested) or, in Triton's binary-data extension (what
tritonclient sends by default), as raw little-endian bytes after the JSON header, each input's size in its
`parameters.binary_data_size`. Replies are always JSON (clients that asked for binary outputs read JSON "data" too).
The routes themselves are in service.py.
"""

from __future__ import annotations

import json
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


def split_binary(data: bytes) -> tuple[bytes, bytes] | None:
    """A binary-extension body -> (its JSON header, the tensor bytes after it); None when `data` is not a JSON
    object followed by more bytes. The header's end is found by parsing (the Inference-Header-Content-Length HTTP
    header says the same, but not every surface passes headers on)."""
    start = len(data) - len(data.lstrip())
    if data[start:start + 1] != b"{":
        return None
    text = data.decode("utf-8", "surrogateescape")  # the header is UTF-8; the bytes after it are kept as they are
    try:
        _, end = json.JSONDecoder().raw_decode(text, start)
    except (ValueError, RecursionError):
        return None
    header = text[:end].encode("utf-8", "surrogateescape")
    return (header, data[len(header):]) if len(header) < len(data) else None


def parse_request(request: Any, inputs: list[TensorInput], outputs: list[TensorOutput],
                  budget: int, blob: bytes = b"") -> tuple[list[np.ndarray], list[str] | None, Any]:
    """(arrays in the model's input order, the output names asked for or None for all, the request id).

    `blob`: the bytes after the JSON header of a binary-extension body, consumed in the inputs' order."""
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
    offset = 0  # into blob
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
        size = _binary_size(item, field)
        missing = [k for k in ("shape", "datatype") + (("data",) if size is None else ()) if k not in item]
        if missing:
            raise RequestError(field, f"missing {', '.join(missing)}")
        tensor = by_name[name]
        if size is None:
            array = _input_array(item, tensor, field, remaining)
        else:
            if "data" in item:
                raise RequestError(field, "has both \"data\" and parameters.binary_data_size; send one")
            if offset + size > len(blob):
                raise RequestError(field, f"parameters.binary_data_size is {size} but only {len(blob) - offset} bytes "
                                          "of tensor data follow the JSON header for it")
            array = _binary_array(item, tensor, field, remaining, blob[offset:offset + size])
            offset += size
        remaining -= array.size
        given[name] = array
    if offset != len(blob):
        raise RequestError("body", f"{len(blob) - offset} bytes follow the JSON header that no input's "
                                   "parameters.binary_data_size accounts for")
    absent = [tensor.name for tensor in inputs if tensor.name not in given]
    if absent:
        raise RequestError("inputs", f"missing input(s) {', '.join(absent)}; this model takes "
                                     f"{', '.join(t.name for t in inputs)}")
    return [given[tensor.name] for tensor in inputs], _requested_outputs(request.get("outputs"), outputs), \
        request.get("id")


def _binary_size(item: dict[str, Any], field: str) -> int | None:
    parameters = item.get("parameters")
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise RequestError(f"{field}.parameters", "expected an object")
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise RequestError(f"{field}.parameters.binary_data_size", "expected a non-negative integer")
    return size


def _checked_shape(item: dict[str, Any], tensor: TensorInput, field: str, budget: int) -> list[int]:
    """The item's shape, once its datatype, shape and element count are checked against the model's input."""
    datatype, shape = item["datatype"], item["shape"]
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
    return shape


def _binary_array(item: dict[str, Any], tensor: TensorInput, field: str, budget: int, data: bytes) -> np.ndarray:
    """Raw little-endian bytes -> the tensor, held to the checks JSON values get (finite floats, 0/1 booleans)."""
    shape = _checked_shape(item, tensor, field, budget)
    dtype = np.dtype(tensor.dtype).newbyteorder("<")
    count = element_count(shape)
    if len(data) != count * dtype.itemsize:
        raise RequestError(f"{field}.parameters.binary_data_size", f"is {len(data)} bytes; shape {shape} of "
                                                                   f"{item['datatype']} needs {count * dtype.itemsize}")
    if dtype.kind == "b":
        raw = np.frombuffer(data, dtype=np.uint8)
        if raw.size and raw.max() > 1:
            raise RequestError(f"{field}.data", "a BOOL tensor's bytes must be 0 or 1")
        return raw.astype(bool).reshape(shape)
    array = np.frombuffer(data, dtype=dtype).astype(tensor.dtype).reshape(shape)  # a native, writable copy
    if dtype.kind == "f" and not np.isfinite(array).all():
        where = int(np.argmax(~np.isfinite(array.reshape(-1))))
        raise RequestError(f"{field}.data", f"value at flat position {where} is not a finite {tensor.dtype} "
                                            "(NaN or Infinity)")
    return array


def _input_array(item: dict[str, Any], tensor: TensorInput, field: str, budget: int) -> np.ndarray:
    shape = _checked_shape(item, tensor, field, budget)
    data = item["data"]
    count = element_count(shape)
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
