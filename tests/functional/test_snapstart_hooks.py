"""SnapStart hooks (edgemaas/runtime/snapstart.py): called directly, and run by awslambdaric's own hook runner
(`lambda_runtime_hooks_runner`, what Lambda's Python runtime calls around the snapshot) after `register`."""

from __future__ import annotations

import random

import numpy as np
import pytest
from awslambdaric import lambda_runtime_hooks_runner
from snapshot_restore_py import get_after_restore, get_before_snapshot

from edgemaas.runtime import load_model
from edgemaas.runtime import snapstart
from edgemaas.runtime.service import Service
from edgemaas.workspace import Workspace

pytestmark = pytest.mark.models("cnn")


class CountingService:
    """The real Service, counting what the warm-up sends through dispatch."""

    def __init__(self, service: Service) -> None:
        self.service, self.calls = service, []

    def dispatch(self, method: str, path: str, body: str) -> object:
        self.calls.append((method, path))
        return self.service.dispatch(method, path, body)


def test_warm_answers_one_real_inference(trained: Workspace) -> None:
    model = load_model(trained.variant_dir("cnn", "tflite-int8"))
    service = CountingService(Service(model))
    assert snapstart.warm(service, model) == 200
    assert len(service.calls) == 1 and service.calls[0][0] == "POST"


def test_reseed_gives_each_restore_its_own_random_state() -> None:
    random.seed(1)
    np.random.seed(1)
    snapshot = (random.random(), np.random.random())
    random.seed(1)
    np.random.seed(1)  # every restored environment starts from the snapshot's state ...
    snapstart.reseed()  # ... until the hook re-seeds it
    assert (random.random(), np.random.random()) != snapshot


def test_register_hands_both_hooks_to_the_runtime_and_its_runner_calls_them(trained: Workspace) -> None:
    model = load_model(trained.variant_dir("cnn", "tflite-int8"))
    service = CountingService(Service(model))
    before, after = len(get_before_snapshot()), len(get_after_restore())
    assert snapstart.register(service, model) is True
    assert len(get_before_snapshot()) == before + 1 and len(get_after_restore()) == after + 1
    random.seed(1)
    first = random.random()
    lambda_runtime_hooks_runner.run_before_snapshot()  # pops and runs the before-snapshot hooks (warm)
    assert len(service.calls) == 1
    random.seed(1)
    lambda_runtime_hooks_runner.run_after_restore()  # runs reseed
    assert random.random() != first
    get_after_restore().clear()  # leave the process-wide registry as it was for other tests


@pytest.mark.parametrize("init_type, registered", [("snap-start", 2), ("on-demand", 0)])
def test_handler_registers_the_hooks_only_on_snapstart_functions(trained: Workspace, init_type: str,
                                                                 registered: int) -> None:
    """Lambda sets AWS_LAMBDA_INITIALIZATION_TYPE=snap-start on SnapStart functions; the handler's init registers
    the two hooks there and nowhere else (a fresh process: the hook registry is process-wide)."""
    import json
    import os
    import subprocess
    import sys

    from edgemaas.resources import handler_file

    probe = ("import json, runpy\n"
             "from snapshot_restore_py import get_after_restore, get_before_snapshot\n"
             f"runpy.run_path({str(handler_file())!r})\n"
             "print(json.dumps(len(get_before_snapshot()) + len(get_after_restore())))\n")
    env = {**os.environ, "AWS_LAMBDA_INITIALIZATION_TYPE": init_type,
           "EDGEMAAS_MODEL_DIR": str(trained.variant_dir("cnn", "tflite-int8"))}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == registered
