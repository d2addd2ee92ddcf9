"""Seldon MLServer, as its docs set up a custom model: an `MLModel` runtime with async load/predict, decoding the
Open Inference Protocol tensor with NumpyCodec; adaptive batching is `max_batch_size`/`max_batch_time` in
model-settings.json (the benchmark writes it, with settings.json, into a folder and runs `mlserver start FOLDER`).
"""

from __future__ import annotations

import json

from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse

from peer_model import PeerModel


class EdgeRuntime(MLModel):
    async def load(self) -> bool:
        self.model = PeerModel()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        samples = NumpyCodec.decode_input(payload.inputs[0])
        predictions = self.model.format(self.model.infer(self.model.prepare_array(samples)))
        output = StringCodec.encode_output("predictions", [json.dumps(p) for p in predictions])
        return InferenceResponse(model_name=self.name, outputs=[output])
