"""Larger Keras models the cost benchmark (benchmarks/compression_cost.py) builds itself, with random weights: their
latency and cost are what matters there, and parity with the float model is their metric. A job for
edgemaas.isolate (TensorFlow stays out of the caller's process)."""

from __future__ import annotations

from typing import Any


def build_larger(name: str, path: str) -> dict[str, Any]:
    """Job (child process): a larger Keras model with random weights, saved to `path`; returns its input shape."""
    from edgemaas.tf import keras

    k = keras()
    k.utils.set_random_seed(0)
    if name == "mobilenetv2":
        model = k.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)
    else:  # ResNet-8: three residual stages of one block each, as in the CIFAR-10 benchmarks
        inputs = k.Input((32, 32, 3))
        x = k.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
        for filters, stride in ((16, 1), (32, 2), (64, 2)):
            y = k.layers.Conv2D(filters, 3, strides=stride, padding="same", activation="relu")(x)
            y = k.layers.Conv2D(filters, 3, padding="same")(y)
            if stride != 1 or x.shape[-1] != filters:
                x = k.layers.Conv2D(filters, 1, strides=stride)(x)
            x = k.layers.Activation("relu")(k.layers.Add()([x, y]))
        x = k.layers.GlobalAveragePooling2D()(x)
        model = k.Model(inputs, k.layers.Dense(10, activation="softmax")(x), name="resnet8")
    model.save(path)
    return {"shape": [int(d) for d in model.input_shape[1:]], "params": int(model.count_params())}
