"""AWS Lambda zip packages: handler + runtime + model + manifest + the inference runtime's wheels.

The zip is deterministic (sorted entries, fixed timestamps and modes), so the same inputs give the same bytes and
the same sha256, which is what lets a deploy skip unchanged code.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterator

from ..errors import StageFailed, UserError
from ..isolate import run_isolated
from ..runtime import MANIFEST_NAME, load_model, read_manifest
from ..runtime.manifest import sha256_file
from . import dependencies

MB = 1024 * 1024
DIRECT_UPLOAD_LIMIT = 50 * MB  # zipped, for a direct CreateFunction/UpdateFunctionCode upload
UNZIPPED_LIMIT = 250 * MB  # function code plus all layers, unzipped
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold: builds differ only when content does
HANDLER = "handler.handler"
RUNTIME_PACKAGE_INIT = '"""edgemaas runtime, as shipped inside a package."""\n'
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


@dataclass
class LambdaPackage:
    zip_path: str
    zipped_bytes: int
    unzipped_bytes: int
    sha256: str
    handler: str
    python_version: str
    arch: str
    model: str
    variant: str
    model_format: str
    requirements: list[str]
    warnings: list[str] = field(default_factory=list)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def default_python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def package_lambda(variant_dir: Path, out_dir: Path, cache: Path, python_version: str | None = None,
                   arch: str = "x86_64") -> LambdaPackage:
    """Write out_dir/function.zip (and package.json describing it) for the model variant in variant_dir."""
    python_version = python_version or default_python_version()
    manifest = read_manifest(variant_dir)
    check_loadable(variant_dir)
    requirements = dependencies.requirements_for(manifest.model.format)
    deps = dependencies.install(requirements, python_version, arch, cache)

    files = dict(_code_files())
    files[f"model/{manifest.model.file}"] = variant_dir / manifest.model.file
    files[f"model/{MANIFEST_NAME}"] = variant_dir / MANIFEST_NAME
    files.update(_tree(deps, ""))
    unzipped = sum(source.stat().st_size if isinstance(source, Path) else len(source) for source in files.values())
    if unzipped > UNZIPPED_LIMIT:
        raise UserError(f"the package unzips to {unzipped / MB:.0f} MB; Lambda allows {UNZIPPED_LIMIT // MB} MB "
                        "including layers. Ship a smaller variant (--variant tflite-int8) or a container image.")

    out_dir.mkdir(parents=True, exist_ok=True)
    zip_path = out_dir / "function.zip"
    write_deterministic_zip(zip_path, files)
    package = LambdaPackage(
        zip_path=str(zip_path), zipped_bytes=zip_path.stat().st_size, unzipped_bytes=unzipped,
        sha256=sha256_file(zip_path), handler=HANDLER, python_version=python_version, arch=arch,
        model=manifest.name, variant=manifest.variant, model_format=manifest.model.format,
        requirements=requirements, warnings=dependencies.glibc_warnings(deps, python_version),
    )
    if package.zipped_bytes > DIRECT_UPLOAD_LIMIT:
        package.warnings.append(f"the zip is {package.zipped_bytes / MB:.0f} MB; Lambda takes at most "
                                f"{DIRECT_UPLOAD_LIMIT // MB} MB directly: upload it through S3 (deploy --s3-bucket)")
    package.save(out_dir / "package.json")
    return package


def _describe_model(variant_dir: str) -> dict:
    return load_model(variant_dir).describe()


def check_loadable(variant_dir: Path) -> dict:
    """Refuse at package time what the runtime could not serve. In a child process: a malformed model file can
    crash an interpreter, and the loader's reason is what the user needs to read."""
    try:
        return run_isolated(_describe_model, str(variant_dir), timeout=120)
    except StageFailed as exc:
        reason = str(exc).splitlines()[0].removeprefix("ModelLoadError: ")
        raise UserError(f"{variant_dir}: the runtime cannot load this model: {reason}") from None


def _code_files() -> Iterator[tuple[str, Path | bytes]]:
    """The handler as handler.py, and edgemaas/runtime/ verbatim under an import-light edgemaas/__init__.py."""
    yield "handler.py", Path(str(resources.files("functions") / "aws_lambda.py"))
    yield "edgemaas/__init__.py", RUNTIME_PACKAGE_INIT.encode()
    runtime_dir = Path(str(resources.files("edgemaas.runtime")))
    yield from _tree(runtime_dir, "edgemaas/runtime/")


def _tree(root: Path, prefix: str) -> Iterator[tuple[str, Path]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith(_SKIP_SUFFIXES) or name == ".complete":
                continue
            path = Path(dirpath) / name
            yield prefix + path.relative_to(root).as_posix(), path


def write_deterministic_zip(zip_path: Path, files: dict[str, Path | bytes]) -> None:
    """Sorted entries, fixed timestamps, normalised modes; written to a temporary name and renamed into place."""
    tmp = zip_path.with_name(f".{zip_path.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for name in sorted(files):
                source = files[name]
                data = source.read_bytes() if isinstance(source, Path) else source
                executable = isinstance(source, Path) and bool(source.stat().st_mode & stat.S_IXUSR)
                info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
                info.external_attr = ((0o100755 if executable else 0o100644) & 0xFFFF) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data, compresslevel=9)
        os.replace(tmp, zip_path)
    finally:
        if tmp.exists():
            tmp.unlink()

