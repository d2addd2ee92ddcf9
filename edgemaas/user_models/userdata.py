"""Calibration and evaluation data the user brings for a model: .npy, .npz or CSV, checked against the model.

Every mistake names the file, what it holds and what the model expects.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from edgemaas.errors import UserError
from edgemaas.fsutil import atomic_path
from edgemaas.runtime import Manifest
from edgemaas.workspace import Workspace


def load_arrays(path: Path, sample_shape: list[int], role: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, y or None) from a file. .npz: arrays x and y (or x_test/y_test, or the first array); .npy: x only;
    CSV: numeric rows of the input features, plus one last column for the target when there is one."""
    option = f"--{role}-data"
    if not path.exists():
        raise UserError(f"{option} {path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            x, y = np.load(path, allow_pickle=False), None
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                keys = data.files
                xk = next((k for k in ("x", "x_test", "inputs") if k in keys), keys[0] if keys else None)
                yk = next((k for k in ("y", "y_test", "labels", "targets") if k in keys), None)
                if xk is None:
                    raise UserError(f"{option} {path}: the .npz holds no arrays")
                x, y = data[xk], (data[yk] if yk else None)
        elif suffix == ".csv":
            x, y = _csv(path, sample_shape, option)
        else:
            raise UserError(f"{option} {path}: expected a .npy, .npz or .csv file")
    except (ValueError, OSError) as exc:
        raise UserError(f"{option} {path}: cannot read it: {exc}") from None
    if x.dtype.kind not in "biuf":
        raise UserError(f"{option} {path}: inputs have dtype {x.dtype}; expected numbers (float or int)")
    expected = tuple(sample_shape)
    if x.ndim == len(expected) and x.shape == expected:
        x = x[None]
    if tuple(x.shape[1:]) != expected:
        raise UserError(f"{option} {path}: inputs have shape {list(x.shape)}; the model takes "
                        f"[N, {', '.join(map(str, expected))}]")
    if len(x) == 0:
        raise UserError(f"{option} {path}: holds no samples")
    if not np.all(np.isfinite(x)):
        raise UserError(f"{option} {path}: inputs contain NaN or Infinity")
    if y is not None and len(y) != len(x):
        raise UserError(f"{option} {path}: {len(x)} inputs but {len(y)} targets")
    return x.astype(np.float32), y


def _csv(path: Path, sample_shape: list[int], option: str) -> tuple[np.ndarray, np.ndarray | None]:
    if len(sample_shape) != 1:
        raise UserError(f"{option} {path}: CSV holds tabular data, but the model takes samples of shape "
                        f"{sample_shape}; use .npy or .npz")
    with open(path, newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if rows and not _numeric(rows[0]):
        rows = rows[1:]  # a header
    features = sample_shape[0]
    widths = {len(row) for row in rows}
    if not rows or len(widths) != 1 or widths.pop() not in (features, features + 1):
        raise UserError(f"{option} {path}: expected {features} columns (features) or {features + 1} (features and "
                        "a last target column) in every row")
    table = np.asarray(rows, dtype=np.float64)
    if table.shape[1] == features:
        return table, None
    return table[:, :features], table[:, features]


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def dataset_for_model(manifest: Manifest, ws: Workspace, calibration: Path | None,
                      evaluation: Path | None) -> tuple[Path, str]:
    """Write build/<name>/data.npz from the user's files; return it and a description of the eval data."""
    if calibration is None and evaluation is None:
        raise UserError("compressing a model you bring needs data: give --calibration-data (inputs like the ones "
                        "it will serve) and, to measure accuracy, --eval-data (inputs with targets)")
    if needs_named_arrays(manifest):
        return _named_dataset(manifest, ws, calibration, evaluation)
    shape = manifest.preprocessing[0]["shape"]
    x_cal, _ = load_arrays(calibration, shape, "calibration") if calibration else (None, None)
    x_eval, y_eval = load_arrays(evaluation, shape, "eval") if evaluation else (None, None)
    arrays = {"x_train": x_cal if x_cal is not None else x_eval, "x_test": x_eval if x_eval is not None else x_cal}
    if y_eval is not None:
        arrays["y_test"] = y_eval if y_eval.dtype.kind in "iu" or not _integral(y_eval) else y_eval.astype(np.int64)
        description = f"{evaluation} ({len(x_eval)} labelled samples)"
    else:
        source = evaluation or calibration
        description = f"{source} ({len(arrays['x_test'])} samples, no labels: agreement with the original model)"
    path = ws.data_file(manifest.name)
    with atomic_path(path, keep_suffix=True) as tmp:  # numpy insists on the .npz suffix
        np.savez_compressed(tmp, **arrays)
    return path, description


# Keys of build/<name>/data.npz for a model with several inputs or dynamic shapes: "<prefix><input name>".
CALIBRATION_PREFIX, EVAL_PREFIX = "calibration:", "eval:"


def needs_named_arrays(manifest: Manifest) -> bool:
    """Several inputs, or sample shapes the batch form cannot describe: data comes as one array per input name."""
    return "batch" not in (manifest.request_forms or ["batch"]) or len(manifest.inputs) != 1


def _named_dataset(manifest: Manifest, ws: Workspace, calibration: Path | None,
                   evaluation: Path | None) -> tuple[Path, str]:
    arrays = {}
    for path, role in ((calibration, "calibration"), (evaluation, "eval")):
        if path is not None:
            arrays[role] = load_named_arrays(path, manifest, role)
    cal = arrays.get("calibration", arrays.get("eval"))
    ev = arrays.get("eval", cal)
    names = [spec.public_name for spec in manifest.inputs]
    out = {**{CALIBRATION_PREFIX + n: cal[n] for n in names}, **{EVAL_PREFIX + n: ev[n] for n in names}}
    path = ws.data_file(manifest.name)
    with atomic_path(path, keep_suffix=True) as tmp:  # numpy insists on the .npz suffix
        np.savez_compressed(tmp, **out)
    source = evaluation or calibration
    return path, (f"{source} (one feed of inputs {', '.join(names)}; labels unused: parity with the original "
                  "over every output)")


def load_named_arrays(path: Path, manifest: Manifest, role: str) -> dict[str, np.ndarray]:
    """--calibration-data/--eval-data for a model with several inputs or dynamic shapes: a .npz with one array per
    input, keyed by the input's name, each with a leading sample axis; checked against the model's tensors."""
    option = f"--{role}-data"
    if path.suffix.lower() != ".npz" or not path.is_file():
        raise UserError(f"{option} {path}: this model has inputs {_input_list(manifest)}; give a .npz file with one "
                        "array per input, keyed by the input's name")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"{option} {path}: cannot read it: {exc}") from None
    names = [spec.public_name for spec in manifest.inputs]
    missing = [n for n in names if n not in arrays]
    unknown = sorted(set(arrays) - set(names) - {"y", "labels", "targets"})
    if missing or unknown:
        problem = f"missing input(s) {', '.join(missing)}" if missing else f"unknown array(s) {', '.join(unknown)}"
        raise UserError(f"{option} {path}: {problem}; it holds {', '.join(sorted(arrays)) or 'no arrays'}, the "
                        f"model takes one array per input: {', '.join(names)}")
    for spec in manifest.inputs:
        array = arrays[spec.public_name]
        dims = spec.shown_dims()
        if array.dtype.kind not in "biuf" or (array.dtype.kind == "f" and not np.all(np.isfinite(array))):
            raise UserError(f"{option} {path}: {spec.public_name} holds {array.dtype} values that are not finite "
                            "numbers")
        if array.ndim != len(spec.shape) or any(w >= 0 and w != g for w, g in zip(spec.shape, array.shape)):
            raise UserError(f"{option} {path}: {spec.public_name} has shape {list(array.shape)}; the model takes "
                            f"[{', '.join(map(str, dims))}]")
    return arrays


def _input_list(manifest: Manifest) -> str:
    return ", ".join(f"{s.public_name} [{', '.join(map(str, s.shown_dims()))}]" for s in manifest.inputs)


def _integral(y: np.ndarray) -> bool:
    """Float targets that are all whole numbers, as class ids saved from a CSV are."""
    return bool(np.all(np.mod(y, 1) == 0)) and y.ndim == 1 and len(np.unique(y)) <= max(2, len(y) // 2)
