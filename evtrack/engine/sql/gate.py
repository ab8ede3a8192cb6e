"""The one gate for SQL from outside the process: what a workspace's text may make chDB do.

chDB is ClickHouse's client as much as its server, so a clause ClickHouse runs on the client
(``INTO OUTFILE``, ``FROM INFILE``) acts on this host's files, and a table of another database is
another workspace's, or the server's own. Every SQL text that comes from outside (the SQL API,
``q=``, every node of every pipe however it is pushed, delete and replace conditions, a
datafile's column expressions) passes ``admit`` before it runs or is stored, once it is written
over the store's tables.

The decision is taken on ClickHouse's parse, by the SQL toolset tinybird-cli ships (ClickHouse's
own parser, built as a Python extension), never by matching the text as written:

- the statement: a SELECT (or a DESCRIBE, where the SQL API allows it), and one;
- the tables: each must be a table of the workspace's own database, or one of the ``system``
  tables Tinybird lets every query read (``system.one``, ``system.numbers``...);
- the functions: table functions as Tinybird allows them (``numbers()`` anywhere; ``url()``,
  ``s3()`` and the like only in copy pipes), and every function the toolset restricts (``file()``,
  ``executable()``, ``remote()``...) refused with Tinybird's text;
- the clauses: no ``INTO OUTFILE`` in any of its forms, found in the parse's canonical rendering
  (no comments, one spelling per keyword, literals quoted one way), outside literals and brackets.

A workspace's admin token is held to it as every other token is: it is a tenant's key, not the
host's.
"""

from __future__ import annotations

import re

from ...errors import QueryError
from ...project import split_columns
from .guard import check_size

__all__ = ["SYSTEM_TABLES", "admit", "admit_datasource", "admit_expression"]

# Statements a text from outside may be.
_SELECT = "SelectWithUnionQuery"
_DESCRIBE = "DescribeQuery"
# Clauses ClickHouse runs on the client, as pairs of canonical keywords.
_CLIENT_SIDE = (("INTO", "OUTFILE"), ("FROM", "INFILE"))


def _constants():
    from tinybird.ch_utils.constants import COPY_ENABLED_TABLE_FUNCTIONS, ENABLED_TABLE_FUNCTIONS

    return frozenset(ENABLED_TABLE_FUNCTIONS), frozenset(COPY_ENABLED_TABLE_FUNCTIONS), SYSTEM_TABLES


# The system tables every query may read on Tinybird (tinybird-cli's ENABLED_SYSTEM_TABLES).
SYSTEM_TABLES = frozenset({"functions", "numbers", "numbers_mt", "one"})


def admit(sql: str, database: str, *, copy: bool = False, describe: bool = False) -> str:
    """``sql`` unchanged when the workspace whose tables live in ``database`` may run it; a
    QueryError (400) naming the statement, clause, function or table otherwise.

    ``copy``: the text is a copy pipe's, which may read the outside world through the table
    functions Tinybird allows there. ``describe``: a DESCRIBE may pass (the SQL API's).
    """
    check_size(sql)
    from chtoolset._query import format as canonical, query_get_type

    try:
        kind = query_get_type(sql)
    except ValueError as exc:
        raise QueryError(f"[Error] {_first_line(exc)}") from None
    if kind not in (_SELECT, _DESCRIBE) or (kind == _DESCRIBE and not describe):
        allowed = "SELECT or DESCRIBE" if describe else "SELECT"
        raise QueryError(f"[Error] Only {allowed} queries are supported. Got: {kind}")
    lowered = sql.lower()
    if "outfile" in lowered or "infile" in lowered:  # keywords are never quoted: else no such clause
        clause = _client_side_clause(canonical(sql))
        if clause:
            raise QueryError(f"[Error] {clause} is not allowed")
    for db, table, function in _tables(sql, copy):
        _admit_table(db, table, function, database, copy)
    return sql


def admit_expression(expression: str, database: str, where: str) -> None:
    """A datafile's expression (a DEFAULT, a TTL, a key) or a condition: what ``admit`` lets a
    SELECT of it do. ``where`` names it in the refusal."""
    try:
        admit(f"SELECT {expression}", database)
    except QueryError as exc:
        raise QueryError(f"{where}: {exc.message}") from None


