"""edgemaas bench: goal ratios, without measuring anything (the measuring is in tests/functional/test_bench.py)."""

from __future__ import annotations

import pytest

from edgemaas.bench import report as bench_report


@pytest.mark.parametrize("target", [1.0, 0.7, 1 / 20, 1 / 30, 1.5])
def test_a_ratio_is_never_printed_on_the_wrong_side_of_its_target(target: float) -> None:
    for ratio in (target * (1 + 1e-4), target * (1 - 1e-4), target, target * 1.3, target / 1.3):
        assert (float(bench_report.ratio_text(ratio, target)) <= target) == (ratio <= target)
