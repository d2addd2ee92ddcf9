"""What glibc a set of shared libraries actually needs, read from their ELF files.

A wheel's manylinux tag is a promise; the `GLIBC_x.y` versions in each library's `.gnu.version_r` section are what
the dynamic loader checks when the library is imported. The highest one, over every ELF file in a package, must not
be newer than the glibc of the Lambda runtime it targets (Amazon Linux 2: 2.26; Amazon Linux 2023: 2.34).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection

ELF_MAGIC = b"\x7fELF"
_GLIBC = re.compile(r"^GLIBC_(\d+)\.(\d+)(?:\.(\d+))?$")

Version = tuple[int, ...]


def version_text(version: Version | None) -> str:
    return ".".join(map(str, version)) if version else "-"


def parse_version(text: str) -> Version:
    return tuple(int(part) for part in text.split("."))


def is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) == ELF_MAGIC
    except OSError:
        return False


def glibc_needed(path: Path) -> tuple[Version | None, str]:
    """The highest GLIBC_x.y symbol version `path` (an ELF file) needs, and the ELF machine it was built for."""
    highest: Version | None = None
    with path.open("rb") as handle:
        try:
            elf = ELFFile(handle)
        except ELFError as exc:
            raise ValueError(f"{path}: not a readable ELF file ({exc})") from None
        machine = elf["e_machine"]
        for section in elf.iter_sections():
            if not isinstance(section, GNUVerNeedSection):
                continue
            for _needed, auxiliaries in section.iter_versions():
                for aux in auxiliaries:
                    match = _GLIBC.match(aux.name)
                    if match:
                        found = tuple(int(g) for g in match.groups() if g is not None)
                        highest = max(highest, found) if highest else found
    return highest, machine


@dataclass
class GlibcCheck:
    """The glibc the package's ELF files need against what the target runtime has."""

    target: str  # e.g. "2.26 (Amazon Linux 2, python3.11)"
    allowed: Version
    needed: Version | None = None  # the highest over every file; None: no file asks for a versioned glibc symbol
    worst: str = ""  # the file that needs `needed`
    files: int = 0  # ELF files read
    too_new: dict[str, str] = field(default_factory=dict)  # file -> version, for every file over `allowed`
    machines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.too_new

    def to_dict(self) -> dict:
        return {"ok": self.ok, "target_glibc": version_text(self.allowed), "target": self.target,
                "needed": version_text(self.needed), "worst": self.worst, "elf_files": self.files,
                "too_new": self.too_new, "machines": self.machines}

    def problem(self) -> str:
        listed = ", ".join(f"{name} (GLIBC_{needed})" for name, needed in sorted(self.too_new.items())[:4])
        more = f" and {len(self.too_new) - 4} more" if len(self.too_new) > 4 else ""
        return (f"{listed}{more} need a newer glibc than {self.target} provides ({version_text(self.allowed)}): "
                "the function could not import them")


def check_files(files: Iterable[tuple[str, Path]], allowed: Version, target: str) -> GlibcCheck:
    """Read every ELF file among `files` (archive name, path on disk) and compare with `allowed`."""
    result = GlibcCheck(target=target, allowed=allowed)
    machines: set[str] = set()
    for name, path in files:
        if not is_elf(path):
            continue
        needed, machine = glibc_needed(path)
        result.files += 1
        machines.add(machine)
        if needed is None:
            continue
        if result.needed is None or needed > result.needed:
            result.needed, result.worst = needed, name
        if needed > allowed:
            result.too_new[name] = version_text(needed)
    result.machines = sorted(machines)
    return result


def check_tree(root: Path, allowed: Version, target: str) -> GlibcCheck:
    """check_files over every file under `root`."""
    return check_files(((p.relative_to(root).as_posix(), p) for p in sorted(root.rglob("*")) if p.is_file()),
                       allowed, target)
