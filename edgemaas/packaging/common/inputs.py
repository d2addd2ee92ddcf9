"""What went into a package, hashed, and the record of the last package made from it (reused when intact)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from edgemaas.reuse import files_fingerprint
from edgemaas.runtime.manifest import sha256_file

SKIP_DIRS = frozenset({"__pycache__", "tests", "test"})
SKIP_SUFFIXES = (".pyc", ".pyo", ".pyi")
Record = TypeVar("Record")


def tree(root: Path, prefix: str) -> Iterator[tuple[str, Path]]:
    """Every file under root as (prefix + relative POSIX path, path), sorted; caches, tests and stubs left out."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith(SKIP_SUFFIXES) or name == ".complete":
                continue
            path = Path(dirpath) / name
            yield prefix + path.relative_to(root).as_posix(), path


def input_hash(files: dict[str, Path | bytes], *settings: object) -> str:
    """A content hash of a package's inputs (names, bytes, settings): the stages' one fingerprint, shortened."""
    return files_fingerprint(files, *[str(s) for s in settings])[:16]


def previous_record(record_path: Path, make: Callable[..., Record], wanted_hash: str,
                    intact: Callable[[Record], bool]) -> Record | None:
    """The package recorded at record_path (a JSON object of `make`'s fields) when it was made from the same inputs
    and `intact` finds its files still there; None otherwise. The record's `reused` is set."""
    try:
        record = make(**json.loads(record_path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None
    if getattr(record, "input_hash", None) != wanted_hash or not intact(record):
        return None
    setattr(record, "reused", True)
    return record


def file_intact(path: str | Path, sha256: str) -> bool:
    return Path(path).exists() and sha256_file(Path(path)) == sha256
