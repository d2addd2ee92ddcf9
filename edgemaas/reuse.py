"""Stage reuse: skip rebuilding an output whose inputs are unchanged and which is still intact.

Beside each output `NAME` lives a small record `.NAME.inputs.json`: the fingerprint of the inputs that made it and
a digest of the output as written. The output is fresh when the record's fingerprint equals the new one and the
output still has that digest (so a hand-edited, truncated or half-swapped output is rebuilt, not reused).

    stamp = fingerprint(spec_section, parent_sha, data_hash)
    if not is_fresh(out, stamp):
        forget(out); build(out); record(out, stamp)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgemaas.fsutil import atomic_write_json, is_temporary

RECORD_VERSION = 1
_CHUNK = 1 << 20


def _canonical(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return {"sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_canonical(v) for v in value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def fingerprint(*parts: Any) -> str:
    """sha256 of the parts as canonical JSON (dict keys sorted; bytes by their digest; Path by its name)."""
    text = json.dumps([_canonical(p) for p in parts], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_digest(path: Path | str) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_fingerprint(files: Mapping[str, Path | bytes], *settings: Any) -> str:
    """Fingerprint of named files (by content) plus settings, e.g. everything that goes into a package."""
    digests = {name: file_digest(src) if isinstance(src, Path) else hashlib.sha256(src).hexdigest()
               for name, src in sorted(files.items())}
    return fingerprint(digests, *settings)


def tree_digest(directory: Path | str) -> str:
    """sha256 over a folder's files (relative path and content, sorted); temporaries and reuse records skipped."""
    root = Path(directory)
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if is_temporary(path) or _is_record(path):
                continue
            digest.update(path.relative_to(root).as_posix().encode("utf-8") + b"\0")
            digest.update(file_digest(path).encode("ascii") + b"\n")
    return digest.hexdigest()


def output_digest(output: Path | str) -> str | None:
    """Digest of a file or folder output; None if it does not exist."""
    output = Path(output)
    if output.is_dir():
        return "tree:" + tree_digest(output)
    if output.is_file():
        return "file:" + file_digest(output)
    return None


def record_path(output: Path | str) -> Path:
    """Where the reuse record of `output` lives: `.NAME.inputs.json` beside it."""
    output = Path(output)
    return output.with_name(f".{output.name}.inputs.json")


def _is_record(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".inputs.json")


def read_record(output: Path | str) -> dict[str, Any] | None:
    """The stored record of `output` ({"fingerprint", "digest", "extra"}), or None if missing or unreadable."""
    try:
        data = json.loads(record_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != RECORD_VERSION or not isinstance(data.get("fingerprint"), str):
        return None
    return data


def is_fresh(output: Path | str, fingerprint: str) -> bool:
    """Whether `output` was made from inputs with this fingerprint and is unchanged since."""
    data = read_record(output)
    if data is None or data["fingerprint"] != fingerprint:
        return False
    return data.get("digest") is not None and data.get("digest") == output_digest(output)


def record(output: Path | str, fingerprint: str, **extra: Any) -> Path:
    """Record that `output` (now complete) was made from inputs with `fingerprint`; `extra` is kept alongside."""
    digest = output_digest(output)
    if digest is None:
        raise FileNotFoundError(f"cannot record {output}: it does not exist")
    return atomic_write_json(record_path(output), {"version": RECORD_VERSION, "fingerprint": fingerprint,
                                                   "digest": digest, "extra": _canonical(extra)})


def recorded_extra(output: Path | str) -> dict[str, Any]:
    """The `extra` stored by `record` (empty if none)."""
    data = read_record(output)
    return dict(data.get("extra") or {}) if data else {}


def forget(output: Path | str) -> None:
    """Drop the record of `output` (before rebuilding it, so a crash mid-way never leaves a matching record)."""
    record_path(output).unlink(missing_ok=True)
