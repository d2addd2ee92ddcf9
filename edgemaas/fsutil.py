"""Atomic file and folder writes, with one temporary-name scheme and its stale-temporary cleanup.

A reader never sees a half-written output: everything is written under a temporary name in the target's own folder
(same filesystem, so `os.replace` is atomic) and moved into place only when complete. The temporary name is

    .<target name>.tmp.<pid>.<8 hex>[<target suffix>]

hidden (globs such as `*.onnx` skip it), unique per writer, and naming the writing process, so a temporary left
by a killed writer is recognised and deleted by the next writer of the same target (`remove_stale_temporaries`).
The optional trailing suffix is for writers that insist on an extension (numpy appends `.npz`, Keras wants `.keras`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

TEMP_MARK = ".tmp"
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.tmp\.(?P<pid>\d+)\.(?P<token>[0-9a-f]{8})(?P<suffix>\.[^./]+)?$")


def temp_path(target: Path | str, keep_suffix: bool = False) -> Path:
    """A fresh temporary name beside `target`; `keep_suffix` ends it with the target's extension too."""
    target = Path(target)
    suffix = target.suffix if keep_suffix else ""
    return target.with_name(f".{target.name}{TEMP_MARK}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def is_temporary(path: Path | str) -> bool:
    """Whether `path` is named like a temporary of this module (listings and hashes skip these)."""
    return _TEMP_NAME.match(Path(path).name) is not None


def temporary_target(path: Path | str) -> str | None:
    """The name of the target a temporary was written for, or None if `path` is not a temporary."""
    match = _TEMP_NAME.match(Path(path).name)
    return match["name"] if match else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process may still be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(target: Path | str) -> list[Path]:
    """Delete temporaries of `target` whose writing process is gone; returns what was deleted."""
    target = Path(target)
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    for candidate in target.parent.glob(f".{glob_escape(target.name)}{TEMP_MARK}.*"):
        match = _TEMP_NAME.match(candidate.name)
        if match and match["name"] == target.name and not _alive(int(match["pid"])):
            _remove(candidate)
            removed.append(candidate)
    return removed


def remove_stale_temporaries_in(directory: Path | str) -> list[Path]:
    """Delete every stale temporary directly inside `directory` (of any target); returns what was deleted."""
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for candidate in directory.iterdir():
        match = _TEMP_NAME.match(candidate.name)
        if match and not _alive(int(match["pid"])):
            _remove(candidate)
            removed.append(candidate)
    return removed


def glob_escape(name: str) -> str:
    """`name` with glob metacharacters escaped, for Path.glob."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some filesystems refuse to fsync a directory, which costs only durability.
    with contextlib.suppress(OSError):
        _fsync_file(directory)


@contextlib.contextmanager
def atomic_path(target: Path | str, keep_suffix: bool = False, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `target` to write (by any means); on success it replaces `target`.

    On an exception the temporary is deleted and `target` is left as it was. The parent folder is created.
        with atomic_path(out, keep_suffix=True) as tmp: np.savez(tmp, **arrays)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = temp_path(target, keep_suffix)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp} for {target}")
        if fsync and tmp.is_file():
            _fsync_file(tmp)
        os.replace(tmp, target)
        if fsync:
            _fsync_dir(target.parent)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


def atomic_write_bytes(target: Path | str, data: bytes, fsync: bool = True) -> Path:
    """Write `data` to `target` atomically (mode as a plain open() would give, not mkstemp's 0600)."""
    target = Path(target)
    with atomic_path(target, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return target


def atomic_write_text(target: Path | str, text: str, encoding: str = "utf-8", fsync: bool = True) -> Path:
    """Write `text` to `target` atomically."""
    return atomic_write_bytes(target, text.encode(encoding), fsync=fsync)


def atomic_write_json(target: Path | str, obj: Any, *, indent: int | None = 2, sort_keys: bool = False,
                      default: Callable[[Any], Any] | None = None, fsync: bool = True) -> Path:
    """Write `obj` as JSON (with a final newline) to `target` atomically; serialised before anything is touched."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default) + "\n"
    return atomic_write_text(target, text, fsync=fsync)


def atomic_write_many(writers: Mapping[Path, Callable[[Path], Any]], fsync: bool = True) -> list[Path]:
    """Write several files that belong together: every writer renders its target to a temporary first, and only
    when all have succeeded are they moved into place, in the given order (put the file readers check first, such
    as a report's JSON, last). A failure leaves every target as it was and no temporaries.
        atomic_write_many({out / "report.md": lambda p: p.write_text(md), out / "report.json": write_json})
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for target, write in writers.items():
            target = Path(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(target)
            tmp = temp_path(target, keep_suffix=True)
            staged.append((tmp, target))
            write(tmp)
            if not tmp.exists():
                raise FileNotFoundError(f"nothing was written to {tmp} for {target}")
            if fsync and tmp.is_file():
                _fsync_file(tmp)
        for tmp, target in staged:
            os.replace(tmp, target)
        if fsync:
            for directory in {target.parent for _, target in staged}:
                _fsync_dir(directory)
    finally:
        for tmp, _ in staged:  # after a failure; after success they have all been moved away
            if tmp.exists():
                _remove(tmp)
    return [target for _, target in staged]


def publish_dir(staging: Path | str, target: Path | str) -> Path:
    """Move the finished folder `staging` to `target`, replacing whatever is there.

    A non-empty folder cannot be replaced in one rename, so the old one is first renamed aside (to a temporary
    name, deleted afterwards); if the swap fails the old one is put back.
    """
    staging, target = Path(staging), Path(target)
    retired: Path | None = None
    if target.exists() or target.is_symlink():
        retired = temp_path(target)
        os.replace(target, retired)
    try:
        os.replace(staging, target)
    except BaseException:
        if retired is not None:
            os.replace(retired, target)
        raise
    _fsync_dir(target.parent)
    if retired is not None:
        _remove(retired)
    return target


@contextlib.contextmanager
def atomic_dir(target: Path | str) -> Iterator[Path]:
    """Yield an empty sibling temporary folder to build; on success it replaces the folder `target`.

    On an exception the temporary folder is deleted and `target` is left as it was.
        with atomic_dir(out_dir) as tmp: (tmp / "model.onnx").write_bytes(data)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    staging = temp_path(target)
    staging.mkdir()
    try:
        yield staging
        publish_dir(staging, target)
    finally:
        if staging.exists():
            _remove(staging)
