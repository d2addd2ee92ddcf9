"""Real values to one tensor's dtype and back: quantize with its scale and zero point, or just cast."""

from __future__ import annotations

import numpy as np

from .manifest import TensorSpec


class TensorCodec:
    """Float arrays to one tensor's dtype and back: quantize with its scale and zero point, or just cast.

    The textbook `clip(round(x / scale + zero_point))`, with the constants looked up once and the clip as
    minimum/maximum (np.clip costs more in Python than in arithmetic), each step a new array (on a few values, `out=`
    costs more than it saves): on a single sample numpy's per-call cost is most of the work.
    """

    def __init__(self, spec: TensorSpec) -> None:
        self.dtype = np.dtype(spec.dtype)
        self.quantized = spec.quantized
        if self.quantized:
            info = np.iinfo(self.dtype)
            # (scale, zero point, low, high): as Python numbers numpy casts them to the array's float type on every
            # call, so prepared float32 arrays get them as float32 scalars made once (same values, less work).
            self._numbers = (spec.scale, spec.zero_point, int(info.min), int(info.max))
            self._float32 = tuple(np.float32(n) for n in self._numbers)

    def encode(self, array: np.ndarray) -> np.ndarray:
        if not (self.quantized and array.dtype.kind == "f"):
            return array.astype(self.dtype, copy=False)
        scale, zero_point, low, high = self._float32 if array.dtype == np.float32 else self._numbers
        with np.errstate(over="ignore"):  # values beyond the int range are clipped just below
            q = np.rint(array / scale + zero_point)  # np.round without decimals: half to even
        return np.maximum(np.minimum(q, high), low).astype(self.dtype)

    def decode(self, array: np.ndarray) -> np.ndarray:
        if not self.quantized:
            return array.astype(np.float32, copy=False)
        scale, zero_point, _, _ = self._float32
        return (array.astype(np.float32) - zero_point) * scale
