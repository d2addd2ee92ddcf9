"""Risky steps run in their own process: a crash or a hang becomes a recorded failure, not the end."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from edgemaas.errors import StageFailed
from edgemaas.isolate import run_isolated


def test_returns_the_result() -> None:
    assert run_isolated(max, 3, 7, timeout=60) == 7


def test_a_crash_is_recorded_not_fatal(tmp_path: Path) -> None:
    with pytest.raises(StageFailed, match=r"the process crashed \(killed by SIGABRT\)"):
        run_isolated(os.abort, timeout=60, log_path=tmp_path / "log.txt")


def test_an_exception_comes_back_with_its_message() -> None:
    with pytest.raises(StageFailed, match="ValueError: invalid literal for int"):
        run_isolated(int, "not a number", timeout=60)


def test_a_hang_times_out() -> None:
    started = time.monotonic()
    with pytest.raises(StageFailed, match="timed out after 2 s"):
        run_isolated(time.sleep, 60, timeout=2)
    assert time.monotonic() - started < 30


def test_a_user_error_in_the_child_stays_a_user_error(tmp_path: Path) -> None:
    from edgemaas.errors import UserError
    from edgemaas.spec import load_spec

    with pytest.raises(UserError, match=r"nowhere.yaml: no such spec file"):
        run_isolated(load_spec, str(tmp_path / "nowhere.yaml"), timeout=60)
