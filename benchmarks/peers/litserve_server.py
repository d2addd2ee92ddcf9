"""LitServe, as its docs set up a custom model: a LitAPI whose setup loads the model, decode/predict/encode, and
`max_batch_size`/`batch_timeout` on the LitAPI for batching (with `batch`/`unbatch` for our several-sample requests).

    PEER_MODEL_DIR=... PEER_BATCH=1 python litserve_server.py PORT
"""

from __future__ import annotations

import sys

import litserve as ls
import numpy as np

from peer_model import PeerModel, env_batching

BATCH, MAX_BATCH, MAX_WAIT_S = env_batching()


class EdgeAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = PeerModel()

    def decode_request(self, request: dict) -> np.ndarray:
        return self.model.prepare(request["inputs"])

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        self._counts = [len(x) for x in inputs]
        return np.concatenate(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.infer(x)

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return np.split(output, np.cumsum(self._counts)[:-1])

    def encode_response(self, output: np.ndarray) -> dict:
        return {"predictions": self.model.format(output)}


if __name__ == "__main__":
    api = EdgeAPI(max_batch_size=MAX_BATCH, batch_timeout=MAX_WAIT_S) if BATCH else EdgeAPI()
    server = ls.LitServer(api, accelerator="cpu")
    server.run(host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", generate_client_file=False)
