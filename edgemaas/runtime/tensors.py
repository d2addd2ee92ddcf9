"""The generic tensor mode: named tensors in exactly as the model takes them, every output out by name.

A request's tensor is checked against the model's input (rank, fixed dimensions, dimensions that share a name,
dtype, size) before anything runs; every mistake is a RequestError naming the input. Quantized tensors take and
give real values: the model's integers never reach the caller.
"""

from __future__ import annotations

import math
from itertools import chain
from typing import Any

import numpy as np

from .codec import TensorCodec
from .errors import RequestError
from .manifest import TensorSpec

DEFAULT_MAX_INPUT_ELEMENTS = 1 << 22  # per request, over every input: a dynamic model's allocations stay bounded
SERVED_DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
_FLOATS = {int, float}
_INTS = {int}
_BOOLS = {bool}


class TooLarge(RequestError):
    """More elements than `limits.max_input_elements`: answered 413, like a body over the size limit."""

    status = 413


class TensorInput:
    """One model input in tensor mode: the caller's name and dtype, and the checks its tensors get."""

    def __init__(self, spec: TensorSpec) -> None:
        self.spec = spec
        self.name = spec.public_name
        self.codec = TensorCodec(spec)
        # What the caller sends: real numbers for a quantized tensor, the tensor's own dtype otherwise.
        self.dtype = "float32" if spec.quantized else spec.dtype
        self.shape = list(spec.shape)
        self.dims = spec.shown_dims()

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": self.dims}
        if self.spec.quantized:
            info["quantized"] = {"dtype": self.spec.dtype, "scale": self.spec.scale,
                                 "zero_point": self.spec.zero_point,
                                 "note": "send real values; the runtime quantizes them"}
        if self.name != self.spec.name:
            info["tensor"] = self.spec.name
        return info

    def from_nested(self, value: Any, field: str, budget: int) -> np.ndarray:
        """A JSON value (nested lists, or a number for a 0-d input) -> the array, its shape read from the nesting."""
        shape, leaves = _nested(value, len(self.shape), field, self.dims, budget)
        array = leaves_to_array(leaves, self.dtype, field).reshape(shape)
        self.check_shape(array.shape, field)
        return array

    def check_shape(self, shape: tuple[int, ...], field: str) -> None:
        if len(shape) != len(self.shape):
            raise RequestError(field, f"expected a tensor of rank {len(self.shape)} {_shown(self.dims)}, got rank "
                                      f"{len(shape)} {list(shape)}")
        for axis, (want, got) in enumerate(zip(self.shape, shape)):
            if want >= 0 and want != got:
                raise RequestError(field, f"dimension {axis} must be {want} (shape {_shown(self.dims)}), got {got} "
                                          f"(shape {list(shape)})")
            if got == 0:
                raise RequestError(field, f"dimension {axis} is 0; send a tensor with at least one element")

    def to_model(self, array: np.ndarray) -> np.ndarray:
        return self.codec.encode(array) if self.spec.quantized else array.astype(self.spec.dtype, copy=False)


class TensorOutput:
    def __init__(self, spec: TensorSpec) -> None:
        self.spec = spec
        self.name = spec.public_name
        self.codec = TensorCodec(spec)
        self.dtype = "float32" if spec.quantized else spec.dtype

    def describe(self) -> dict[str, Any]:
        info = TensorInput(self.spec).describe()
        if self.spec.quantized:
            info["quantized"]["note"] = "the runtime gives real values"
        return info

    def from_model(self, array: np.ndarray) -> np.ndarray:
        """The model's tensor in the caller's terms (dequantized when quantized), refused if JSON cannot carry it."""
        array = np.asarray(self.codec.decode(array) if self.spec.quantized else array)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise RequestError(f"outputs.{self.name}", "the model's output holds values that are not finite numbers "
                                                       "(NaN or Infinity), which JSON cannot carry; the inputs are "
                                                       "likely far outside the range the model was made for")
        return array


