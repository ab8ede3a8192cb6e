"""Materialized pipes as ClickHouse materialized views.

A pipe with a ``TYPE MATERIALIZED`` node and ``DATASOURCE target`` becomes
``CREATE MATERIALIZED VIEW <pipe>__mv TO <target> AS <the node's SQL over the source table>``.
The view fires on every block written to its source table, whatever wrote it: every ingest path
(``evtrack send``, the Events API, datasource appends, a replayed queue) goes through the
datasource's ingest table, whose view writes into the datasource table, and views on that
table cascade, so a target that is itself the source of another materialized pipe feeds that one
too (a chain).

The node's SQL is rendered as Tinybird does for a materialization: with no template parameters,
earlier nodes inlined, and other pipes read by name replaced by their last node.
"""

from __future__ import annotations

import json

from ...errors import BadRequest, QueryError
from ...project import Column, Pipe
from ..ingest.statement import sql_string

__all__ = ["view_name", "view_ddl", "backfill_sql", "check_columns", "written_columns", "output_columns",
           "downstream"]


def view_name(pipe: str) -> str:
    return f"{pipe}__mv"


def view_ddl(pipe: Pipe, sql: str, database: str) -> str:
    return (f"CREATE MATERIALIZED VIEW `{database}`.`{view_name(pipe.name)}` "
            f"TO `{database}`.`{pipe.materialized.datasource}` AS {sql}")


def output_columns(store, sql: str) -> list[tuple[str, str]]:
    """(name, type) of each column the SQL returns, as ClickHouse infers them."""
    out = store.run(f"DESCRIBE ({sql})", "JSONCompactEachRow")
    return [tuple(json.loads(line)[:2]) for line in out.decode().splitlines() if line]


def check_columns(pipe: Pipe, produced: list[tuple[str, str]], target_columns: list[str], node=None) -> None:
    """Every column the pipe's writing node (materialized, or ``node``) produces must be a column of its
    target, as Tinybird checks at push."""
    node = node or pipe.materialized
    known = set(target_columns)
    missing = [name for name, _ in produced if name not in known]
    if missing:
        raise BadRequest(
            f"pipe '{pipe.name}': the {node.type} node '{node.name}' returns "
            f"{', '.join(repr(m) for m in missing)}, which the datasource '{node.datasource}' "
            f"does not have (its columns: {', '.join(target_columns)})")


def written_columns(store, pipe: Pipe, produced: list[tuple[str, str]], target: list[Column], node=None,
                    target_name: str | None = None) -> list[str]:
    """The columns a materialized pipe (its materialized node, or ``node`` writing into ``target_name``)
    writes into its target: those of its SELECT that the target has. As in ClickHouse, the others are
    ignored and the target's missing ones take their default; a shared column must convert to the
    target's type."""
    types = {c.name: c.sql_type for c in target}
    shared = [(name, type_) for name, type_ in produced if name in types]
    node = node or pipe.materialized
    target_name = target_name or node.datasource
    if not shared:
        raise BadRequest(f"pipe '{pipe.name}': the materialized node '{node.name}' returns none of the columns of "
                         f"the datasource '{target_name}' (its columns: {', '.join(types)})")
    wrong = [f"'{name}' is {type_}, the datasource's '{name}' is {types[name]}"
             for name, type_ in shared if type_ != types[name] and not _converts(store, type_, types[name])]
    if wrong:
        raise BadRequest(f"pipe '{pipe.name}': the materialized node '{node.name}' returns columns of types the "
                         f"datasource '{target_name}' cannot take: {'; '.join(wrong)}")
    return [name for name, _ in shared]


def _converts(store, source: str, target: str) -> bool:
    """Whether ClickHouse converts a value of type ``source`` to ``target`` (as a view's insert does)."""
    inner = source[len("Nullable("):-1] if source.startswith("Nullable(") else source
    try:
        store.run(f"SELECT CAST(defaultValueOfTypeName({sql_string(inner)}), {sql_string(target)})")
    except QueryError:
        return False
    return True


def backfill_sql(target: str, sql: str, columns: list[str], database: str) -> str:
    """The INSERT that writes what the view would have written for the rows already in its source."""
    names = ", ".join(f"`{name}`" for name in columns)
    return f"INSERT INTO `{database}`.`{target}` ({names}) SELECT {names} FROM ({sql})"


def downstream(targets: set[str], views: dict[str, dict]) -> set[str]:
    """``targets`` and every datasource materialized from them, through any number of ``views``
    (pipe -> its view's record: the tables it ``reads``, its ``target``)."""
    reached, grown = set(targets), True
    while grown:
        more = {v["target"] for v in views.values() if set(v["reads"]) & reached}
        grown = not more <= reached
        reached |= more
    return reached
