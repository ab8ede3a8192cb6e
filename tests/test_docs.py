"""The README documents every command (subcommands included), every option and every environment
variable the code reads, and its two commands are CI's."""

from __future__ import annotations

import re

import click
import pytest

from evtrack.cli import cli

from .conftest import ROOT

README = (ROOT / "README.md").read_text()
# The Commands table documents each command on a row of its own; the options of `evtrack` itself are
# the paragraph before it.
COMMANDS_SECTION = README.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
GLOBAL_OPTIONS = COMMANDS_SECTION.split("\n\n| command |", 1)[0]
ROWS = [line for line in COMMANDS_SECTION.splitlines() if line.startswith("| `evtrack ")]


def walk(group: click.Group, words: tuple[str, ...] = ()):
    """Every command registered under ``group``, as the words after `evtrack`, subcommands included.
    (`query`'s subcommands are the deployed pipes, made at run time: they are the project's, not the CLI's.)"""
    for name, command in sorted(group.commands.items()):
        yield " ".join((*words, name)), command
        if isinstance(command, click.Group):
            yield from walk(command, (*words, name))


COMMANDS = dict(walk(cli))


def rows_of(command: str) -> list[str]:
    """The Commands table's rows for `evtrack COMMAND` (a group's are those of its subcommands)."""
    return [row for row in ROWS if re.match(rf"\| `evtrack {re.escape(command)}[ `]", row)]


def options(command: click.Command) -> list[click.Option]:
    return [param for param in command.params if isinstance(param, click.Option) and not param.hidden]


def mentions(text: str, option: click.Option) -> bool:
    return any(re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text) for opt in option.opts)


def code_of(markdown: str) -> list[str]:
    """The text of every code block and inline code span."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, flags=re.M | re.S)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", markdown, flags=re.M | re.S)
    return blocks + re.findall(r"`([^`\n]+)`", prose)


def environment_variables() -> set[str]:
    """Every EVTRACK_* and TB_* name in the package's code: what it reads, and sets for tinybird-cli."""
    code = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "evtrack").rglob("*.py"))
    return set(re.findall(r"\b(?:EVTRACK|TB)_[A-Z0-9]+(?:_[A-Z0-9]+)*\b", code))


def test_the_walk_reaches_subcommands_and_the_grep_finds_the_settings():
    """So that the tests below cannot pass by finding nothing."""
    assert {"deploy", "send", "query", "copy", "copy run", "token", "token ls", "token jwt"} <= set(COMMANDS)
    assert {"EVTRACK_DATA", "EVTRACK_MAX_EXECUTION_TIME", "TB_HOST", "TB_TOKEN"} <= environment_variables()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_a_row_in_the_commands_table(command):
    assert rows_of(command), f"`evtrack {command}` has no row in the README's Commands table"


@pytest.mark.parametrize("command", ["", *sorted(COMMANDS)], ids=["evtrack", *sorted(COMMANDS)])
def test_every_option_is_documented_with_its_command(command):
    text = GLOBAL_OPTIONS if not command else "\n".join(rows_of(command))
    where = "the global options" if not command else f"the row of `evtrack {command}`"
    found = cli if not command else COMMANDS[command]
    missing = [option.opts[0] for option in options(found) if not mentions(text, option)]
    assert missing == [], f"not in {where}: {', '.join(missing)}"


@pytest.mark.parametrize("name", sorted(environment_variables()))
def test_every_environment_variable_is_documented(name):
    assert any(re.search(rf"\b{name}\b", code) for code in code_of(README)), f"{name} is not in the README's code"


def test_ci_runs_the_readme_test_command_verbatim():
    block = README.split("# 2. install into .venv and run the whole test suite\n", 1)[1].splitlines()[0]
    assert block in (ROOT / ".ci" / "run").read_text().splitlines()
