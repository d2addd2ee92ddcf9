"""Container image build contexts for AWS Lambda, for what outgrows the 250 MB zip-and-layers limit.

No Docker engine runs here, so the context is checked instead: every file the Dockerfile copies exists, and its
requirements resolve for the target platform (tests do both).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from edgemaas.fsutil import atomic_dir
from edgemaas.packaging.common.templates import render_plain


def write_image_context(directory: Path, code: dict[str, Path | bytes], requirements: list[str],
                        python_version: str, arch: str) -> Path:
    """Write the build context (Dockerfile, requirements.txt, handler, runtime, model) and swap it into place."""
    manifest = next(name for name in code if name.endswith("manifest.json"))
    source = code[manifest]
    record = json.loads(source.read_bytes() if isinstance(source, Path) else source)
    with atomic_dir(directory) as tmp:
        for name, source in code.items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes() if isinstance(source, Path) else source)
        (tmp / "requirements.txt").write_text("\n".join(requirements) + "\n")
        (tmp / "Dockerfile").write_text(render_plain(
            "Dockerfile.j2", model=record["name"], variant=record["variant"], python_version=python_version,
            platform="linux/arm64" if arch == "arm64" else "linux/amd64",
            runtime=requirements[-1].split("==")[0]))
    return directory


def missing_copy_sources(context: Path) -> list[str]:
    """COPY sources in the Dockerfile that the context lacks (an image build would fail on them)."""
    missing = []
    for line in (context / "Dockerfile").read_text().splitlines():
        match = re.match(r"\s*COPY\s+(.+)\s+\S+\s*$", line)
        if match:
            missing += [src for src in match.group(1).split() if not (context / src.rstrip("/")).exists()]
    return missing
