"""Lambda zips: the layout chosen at the size limits."""

from __future__ import annotations

import pytest

from edgemaas.packaging.awslambda import lambda_zip


@pytest.mark.parametrize("code, runtime, zipped, layout", [
    (1 * lambda_zip.MB, 80 * lambda_zip.MB, 30 * lambda_zip.MB, "zip"),
    (1 * lambda_zip.MB, 80 * lambda_zip.MB, 50 * lambda_zip.MB, "zip"),
    (1 * lambda_zip.MB, 80 * lambda_zip.MB, 50 * lambda_zip.MB + 1, "layer"),
    (100 * lambda_zip.MB, 150 * lambda_zip.MB, 90 * lambda_zip.MB, "layer"),
    (100 * lambda_zip.MB, 150 * lambda_zip.MB + 1, 90 * lambda_zip.MB, "image"),
])
def test_auto_layout_at_the_limits(code: int, runtime: int, zipped: int, layout: str) -> None:
    chosen, reason = lambda_zip.choose_layout(code, runtime, zipped)
    assert chosen == layout and reason.startswith(f"{layout}:")
