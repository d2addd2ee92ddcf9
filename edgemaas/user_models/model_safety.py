"""Code inside a user's Keras file runs only when the user says they trust it.

A Keras `Lambda` layer stores a Python function (marshalled bytecode) in the model file, and loading the model runs
it. Keras refuses that in `safe_mode` for `.keras` files, but tf-keras ignores `safe_mode` for legacy `.h5` files, so
edgemaas reads the model's architecture config itself, without TensorFlow, before anything loads the file.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Iterator

from edgemaas.errors import UserError

TRUST_FLAG = "--trust-model-code"


def code_layers(path: Path, fmt: str) -> list[str]:
    """Names of the layers in a .keras or .h5 file that carry Python code (Lambda layers and stored functions)."""
    config = _architecture(path, fmt)
    if config is None:
        return []
    return sorted({_describe(layer) for node, layer in _walk(config, None) if _carries_code(node)})


def check_model_code(path: Path, fmt: str, trusted: bool) -> None:
    """Refuse a Keras file that would run code from inside itself, unless the user trusts its source."""
    if trusted or fmt not in ("keras", "h5"):
        return
    found = code_layers(path, fmt)
    if found:
        raise UserError(f"{path}: this model file contains Python code that would run when it is loaded "
                        f"({', '.join(found)}). Load it only if you trust where it came from: pass {TRUST_FLAG} "
                        "(or set model.trust_code: true in the spec); or rebuild the model without Lambda layers.")


def _architecture(path: Path, fmt: str) -> Any:
    try:
        if fmt == "keras":
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        import h5py

        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
            if raw is None:
                return None  # weights only: no architecture, nothing to run
            return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: cannot read this {fmt} file's architecture ({exc}); is it a complete Keras "
                        "model file?") from None


def _walk(node: Any, layer: dict[str, Any] | None) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Every dict in the config, with the nearest enclosing layer record (a dict with a class_name)."""
    if isinstance(node, dict):
        layer = node if "class_name" in node else layer
        yield node, layer
        for value in node.values():
            yield from _walk(value, layer)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value, layer)


def _carries_code(node: dict[str, Any]) -> bool:
    if node.get("class_name") == "Lambda":
        return True
    return node.get("function_type") == "lambda" or node.get("output_shape_type") == "lambda"


def _describe(layer: dict[str, Any] | None) -> str:
    layer = layer or {}
    config = layer.get("config") if isinstance(layer.get("config"), dict) else layer
    name = config.get("name") or layer.get("name") or "?"
    return f"{layer.get('class_name', 'a')} layer {name!r}"
