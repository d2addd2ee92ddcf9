"""What a packaging target is: the record each `packaging/<target>/target.py` declares, and what it returns.

A target names itself, says which built variant it ships, declares its own `edgemaas package` options, packages
(`package`: for the CLI, returning lines to print) and, for `edgemaas build`, packages and smoke-tests a built spec
(`build_cell`: a typed Cell; the table turns it into text). `edgemaas/targets.py` collects them in one registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable

from edgemaas.spec import Spec
from edgemaas.workspace import Workspace

Report = Callable[[str], None]


def quiet(_: str) -> None:
    pass


class Status(Enum):
    """How a target or a smoke test came out in `edgemaas build`."""

    OK = "ok"
    REFUSED = "refused"  # the target cannot take this model (a UserError says why); the build goes on
    FAILED = "failed"  # the package was made but its smoke test failed
    SKIPPED = "skipped"  # nothing to smoke-test here (e.g. a container image without Docker)


@dataclass
class Cell:
    """One target's outcome for one model in `edgemaas build`; `text` is what the table shows."""

    status: Status
    text: str
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK


@dataclass(frozen=True)
class TargetOption:
    """An `edgemaas package` option that only some targets take: click's option declarations and settings.
    Targets that share an option (lambda and edge: --runtime, --python-version) share the same object."""

    decls: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def name(self) -> str:
        """The parameter name click gives it (`--serverless serverless_file` -> serverless_file)."""
        plain = [d for d in self.decls if not d.startswith("-")]
        return plain[0] if plain else self.flag.lstrip("-").replace("-", "_")

    @property
    def flag(self) -> str:
        return next(d for d in self.decls if d.startswith("--"))


@dataclass
class PackageRequest:
    """`edgemaas package TARGET --target T ...`: what every target gets, and its own options by name."""

    target: str  # a spec, a built-in model name or a model file
    ws: Workspace
    variant: str | None = None
    name: str | None = None
    labels: list[str] | None = None
    trust_code: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    report: Report = quiet
    # A model file the user brings: concrete shapes for its package-time smoke test (--input-shape NAME=D1,D2,...,
    # --example-input FILE.npz); dynamic dimensions not given are set to 1.
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    example_input: Path | None = None


@dataclass
class BuildContext:
    """`edgemaas build`: a spec that was compressed (and packaged for Lambda), and a smoke-test event."""

    spec: Spec
    ws: Workspace
    smoke_event: dict[str, Any]
    report: Report = quiet

    def out_dir(self, target: str) -> Path:
        return self.ws.dist / self.spec.name / target


@dataclass(frozen=True)
class Target:
    """One place a model ships. `package` and `build_cell` are the target module's functions."""

    name: str
    help: str  # one line for `--target`'s help
    ships: str  # which built variant(s) it ships
    package: Callable[[PackageRequest], list[str]]  # lines (rich markup) for the console
    build_cell: Callable[[BuildContext], Cell] | None = None  # None: not in the build's targets table
    column: str = ""  # its column in the build's targets table
    options: tuple[TargetOption, ...] = ()
    python_versions: tuple[str, ...] = ()  # for --python-version, when it takes it
    python_note: str = ""  # appended to the --python-version error
