"""The docs keep up with the code: every CLI command and option is documented, and README.md stays a front page.

In the style of sqlite-utils' tests/test_docs.py: walk the click command tree and look for each command and each long
option in README.md and docs/*.md. A new option with no docs fails here, naming it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click

from edgemaas.cli import cli

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 300


def docs_text() -> str:
    pages = [README, *sorted(DOCS.rglob("*.md"))]
    return "\n".join(page.read_text(encoding="utf-8") for page in pages)


def walk(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command of the tree with its path of names below `edgemaas` (the group itself has the empty path)."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, (*path, name))


def long_flags(command: click.Command) -> list[str]:
    flags = []
    for param in command.params:
        if isinstance(param, click.Option):
            flags += [flag for flag in param.opts + param.secondary_opts if flag.startswith("--")]
    return flags


def mentioned(word: str, text: str) -> bool:
    # Whole words only: `--name` is not documented by `--function-name`, nor `invoke` by `invoked`.
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def test_the_tree_is_not_empty() -> None:
    commands = [path for path, _ in walk(cli) if path]
    assert len(commands) >= 10, commands
    assert "--force" in long_flags(cli.commands["build"])


def test_every_command_is_documented() -> None:
    text = docs_text()
    missing = [" ".join(("edgemaas", *path)) for path, _ in walk(cli)
               if path and not mentioned(" ".join(("edgemaas", *path)), text)]
    assert not missing, "commands not in README.md or docs/*.md:\n  " + "\n  ".join(missing)


def test_every_option_is_documented() -> None:
    text = docs_text()
    missing = [f"{' '.join(('edgemaas', *path))} {flag}" for path, command in walk(cli)
               for flag in long_flags(command) if not mentioned(flag, text)]
    assert not missing, "options not in README.md or docs/*.md:\n  " + "\n  ".join(missing)


def test_every_command_has_a_section_in_the_reference() -> None:
    reference = (DOCS / "cli.md").read_text(encoding="utf-8")
    missing = [" ".join(("edgemaas", *path)) for path, _ in walk(cli)
               if path and f"## `{' '.join(('edgemaas', *path))}`" not in reference]
    assert not missing, "commands with no '## `edgemaas ...`' section in docs/cli.md:\n  " + "\n  ".join(missing)


def test_readme_starts_with_the_two_commands_and_stays_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    first_block = lines[lines.index("```bash") + 1:lines.index("```", lines.index("```bash") + 1)]
    assert [line.split("#")[0].strip() for line in first_block] == ["./dev.sh build", "./dev.sh test"]
    assert lines.index("```bash") < 5, "README.md must open with the two commands"
    assert "./dev.sh test tests/unit" in "\n".join(lines[:20])
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_readme_links_point_at_files_that_exist() -> None:
    # mkdocs checks the links inside docs/ (tests/integration/test_docs_site.py); README.md lives outside it.
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets, "README.md links to no docs page"
    broken = [target for target in targets
              if not re.match(r"[a-z]+://", target) and not (REPO / target.split("#")[0]).exists()]
    assert not broken, f"README.md links to missing files: {broken}"


def test_every_option_is_in_its_commands_section_of_the_reference() -> None:
    # `edgemaas convert` is documented as the same command as `compress`, so its options are looked up there.
    reference = (DOCS / "cli.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## `edgemaas ([\w -]+)`\n(.*?)(?=^## |\Z)", reference, flags=re.M | re.S))
    aliases = {("convert",): ("compress",)}
    missing = []
    for path, command in walk(cli):
        if not path:
            continue
        section = sections.get(" ".join(aliases.get(path, path)), "")
        missing += [f"edgemaas {' '.join(path)} {flag}" for flag in long_flags(command) if not mentioned(flag, section)]
    assert not missing, "options missing from their command's section of docs/cli.md:\n  " + "\n  ".join(missing)
