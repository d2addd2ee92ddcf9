"""Where things go: build/ for intermediate artifacts, dist/ for what ships. Both are ignored by git."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

FLOAT_VARIANT = "keras-float32"


@dataclass(frozen=True)
class Workspace:
    root: Path = Path(".")

    @property
    def build(self) -> Path:
        return self.root / "build"

    @property
    def dist(self) -> Path:
        return self.root / "dist"

    def model_dir(self, name: str) -> Path:
        return self.build / name

    def variant_dir(self, name: str, variant: str) -> Path:
        return self.build / name / variant

    def data_file(self, name: str) -> Path:
        return self.build / name / "data.npz"

    def selection_file(self, name: str) -> Path:
        return self.build / name / "selection.json"

    def lambda_dir(self, name: str) -> Path:
        return self.dist / name / "lambda"

    def cache(self) -> Path:
        return cache_root()


def cache_root() -> Path:
    """Downloads shared by every project on this machine (wheels for Lambda, the runtime client)."""
    base = os.environ.get("EDGEMAAS_CACHE_DIR")
    return Path(base).expanduser() if base else Path.home() / ".cache" / "edgemaas"
