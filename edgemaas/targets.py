"""The target registry: name -> Target, for `edgemaas package --target`, `edgemaas build` and the build tables.

Each `edgemaas/packaging/<folder>/target.py` declares `TARGETS` (its Target records: name, the variant it ships,
its CLI options, how it packages, how `build` smoke-tests it, its build-table column). Adding a target is one new
folder with a target.py (plus its templates); nothing here changes. Order: by folder, then as each module lists them
(lambda, edge, mcu, android, ios).
"""

from __future__ import annotations

import importlib.util
import pkgutil

import edgemaas.packaging
from edgemaas.packaging.target import Target, TargetOption


def _discover() -> dict[str, Target]:
    found: dict[str, Target] = {}
    for folder in sorted(pkgutil.iter_modules(edgemaas.packaging.__path__), key=lambda m: m.name):
        if not folder.ispkg or importlib.util.find_spec(f"edgemaas.packaging.{folder.name}.target") is None:
            continue
        module = importlib.import_module(f"edgemaas.packaging.{folder.name}.target")
        for target in module.TARGETS:
            if target.name in found:
                raise RuntimeError(f"target {target.name!r} is declared twice ({module.__name__})")
            found[target.name] = target
    return found


TARGETS: dict[str, Target] = _discover()


def target_options() -> list[TargetOption]:
    """Every target's own options, once each, in registry order (targets share some: --runtime, --python-version)."""
    seen: dict[str, TargetOption] = {}
    for target in TARGETS.values():
        for option in target.options:
            if option.name in seen and seen[option.name] is not option:
                raise RuntimeError(f"{option.flag} is declared differently by two targets; share one TargetOption")
            seen.setdefault(option.name, option)
    return list(seen.values())


def built_targets() -> list[Target]:
    """The targets `edgemaas build` makes besides Lambda, each a column of the targets table."""
    return [target for target in TARGETS.values() if target.build_cell is not None]
