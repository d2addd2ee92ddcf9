"""The one Jinja environment every target renders its templates with (templates/ in the repository or wheel).

Strict (an unknown variable is an error), trailing newlines kept, block tags trimmed. Targets register their own
filters (`register_filters`) when their module loads. `render_plain` is the same environment without block
trimming, for templates written without it (Dockerfile.j2, edge/).
"""

from __future__ import annotations

from functools import cache
from typing import Any, Callable

import jinja2

from edgemaas.resources import templates_dir


@cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)


@cache
def _plain() -> jinja2.Environment:
    # An overlay shares the loader and the filters; only the whitespace settings differ.
    return environment().overlay(trim_blocks=False, lstrip_blocks=False)


def register_filters(**filters: Callable[..., Any]) -> None:
    """Add a target's filters; a name already taken by another function is a programming error."""
    taken = environment().filters
    for name, function in filters.items():
        if name in taken and taken[name] is not function:
            raise ValueError(f"template filter {name!r} is registered twice")
        taken[name] = function


def render(template: str, context: dict[str, Any] | None = None, /, **values: Any) -> str:
    """Render templates/<template> (e.g. "mcu/model_data.h.j2")."""
    return environment().get_template(template).render(context or {}, **values)


def render_plain(template: str, /, **values: Any) -> str:
    """Render a template written without block trimming (every newline after a tag is kept)."""
    return _plain().get_template(template).render(**values)
