"""Archives whose bytes depend on their content only (sorted entries, fixed times and modes), written atomically
(edgemaas.fsutil: a temporary name beside the target, renamed into place)."""

from __future__ import annotations

import gzip
import io
import stat
import tarfile
import zipfile
from pathlib import Path

from edgemaas.fsutil import atomic_path

FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold: builds differ only when content does
FIXED_MTIME = 315532800  # 1980-01-01 as a Unix time, for tar entries: the same instant as the zips


def _executable(source: Path | bytes) -> bool:
    return isinstance(source, Path) and bool(source.stat().st_mode & stat.S_IXUSR)


def write_deterministic_zip(zip_path: Path, files: dict[str, Path | bytes]) -> None:
    """Sorted entries, fixed timestamps, normalised modes; written to a temporary name and renamed into place."""
    with atomic_path(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for name in sorted(files):
                source = files[name]
                data = source.read_bytes() if isinstance(source, Path) else source
                info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
                info.external_attr = ((0o100755 if _executable(source) else 0o100644) & 0xFFFF) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data, compresslevel=9)


def write_deterministic_tar(tar_path: Path, files: dict[str, Path | bytes]) -> None:
    """A gzipped tar whose bytes depend on the content only: directories listed, entries sorted, fixed mtime,
    uid/gid 0 with no names, modes 0755/0644, no name or time in the gzip header. Written to a temporary name and
    renamed into place."""
    directories = {"/".join(name.split("/")[:i]) for name in files for i in range(1, name.count("/") + 1)}
    with atomic_path(tar_path) as tmp:
        with open(tmp, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as zipped, \
                tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for name in sorted(directories | set(files)):
                info = tarfile.TarInfo(name)
                info.mtime, info.uid, info.gid, info.uname, info.gname = FIXED_MTIME, 0, 0, "", ""
                if name in directories:
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    archive.addfile(info)
                    continue
                source = files[name]
                data = source.read_bytes() if isinstance(source, Path) else source
                info.size, info.mode = len(data), 0o755 if _executable(source) else 0o644
                archive.addfile(info, io.BytesIO(data))