# A column's expression in its DDL, after the kind that introduces it, up to its codec, TTL or comment.
_COLUMN_EXPRESSION = re.compile(r"\s(?:DEFAULT|MATERIALIZED|ALIAS|EPHEMERAL)\s+(.+?)(?:\s+(?:CODEC|TTL|COMMENT)\b.*)?$",
                                re.IGNORECASE | re.DOTALL)
# Expressions of a datasource's engine, as the datafile names them.
_ENGINE_EXPRESSIONS = ("engine_sorting_key", "engine_partition_key", "engine_primary_key", "engine_sampling_key",
                       "engine_ttl", "engine_ver", "engine_sign", "engine_version", "engine_is_deleted")
# What a TTL may do to the rows it reaches: not part of its expression.
_TTL_ACTION = re.compile(r"\s+(?:DELETE|TO\s+(?:DISK|VOLUME)\s+'[^']*'|RECOMPRESS\s+.*)\s*$", re.IGNORECASE)
# Table settings that put a table's files elsewhere on the host.
_HOST_SETTINGS = frozenset({"disk", "storage_policy"})


def admit_datasource(ds, database: str) -> None:
    """A datasource's column and engine expressions, and its engine settings, before its table is
    created: ClickHouse evaluates a DEFAULT or a key at each insert, and a constant one when the
    table is created."""
    for ddl in ds.column_ddl:
        found = _COLUMN_EXPRESSION.search(ddl)
        if found:
            admit_expression(found.group(1), database, f"{ds.name}.datasource, column {ddl.split()[0]}")
    for key, value in ds.engine_settings:
        if key == "engine_ttl":
            for part in split_columns(value):
                admit_expression(_TTL_ACTION.sub("", part), database, f"{ds.name}.datasource, ENGINE_TTL")
        elif key in _ENGINE_EXPRESSIONS:
            admit_expression(value, database, f"{ds.name}.datasource, {key.upper()}")
        elif key == "engine_settings":
            for part in split_columns(value):
                name = part.split("=", 1)[0].strip().strip("`\"").lower()
                if name in _HOST_SETTINGS:
                    raise QueryError(f"{ds.name}.datasource, ENGINE_SETTINGS: the setting '{name}' is not allowed")


def _tables(sql: str, copy: bool) -> list[tuple[str, str, str]]:
    from tinybird.sql_toolset import sql_get_used_tables

    _, copy_functions, _ = _constants()
    try:
        return sql_get_used_tables(sql, raising=True, table_functions=True,
                                   function_allow_list=copy_functions if copy else None)
    except Exception as exc:  # the toolset's policy errors carry Tinybird's words
        raise QueryError(f"[Error] {_first_line(exc)}") from None


def _admit_table(db: str, table: str, function: str, database: str, copy: bool) -> None:
    allowed, copy_functions, system_tables = _constants()
    if function:
        if function in allowed or (copy and function in copy_functions):
            if not table:
                return
        elif function in copy_functions:
            raise QueryError(f"[Error] The {function} table function is only allowed in Copy Pipes")
        else:
            raise QueryError(f"[Error] The query uses disabled table functions: '{function}'")
    if db == database or (db == "system" and table in system_tables):
        return
    name = f"{db}.{table}" if db else table
    raise QueryError(f"[Error] Resource '{name}' not found")


def _client_side_clause(text: str) -> str | None:
    """The first client-side clause of a canonical query outside literals, quoted names and brackets."""
    words: list[str] = []
    depth, i, n = 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'`\"":
            i = _skip_quoted(text, i)
            words.append("")
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch.isalpha() or ch == "_":
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            word = text[i:j].upper()
            if depth == 0 and words and (words[-1], word) in _CLIENT_SIDE:
                return f"{words[-1]} {word}"
            words.append(word if depth == 0 else "")
            i = j
            continue
        elif not ch.isspace():
            words.append("")
        i += 1
    return None


def _skip_quoted(text: str, start: int) -> int:
    quote, i = text[start], start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            if i + 1 < len(text) and text[i + 1] == quote:  # a doubled quote inside
                i += 2
                continue
            return i + 1
        i += 1
    return i


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
