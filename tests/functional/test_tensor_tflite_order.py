"""A TFLite model's outputs come in its signature's order, whatever order the converter gave the subgraph.

TFLiteConverter.from_keras_model writes a two-output Keras model's subgraph outputs as [output_1, output_0]; callers
get output_0 (the Keras model's first output) first, on the tensor form and the Open Inference Protocol, each equal
to LiteRT's signature runner by name. The backend keeps the subgraph's positions (phone snippets index by them).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgemaas.runtime import load_model
from edgemaas.runtime.service import Service
from edgemaas.user_models.importing import import_model
from edgemaas.workspace import Workspace


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(3)
    a = keras.Input(shape=(5,), name="a")
    b = keras.Input(shape=(2,), name="b")
    joined = keras.layers.Concatenate()([a, b])
    model = keras.Model([a, b], [keras.layers.Dense(3, name="head_one")(joined),
                                 keras.layers.Dense(1, name="head_two")(joined)])
    path = tmp_path_factory.mktemp("keras") / "two_heads.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def test_outputs_come_in_the_signatures_order(two_heads: Path, tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(two_heads))
    runner = interpreter.get_signature_runner()
    rng = np.random.default_rng(0)
    feeds = {"a": rng.normal(size=(2, 5)).astype(np.float32), "b": rng.normal(size=(2, 2)).astype(np.float32)}
    expected = runner(**feeds)
    assert list(runner.get_output_details()) == ["output_0", "output_1"]

    ws = Workspace(tmp_path)
    manifest = import_model(two_heads, ws)
    model = load_model(ws.variant_dir(manifest.name, "imported"))
    service = Service(model)
    tensors = service.dispatch("POST", "/predict", json.dumps({"inputs": {k: v.tolist() for k, v in feeds.items()}}))
    assert tensors.status == 200, tensors.body
    assert list(tensors.body["outputs"]) == ["output_0", "output_1"]
    oip_body = {"inputs": [{"name": k, "shape": list(v.shape), "datatype": "FP32", "data": v.ravel().tolist()}
                           for k, v in feeds.items()]}
    oip = service.dispatch("POST", f"/v2/models/{manifest.name}/infer", json.dumps(oip_body))
    assert [o["name"] for o in oip.body["outputs"]] == ["output_0", "output_1"]
    for output in oip.body["outputs"]:
        got = np.reshape(output["data"], output["shape"])
        np.testing.assert_allclose(got, expected[output["name"]], rtol=1e-5)
        np.testing.assert_allclose(tensors.body["outputs"][output["name"]]["data"], got, rtol=0)
    metadata = service.dispatch("GET", f"/v2/models/{manifest.name}", None).body
    assert [o["name"] for o in metadata["outputs"]] == ["output_0", "output_1"]
    assert [o["shape"] for o in metadata["outputs"]] == [[-1, 3], [-1, 1]]
    # the subgraph's own order, which positional users of the file (phone snippets) index by, is unchanged
    subgraph = [d["index"] for d in interpreter.get_output_details()]
    assert [runner.get_output_details()[t.key]["index"] for t in model.backend.outputs] == subgraph
    assert [model.backend.outputs[i].key for i in model.output_positions] == ["output_0", "output_1"]
