"""A built-in model speaks the Open Inference Protocol too: the Triton client against the edge server, and the
Lambda handler on the same path, give the model's own tensors, equal to what the batch form computes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgemaas.pipeline import chosen_variant
from edgemaas.runtime import load_model
from edgemaas.workspace import Workspace
from tests.functional.test_handler import CONTEXT, IMAGE, load_handler
from tests.integration.test_oip import serve_model, triton

pytestmark = pytest.mark.models("cnn")


def test_cnn_over_oip_equals_its_batch_form(trained: Workspace, tmp_path: Path) -> None:
    variant = chosen_variant(trained, "cnn")
    model = load_model(variant)
    image = model.prepare([IMAGE, IMAGE[::-1]])[0]  # the batch form's preprocessing, done here
    expected = model.infer([image])[0]
    server = serve_model(variant, tmp_path / "serve.log")
    port = next(server)
    try:
        client = triton.InferenceServerClient(url=f"127.0.0.1:{port}")
        metadata = client.get_model_metadata("cnn")
        assert [(i["name"], i["datatype"], i["shape"]) for i in metadata["inputs"]] == [("image", "FP32", [-1, 8, 8])]
        tensor = triton.InferInput("image", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image.astype(np.float32), binary_data=False)
        result = client.infer("cnn", [tensor])
    finally:
        server.close()
    np.testing.assert_array_equal(result.as_numpy("probabilities"), expected)
    handler = load_handler(str(variant))
    body = {"inputs": [{"name": "image", "shape": list(image.shape), "datatype": "FP32",
                        "data": image.reshape(-1).tolist()}]}
    event = {"version": "2.0", "routeKey": "$default", "rawPath": "/v2/models/cnn/infer", "isBase64Encoded": False,
             "requestContext": {"http": {"method": "POST", "path": "/v2/models/cnn/infer"}}, "headers": {},
             "body": json.dumps(body)}
    response = handler.handler(event, CONTEXT)
    assert response["statusCode"] == 200
    (output,) = json.loads(response["body"])["outputs"]
    np.testing.assert_array_equal(np.array(output["data"], np.float32).reshape(output["shape"]), expected)
    assert handler.handler({"inputs": [IMAGE]}, CONTEXT)["predictions"] == model.predict([IMAGE])
