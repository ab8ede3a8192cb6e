"""Read-only SQL over the datasources, as Tinybird's SQL API accepts it.

tinybird-cli's toolset parses the query: only SELECT (and DESCRIBE) pass, table functions
such as ``file()`` and ``url()`` are refused with Tinybird's text, and every table must be a
datasource (or its quarantine) of the project. A trailing ``FORMAT X`` picks the output.
"""

from __future__ import annotations

import re

from ...errors import BadRequest, Forbidden, QueryError
from .gate import SYSTEM_TABLES, admit
from .pipes import _replace

__all__ = ["read_only_sql", "split_format", "used_tables"]

_FORMAT = re.compile(r"\s+FORMAT\s+([A-Za-z]+)\s*;?\s*$", re.IGNORECASE)
# Table functions that read nothing but what they generate.
_HARMLESS_FUNCTIONS = frozenset({"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series"})


def split_format(query: str) -> tuple[str, str | None]:
    match = _FORMAT.search(query)
    if not match:
        return query.strip().rstrip(";"), None
    return query[: match.start()].strip(), match.group(1)


def used_tables(query: str) -> list[tuple[str, str, str]]:
    """(database, table, table function) for each source the query reads, by tinybird-cli's parser."""
    from tinybird.sql_toolset import sql_get_used_tables  # imported where used (see evtrack.project)

    sql, _ = split_format(query)
    if not sql:
        raise BadRequest("missing q parameter. example q=select%201")
    try:
        return sql_get_used_tables(sql, raising=True, table_functions=True)
    except Exception as exc:
        raise QueryError(f"[Error] {str(exc).strip()}") from None


def read_only_sql(query: str, tables: dict[str, tuple[str, str] | str], database: str, readable=None,
                  describe: bool = False) -> tuple[str, str | None]:
    """The query rewritten onto the store's tables and admitted by the gate for the workspace whose
    tables live in ``database``, and its FORMAT if it named one.

    ``tables`` maps each name SQL may use to a table or a subquery (a pipe, or ``_``); any other
    table is refused. ``readable(name)``, when given, says whether the caller may read that name;
    a refusal is Tinybird's 403. ``describe``: a DESCRIBE may pass.
    """
    sql, fmt = split_format(query)
    for db, name, function in used_tables(query):
        if function and function not in _HARMLESS_FUNCTIONS:
            raise QueryError(f"[Error] The table function '{function}' is not allowed")
        full = f"{db}.{name}" if db else name
        if db == "system" and name in SYSTEM_TABLES:
            continue  # what every query may read (system.one, system.numbers...): the gate admits them
        if name and ((db, name) if db else name) not in tables:  # a service's, by its database
            raise QueryError(f"[Error] Resource '{full}' not found")
        if name and readable is not None and not readable(full):
            raise Forbidden(f"token needs scope DATASOURCES:READ:{full}")
    return admit(_replace(sql, tables), database, describe=describe), fmt
