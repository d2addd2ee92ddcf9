"""Container image build contexts for AWS Lambda, for what outgrows the 250 MB zip-and-layers limit.

No Docker engine runs here, so the context is checked instead: every file the Dockerfile copies exists, and its
requirements resolve for the target platform (tests do both).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).resolve().parents[3] / "templates"


def render(template: str, **values: object) -> str:
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                                     keep_trailing_newline=True)
    return environment.get_template(template).render(**values)


def write_image_context(directory: Path, code: dict[str, Path | bytes], requirements: list[str],
                        python_version: str, arch: str) -> Path:
    """Write the build context (Dockerfile, requirements.txt, handler, runtime, model) and swap it into place."""
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, source in code.items():
        target = tmp / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes() if isinstance(source, Path) else source)
    (tmp / "requirements.txt").write_text("\n".join(requirements) + "\n")
    manifest = next(name for name in code if name.endswith("manifest.json"))
    import json

    record = json.loads((tmp / manifest).read_text())
    (tmp / "Dockerfile").write_text(render(
        "Dockerfile.j2", model=record["name"], variant=record["variant"], python_version=python_version,
        platform="linux/arm64" if arch == "arm64" else "linux/amd64",
        runtime=requirements[-1].split("==")[0]))
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    return directory


def missing_copy_sources(context: Path) -> list[str]:
    """COPY sources in the Dockerfile that the context lacks (an image build would fail on them)."""
    missing = []
    for line in (context / "Dockerfile").read_text().splitlines():
        match = re.match(r"\s*COPY\s+(.+)\s+\S+\s*$", line)
        if match:
            missing += [src for src in match.group(1).split() if not (context / src.rstrip("/")).exists()]
    return missing
