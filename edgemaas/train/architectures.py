"""The four built-in architectures from our founding document, in tf-keras (Keras 2, for TF-MOT).

Recurrent layers are unrolled: sequences here are short, and unrolled GRUs convert to full-int8 TFLite, where the
tensor-list ops of a symbolic loop do not.
"""

from __future__ import annotations

from typing import Any, Callable


def linear(input_shape: list[int], outputs: int, **_: Any) -> Any:
    """Linear regression: one Dense unit, nothing else."""
    keras = _keras()
    inputs = keras.Input(shape=input_shape, name="features")
    return keras.Model(inputs, keras.layers.Dense(outputs, name="linear")(inputs), name="linear")


def cnn(input_shape: list[int], outputs: int, filters: int = 16, dense_units: int = 64, **_: Any) -> Any:
    """Conv2D / MaxPooling / Dense classifier for small grey images (H, W)."""
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Reshape((*input_shape, 1))(inputs) if len(input_shape) == 2 else inputs
    x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(filters * 2, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense_units, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(outputs, activation="softmax", name="probabilities")(x), name="cnn")


def rnn(input_shape: list[int], outputs: int, units: int = 32, **_: Any) -> Any:
    """GRU sequence model: a window of a univariate series -> the next value."""
    keras = _keras()
    inputs = keras.Input(shape=input_shape, name="window")
    x = keras.layers.Reshape((input_shape[0], 1))(inputs)
    x = keras.layers.GRU(units, unroll=True)(x)
    return keras.Model(inputs, keras.layers.Dense(outputs, name="forecast")(x), name="rnn")


def nlp(input_shape: list[int], outputs: int, vocabulary_size: int = 1000, embedding_dim: int = 32,
        units: int = 32, **_: Any) -> Any:
    """Text classifier: Embedding -> GRU -> Dense softmax, over token ids made by edgemaas.runtime.text."""
    keras = _keras()
    inputs = keras.Input(shape=input_shape, name="tokens", dtype="int32")
    x = keras.layers.Embedding(vocabulary_size, embedding_dim)(inputs)
    x = keras.layers.GRU(units, unroll=True)(x)
    return keras.Model(inputs, keras.layers.Dense(outputs, activation="softmax", name="probabilities")(x),
                       name="nlp")


BUILTIN: dict[str, Callable[..., Any]] = {"linear": linear, "cnn": cnn, "rnn": rnn, "nlp": nlp}


def _keras() -> Any:
    from edgemaas.tf import keras

    return keras()
