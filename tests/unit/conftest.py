"""The unit tier's rule, enforced: a unit test that imports TensorFlow (or Keras) or starts a process fails.

That is what keeps `./dev.sh test tests/unit` a loop of seconds: TensorFlow alone costs ~2 s and 550 MB to import,
and a process start is where the slow tests spend their time. Such a test belongs in tests/functional or
tests/integration. Checked for the setup, call and teardown of each test (fixtures included).
"""

from __future__ import annotations

import _posixsubprocess
import builtins
import os
import subprocess
import sys
from collections.abc import Generator
from typing import Any

import pytest

HEAVY = ("tensorflow", "tf_keras", "keras")
MOVE_IT = "move the test to tests/functional or tests/integration"


class ProcessStarted(RuntimeError):
    """Raised where a unit test tries to start a process."""


class UnitGuard:
    """While installed: records heavy imports and refuses (and records) every way of starting a process."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.saved: list[tuple[Any, str, Any]] = []

    def install(self) -> None:
        self.loaded_before = {name for name in HEAVY if name in sys.modules}
        real_import = builtins.__import__

        def guarded_import(name: str, *args: Any, **kwargs: Any) -> Any:
            # catches `import tensorflow` even when an earlier (non-unit) test in this run already loaded it
            if name.partition(".")[0] in HEAVY:
                self.violations.append(f"imports {name}")
            return real_import(name, *args, **kwargs)

        self.patch(builtins, "__import__", guarded_import)
        self.patch(subprocess, "Popen", self.refuse("subprocess.Popen"))
        self.patch(_posixsubprocess, "fork_exec", self.refuse("a child process (fork_exec)"))
        for name in ("fork", "forkpty", "system", "posix_spawn", "posix_spawnp"):
            if hasattr(os, name):
                self.patch(os, name, self.refuse(f"os.{name}"))

    def patch(self, owner: Any, name: str, value: Any) -> None:
        self.saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def refuse(self, what: str) -> Any:
        def refused(*args: Any, **kwargs: Any) -> Any:
            self.violations.append(f"starts {what}")
            raise ProcessStarted(f"a unit test must not start a process ({what}): {MOVE_IT}")
        return refused

    def uninstall(self) -> list[str]:
        for owner, name, value in reversed(self.saved):
            setattr(owner, name, value)
        self.saved.clear()
        fresh = [f"imports {name}" for name in HEAVY if name in sys.modules and name not in self.loaded_before]
        return list(dict.fromkeys(self.violations + fresh))


def guarded(phase: str) -> Generator[None, Any, Any]:
    guard = UnitGuard()
    guard.install()
    try:
        result = yield
    finally:
        violations = guard.uninstall()
    if violations:
        pytest.fail(f"unit tier ({phase}): the test {'; '.join(violations)}: {MOVE_IT}", pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from guarded("setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from guarded("call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, Any, Any]:
    return (yield from guarded("teardown"))
