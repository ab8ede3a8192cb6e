"""The README documents every command, option and environment variable, and its two commands are CI's."""

from __future__ import annotations

import re

import click
import pytest

from evtrack.cli import cli

from .conftest import ROOT

README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_is_documented(name):
    assert f"`evtrack {name}" in README


@pytest.mark.parametrize("name, command", sorted(cli.commands.items()))
def test_every_option_is_documented(name, command):
    for param in command.params:
        if isinstance(param, click.Option):
            assert any(opt in README for opt in param.opts), f"evtrack {name} {param.opts}"


def test_every_environment_variable_is_documented():
    code = "\n".join(p.read_text() for p in (ROOT / "evtrack").rglob("*.py"))
    for name in set(re.findall(r'envvar="([A-Z_]+)"', code)) | set(re.findall(r'environ(?:\.get)?\(\s*"([A-Z_]+)"', code)):
        assert f"`{name}`" in README, name


def test_ci_runs_the_readme_test_command_verbatim():
    block = README.split("# 2. install into .venv and run the whole test suite\n", 1)[1].splitlines()[0]
    assert block in (ROOT / ".ci" / "run").read_text().splitlines()
