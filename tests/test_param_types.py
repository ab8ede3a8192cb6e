"""One table of template parameter values, checked against the CLI (`evtrack query`, exit 2 naming the
parameter before anything runs) and the server (400), so neither is stricter than the other.

Whether a value is accepted is read from tinybird-cli's template functions, which Tinybird renders
every endpoint with (`tinybird/sql_template.py`, `tinybird/datatypes.py`): integers are an
optional sign and digits within the type's range; floats are what Python's `float` reads, without
`_`; a `Date` is exactly `YYYY-MM-DD`; a `DateTime` starts with `YYYY?MM?DD` then `T` or a space and
`hh:mm:ss` (any one character between the date's parts), or `DD?MM?YYYY?h:m:s`, and whatever
follows is not looked at; a `DateTime64` is the same with `.fff` after the seconds; an `Array` is
its text split on `,` (nothing trimmed), each part checked as its type (`String` parts as they are);
`String`, `Boolean` and `column()` take any text; a parameter left out takes its default.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient  # noqa: the suite's in-process client, as in test_server

from evtrack.cli import cli
from evtrack.engine import Engine
from evtrack.server.app import create_app

# (the template expression of parameter `v`, the value sent (None: not sent), accepted?)
TABLE = [
    ("Int8(v)", "-128", True), ("Int8(v)", "-129", False),
    ("UInt8(v)", "255", True), ("UInt8(v)", "-1", False),
    ("Int32(v)", "+7", True), ("Int32(v)", "1.5", False), ("Int32(v)", "2147483648", False),
    ("Int64(v)", "-9223372036854775808", True),
    ("UInt64(v)", "18446744073709551615", True), ("UInt64(v)", "18446744073709551616", False),
    ("Float32(v)", "3", True),
    ("Float64(v)", "1.5", True), ("Float64(v)", "-2e3", True), ("Float64(v)", "1_0", False), ("Float64(v)", "abc", False),
    ("String(v)", "", True), ("String(v)", "it's", True),
    ("Boolean(v)", "false", True), ("Boolean(v)", "maybe", True),
    ("Date(v)", "2023-07-01", True), ("Date(v)", "2023-07-01 00:00:00", False), ("Date(v)", "01/07/2023", False),
    ("DateTime(v)", "2023-07-01 10:00:00", True), ("DateTime(v)", "2023-07-01T10:00:00", True),
    ("DateTime(v)", "2023-07-01T10:00:00Z", True), ("DateTime(v)", "2023-07-01 10:00:00.250", True),
    ("DateTime(v)", "01/07/2023 10:00:00", True), ("DateTime(v)", "01-07-2023 1:02:03", True),
    ("DateTime(v)", "2023-07-01", False), ("DateTime(v)", "2023-07-01 10:00", False),
    ("DateTime64(v)", "2023-07-01 10:00:00.250", True), ("DateTime64(v)", "2023-07-01T10:00:00.250Z", True),
    ("DateTime64(v)", "2023-07-01 10:00:00", False),
    ("Array(v, 'String')", "api", True), ("Array(v, 'String')", "api,auth", True), ("Array(v)", "api,auth", True),
    ("Array(v, 'Int32')", "1,2,3", True), ("Array(v, 'Int32')", "1, 2", False), ("Array(v, 'Int32')", "1,x", False),
    ("Array(v, 'Int32')", "", False),
    ("Array(v, 'UInt8')", "0,255", True), ("Array(v, 'UInt8')", "0,256", False),
    ("Array(v, 'Float64')", "1.5,2", True), ("Array(v, 'Float64')", "1.5;2", False),
    ("Array(v, 'Date')", "2023-07-01,2023-07-02", True), ("Array(v, 'Date')", "2023-07-01 00:00:00", False),
    ("Array(v, 'DateTime')", "2023-07-01 10:00:00,2023-07-02T01:02:03", True), ("Array(v, 'DateTime')", "2023-07-01", False),
    ("column(v, 'page')", "page", True), ("column(v, 'page')", None, True),
    ("DateTime(v, '2023-01-01 00:00:00')", None, True), ("Array(v, 'Int32', default='1,2')", None, True),
]

PAGES = """DESCRIPTION >
    One row to read columns from.

SCHEMA >
    `page` String `json:$.page`

ENGINE MergeTree
ENGINE_SORTING_KEY page
"""

EXPRESSIONS = sorted({expression for expression, _, _ in TABLE})


def pipe_of(expression: str) -> str:
    return f"p{EXPRESSIONS.index(expression)}"


def pipe_text(expression: str) -> str:
    return (f"DESCRIPTION >\n    The parameter v as {expression}.\n\nNODE only\nSQL >\n    %\n"
            f"    SELECT {{{{ {expression} }}}} AS v FROM pages\n\nTYPE endpoint\n")


def run(*args, data: Path):
    return CliRunner(mix_stderr=False).invoke(cli, ["--data", str(data), *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("param_types")
    (root / "datasources").mkdir()
    (root / "pipes").mkdir()
    (root / "datasources" / "pages.datasource").write_text(PAGES)
    for expression in EXPRESSIONS:
        (root / "pipes" / f"{pipe_of(expression)}.pipe").write_text(pipe_text(expression))
    data = root / "store"
    deployed = run("deploy", "--project", str(root), data=data)
    assert deployed.exit_code == 0, deployed.stderr
    return data


def ids(row) -> str:
    return f"{row[0]}={row[1]!r}"


@pytest.mark.parametrize("expression, value, accepted", TABLE, ids=[ids(r) for r in TABLE])
def test_the_cli_accepts_what_tinybird_accepts(store, expression, value, accepted):
    given = [] if value is None else ["--param", f"v={value}"]
    result = run("query", pipe_of(expression), *given, data=store)
    if accepted:
        assert result.exit_code == 0, result.stderr
    else:
        assert result.exit_code == 2
        assert result.stderr.splitlines()[-1].startswith(f"Error: Invalid value for '--v': {value!r} is not a valid ")


@pytest.fixture(scope="module")
def client(store):
    with Engine.open(store) as engine, TestClient(create_app(engine)) as client:
        client.headers["Authorization"] = f"Bearer {engine.tokens.admin.token}"
        yield client


@pytest.mark.parametrize("expression, value, accepted", TABLE, ids=[ids(r) for r in TABLE])
def test_the_server_accepts_what_tinybird_accepts(client, expression, value, accepted):
    answer = client.get(f"/v0/pipes/{pipe_of(expression)}.json", params={} if value is None else {"v": value})
    assert answer.status_code == (200 if accepted else 400), answer.text
