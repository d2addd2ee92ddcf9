"""A served model: manifest + verified model file + backend, with validation, quantization and processing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from . import oip
from .backends import Backend, open_backend
from .codec import TensorCodec
from .errors import ModelLoadError, RequestError
from .manifest import Manifest, TensorSpec, read_manifest, read_verified_model
from .processing import InputProcessor, OutputProcessor, json_type
from .tensors import DEFAULT_MAX_INPUT_ELEMENTS, TensorInput, TensorOutput, check_shared_dims


BATCH, TENSORS = "batch", "tensors"


class ServingModel:
    def __init__(self, manifest: Manifest, backend: Backend) -> None:
        self.manifest = manifest
        self.backend = backend
        self.forms = list(manifest.request_forms) or [BATCH]  # manifests before request_forms: batch only
        unknown = set(self.forms) - {BATCH, TENSORS}
        if unknown:
            raise ModelLoadError(f"manifest names request form(s) {', '.join(sorted(unknown))} this runtime does "
                                 "not serve; update edgemaas")
        if BATCH in self.forms and len(manifest.preprocessing) != len(backend.inputs):
            raise ModelLoadError(f"manifest describes {len(manifest.preprocessing)} inputs; the model has "
                                 f"{len(backend.inputs)}")
        self._inputs = [InputProcessor(step, manifest.limits) for step in manifest.preprocessing]
        self._output = OutputProcessor(manifest.postprocessing) if BATCH in self.forms else None
        # Quantization constants worked out once per tensor, not per request.
        self._encoders = [TensorCodec(spec) for spec in backend.inputs]
        self._decoders = [TensorCodec(spec) for spec in backend.outputs]
        # Every model also answers in tensors (its own names, every output): on the tensor form and the OIP.
        self.tensor_inputs = [TensorInput(spec) for spec in backend.inputs]
        # tensor_outputs[k] is the backend's output output_positions[k]: callers get the model's declared order (a
        # TFLite signature's), while code matching a converted file's outputs by position uses the file's order.
        self.output_positions = list(getattr(backend, "output_order", range(len(backend.outputs))))
        self.tensor_outputs = [TensorOutput(backend.outputs[i]) for i in self.output_positions]
        self.max_input_elements = int(manifest.limits.get("max_input_elements", DEFAULT_MAX_INPUT_ELEMENTS))

    @property
    def name(self) -> str:
        return self.manifest.name

    def describe(self) -> dict[str, Any]:
        """What a caller needs to form a request (served on GET by the handler)."""
        description: dict[str, Any] = {
            "model": self.manifest.name, "variant": self.manifest.variant, "task": self.manifest.task,
            "inputs": [p.describe() for p in self._inputs] if BATCH in self.forms else
            [t.describe() for t in self.tensor_inputs],
            "max_batch": int(self.manifest.limits.get("max_batch", 256)),
            "sha256": self.manifest.model.sha256, "backend": self.backend.name,
        }
        description.update(self.describe_tensors())
        return description

    def max_request_numbers(self) -> int:
        """How many numbers (or characters) the largest legal request carries: max_batch samples in the batch
        form, max_input_elements in the tensor forms (a dynamic model's shapes are open, its size is not)."""
        tensors = self.max_input_elements if TENSORS in self.forms or len(self.forms) == 0 else 0
        per_sample = 0
        for processor in self._inputs if BATCH in self.forms else []:
            if processor.kind == "text":
                per_sample += processor.max_text_chars
            else:
                per_sample += int(np.prod(processor.shape)) if processor.shape else 1
        return max(tensors, per_sample * int(self.manifest.limits.get("max_batch", 256)))

    def describe_tensors(self) -> dict[str, Any]:
        """The tensor view: every input and output with name, dtype and shape (dynamic dimensions named), the
        request forms with an example each, and the file's own metadata."""
        tensors: dict[str, Any] = {
            "forms": self.forms + ["oip"],
            "tensors": {"inputs": [t.describe() for t in self.tensor_inputs],
                        "outputs": [t.describe() for t in self.tensor_outputs]},
            "max_input_elements": self.max_input_elements,
            "examples": self.examples(),
        }
        if any(map(_preprocesses, self._inputs)):
            tensors["tensors_note"] = ("the tensor form and the Open Inference Protocol take the model's own tensors: "
                                       "the batch form's preprocessing (scaling, tokenising) is not applied")
        if self.backend.signature_key:
            tensors["signature"] = self.backend.signature_key
        if self.manifest.model_metadata or self.backend.metadata:
            tensors["metadata"] = self.manifest.model_metadata or self.backend.metadata
        return tensors

    def example_request(self) -> tuple[str, dict[str, Any]]:
        """(path, body) of a request this model answers, in full (no values described in words): for load checks."""
        route, body = next(iter(self.examples(full=True).items()))
        return route.split()[1], body

    def examples(self, full: bool = False) -> dict[str, Any]:
        """One request per accepted form, with open dimensions as the package-time smoke test ran them (else 1).
        Unless `full`, a tensor of more than EXAMPLE_VALUES values is described in words (describe stays small)."""
        known, values = self.manifest.example_shapes, self.manifest.example_values
        shapes = [list(known[t.name]) if t.name in known else [d if d >= 0 else 1 for d in t.shape]
                  for t in self.tensor_inputs]
        limit = None if full else EXAMPLE_VALUES
        # Values the smoke test ran for small inputs (a sample rate), else zeros.
        kept = {t.name: np.asarray(values[t.name], dtype=t.dtype) for t, shape in zip(self.tensor_inputs, shapes)
                if t.name in values and list(np.shape(values[t.name])) == shape}
        examples: dict[str, Any] = {}
        if TENSORS in self.forms:
            examples["POST /predict (tensors)"] = {"inputs": {
                t.name: kept[t.name].tolist() if t.name in kept else _example(shape, t.dtype, True, limit)
                for t, shape in zip(self.tensor_inputs, shapes)}}
        if BATCH in self.forms and self._inputs:
            samples = {p.field: ["turn on the lights"] if p.kind == "text" else [_example(p.shape, "float32", True, limit)]
                       for p in self._inputs}
            examples["POST /predict (batch)"] = {"inputs": next(iter(samples.values())) if len(samples) == 1
                                                 else samples}
        examples[f"POST /v2/models/{self.name}/infer"] = {"inputs": [
            {"name": t.name, "shape": shape, "datatype": oip.DATATYPES.get(t.dtype, t.dtype.upper()),
             "data": kept[t.name].reshape(-1).tolist() if t.name in kept else _example(shape, t.dtype, False, limit)}
            for t, shape in zip(self.tensor_inputs, shapes)]}
        return examples

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
        if self._output is None:
            raise RequestError("inputs", "this model takes named tensors, not a batch of samples: send "
                                         f"{{\"inputs\": {{{', '.join(repr(t.name) for t in self.tensor_inputs)}: "
                                         "...}}} (GET / shows an example)")
        return self._output(self.infer(self.prepare(inputs))[0])

    def prepare_tensors(self, inputs: Any) -> list[np.ndarray]:
        """The tensor form's `inputs` (an object keyed by input name) -> checked arrays in the model's order."""
        names = [t.name for t in self.tensor_inputs]
        if not isinstance(inputs, dict):
            raise RequestError("inputs", f"expected an object keyed by input name ({', '.join(names)}), got "
                                         f"{json_type(inputs)}")
        unknown = sorted(str(k) for k in inputs if k not in names)
        if unknown:
            shown = ", ".join(repr(k[:40]) for k in unknown[:5])
            raise RequestError("inputs", f"unknown input(s) {shown}; this model takes {', '.join(names)}")
        missing = [n for n in names if n not in inputs]
        if missing:
            raise RequestError("inputs", f"missing input(s) {', '.join(missing)}; this model takes "
                                         f"{', '.join(names)}")
        budget = self.max_input_elements
        arrays = []
        for tensor in self.tensor_inputs:
            array = tensor.from_nested(inputs[tensor.name], f"inputs.{tensor.name}", budget)
            budget -= array.size
            arrays.append(array)
        check_shared_dims(self.tensor_inputs, arrays, "inputs")
        return arrays

    def run_tensors(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Checked arrays -> every output in the caller's terms, in the model's order.

        The model may still refuse a shape its file leaves open (a length that must be a multiple of 4): the
        runtime's reason becomes a RequestError, since nothing but the request's shapes changed."""
        feeds = [t.to_model(a) for t, a in zip(self.tensor_inputs, arrays)]
        try:
            outputs = self.backend.run_exact(feeds)
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError, onnxruntime its own types
            shapes = ", ".join(f"{t.name} {list(a.shape)}" for t, a in zip(self.tensor_inputs, arrays))
            reason = " ".join(str(exc).split())
            half = len(reason) // 2
            if len(reason) % 2 == 0 and reason[:half] == reason[half:]:
                reason = reason[:half]  # LiteRT says it twice
            reason = reason[:300]
            raise RequestError("inputs", f"the model cannot run on these shapes ({shapes}): {reason}") from None
        return [t.from_model(outputs[i]) for t, i in zip(self.tensor_outputs, self.output_positions)]

    def predict_tensors(self, inputs: Any) -> dict[str, Any]:
        """The tensor form: every output by name with its shape and dtype, in the model's order."""
        outputs = self.run_tensors(self.prepare_tensors(inputs))
        return {t.name: {"shape": list(a.shape), "dtype": str(a.dtype), "data": a.tolist()}
                for t, a in zip(self.tensor_outputs, outputs)}


def to_tensor(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Real values -> the tensor's dtype (quantized when it is): what the runtime feeds the model."""
    return TensorCodec(spec).encode(array)


def from_tensor(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    return TensorCodec(spec).decode(array)


EXAMPLE_VALUES = 256


def _example(shape: list[int], dtype: str, nested: bool, limit: int | None = EXAMPLE_VALUES) -> Any:
    """Zeros of `shape` (nested lists, or flat for the OIP), or words saying what to send when over `limit`."""
    count = int(np.prod(shape)) if shape else 1
    if limit is not None and count > limit:
        layout = "nested lists" if nested else "a flat row-major list"
        return f"<{count} {dtype} values of shape {shape} as {layout}>"
    zeros = np.zeros(shape, dtype=dtype)
    return zeros.tolist() if nested else zeros.reshape(-1).tolist()


def _preprocesses(processor: InputProcessor) -> bool:
    """Whether the batch form changes what the caller sends before the model sees it."""
    return processor.kind == "text" or bool(processor.mean.any()) or bool((processor.std != 1).any())


def load_model(directory: str | os.PathLike[str], num_threads: int | None = None) -> ServingModel:
    """Load manifest.json and its model from `directory`, verifying the sha256 before anything runs."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    content = read_verified_model(directory, manifest)
    return ServingModel(manifest, open_backend(manifest.model.format, content, num_threads))