def check_shared_dims(inputs: list[TensorInput], arrays: list[np.ndarray], prefix: str) -> None:
    """Dimensions the file gives one name ("batch", "height") must be equal wherever they appear."""
    seen: dict[str, tuple[int, str]] = {}
    for tensor, array in zip(inputs, arrays):
        for dim, size in zip(tensor.dims, array.shape):
            if not isinstance(dim, str) or dim == "?":
                continue
            if dim in seen and seen[dim][0] != size:
                size0, name0 = seen[dim]
                raise RequestError(f"{prefix}.{tensor.name}", f"dimension {dim!r} is {size} here but {size0} in "
                                                              f"input {name0!r}; it must be the same in both")
            seen.setdefault(dim, (size, tensor.name))


def leaves_to_array(leaves: list[Any], dtype: str, field: str) -> np.ndarray:
    """Flat JSON scalars -> a 1-d array of `dtype`, refusing look-alikes (true for 1, 1.5 for an integer) and values
    the dtype cannot hold."""
    kinds = set(map(type, leaves))
    if dtype == "bool":
        if not kinds <= _BOOLS:
            raise RequestError(field, f"expected booleans (true/false) for a bool tensor, got {_kind_names(kinds)}")
        return np.array(leaves, dtype=bool)
    np_dtype = np.dtype(dtype)
    if np_dtype.kind == "f":
        if not kinds <= _FLOATS:
            raise RequestError(field, f"expected numbers for a {dtype} tensor, got {_kind_names(kinds - _FLOATS)}")
        try:
            wide = np.array(leaves, dtype=np.float64)
        except OverflowError:
            raise RequestError(field, f"a value is too large for a {dtype} tensor") from None
        with np.errstate(over="ignore", invalid="ignore"):
            array = wide.astype(np_dtype)
        bad = ~np.isfinite(array)
        if bad.any():
            where = int(np.argmax(bad))
            raise RequestError(field, f"value {float(wide[where])!r} at flat position {where} is not a finite "
                                      f"{dtype} (NaN, Infinity or beyond ±{float(np.finfo(np_dtype).max):.5g})")
        return array
    if not kinds <= _INTS:
        raise RequestError(field, f"expected integers for a {dtype} tensor, got {_kind_names(kinds - _INTS)}")
    info = np.iinfo(np_dtype)
    low, high = min(leaves), max(leaves)
    if low < info.min or high > info.max:
        value = low if low < info.min else high
        shown = str(value) if len(str(value)) <= 30 else f"an integer of {len(str(abs(value)))} digits"
        raise RequestError(field, f"{shown} is outside the range of {dtype} ({info.min} to {info.max})")
    return np.array(leaves, dtype=np_dtype)


def _nested(value: Any, rank: int, field: str, dims: list[int | str], budget: int) -> tuple[list[int], list[Any]]:
    """The shape of a regular nesting of lists `rank` deep, and its leaves in row-major order."""
    level = [value]
    shape: list[int] = []
    for depth in range(rank):
        if set(map(type, level)) != {list}:
            odd = next(v for v in level if not isinstance(v, list))
            raise RequestError(field, f"expected a tensor of rank {rank} {_shown(dims)} as nested lists; at depth "
                                      f"{depth} found {_json_type(odd)}")
        sizes = set(map(len, level))
        if len(sizes) > 1:
            lengths = ", ".join(map(str, sorted(sizes)[:4]))
            raise RequestError(field, f"the lists at depth {depth} have different lengths ({lengths}); a tensor's "
                                      "rows must all be the same length")
        size = sizes.pop()
        if size == 0:
            raise RequestError(field, f"dimension {depth} is 0; send a tensor with at least one element")
        shape.append(size)
        if len(level) * size > budget:
            raise too_many(field, len(level) * size, budget)
        level = list(chain.from_iterable(level))
    if any(isinstance(v, list) for v in level):
        raise RequestError(field, f"expected a tensor of rank {rank} {_shown(dims)}, got more nesting than that")
    return shape, level


def too_many(field: str, count: int, budget: int) -> TooLarge:
    error = TooLarge(field, f"the request has more than {budget} elements in its tensors (at least {count} here); "
                            "the model's limits.max_input_elements is the limit")
    return error


def element_count(shape: list[int]) -> int:
    return math.prod(shape) if shape else 1


def _shown(dims: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _kind_names(kinds: set[type]) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number with a fraction", str: "a string",
             type(None): "null", dict: "an object", list: "a list"}
    return ", ".join(sorted(names.get(k, k.__name__) for k in kinds))


def _json_type(value: Any) -> str:
    return _kind_names({type(value)})
