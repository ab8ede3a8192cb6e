"""Pipes rendered with tinybird-cli's template engine and composed into one ClickHouse query.

Each node's template is rendered by ``tinybird.sql_template.render_sql_template`` (so type
checks, defaults, ``error()`` and ``custom_error()`` behave as on Tinybird) and node and
datasource names are resolved by ``tinybird.sql_toolset.replace_tables``, which inlines
earlier nodes as subqueries and refuses table functions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from ...errors import EvtrackError, NotFound, QueryError, TemplateError
from ...project import Node, Pipe
from .gate import admit
from .guard import check_size

__all__ = ["RESERVED_PARAMS", "render_node", "pipe_sql", "pipe_reader"]

# Never handed to a template, as on Tinybird.
RESERVED_PARAMS = frozenset(
    {"q", "token", "format", "pipeline", "debug", "explain", "query_id", "release_replacements",
     "template_parameters", "from", "tag", "cli_version", "__tb__semver", "_"}
)


def render_node(node: Node, params: dict[str, str], test_mode: bool = False) -> str:
    if not node.templated:
        return node.sql
    # tinybird-cli is imported where it is used (see evtrack.project).
    from tinybird.sql_template import SQLTemplateCustomError, SQLTemplateException, render_sql_template

    try:
        sql, _, _ = render_sql_template(node.template, params, test_mode=test_mode, name=node.name)
        return sql
    except SQLTemplateCustomError as exc:
        raise EvtrackError(str(exc.err), status=exc.code, body=exc.err) from None
    except SQLTemplateException as exc:
        raise TemplateError(_template_message(node, exc)) from None
    except (ValueError, TypeError, NameError, SyntaxError) as exc:
        raise TemplateError(str(exc)) from None


def _template_message(node: Node, exc) -> str:
    from tinybird.sql_template import (SQLTemplateException, format_SQLTemplateException_message,
                                       get_template_and_variables, get_var_names_and_types)

    template, _, _ = get_template_and_variables(node.template, node.name)
    try:
        format_SQLTemplateException_message(exc, get_var_names_and_types(template))
    except SQLTemplateException as formatted:
        return str(formatted)
    return str(exc)


def pipe_sql(pipe: Pipe, params: dict[str, str], tables: dict[str, tuple[str, str]], database: str,
             test_mode: bool = False, node: Node | None = None,
             pipes: Callable[[str], Pipe | None] | None = None) -> str:
    """The pipe's endpoint (or ``node``) as one query over real tables, admitted by the gate for the
    workspace whose tables live in ``database`` (a copy node with a copy's table functions).

    ``pipes(name)``, when given, finds another deployed pipe that a node reads by name, as Tinybird
    allows: it stands for that pipe's last node, rendered with the same parameters.
    """
    target = node or pipe.endpoint
    if target is None:
        raise NotFound(f"The pipe '{pipe.name}' does not have an endpoint yet")
    sql = _node_sql(pipe, target, {k: v for k, v in params.items() if k not in RESERVED_PARAMS},
                    tables, test_mode, pipes, (pipe.name,))
    return admit(sql, database, copy=target is pipe.copy)


def pipe_reader(pipe: Pipe, pipes: Mapping[str, Pipe]) -> Callable[[str], Pipe | None] | None:
    """How ``pipe`` finds the ``pipes`` it reads by name (``pipe_sql``'s ``pipes``); None when it
    names none (most endpoints: no parse needed)."""
    if any(name != pipe.name and name in pipe.source for name in pipes):
        return pipes.get
    return None


def _node_sql(pipe: Pipe, target: Node, variables: dict, tables: dict, test_mode: bool, pipes, seen: tuple) -> str:
    """The target node's SQL, rendered first, as Tinybird renders a pipe: its ``error()`` and parameter
    checks answer before those of the nodes it reads. A node before it is rendered only when the query
    reaches it (the SQL toolset calls its replacement then), unless the pipe reads other pipes by name:
    then every node is rendered at once, to find them."""
    sql = render_node(target, variables, test_mode)
    replacements: dict = dict(tables)
    if pipes is not None:
        _add_pipes(sql, replacements, variables, tables, test_mode, pipes, seen)
    for node in pipe.nodes[:pipe.nodes.index(target)]:
        if pipes is None:
            replacements[node.name] = functools.partial(_rendered, node, variables, test_mode)
            continue
        earlier = render_node(node, variables, test_mode)
        _add_pipes(earlier, replacements, variables, tables, test_mode, pipes, seen)
        replacements[node.name] = f"({earlier})"
    return _replace(sql, replacements)


def _rendered(node: Node, variables: dict, test_mode: bool, _table_functions=None) -> str:
    return f"({render_node(node, variables, test_mode)})"


def _add_pipes(sql: str, replacements: dict, variables: dict, tables: dict, test_mode: bool, pipes, seen: tuple) -> None:
    """Other pipes that ``sql`` reads by name, as subqueries of their last node."""
    from tinybird.sql_toolset import sql_get_used_tables

    check_size(sql)
    try:
        used = sql_get_used_tables(sql, raising=True, table_functions=False)
    except Exception:
        return  # replace_tables reports the parse error with Tinybird's text
    for database, name, _ in used:
        if database or not name or name in replacements:
            continue
        other = pipes(name)
        if other is None:
            continue
        if name in seen:
            raise QueryError(f"[Error] pipes read each other in a cycle: {' -> '.join((*seen, name))}")
        last = other.nodes[-1]
        replacements[name] = f"({_node_sql(other, last, variables, tables, test_mode, pipes, (*seen, name))})"


def _replace(sql: str, replacements: dict) -> str:
    from tinybird.sql_toolset import replace_tables

    check_size(sql)  # a rendered pipe nests as deep as its datafile; parameters only make it longer
    try:
        return replace_tables(sql, replacements)
    except EvtrackError:
        raise  # a node rendered on the way: its template's own error
    except Exception as exc:  # the toolset's parse and policy errors
        raise QueryError(f"[Error] {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from None
