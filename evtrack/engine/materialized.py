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

from ..errors import BadRequest
from ..project import Pipe

__all__ = ["view_name", "view_ddl", "backfill_sql", "check_columns", "output_columns", "downstream"]


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
