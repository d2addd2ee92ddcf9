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
