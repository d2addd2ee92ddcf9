"""The serving benchmark's larger model: a MobileNetV2-style image classifier (inverted residual blocks with depthwise
convolutions, about 0.5M parameters) on 32x32x3 inputs, where batching matters. Random weights: what is measured is
serving, not accuracy. Built once with TensorFlow (in a child process, so the benchmark's own process stays small),
converted to a LiteRT float32 file with a dynamic batch, and given a manifest our runtime serves.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from edgemaas.errors import UserError
from edgemaas.runtime.manifest import SCHEMA

NAME = "mobilenet"
SHAPE = [32, 32, 3]
CLASSES = 10
MIN_PARAMS = 400_000
# Samples a request may carry: 32 images of 32x32x3 (a camera gateway's burst). With the built-ins' 256, our server's
# memory plan sizes a request at 31 MB of JSON and refuses to start under its default 512 MB budget.
MAX_BATCH = 32
# (expansion, output channels, repeats, first stride): MobileNetV2's table, cut down for 32x32 inputs.
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2), (6, 96, 2, 1), (6, 160, 1, 1))
_SCRIPT = r"""
import json, sys
import tensorflow as tf
layers = tf.keras.layers
blocks, shape, classes, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tf.keras.utils.set_random_seed(0)
inp = layers.Input(shape=shape, name="image")
x = layers.Conv2D(32, 3, strides=1, padding="same", use_bias=False)(inp)
x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
channels = 32
for expansion, out_ch, repeats, stride in blocks:
    for i in range(repeats):
        s = stride if i == 0 else 1
        y = x
        if expansion != 1:
            y = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(channels * expansion, 1, use_bias=False)(y)))
        y = layers.ReLU(6.0)(layers.BatchNormalization()(layers.DepthwiseConv2D(3, strides=s, padding="same",
                                                                                use_bias=False)(y)))
        y = layers.BatchNormalization()(layers.Conv2D(out_ch, 1, use_bias=False)(y))
        x = layers.Add()([x, y]) if s == 1 and channels == out_ch else y
        channels = out_ch
x = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(640, 1, use_bias=False)(x)))
x = layers.GlobalAveragePooling2D()(x)
x = layers.Dense(classes, activation="softmax")(x)
model = tf.keras.Model(inp, x)
converter = tf.lite.TFLiteConverter.from_keras_model(model)
open(out, "wb").write(converter.convert())
print(json.dumps({"params": int(model.count_params())}))
"""


def make_mobilenet(out_dir: Path) -> Path:
    """The variant folder (manifest.json + model.tflite) in `out_dir`, made once; reused while its model is there."""
    manifest_path = out_dir / "manifest.json"
    model_path = out_dir / "model.tflite"
    params_path = out_dir / "parameters.json"
    if manifest_path.exists() and model_path.exists():
        if json.loads(manifest_path.read_text())["limits"]["max_batch"] == MAX_BATCH:
            return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (model_path.exists() and params_path.exists()):
        done = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(BLOCKS), json.dumps(SHAPE), str(CLASSES),
                               str(model_path)], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise UserError(f"could not build the benchmark's MobileNetV2-style model: {done.stderr.strip()[-2000:]}")
        params_path.write_text(done.stdout.strip().splitlines()[-1] + "\n")
    params = json.loads(params_path.read_text())["params"]
    if params < MIN_PARAMS:
        raise UserError(f"the MobileNetV2-style model has {params} parameters, fewer than {MIN_PARAMS}")
    content = model_path.read_bytes()
    manifest = {
        "schema": SCHEMA, "name": NAME, "variant": "tflite-float32", "task": "classification",
        "model": {"file": "model.tflite", "format": "tflite", "sha256": hashlib.sha256(content).hexdigest(),
                  "size_bytes": len(content)},
        "inputs": [{"name": "serving_default_image:0", "shape": [-1, *SHAPE], "dtype": "float32", "scale": 0.0,
                    "zero_point": 0}],
        "outputs": [{"name": "StatefulPartitionedCall:0", "shape": [-1, CLASSES], "dtype": "float32",
                     "scale": 0.0, "zero_point": 0}],
        "preprocessing": [{"input": "image", "kind": "numeric", "shape": SHAPE, "mean": 0.0, "std": 1.0}],
        "postprocessing": {"kind": "classification", "labels": [str(i) for i in range(CLASSES)]},
        "limits": {"max_batch": MAX_BATCH, "max_text_chars": 1000},
        "provenance": {"created_by": "edgemaas bench --serving", "parameters": params},
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir
