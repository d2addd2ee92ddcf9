"""What every command shares: the consoles, error handling at the command boundary, small formatters."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.markup import escape

from edgemaas.errors import UserError
from edgemaas.units import human_size
from edgemaas.workspace import Workspace

# Wide enough for tables when output goes to a file or CI log (rich assumes 80 columns there).
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
out = Console(width=None if sys.stdout.isatty() else 160)


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into click's `Error: ...` at the command boundary."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            if click.get_current_context().find_root().params.get("debug"):
                raise
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            # Every artifact is written under a temporary name and renamed into place, so nothing half-written
            # is left looking complete, and each stage redoes only what did not finish.
            console.print("\n[yellow]Interrupted.[/yellow] Nothing half-written was left behind; run the same "
                          "command again to finish.")
            raise SystemExit(130) from None

    return wrapper


def workspace() -> Workspace:
    return Workspace(Path("."))


def status_printer(message: str, target: Console | None = None) -> Callable[[str], None]:
    """A callback printing `message: step` dimmed on stderr. Both are escaped: a step naming a file or a shape such
    as `[batch, samples]` must print as written, not be read as rich markup."""
    printer = target or console
    return lambda step: printer.print(f"[dim]{escape(message)}: {escape(step)}[/dim]")



def read_event(data: str | None, data_file: str | None) -> Any:
    if (data is None) == (data_file is None):
        raise click.UsageError("give the event with exactly one of --data or --data-file")
    text = data if data is not None else Path(data_file).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        source = "--data" if data is not None else data_file
        raise click.BadParameter(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                                 param_hint=source) from None



def mb(size: int | None) -> str:
    return human_size(size)

