"""The package-time smoke test of a model brought by a user: one request with concrete shapes, every output run.

Shapes come from `--input-shape NAME=1,3,160,256` (repeatable) or `--example-input FILE.npz` (arrays keyed by input
name); without them every dynamic dimension is set to 1 (and, when 1 cannot run, each input's later dynamic
dimensions to 16, 64, 256, 512 in turn), and the result says so. The run happens in a child process
through the shipped runtime (a model that crashes its interpreter cannot take the CLI down with it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgemaas.errors import StageFailed, UserError
from edgemaas.isolate import run_isolated
from edgemaas.runtime import Manifest, TensorSpec

_SHAPE = re.compile(r"^(?P<name>[^=]+)=(?P<dims>\d+(?:\s*[,x]\s*\d+)*|)$")


@dataclass
class SmokeResult:
    outputs: list[tuple[str, list[int], str]]  # (name, shape, dtype) of every output, in the model's order
    inputs: list[tuple[str, list[int], str]]
    notes: list[str] = field(default_factory=list)  # what was assumed (dynamic dimensions set to 1)

    def lines(self) -> list[str]:
        shown = ", ".join(f"{name} {shape} {dtype}" for name, shape, dtype in self.outputs)
        return [*self.notes, f"smoke test: {len(self.outputs)} output(s): {shown}"]


def parse_input_shapes(values: list[str] | tuple[str, ...]) -> dict[str, list[int]]:
    """["images=1,3,160,256", "sr="] -> {"images": [1, 3, 160, 256], "sr": []} (an empty list: a 0-d input)."""
    shapes: dict[str, list[int]] = {}
    for value in values:
        found = _SHAPE.match(value.strip())
        if not found:
            raise UserError(f"--input-shape {value!r}: expected NAME=D1,D2,... (e.g. images=1,3,160,256; sr= for a "
                            "0-d input)")
        name = found.group("name").strip()
        if name in shapes:
            raise UserError(f"--input-shape: {name!r} is given twice")
        shapes[name] = [int(d) for d in re.split(r"[,x]", found.group("dims").replace(" ", "")) if d]
    return shapes


def load_example(path: Path, manifest: Manifest) -> dict[str, np.ndarray]:
    """--example-input FILE.npz: one array per input, keyed by the input's name."""
    if not path.is_file():
        raise UserError(f"--example-input {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"--example-input {path}: not a readable .npz file ({exc})") from None
    _check_names(set(arrays), manifest.inputs, f"--example-input {path}")
    return arrays


# Sizes tried, in turn, for the dynamic dimensions after each input's first (its batch, kept at 1) when 1 cannot
# run: an STFT needs a few samples, a recogniser a few columns, a framer a multiple of its frame.
LADDER = (16, 64, 256, 512)
# Inputs with at most this many values keep them in the manifest (a sample rate, a threshold): examples and the
# shipped-runtime load check then send values the model is known to run on, not zeros.
KEPT_VALUES = 64


def smoke_request(manifest: Manifest, shapes: dict[str, list[int]] | None = None,
                  example: dict[str, np.ndarray] | None = None,
                  open_size: int = 1) -> tuple[dict[str, Any], list[str]]:
    """The tensor-form request the smoke test sends, and notes on what was assumed. Dynamic dimensions the caller
    left open are 1; with `open_size`, each input's first dynamic dimension is 1 and the others `open_size`."""
    shapes, example = shapes or {}, example or {}
    _check_names(set(shapes), manifest.inputs, "--input-shape")
    rng = np.random.default_rng(0)
    request: dict[str, Any] = {}
    notes: list[str] = []
    for spec in manifest.inputs:
        name = spec.public_name
        if name in example:
            array = np.asarray(example[name])
            _check_shape(spec, list(array.shape), f"--example-input: {name}")
        else:
            if name in shapes:
                shape = shapes[name]
                _check_shape(spec, shape, f"--input-shape {name}")
            else:
                shape = _open_shape(spec, open_size)
                if spec.dynamic:
                    # Parentheses, not brackets: a console that reads [word ...] as markup would drop them.
                    laddered = shape != _open_shape(spec, 1)
                    sizes = f"to 1 (the first) and {open_size} (1 could not run)" if laddered else "to 1"
                    notes.append(f"input {name} ({', '.join(map(str, spec.shown_dims()))}): dynamic dimensions set "
                                 f"{sizes} for the smoke test, shape {shape}; give --input-shape {name}=... for real "
                                 "sizes")
            array = _filler(spec, shape, rng)
        request[name] = array.tolist()
    return {"inputs": request}, notes


def _open_shape(spec: TensorSpec, open_size: int) -> list[int]:
    first = next((axis for axis, d in enumerate(spec.shape) if d < 0), None)
    return [d if d >= 0 else 1 if axis == first else open_size for axis, d in enumerate(spec.shape)]


def run_smoke(model_dir: Path, request: dict[str, Any], notes: list[str], timeout_s: float = 120) -> SmokeResult:
    """Run the request through the shipped runtime in a child process; every output must come back."""
    try:
        outputs, inputs = run_isolated(_smoke_job, str(model_dir), request, timeout=timeout_s)
    except StageFailed as exc:
        reason = str(exc).splitlines()[0].removeprefix("RequestError: ").rstrip(".")
        raise UserError(f"the package-time smoke test failed: {reason}; give concrete shapes with --input-shape "
                        "NAME=D1,D2,... or a request the model runs on with --example-input FILE.npz (values "
                        "matter too: a sample rate, a length)") from None
    return SmokeResult(outputs, inputs, notes)


def run_smoke_open(model_dir: Path, manifest: Manifest, shapes: dict[str, list[int]] | None = None,
                   example: dict[str, np.ndarray] | None = None) -> tuple[dict[str, Any], SmokeResult]:
    """The smoke test with every open dimension at 1, then, if that cannot run and some dimension after an input's
    first is open, at each size of LADDER in turn. The first failure's reason is the one reported."""
    request, notes = smoke_request(manifest, shapes, example)
    try:
        return request, run_smoke(model_dir, request, notes)
    except UserError as first_failure:
        given = set(shapes or {}) | set(example or {})
        open_specs = [s for s in manifest.inputs if s.public_name not in given]
        if not any(_open_shape(s, 2) != _open_shape(s, 1) for s in open_specs):
            raise
        for size in LADDER:
            request, notes = smoke_request(manifest, shapes, example, open_size=size)
            try:
                return request, run_smoke(model_dir, request, notes)
            except UserError:
                continue
        raise first_failure from None


def _smoke_job(model_dir: str, request: dict[str, Any]) -> tuple[list[tuple[str, list[int], str]], list[Any]]:
    from edgemaas.runtime import load_model

    model = load_model(model_dir)
    arrays = model.prepare_tensors(request["inputs"])
    outputs = model.run_tensors(arrays)
    return ([(t.name, list(a.shape), str(a.dtype)) for t, a in zip(model.tensor_outputs, outputs)],
            [(t.name, list(a.shape), str(a.dtype)) for t, a in zip(model.tensor_inputs, arrays)])


def _filler(spec: TensorSpec, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    """Plausible values: small floats, ones for integers (a count or a rate of 0 can divide by zero), true."""
    if spec.dtype == "bool":
        return np.ones(shape, dtype=bool)
    if spec.quantized or np.dtype(spec.dtype).kind == "f":
        return rng.uniform(0, 1, size=shape).astype(np.float32)
    return np.ones(shape, dtype=spec.dtype)


def _dims(spec: TensorSpec) -> str:
    return "[" + ", ".join(str(d) for d in spec.shown_dims()) + "]"


def _check_names(given: set[str], inputs: list[TensorSpec], option: str) -> None:
    names = [spec.public_name for spec in inputs]
    unknown = sorted(given - set(names))
    if unknown:
        raise UserError(f"{option}: {', '.join(unknown)} is not an input of this model; its inputs are "
                        f"{', '.join(names)}")


def _check_shape(spec: TensorSpec, shape: list[int], option: str) -> None:
    if len(shape) != len(spec.shape):
        raise UserError(f"{option}: shape {shape} has rank {len(shape)}; the input is {_dims(spec)}")
    for axis, (want, got) in enumerate(zip(spec.shape, shape)):
        if want >= 0 and want != got:
            raise UserError(f"{option}: dimension {axis} is {got}; the model fixes it at {want} "
                            f"({_dims(spec)})")
        if got <= 0:
            raise UserError(f"{option}: dimension {axis} is {got}; every dimension must be at least 1")


def smoke_imported(model_dir: Path, input_shapes: dict[str, list[int]] | None = None,
                   example_input: Path | None = None) -> list[str]:
    """`edgemaas package FILE`: the smoke test of the imported model, as lines to show (raises UserError)."""
    from edgemaas.runtime import read_manifest

    manifest = read_manifest(model_dir)
    example = load_example(example_input, manifest) if example_input is not None else None
    request, result = run_smoke_open(model_dir, manifest, input_shapes, example)
    # Recorded so describe's examples and later load checks use shapes (and, for small inputs such as a sample
    # rate, values) this model is known to run on.
    manifest.example_shapes = {name: shape for name, shape, _ in result.inputs}
    manifest.example_values = {name: value for name, value in request["inputs"].items()
                               if int(np.prod(manifest.example_shapes.get(name, [KEPT_VALUES + 1]))) <= KEPT_VALUES}
    manifest.save(model_dir)
    return result.lines()
