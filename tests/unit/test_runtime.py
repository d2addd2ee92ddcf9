"""The runtime that ships in packages: a model directory without its manifest is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgemaas.runtime import ModelLoadError, load_model


def test_missing_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no manifest.json"):
        load_model(tmp_path)
