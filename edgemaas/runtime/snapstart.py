"""Lambda SnapStart runtime hooks for the handler (`edgemaas deploy --snapstart`, python3.12+).

Lambda snapshots the initialised execution environment once per published version and restores it on cold starts.
Before the snapshot the interpreter is warmed with one inference (first-call allocations, lazy imports, kernel
selection), so restored environments answer their first request as fast as a warm one. After a restore every random
state is re-seeded: restored environments would otherwise share the snapshot's.

`snapshot_restore_py` ships inside Lambda's Python managed runtimes (AWS: "included in Python managed runtimes"),
so it is imported when present and never packaged; elsewhere (local invoke, edge) registering does nothing.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import numpy as np


def warm(service: Any, model: Any) -> int:
    """Answer the model's own full example request through `service` (what a request would run); its HTTP status."""
    path, body = model.example_request()
    return service.dispatch("POST", path, json.dumps(body)).status


def reseed() -> None:
    """Fresh random states from the OS for Python's and numpy's global generators."""
    random.seed(os.urandom(32))
    np.random.seed(int.from_bytes(os.urandom(4), "little"))


def register(service: Any, model: Any) -> bool:
    """Register warm (before snapshot) and reseed (after restore) when SnapStart's hook library is here."""
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:  # not a Lambda Python managed runtime (or one older than 3.12): nothing to register
        return False
    register_before_snapshot(warm, service, model)
    register_after_restore(reseed)
    return True
