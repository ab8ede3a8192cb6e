"""What a SQL text must pass before tinybird-cli's SQL toolset may parse it.

The toolset is a C extension running in this process, and it overflows its stack on expressions
nested some thousands deep: ``SELECT 1+1+...`` with 10,000 terms kills the process (exit 139),
and any token that may send SQL could send it. ClickHouse refuses far less than that, so evtrack
refuses what ClickHouse would, before the toolset sees it:

- a text over ClickHouse's ``max_query_size`` (256 KiB);
- an expression deeper than its ``max_ast_depth`` / ``max_parser_depth`` (1,000), found by the
  engine's own parser (``formatQuerySingleLine``), which checks its limits and its stack and
  refuses rather than crashing.

The toolset survives 3,000 levels of every shape tried (chains of operators, parentheses,
function calls, arrays, subqueries; tests/test_sql_guard.py), and a text of at most ``SHORT``
characters cannot nest deeper than ``SHORT`` levels, so only longer texts pay for the engine's
parse.
"""

from __future__ import annotations

import re

from ...errors import QueryError
from ..store import param_text

__all__ = ["MAX_QUERY_SIZE", "SHORT", "check_size", "check_parsable", "check_template"]

MAX_QUERY_SIZE = 256 * 1024  # ClickHouse's max_query_size
SHORT = 1000
# ClickHouse's refusals for a text past its parser's limits (the codes, and the text of max_query_size's).
_LIMITS = ("(TOO_DEEP_AST)", "(TOO_DEEP_RECURSION)", "(TOO_BIG_AST)", "Max query size exceeded")


def check_size(sql: str) -> None:
    """A QueryError (400) when ``sql`` is longer than ClickHouse would parse."""
    if len(sql) > MAX_QUERY_SIZE // 4 and len(sql.encode()) > MAX_QUERY_SIZE:
        raise QueryError(f"[Error] Max query size exceeded: the query is {len(sql.encode())} bytes, "
                         f"at most {MAX_QUERY_SIZE} (max_query_size)")


def check_parsable(store, sql: str) -> None:
    """A QueryError (400) naming the limit when ClickHouse's parser would refuse ``sql`` for its size or depth.

    Any other error (a syntax error, say) is left to the toolset, which words it as Tinybird does.
    """
    check_size(sql)
    if len(sql) <= SHORT:
        return
    try:
        # The text is a parameter's value, parsed as a query and never run: nothing in it can execute.
        store.run("SELECT length(formatQuerySingleLine({q:String}))", "Null", params={"q": param_text(sql)})
    except QueryError as exc:
        if any(limit in exc.message for limit in _LIMITS):
            raise QueryError(re.sub(r"\. \([A-Z_]+\)$", "", exc.message.split(": In scope ")[0])) from None


_TEMPLATE_EXPRESSION = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_TEMPLATE_STATEMENT = re.compile(r"\{%.*?%\}", re.DOTALL)


def check_template(store, text: str) -> None:
    """``check_parsable`` for a node's text before the datafile parser formats it with the toolset:
    a template's expressions are read as literals and its statements dropped."""
    sql = text.lstrip()
    if sql.startswith("%"):
        sql = sql[1:]
    check_parsable(store, _TEMPLATE_STATEMENT.sub(" ", _TEMPLATE_EXPRESSION.sub(" 1 ", sql)))
