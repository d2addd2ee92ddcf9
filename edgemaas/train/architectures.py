"""The five built-in architectures from our founding document, in tf-keras (Keras 2, for TF-MOT).

Recurrent layers are unrolled: sequences here are short, and unrolled GRUs convert to full-int8 TFLite, where the
tensor-list ops of a symbolic loop do not.

The attention model uses Keras' own layers only (MultiHeadAttention, LayerNormalization, Embedding, Dense), so its
`.keras` file loads in safe mode with no custom class to register in every process that reads it (compression passes,
the benchmark worker), and TF-MOT, tf2onnx and the TFLite converter all see layers they know.
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


def attention(input_shape: list[int], outputs: int, vocabulary_size: int = 1000, embedding_dim: int = 32,
              heads: int = 2, feed_forward: int = 64, blocks: int = 1, **_: Any) -> Any:
    """Text classifier: token + position embeddings -> transformer encoder block(s) -> mean pooling -> softmax.

    Each block is post-norm, as in "Attention Is All You Need": x = LayerNorm(x + MultiHeadAttention(x, x)), then
    x = LayerNorm(x + Dense(Dense(x, relu))). Keras' MultiHeadAttention computes softmax(Q K^T / sqrt(d)) V per head,
    the founding document's a_i = exp(s(x_i, x_j)) / sum_j exp(s(x_i, x_j)) with s the scaled dot product.
    """
    keras = _keras()
    layers = keras.layers
    from edgemaas.tf import tensorflow

    tf = tensorflow()
    length = int(input_shape[0])
    inputs = keras.Input(shape=input_shape, name="tokens", dtype="int32")
    x = layers.Embedding(vocabulary_size, embedding_dim, name="token_embedding")(inputs)
    # Learned absolute positions. The ids are 0..length-1 for every row; written as tensor ops (saved by name, not as
    # Python code), so the file still loads in safe mode.
    positions = tf.zeros_like(inputs) + tf.range(length, dtype="int32")
    x = layers.Add(name="with_positions")([x, layers.Embedding(length, embedding_dim, name="position_embedding")(positions)])
    for b in range(1, blocks + 1):
        attended = layers.MultiHeadAttention(heads, embedding_dim // heads, name=f"self_attention_{b}")(x, x)
        x = layers.LayerNormalization(epsilon=1e-6, name=f"attention_norm_{b}")(layers.Add()([x, attended]))
        hidden = layers.Dense(feed_forward, activation="relu", name=f"feed_forward_{b}")(x)
        hidden = layers.Dense(embedding_dim, name=f"feed_forward_out_{b}")(hidden)
        x = layers.LayerNormalization(epsilon=1e-6, name=f"feed_forward_norm_{b}")(layers.Add()([x, hidden]))
    x = layers.GlobalAveragePooling1D(name="pooling")(x)
    return keras.Model(inputs, layers.Dense(outputs, activation="softmax", name="probabilities")(x),
                       name="attention")


BUILTIN: dict[str, Callable[..., Any]] = {"linear": linear, "cnn": cnn, "rnn": rnn, "nlp": nlp,
                                          "attention": attention}


def _keras() -> Any:
    from edgemaas.tf import keras

    return keras()
