"""The CLI's step status lines print their text as written, square brackets included (rich markup is escaped)."""

from __future__ import annotations

import io
import re

from rich.console import Console

from edgemaas.commands.common import status_printer


def _printed(message: str, step: str) -> str:
    buffer = io.StringIO()
    target = Console(file=buffer, width=200, force_terminal=False, color_system=None)
    status_printer(message, target)(step)
    return buffer.getvalue()


def test_a_step_with_square_brackets_keeps_them() -> None:
    assert _printed("package", "smoke test: input [batch, samples] set to [1, 512]") == \
        "package: smoke test: input [batch, samples] set to [1, 512]\n"


def test_a_step_that_looks_like_a_markup_tag_is_printed_not_applied() -> None:
    assert _printed("cnn", "wrote [bold]report[/bold] and [dim]x[/dim]") == \
        "cnn: wrote [bold]report[/bold] and [dim]x[/dim]\n"


def test_the_message_is_escaped_too_and_the_line_is_still_dimmed() -> None:
    buffer = io.StringIO()
    target = Console(file=buffer, width=200, force_terminal=True, color_system="standard")
    status_printer("[my model]", target)("step [1/3]")
    text = buffer.getvalue()
    assert re.sub(r"\x1b\[[0-9;]*m", "", text) == "[my model]: step [1/3]\n"  # colours aside, as written
    assert "\x1b[2m" in text  # the dim style still applies around the escaped text
