"""BentoML 1.x, as its docs set up a custom model: a `@bentoml.service` class that loads the model in __init__ and a
`@bentoml.api`; adaptive batching is `batchable=True` with `max_batch_size` and `max_latency_ms`.

    PEER_MODEL_DIR=... PEER_BATCH=1 bentoml serve bentoml_service:Edge --host 127.0.0.1 --port PORT
"""

from __future__ import annotations

from typing import Any

import bentoml

from peer_model import PeerModel, env_batching

BATCH, MAX_BATCH, MAX_WAIT_S = env_batching()
# max_latency_ms is BentoML's bound on a request's time in the batch queue (it sheds load past it): generous here,
# as the other servers' timeouts are.
API = (bentoml.api(route="/predict", batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=30_000) if BATCH
       else bentoml.api(route="/predict"))


@bentoml.service(workers=1, traffic={"timeout": 30})
class Edge:
    def __init__(self) -> None:
        self.model = PeerModel()

    @API
    def predict(self, inputs: list[Any]) -> Any:
        # batchable: `inputs` holds every queued request's samples, concatenated; the answer is split the same way
        return self.model.predict(inputs) if BATCH else {"predictions": self.model.predict(inputs)}
