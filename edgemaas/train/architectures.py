"""The five built-in architectures from our founding document, in tf-keras (Keras 2, for TF-MOT).

Recurrent layers are unrolled: sequences here are short, and unrolled GRUs convert to full-int8 TFLite, where the
tensor-list ops of a symbolic loop do not.

The attention model uses Keras' own layers only (Dense, Dot, Softmax, LayerNormalization, Embedding), so its `.keras`
file loads in safe mode with no custom class to register in every process that reads it (compression passes, the
benchmark worker), and TF-MOT, tf2onnx and the TFLite converter all see layers they know.
"""

from __future__ import annotations

import math
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


def attention(input_shape: list[int], outputs: int, vocabulary_size: int = 1000, embedding_dim: int = 32,
              heads: int = 2, feed_forward: int = 64, blocks: int = 1, **_: Any) -> Any:
    """Text classifier: token + position embeddings -> transformer encoder block(s) -> mean pooling -> softmax.

    Each block is post-norm, as in "Attention Is All You Need": x = LayerNorm(x + SelfAttention(x)), then
    x = LayerNorm(x + Dense(Dense(x, relu))).
    """
    keras = _keras()
    layers = keras.layers
    from edgemaas.tf import tensorflow

    tf = tensorflow()
    inputs = keras.Input(shape=input_shape, name="tokens", dtype="int32")
    x = layers.Embedding(vocabulary_size, embedding_dim, name="token_embedding")(inputs)
    # Learned absolute positions: ids 0..length-1, one row each, added to every sequence of the batch. Written as
    # tensor ops (saved by name, not as Python code), so the file still loads in safe mode; the ids depend on the
    # input's shape only, so TensorFlow Lite Micro's packer folds them into a constant.
    positions = layers.Embedding(int(input_shape[0]), embedding_dim, name="position_embedding")(
        tf.range(tf.shape(inputs)[1]))
    x = x + positions
    for block in range(1, blocks + 1):
        attended = self_attention(x, heads, embedding_dim, f"attention_{block}")
        x = layers.LayerNormalization(epsilon=1e-6, name=f"attention_norm_{block}")(layers.Add()([x, attended]))
        hidden = layers.Dense(feed_forward, activation="relu", name=f"feed_forward_{block}")(x)
        hidden = layers.Dense(embedding_dim, name=f"feed_forward_out_{block}")(hidden)
        x = layers.LayerNormalization(epsilon=1e-6, name=f"feed_forward_norm_{block}")(layers.Add()([x, hidden]))
    x = layers.GlobalAveragePooling1D(name="pooling")(x)
    return keras.Model(inputs, layers.Dense(outputs, activation="softmax", name="probabilities")(x),
                       name="attention")


def self_attention(x: Any, heads: int, width: int, name: str) -> Any:
    """Multi-head self-attention written from the formula with plain Keras layers: per head,
    a = softmax(Q K^T / sqrt(d)) (the founding document's a_ij = exp(s(x_i, x_j)) / sum_j exp(s(x_i, x_j)), with s
    the scaled dot product), then a V; the heads are concatenated and projected back to `width`.

    Not keras.layers.MultiHeadAttention: TF-MOT has no QAT rule for it, and a clustered-then-stripped
    MultiHeadAttention saves a file tf-keras cannot load back ("expected 0 variables, but received 4"). Here every
    weight sits in a Dense layer, which pruning, clustering and QAT all handle, and each op is one TFLite builtin
    (FULLY_CONNECTED, BATCH_MATMUL, MUL, SOFTMAX, CONCATENATION) that TensorFlow Lite Micro also runs.
    """
    layers = _keras().layers
    size = width // heads
    outputs = []
    for head in range(1, heads + 1):
        query = layers.Dense(size, name=f"{name}_query_{head}")(x)
        key = layers.Dense(size, name=f"{name}_key_{head}")(x)
        value = layers.Dense(size, name=f"{name}_value_{head}")(x)
        scores = layers.Dot(axes=2, name=f"{name}_scores_{head}")(
            [layers.Rescaling(1.0 / math.sqrt(size), name=f"{name}_scale_{head}")(query), key])
        weights = layers.Softmax(axis=-1, name=f"{name}_softmax_{head}")(scores)
        outputs.append(layers.Dot(axes=(2, 1), name=f"{name}_mix_{head}")([weights, value]))
    joined = layers.Concatenate(name=f"{name}_heads")(outputs) if heads > 1 else outputs[0]
    return layers.Dense(width, name=f"{name}_output")(joined)


BUILTIN: dict[str, Callable[..., Any]] = {"linear": linear, "cnn": cnn, "rnn": rnn, "nlp": nlp,
                                          "attention": attention}


def _keras() -> Any:
    from edgemaas.tf import keras

    return keras()
