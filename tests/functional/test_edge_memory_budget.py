"""The edge bundle's memory budget reaches every place that enforces it (issue 17): `edgemaas package --target edge
--memory-budget-mb N` sets the server's `--memory-budget-mb N` (its buffer plan) in the systemd unit and the
Greengrass recipe, the unit's `MemoryMax=` (the kernel's backstop) and `TasksMax=`, and the Greengrass deployment's
memory limit (in KB) that the recipe's comment gives, since a recipe cannot set it."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest
import yaml

from edgemaas.packaging.edge.bundle import DEFAULT_MEMORY_BUDGET_MB, package_edge
from edgemaas.pipeline import chosen_variant
from edgemaas.workspace import Workspace

pytestmark = pytest.mark.models("cnn")


def _bundle_files(trained: Workspace, out: Path, **options: int) -> dict[str, str]:
    bundle = package_edge(chosen_variant(trained, "cnn"), out, trained.cache(), **options)
    with tarfile.open(bundle.tar_path) as tar:
        return {Path(m.name).name: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.name.endswith((".service", "greengrass-recipe.yaml", "README.txt"))}


@pytest.mark.parametrize("budget", [None, 300])
def test_memory_budget_sets_the_server_the_unit_and_greengrass(trained: Workspace, tmp_path: Path,
                                                               budget: int | None) -> None:
    files = _bundle_files(trained, tmp_path / "edge", **({"memory_budget_mb": budget} if budget else {}))
    expected = budget or DEFAULT_MEMORY_BUDGET_MB
    assert DEFAULT_MEMORY_BUDGET_MB <= 512  # the default fits a 1 GB board beside the OS
    unit = next(text for name, text in files.items() if name.endswith(".service"))
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1)  # type: ignore[union-attr]
    assert exec_start.endswith(f" serve --host 127.0.0.1 --port 8080 --memory-budget-mb {expected}")
    assert re.findall(r"^MemoryMax=(.*)$", unit, re.M) == [f"{expected}M"]
    assert re.findall(r"^TasksMax=(\d+)$", unit, re.M) and int(re.findall(r"^TasksMax=(\d+)$", unit, re.M)[0]) >= 128
    recipe_text = files["greengrass-recipe.yaml"]
    run = yaml.safe_load(recipe_text)["Manifests"][0]["Lifecycle"]["Run"]["Script"]
    assert run.endswith(f"--memory-budget-mb {expected}")
    assert f'"systemResourceLimits": {{"memory": {expected * 1024}}}' in recipe_text
    assert re.search(r"aws greengrassv2 create-deployment .*\"runWith\": \{\"systemResourceLimits\": \{\"memory\": "
                     f"{expected * 1024}}}", files["README.txt"])
