"""Request validation and the manifest's pre- and post-processing.

Every check raises RequestError naming the field and what was expected, so a caller can fix the request from the
message alone.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np

from .errors import RequestError
from .text import encode, vocabulary_index

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_LIST = {list}
_NUMBERS = {int, float}  # exact types: bool (an int subclass) is refused, like every other look-alike


class InputProcessor:
    """Turns one request field (a batch) into the float or token-id array a model input expects."""

    def __init__(self, step: dict[str, Any], limits: dict[str, int]) -> None:
        self.field = step.get("input", "inputs")
        self.kind = step["kind"]
        self.max_batch = int(limits.get("max_batch", 256))
        self.max_text_chars = int(limits.get("max_text_chars", 1000))
        if self.kind == "text":
            self.max_length = int(step["max_length"])
            self.lowercase = bool(step.get("lowercase", True))
            self.index = vocabulary_index(step["vocabulary"])
            self.shape = [self.max_length]
        else:
            self.shape = [int(d) for d in step["shape"]]
            self.mean = np.asarray(step.get("mean", 0.0), dtype=np.float32)
            self.std = np.asarray(step.get("std", 1.0), dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        if self.kind == "text":
            return {"name": self.field, "type": "string", "max_chars": self.max_text_chars}
        return {"name": self.field, "type": "number", "shape": self.shape}

    def __call__(self, batch: Any, field: str) -> np.ndarray:
        if not isinstance(batch, list):
            raise RequestError(field, f"expected a list (a batch of samples), got {json_type(batch)}; "
                                      f"send one sample as [{self._example()}]")
        if not batch:
            raise RequestError(field, "the batch is empty; send at least one sample")
        if len(batch) > self.max_batch:
            raise RequestError(field, f"the batch has {len(batch)} samples; the limit is {self.max_batch}")
        return self._text(batch, field) if self.kind == "text" else self._numeric(batch, field)

    def _example(self) -> str:
        return '"turn on the lights"' if self.kind == "text" else f"<array of shape {self.shape}>"

    def _text(self, batch: list[Any], field: str) -> np.ndarray:
        for i, sample in enumerate(batch):
            if not isinstance(sample, str):
                raise RequestError(f"{field}[{i}]", f"expected a string, got {json_type(sample)}")
            if len(sample) > self.max_text_chars:
                raise RequestError(f"{field}[{i}]", f"text of {len(sample)} characters exceeds the limit of "
                                                    f"{self.max_text_chars}")
        return self.transform(batch)

    def _numeric(self, batch: list[Any], field: str) -> np.ndarray:
        # Fast path for the common case: plain nested lists of plain numbers, checked a level at a time with C-level
        # map/set instead of a Python walk of every number. Anything it is not sure of (a problem, a subclass, huge
        # integers, values that do not scale to finite float32) goes through the full check below, which words the
        # error; so the verdict and every message are exactly the full check's.
        numbers = _regular_numbers(batch, self.shape)
        if numbers is not None:
            try:
                array = np.array(numbers, dtype=np.float64).reshape(len(batch), *self.shape)
            except OverflowError:
                array = None
            if array is not None:
                with np.errstate(over="ignore", invalid="ignore"):
                    scaled = self.transform(array.astype(np.float32))
                if np.isfinite(scaled).all():
                    return scaled
        return self._numeric_checked(batch, field)

    def _numeric_checked(self, batch: list[Any], field: str) -> np.ndarray:
        expected = f"a batch of shape [N, {', '.join(map(str, self.shape))}]" if self.shape else "a list of numbers"
        for i, sample in enumerate(batch):
            problem = _check_nested(sample, self.shape)
            if problem:
                raise RequestError(f"{field}[{i}]", f"{problem}; expected {expected}")
        try:
            array = np.asarray(batch, dtype=np.float64)
        except OverflowError:  # JSON integers have no size limit; beyond float64 numpy cannot convert them
            raise _huge_integer(batch, field) from None
        with np.errstate(over="ignore", invalid="ignore"):
            array32 = array.astype(np.float32)
        bad = ~np.isfinite(array32)
        if bad.any():
            where = np.argwhere(bad)[0]
            value = float(array[tuple(where)])
            raise RequestError(f"{field}[{where[0]}]", f"value {value!r} at position {where[1:].tolist()} is not a "
                                                       f"finite float32 (NaN, Infinity or beyond ±{_FLOAT32_MAX:.3g})")
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = self.transform(array32)
        bad = ~np.isfinite(scaled)
        if bad.any():  # a small std turns a large but finite float32 into Infinity
            where = np.argwhere(bad)[0]
            value = float(array[tuple(where)])
            raise RequestError(f"{field}[{where[0]}]", f"value {value!r} at position {where[1:].tolist()} is out of "
                                                       "range for this model: standardised ((x - mean) / std) it is "
                                                       "not a finite float32")
        return scaled

    def transform(self, batch: Any) -> np.ndarray:
        """The preprocessing alone, on a batch already known to be valid. Training calls this too (no skew)."""
        if self.kind == "text":
            return np.asarray([encode(t, self.index, self.max_length, self.lowercase) for t in batch], dtype=np.int32)
        return (np.asarray(batch, dtype=np.float32) - self.mean) / self.std


def _regular_numbers(batch: list[Any], shape: list[int]) -> list[Any] | None:
    """The batch's numbers in order when every sample is exactly `shape` of plain lists holding plain int/float;
    None otherwise (then `_check_nested` finds and words the problem, if there is one)."""
    level = batch
    for size in shape:
        if set(map(type, level)) != _LIST or set(map(len, level)) != {size}:
            return None
        level = list(chain.from_iterable(level))
    return level if set(map(type, level)) <= _NUMBERS else None


def _check_nested(value: Any, shape: list[int]) -> str | None:
    """Walk one sample; return what is wrong with it, or None. Rejects strings and booleans posing as numbers."""
    if not shape:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number, got {json_type(value)}"
        return None
    if not isinstance(value, list):
        return f"expected a list of length {shape[0]}, got {json_type(value)}"
    if len(value) != shape[0]:
        return f"expected a list of length {shape[0]}, got length {len(value)}"
    for item in value:
        problem = _check_nested(item, shape[1:])
        if problem:
            return problem
    return None


def _huge_integer(batch: list[Any], field: str) -> RequestError:
    """The error for the first integer in a (well-shaped) batch that no float can hold."""
    values = np.asarray(batch, dtype=object)
    for where in np.ndindex(values.shape):
        value = values[where]
        if isinstance(value, int) and abs(value) > _FLOAT32_MAX:
            digits = len(str(abs(value)))
            return RequestError(f"{field}[{where[0]}]", f"an integer of {digits} digits at position "
                                                        f"{list(where[1:])} is not a finite float32 (beyond "
                                                        f"±{_FLOAT32_MAX:.3g})")
    return RequestError(field, "a value is too large for a float")


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class OutputProcessor:
    """Turns the model's first output into JSON-ready predictions: labels with probabilities, or values."""

    def __init__(self, step: dict[str, Any], top_k: int = 3) -> None:
        self.kind = step["kind"]
        if self.kind == "raw":
            return
        if self.kind == "classification":
            self.labels = [str(label) for label in step["labels"]]
            self.top_k = min(top_k, len(self.labels))
        else:
            self.names = list(step.get("names", ["value"]))
            self.mean = np.asarray(step.get("mean", 0.0), dtype=np.float64)
            self.std = np.asarray(step.get("std", 1.0), dtype=np.float64)

    def values(self, output: np.ndarray) -> np.ndarray:
        """Model output in the caller's units: probabilities, or de-standardised regression values."""
        output = output.astype(np.float64)
        if self.kind != "regression":
            return output
        return output.reshape(output.shape[0], -1) * self.std + self.mean

    def __call__(self, output: np.ndarray) -> list[dict[str, Any]]:
        values = self.values(output)
        if not np.isfinite(values).all():  # extreme but valid inputs can overflow the model; JSON has no NaN/Infinity
            finite = np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
            i = int(np.argmin(finite))
            raise RequestError(f"inputs[{i}]", "the model's output for this sample is not a finite number (NaN or "
                                               "Infinity): its values are far outside the range the model was "
                                               "trained on")
        # One numpy call for the whole batch, then plain Python floats (tolist) rather than numpy scalars per value.
        if self.kind == "raw":
            return [{"values": row} for row in values.reshape(values.shape[0], -1).tolist()]
        if self.kind == "classification":
            values = values.reshape(values.shape[0], -1)
            labels = self.labels
            predictions = []
            # One argsort for the batch orders each row as a 1-D argsort of that row would (ties included).
            for row, order in zip(values.tolist(), np.argsort(-values, axis=1)[:, : self.top_k].tolist()):
                top = [{"label": labels[j], "probability": round(row[j], 6)} for j in order]
                predictions.append({"label": top[0]["label"], "probability": top[0]["probability"], "top": top})
            return predictions
        rows = values.tolist()
        if len(self.names) == 1:
            return [{self.names[0]: row[0]} for row in rows]
        return [dict(zip(self.names, row)) for row in rows]
