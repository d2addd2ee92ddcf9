"""What every peer server calls: the same model file, the same interpreter, the same pre- and post-processing.

Runs inside a peer's own venv (numpy + ai-edge-litert/onnxruntime + the peer), with the repository on PYTHONPATH so
that `edgemaas.runtime` (stdlib + numpy + one inference runtime) is the code our own server runs too.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edgemaas.runtime import load_model
from edgemaas.runtime.processing import OutputProcessor


class PeerModel:
    def __init__(self, model_dir: str | None = None) -> None:
        self.model = load_model(model_dir or os.environ["PEER_MODEL_DIR"])
        self.output = OutputProcessor(self.model.manifest.postprocessing)

    def prepare(self, inputs: Any) -> np.ndarray:
        """A request's JSON samples -> the preprocessed batch (validated as our server validates it)."""
        return self.model.prepare(inputs)[0]

    def prepare_array(self, array: np.ndarray) -> np.ndarray:
        """Samples already decoded to an array (the Open Inference Protocol's tensors)."""
        return self.model.transform([array])[0]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.model.infer([batch])[0]

    def format(self, output: np.ndarray) -> list[dict[str, Any]]:
        return self.output(output)

    def predict(self, inputs: Any) -> list[dict[str, Any]]:
        return self.format(self.infer(self.prepare(inputs)))


def env_batching() -> tuple[bool, int, float]:
    """(batching on, max batch, max wait in seconds) as the benchmark set them."""
    return (os.environ.get("PEER_BATCH") == "1", int(os.environ.get("PEER_MAX_BATCH", "32")),
            float(os.environ.get("PEER_MAX_WAIT_MS", "2")) / 1000)
