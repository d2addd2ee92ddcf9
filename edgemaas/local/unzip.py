"""Lay out a function package and its layers: safe unzip (no absolute or '..' entries, no writing through
symlinks), and an early check that the handler module is there."""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
from collections.abc import Sequence
from importlib.machinery import all_suffixes
from pathlib import Path

from edgemaas.local.errors import LocalLambdaError


def _safe_parts(archive: Path, name: str) -> list[str]:
    """Split a zip entry name, refusing anything that could land outside the target."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or "\x00" in norm:
        raise LocalLambdaError(
            f"{archive}: refusing zip entry {name!r} with an absolute path; "
            "rebuild the zip with paths relative to its root")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LocalLambdaError(
            f"{archive}: refusing zip entry {name!r} that climbs out with '..'; "
            "rebuild the zip with paths relative to its root")
    return parts


def _checked_dir(root: Path, parts: list[str]) -> Path:
    """Create root/parts..., refusing to pass through an existing symlink."""
    path = root
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise LocalLambdaError(f"refusing to write through symlink {path}")
        path.mkdir(exist_ok=True)
    return path


def _checked_path(root: Path, parts: list[str]) -> Path:
    """Path of a file under root whose parent dirs exist and are not symlinks."""
    return _checked_dir(root, parts[:-1]) / parts[-1]


def extract_zip(archive: Path, dest: Path) -> None:
    """Extract a zip safely: no absolute/'..' entries, never write through a symlink."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as exc:
        raise LocalLambdaError(f"cannot read zip {archive}: {exc}") from exc
    with zf:
        infos = zf.infolist()
        for info in infos:  # Validate every name before writing anything.
            _safe_parts(archive, info.filename)
        try:
            links = [link for info in infos if (link := _extract_entry(zf, info, dest))]
            for parts, target in links:
                _make_link(archive, dest, parts, target)
        except (OSError, zipfile.BadZipFile) as exc:
            raise LocalLambdaError(f"cannot extract {archive}: {exc}") from exc


def _extract_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path
                   ) -> tuple[list[str], str] | None:
    """Write one entry; symlinks are returned instead, to be created after all files."""
    parts = _safe_parts(Path(zf.filename or "zip"), info.filename)
    mode = info.external_attr >> 16
    if not parts:
        return None
    if info.is_dir():
        _checked_dir(dest, parts)
        return None
    if stat.S_ISLNK(mode):
        # Created last, so no later entry can be written through one.
        return parts, zf.read(info).decode("utf-8", "replace")
    path = _checked_path(dest, parts)
    if path.is_symlink() or path.is_file():
        path.unlink()  # A later layer overrides an earlier one, like Lambda.
    perms = (mode & 0o777) | 0o400 if mode & 0o777 else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, perms)
    with os.fdopen(fd, "wb") as out, zf.open(info) as src:
        shutil.copyfileobj(src, out)
    return None


def _make_link(archive: Path, dest: Path, parts: list[str], target: str) -> None:
    """Recreate a symlink entry only if it points inside the extracted tree."""
    inside = os.path.normpath(os.path.join(dest, *parts[:-1], target))
    if os.path.isabs(target) or os.path.commonpath([inside, str(dest)]) != str(dest):
        raise LocalLambdaError(
            f"{archive}: refusing symlink entry {'/'.join(parts)!r} -> {target!r} "
            "that points outside the package")
    path = _checked_path(dest, parts)
    if path.is_symlink() or path.is_file():
        path.unlink()
    os.symlink(target, path)


def prepare_package(package: Path, workdir: Path) -> Path:
    """Return the task root: the directory itself, or the zip extracted into workdir."""
    if package.is_dir():
        return package.resolve()  # Used in place; PYTHONDONTWRITEBYTECODE keeps it clean.
    if package.is_file() and zipfile.is_zipfile(package):
        root = workdir / "task"
        extract_zip(package, root)
        return root
    raise LocalLambdaError(f"package {package} is neither a directory nor a zip file")


def prepare_layers(layers: Sequence[Path], workdir: Path) -> Path:
    """Lay the layers out in one 'opt' directory, later layers overriding earlier ones."""
    opt = workdir / "opt"
    opt.mkdir(parents=True, exist_ok=True)
    for layer in map(Path, layers):
        if layer.is_dir():
            shutil.copytree(layer, opt, symlinks=True, dirs_exist_ok=True)
        elif layer.is_file() and zipfile.is_zipfile(layer):
            extract_zip(layer, opt)
        else:
            raise LocalLambdaError(f"layer {layer} is neither a directory nor a zip file")
    return opt


def _module_exists(module: str, search: list[Path]) -> bool:
    """Cheap pre-check that the handler module is a file/package on the search path."""
    *pkgs, leaf = module.split(".")
    for base in search:
        folder = base.joinpath(*pkgs)
        if (folder / leaf).is_dir():
            return True  # Regular or namespace package.
        if any((folder / f"{leaf}{suffix}").is_file() for suffix in all_suffixes()):
            return True
    return False


def check_handler(handler: str, search: list[Path], task_root: Path) -> None:
    """Fail early, with a useful hint, when the handler cannot possibly be found."""
    module, sep, func = handler.rpartition(".")
    if not sep or not module or not func:
        raise LocalLambdaError(
            f"handler {handler!r} must look like 'module.function', e.g. 'handler.handler'")
    module = module.replace("/", ".")  # awslambdaric accepts 'dir/module.func' too.
    if _module_exists(module, search):
        return
    top = sorted(p.name for p in task_root.iterdir())[:20]
    raise LocalLambdaError(
        f"handler module {module!r} not found in the package (top level: {top}). "
        "Lambda imports it from the root of the zip: put "
        f"{module.replace('.', '/')}.py at the top level, not inside a folder, "
        "or fix the handler setting.")
