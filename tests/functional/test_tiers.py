"""The test tiers themselves: markers by folder, a test outside the tiers refused, and the unit tier failing a test
that imports TensorFlow or starts a process. Each runs a small pytest session in this process (pytester) with the
repository's own conftest files."""

from __future__ import annotations

import pytest

from tests.conftest import TESTS

pytest_plugins = ("pytester",)

UNIT_PROBES = """
import subprocess
import sys


def test_imports_tensorflow():
    import tensorflow  # noqa: F401


def test_starts_a_process():
    subprocess.run([sys.executable, "-c", "pass"], check=False)


def test_starts_a_process_and_swallows_the_error():
    try:
        subprocess.run(["true"], check=False)
    except Exception:
        pass


def test_plain():
    assert sorted([3, 1, 2]) == [1, 2, 3]
"""


def tree(pytester: pytest.Pytester) -> None:
    """suite/ (not tests/: that package is this session's) with the repository's conftest files and one test in
    each tier."""
    pytester.makepyfile(**{"suite/__init__": "", "suite/conftest": (TESTS / "conftest.py").read_text(),
                           "suite/unit/__init__": "", "suite/unit/conftest": (TESTS / "unit" / "conftest.py").read_text(),
                           "suite/functional/__init__": "", "suite/integration/__init__": ""})
    for tier in ("unit", "functional", "integration"):
        pytester.makepyfile(**{f"suite/{tier}/test_{tier}_probe": "def test_here():\n    assert True\n"})


def test_each_test_gets_the_marker_of_its_folder(pytester: pytest.Pytester) -> None:
    tree(pytester)
    for tier in ("unit", "functional", "integration"):
        result = pytester.runpytest_inprocess("suite", "-m", tier, "-p", "no:cacheprovider")
        result.assert_outcomes(passed=1, deselected=2)
        result.stdout.fnmatch_lines([f"*suite/{tier}/test_{tier}_probe.py*"])


def test_a_test_outside_the_tier_folders_is_refused(pytester: pytest.Pytester) -> None:
    tree(pytester)
    pytester.makepyfile(**{"suite/test_stray": "def test_stray():\n    assert True\n"})
    result = pytester.runpytest_inprocess("suite", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*tests live in tests/unit, tests/functional or tests/integration; move "
                                 "suite/test_stray.py*"])


def test_the_unit_tier_fails_tensorflow_imports_and_processes(pytester: pytest.Pytester) -> None:
    tree(pytester)
    # a stand-in module: the rule goes by name, and the real TensorFlow takes seconds to import (pytester puts
    # sys.modules and sys.path back afterwards)
    pytester.makepyfile(**{"tensorflow": "", "suite/unit/test_probes": UNIT_PROBES})
    result = pytester.runpytest_inprocess("suite/unit/test_probes.py", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines_random([
        "unit tier (call): the test imports tensorflow: move the test to tests/functional or tests/integration",
        "E   *ProcessStarted: a unit test must not start a process (subprocess.Popen): move the test to "
        "tests/functional or tests/integration",
        "unit tier (call): the test starts subprocess.Popen: move the test to tests/functional or tests/integration",
    ])
