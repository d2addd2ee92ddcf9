"""KServe's Python model server, as its docs set up a custom model: a `kserve.Model` with load/predict, started by
`ModelServer().start([model])`; v1 protocol (POST /v1/models/<name>:predict {"instances": [...]}). KServe has no
batching in the Python server (its batcher is a Kubernetes sidecar), so it has one row.

    PEER_MODEL_DIR=... python kserve_server.py PORT
"""

from __future__ import annotations

import sys
from typing import Any

from kserve import Model, ModelServer

from peer_model import PeerModel


class EdgeModel(Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.load()

    def load(self) -> bool:
        self.model = PeerModel()
        self.ready = True
        return self.ready

    def predict(self, payload: dict, headers: dict[str, str] | None = None) -> dict[str, Any]:
        return {"predictions": self.model.predict(payload["instances"])}


if __name__ == "__main__":
    port = int(sys.argv[1])
    ModelServer(http_port=port, grpc_port=port + 1, enable_grpc=False, workers=1).start([EdgeModel("edge")])
