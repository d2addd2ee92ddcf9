"""TensorFlow, imported lazily and always with tf-keras (Keras 2), which tensorflow-model-optimization requires."""

from __future__ import annotations

import os
from typing import Any


def tensorflow() -> Any:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep CUDA/oneDNN notices out of the user's terminal
    import tensorflow as tf

    return tf


def keras() -> Any:
    tensorflow()
    import tf_keras

    return tf_keras


def load_keras_model(path: str, trusted: bool | None = None) -> Any:
    """Load a Keras model file: tf-keras (Keras 2) first, as edgemaas trains; Keras 3 files fall back to keras.

    `safe_mode` refuses Python code stored in the file unless the user trusted it (`--trust-model-code`). With
    `trusted=None` the choice recorded in the manifest beside the file decides (edgemaas/model_safety.py checks
    legacy .h5 files, where tf-keras ignores safe_mode, before they get here).
    """
    if trusted is None:
        trusted = trusted_code(path)
    try:
        return keras().models.load_model(path, compile=False, safe_mode=not trusted)
    except Exception:
        import keras as keras3

        return keras3.models.load_model(path, compile=False, safe_mode=not trusted)


def trusted_code(path: str) -> bool:
    """Whether the user trusted the code in this model file (recorded in the manifest beside it)."""
    import json
    from pathlib import Path

    try:
        manifest = json.loads((Path(path).parent / "manifest.json").read_text())
    except (FileNotFoundError, ValueError):
        return False
    return bool(manifest.get("provenance", {}).get("trust_model_code"))
