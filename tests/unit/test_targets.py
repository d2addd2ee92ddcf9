"""`package --target`: which options go with which target."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from edgemaas.cli import cli


@pytest.mark.parametrize("args, message", [
    (["--target", "mcu", "--arch", "arm64"], "Error: --arch apply to --target lambda only"),
    (["--target", "edge", "--layout", "zip", "--serverless", "s.yml"],
     "Error: --layout, --serverless apply to --target lambda only"),
    (["--platform", "linux_aarch64"], "Error: --platform apply to --target edge only"),
    (["--target", "android", "--with-deps"], "Error: --with-deps apply to --target edge only"),
    (["--target", "ios", "--runtime", "onnx"],
     "Error: --runtime and --python-version apply to --target lambda and edge, not ios"),
])
def test_options_that_do_not_apply_to_the_target_are_refused(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["package", "cnn", *args])
    assert result.exit_code == 2
    assert message in result.output
