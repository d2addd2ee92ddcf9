"""The edge target: a tar.gz bundle for IoT Linux boards (systemd unit, Greengrass recipe) with the same variant a
server target ships. In `edgemaas build` the bundle is extracted and its own `predict` runs on the smoke event."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import click

from edgemaas.errors import UserError
from edgemaas.packaging.edge.bundle import DEFAULT_MEMORY_BUDGET_MB, PLATFORMS, package_edge
from edgemaas.packaging.sources import (
    PYTHON_OPTION,
    RUNTIME_OPTION,
    SERVING_PYTHONS,
    Source,
    serving_variant,
    source_of,
    verb,
    warning_lines,
)
from edgemaas.packaging.target import BuildContext, Cell, PackageRequest, Status, Target, TargetOption
from edgemaas.units import human_size

OPTIONS = (
    RUNTIME_OPTION,
    PYTHON_OPTION,
    TargetOption(("--platform",), dict(
        type=click.Choice(list(PLATFORMS)), default="linux_x86_64", show_default=True,
        help="edge: the board's platform (Raspberry Pi OS 64-bit and Jetson: linux_aarch64).")),
    TargetOption(("--with-deps",), dict(is_flag=True, help="edge: vendor the runtime's wheels in the bundle, for "
                                                           "offline installs.")),
    TargetOption(("--memory-budget-mb",), dict(
        type=click.IntRange(min=1), default=DEFAULT_MEMORY_BUDGET_MB, show_default=True,
        help="edge: memory the service may use on the board, in MB (systemd MemoryMax=, the Greengrass memory "
             "limit and the server's buffer plan).")),
)


def package(request: PackageRequest) -> list[str]:
    options, ws = request.options, request.ws
    source = source_of(request)
    source_dir, choice = serving_variant(source, ws, request.variant, options.get("runtime"), request.report)
    lines = [f"runtime: {choice['why']}"] if choice else []
    platform, with_deps = options.get("platform") or "linux_x86_64", bool(options.get("with_deps"))
    request.report(f"bundling for {platform}")
    result = package_edge(source_dir, ws.dist / source.name / "edge", ws.cache(), platform, with_deps,
                          options.get("python_version"),
                          memory_budget_mb=options.get("memory_budget_mb") or DEFAULT_MEMORY_BUDGET_MB)
    lines.append(f"{verb(result.reused)} {result.tar_path} ({source_dir.name}, {platform}, Python "
                 f"{result.python_version}{', wheels included' if with_deps else ''}): {human_size(result.bytes)}")
    return lines + warning_lines(result.warnings)


def build_cell(ctx: BuildContext) -> Cell:
    """The bundle of the variant Lambda ships, smoke-tested with its own `predict`."""
    try:
        ctx.report("packaging for edge devices")
        variant_dir = serving_variant(Source(ctx.spec.name, ctx.spec), ctx.ws)[0]
        bundle = package_edge(variant_dir, ctx.out_dir("edge"), ctx.ws.cache())
    except UserError as exc:
        return Cell(Status.REFUSED, f"refused: {exc}")
    status, text = smoke(Path(bundle.tar_path), bundle.module, ctx.smoke_event)
    return Cell(status, f"{human_size(bundle.bytes)}, predict {text}")


def smoke(tar_path: Path, module: str, event: dict[str, Any]) -> tuple[Status, str]:
    """Extract the bundle to a scratch folder and run its own `predict` (with this Python's numpy and runtime)."""
    with tempfile.TemporaryDirectory(prefix="edgemaas-edge-smoke-") as scratch:
        with tarfile.open(tar_path) as archive:
            archive.extractall(scratch, filter="data")  # refuses absolute paths, '..' and links out of the folder
        top = next(Path(scratch).iterdir())
        request = Path(scratch) / "request.json"
        request.write_text(json.dumps(event))
        done = subprocess.run([sys.executable, "-E", "-s", "-m", module, "predict", "--input", str(request)], cwd=top,
                              capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return Status.FAILED, f"FAILED: {(done.stderr.strip().splitlines() or ['no output'])[-1]}"
    first = json.loads(done.stdout)["predictions"][0]
    shown = f"{first['label']} (p={first['probability']:.2f})" if "label" in first else \
        ", ".join(f"{v:.4g}" for v in first.values() if isinstance(v, float))
    return Status.OK, f"ok: {shown}"


TARGETS: tuple[Target, ...] = (Target(
    name="edge",
    help="a bundle for IoT Linux boards",
    ships="the same variant as lambda: the gate's choice for the spec's format, or the faster runtime (auto)",
    package=package,
    build_cell=build_cell,
    column="edge bundle (predict from the bundle)",
    options=OPTIONS,
    python_versions=("3.9", *SERVING_PYTHONS),
    python_note=" (3.9 for 32-bit Raspberry Pi OS)",
),)
