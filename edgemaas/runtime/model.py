"""A served model: manifest + verified model file + backend, with validation, quantization and processing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Backend, open_backend
from .errors import ModelLoadError, RequestError
from .manifest import Manifest, TensorSpec, read_manifest, read_verified_model
from .processing import InputProcessor, OutputProcessor


class ServingModel:
    def __init__(self, manifest: Manifest, backend: Backend) -> None:
        self.manifest = manifest
        self.backend = backend
        if len(manifest.preprocessing) != len(backend.inputs):
            raise ModelLoadError(f"manifest describes {len(manifest.preprocessing)} inputs; the model has "
                                 f"{len(backend.inputs)}")
        self._inputs = [InputProcessor(step, manifest.limits) for step in manifest.preprocessing]
        self._output = OutputProcessor(manifest.postprocessing)
        # Quantization constants worked out once per tensor, not per request.
        self._encoders = [TensorCodec(spec) for spec in backend.inputs]
        self._decoders = [TensorCodec(spec) for spec in backend.outputs]

    @property
    def name(self) -> str:
        return self.manifest.name

    def describe(self) -> dict[str, Any]:
        """What a caller needs to form a request (served on GET by the handler)."""
        return {
            "model": self.manifest.name, "variant": self.manifest.variant, "task": self.manifest.task,
            "inputs": [p.describe() for p in self._inputs], "max_batch": self._inputs[0].max_batch,
            "sha256": self.manifest.model.sha256, "backend": self.backend.name,
        }

    def prepare(self, inputs: Any) -> list[np.ndarray]:
        """Validate a request's `inputs` and turn it into preprocessed float/token arrays, one per model input.

        A single-input model takes a list (the batch); a model with several inputs takes an object keyed by input name.
        """
        if len(self._inputs) == 1:
            return [self._inputs[0](inputs, "inputs")]
        if not isinstance(inputs, dict):
            names = ", ".join(p.field for p in self._inputs)
            raise RequestError("inputs", f"this model has several inputs; send an object with keys {names}")
        unknown = set(inputs) - {p.field for p in self._inputs}
        if unknown:
            raise RequestError("inputs", f"unknown input(s) {', '.join(sorted(unknown))}")
        arrays = []
        for processor in self._inputs:
            if processor.field not in inputs:
                raise RequestError(f"inputs.{processor.field}", "missing")
            arrays.append(processor(inputs[processor.field], f"inputs.{processor.field}"))
        if len({a.shape[0] for a in arrays}) > 1:
            raise RequestError("inputs", "every input must carry the same number of samples")
        return arrays

    def transform(self, batches: list[Any]) -> list[np.ndarray]:
        """Preprocess trusted batches (arrays from a dataset) without request validation, for evaluation."""
        return [processor.transform(batch) for processor, batch in zip(self._inputs, batches)]

    def infer(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Run preprocessed arrays through the backend, quantizing inputs and dequantizing outputs as needed."""
        feeds = [codec.encode(array) for codec, array in zip(self._encoders, arrays)]
        outputs = self.backend.run(feeds)
        return [codec.decode(out) for codec, out in zip(self._decoders, outputs)]

    def output_values(self, arrays: list[np.ndarray]) -> np.ndarray:
        """Model outputs in the caller's units (probabilities or regression values), for evaluation."""
        return self._output.values(self.infer(arrays)[0])

    def predict(self, inputs: Any) -> list[dict[str, Any]]:
        return self._output(self.infer(self.prepare(inputs))[0])


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


def _to_tensor(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    return TensorCodec(spec).encode(array)


def _from_tensor(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    return TensorCodec(spec).decode(array)


def load_model(directory: str | os.PathLike[str], num_threads: int | None = None) -> ServingModel:
    """Load manifest.json and its model from `directory`, verifying the sha256 before anything runs."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    content = read_verified_model(directory, manifest)
    return ServingModel(manifest, open_backend(manifest.model.format, content, num_threads))
