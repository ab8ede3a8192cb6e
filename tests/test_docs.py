"""The docs document every command (subcommands included), every option and every environment
variable the code reads; their relative links lead to files and headings that exist; and the
README's two commands are CI's.

The README is the front page; the reference is in docs/*.md, the Commands table in docs/commands.md."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from evtrack.cli import cli

from .conftest import ROOT

README = (ROOT / "README.md").read_text()
PAGES = {path: path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
# The Commands table documents each command on a row of its own; the options of `evtrack` itself are
# the "Global options:" paragraph before it.
COMMANDS_PAGE = (ROOT / "docs" / "commands.md").read_text()
COMMANDS_SECTION = COMMANDS_PAGE.split("\n## ", 1)[0]
_GLOBAL = re.search(r"^Global options:.*?(?=\n\n|\Z)", COMMANDS_SECTION, flags=re.MULTILINE | re.DOTALL)
GLOBAL_OPTIONS = _GLOBAL.group() if _GLOBAL else ""
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


FENCED = re.compile(r"^```[^\n]*\n.*?^```[^\n]*$", flags=re.MULTILINE | re.DOTALL)


def code_of(markdown: str) -> list[str]:
    """The text of every code block and inline code span."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL)
    prose = FENCED.sub("", markdown)
    return blocks + re.findall(r"`([^`\n]+)`", prose)


def environment_variables() -> set[str]:
    """Every EVTRACK_* and TB_* name in the package's code: what it reads, and sets for tinybird-cli."""
    code = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "evtrack").rglob("*.py"))
    return set(re.findall(r"\b(?:EVTRACK|TB)_[A-Z0-9]+(?:_[A-Z0-9]+)*\b", code))


# -- links ------------------------------------------------------------------------------------------
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (a link's text, not its target), lowercased, every
    character but letters, digits, spaces, '-' and '_' dropped, spaces turned to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The anchors of a page's headings, outside code blocks; a repeated heading's get -1, -2, ..."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", FENCED.sub("", markdown), flags=re.MULTILINE):
        base = slug(heading)
        found.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return found


def relative_links(markdown: str) -> list[str]:
    """The target of every link and image outside code that is not a URL (http:, mailto:, ...)."""
    prose = re.sub(r"`[^`\n]+`", "", FENCED.sub("", markdown))
    targets = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose)
    return [target for target in targets if not re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.IGNORECASE)]


def broken(page: Path, target: str) -> str | None:
    """Why ``target``, linked from ``page``, leads nowhere (None when it leads somewhere)."""
    path, _, anchor = target.partition("#")
    linked = (page.parent / path).resolve() if path else page
    if not linked.exists():
        return f"{path}: no such file"
    if anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
        return f"#{anchor}: no such heading in {path or page.name}"
    return None


LINKS = [(page, target) for page, text in PAGES.items() for target in relative_links(text)]


def test_the_walk_reaches_subcommands_and_the_grep_finds_the_settings():
    """So that the tests below cannot pass by finding nothing."""
    assert {"deploy", "send", "query", "copy", "copy run", "token", "token ls", "token jwt"} <= set(COMMANDS)
    assert {"EVTRACK_DATA", "EVTRACK_MAX_EXECUTION_TIME", "TB_HOST", "TB_TOKEN"} <= environment_variables()
    assert GLOBAL_OPTIONS.startswith("Global options: `--data DIR`")


def test_the_link_check_sees_links_and_the_readme_links_every_page():
    """So that the link check below cannot pass by finding nothing, and no page is an orphan."""
    assert slug("Real time: `bench/live.py`") == "real-time-benchlivepy"
    assert slug("JWTs: one user, one view") == "jwts-one-user-one-view"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}
    assert relative_links("[a](x.md#b) ![c](d.png) [e](https://x.y) `[f](g.md)`") == ["x.md#b", "d.png"]
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in relative_links(README)}
    orphans = [path.name for path in PAGES if path.parent.name == "docs" and path.resolve() not in linked]
    assert orphans == [], f"docs pages the README does not link: {', '.join(orphans)}"
    assert any("#" in target for _, target in LINKS) and any(target.endswith(".png") for _, target in LINKS)


@pytest.mark.parametrize("page, target", LINKS, ids=[f"{p.relative_to(ROOT)}:{t}" for p, t in LINKS])
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page, target):
    assert broken(page, target) is None, f"{page.relative_to(ROOT)} links {target}: {broken(page, target)}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_a_row_in_the_commands_table(command):
    assert rows_of(command), f"`evtrack {command}` has no row in the Commands table of docs/commands.md"


@pytest.mark.parametrize("command", ["", *sorted(COMMANDS)], ids=["evtrack", *sorted(COMMANDS)])
def test_every_option_is_documented_with_its_command(command):
    text = GLOBAL_OPTIONS if not command else "\n".join(rows_of(command))
    where = "the global options" if not command else f"the row of `evtrack {command}`"
    found = cli if not command else COMMANDS[command]
    missing = [option.opts[0] for option in options(found) if not mentions(text, option)]
    assert missing == [], f"not in {where}: {', '.join(missing)}"


@pytest.mark.parametrize("name", sorted(environment_variables()))
def test_every_environment_variable_is_documented(name):
    code = [span for text in PAGES.values() for span in code_of(text)]
    assert any(re.search(rf"\b{name}\b", span) for span in code), f"{name} is not in the code of README.md or docs/*.md"


def test_ci_runs_the_readme_test_command_verbatim():
    block = README.split("# 2. install into .venv and run the whole test suite\n", 1)[1].splitlines()[0]
    assert block in (ROOT / ".ci" / "run").read_text().splitlines()
