"""What a .tflite file carries besides its graph: metadata entries and associated files, read without TensorFlow.

The flatbuffer is read directly (a handful of fields of the `Model` table), and associated files (labels, vocab)
from the zip archive the TFLite metadata writer appends to the file. Kept verbatim for the manifest; nothing is
inferred from it.
"""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path
from typing import Any

_TEXT_LIMIT = 16 * 1024  # a small text entry or file (a version, a label list) is kept as text; larger ones by size
_MODEL_OPERATOR_CODES, _MODEL_DESCRIPTION, _MODEL_BUFFERS, _MODEL_METADATA = 1, 3, 4, 6


def read_tflite_metadata(path: Path) -> dict[str, Any]:
    """{"description": ..., "entries": {name: text or {"bytes": n}}, "files": {name: text or {"bytes": n}}};
    only the keys the file has. A file that does not parse as expected gives {} (the runtime decides whether it
    loads, not this reader)."""
    data = path.read_bytes()
    found: dict[str, Any] = {}
    try:
        found.update(_flatbuffer_metadata(data))
    except (struct.error, IndexError, UnicodeDecodeError, ValueError):
        pass
    files = _associated_files(data)
    if files:
        found["files"] = files
    return found


def custom_ops(path: Path) -> list[str]:
    """The custom operators a .tflite file uses (ops outside the builtin set, which an interpreter must be given)."""
    data = path.read_bytes()
    try:
        codes = _field(data, _u32(data, 0), _MODEL_OPERATOR_CODES)
        if codes is None:
            return []
        names = []
        for code in _vector_of_tables(data, _indirect(data, codes)):
            at = _field(data, code, 1)
            if at is not None:
                names.append(_string(data, _indirect(data, at)))
        return sorted(set(names))
    except (struct.error, IndexError, UnicodeDecodeError, ValueError):
        return []


def _flatbuffer_metadata(data: bytes) -> dict[str, Any]:
    model = _u32(data, 0)
    found: dict[str, Any] = {}
    description = _field(data, model, _MODEL_DESCRIPTION)
    if description is not None:
        found["description"] = _string(data, _indirect(data, description))
    metadata = _field(data, model, _MODEL_METADATA)
    buffers = _field(data, model, _MODEL_BUFFERS)
    if metadata is None or buffers is None:
        return found
    buffer_tables = _vector_of_tables(data, _indirect(data, buffers))
    entries: dict[str, Any] = {}
    for entry in _vector_of_tables(data, _indirect(data, metadata)):
        name_at = _field(data, entry, 0)
        index_at = _field(data, entry, 1)
        if name_at is None:
            continue
        name = _string(data, _indirect(data, name_at))
        index = _u32(data, index_at) if index_at is not None else 0
        content = _buffer_bytes(data, buffer_tables[index]) if index < len(buffer_tables) else b""
        entries[name] = _shown(content)
    if entries:
        found["entries"] = entries
    return found


def _buffer_bytes(data: bytes, table: int) -> bytes:
    at = _field(data, table, 0)
    if at is not None:
        start = _indirect(data, at)
        return data[start + 4: start + 4 + _u32(data, start)]
    offset_at, size_at = _field(data, table, 1), _field(data, table, 2)
    if offset_at is not None and size_at is not None:  # a file over 2 GB keeps buffers after the flatbuffer
        offset, size = struct.unpack_from("<Q", data, offset_at)[0], struct.unpack_from("<Q", data, size_at)[0]
        return data[offset: offset + size]
    return b""


def _associated_files(data: bytes) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return {info.filename: _shown(archive.read(info)) if info.file_size <= _TEXT_LIMIT
                    else {"bytes": info.file_size} for info in archive.infolist() if not info.is_dir()}
    except (zipfile.BadZipFile, OSError, ValueError):
        return {}


def _shown(content: bytes) -> Any:
    if len(content) <= _TEXT_LIMIT:
        try:
            text = content.rstrip(b"\0").decode("utf-8")  # version strings are NUL-padded
        except UnicodeDecodeError:
            return {"bytes": len(content)}
        if text.isprintable() or all(c.isprintable() or c in "\n\r\t" for c in text):
            return text
    return {"bytes": len(content)}


def _u32(data: bytes, at: int) -> int:
    return struct.unpack_from("<I", data, at)[0]


def _field(data: bytes, table: int, index: int) -> int | None:
    """The absolute position of a table's field, or None when absent."""
    vtable = table - struct.unpack_from("<i", data, table)[0]
    vtable_size = struct.unpack_from("<H", data, vtable)[0]
    slot = 4 + 2 * index
    if slot >= vtable_size:
        return None
    offset = struct.unpack_from("<H", data, vtable + slot)[0]
    return table + offset if offset else None


def _indirect(data: bytes, at: int) -> int:
    return at + _u32(data, at)


def _string(data: bytes, at: int) -> str:
    return data[at + 4: at + 4 + _u32(data, at)].decode("utf-8")


def _vector_of_tables(data: bytes, at: int) -> list[int]:
    return [_indirect(data, at + 4 + 4 * i) for i in range(_u32(data, at))]
