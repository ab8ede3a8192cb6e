"""Tinybird's token scopes: their names, the scope of a kind on one resource, and its parts.

A scope is a string. Some stand alone (``ADMIN``, ``TOKENS``, ``DATASOURCES:CREATE``,
``PIPES:CREATE``); the others are a kind followed by the resource it applies to
(``DATASOURCES:APPEND:events``, ``PIPES:READ:get_events``). ``ADMIN`` allows everything. Scopes
are written, built and taken apart here only.
"""

from __future__ import annotations

__all__ = [
    "ADMIN",
    "DATASOURCES_APPEND",
    "DATASOURCES_CREATE",
    "DATASOURCES_DROP",
    "DATASOURCES_READ",
    "PIPES_CREATE",
    "PIPES_DROP",
    "PIPES_READ",
    "TOKENS",
    "append",
    "may_append",
    "on",
    "read_datasource",
    "read_pipe",
    "reads",
    "split",
]

ADMIN = "ADMIN"
TOKENS = "TOKENS"
DATASOURCES_CREATE = "DATASOURCES:CREATE"
PIPES_CREATE = "PIPES:CREATE"

# Kinds: each names a resource after it.
DATASOURCES_APPEND = "DATASOURCES:APPEND"
DATASOURCES_READ = "DATASOURCES:READ"
DATASOURCES_DROP = "DATASOURCES:DROP"
PIPES_READ = "PIPES:READ"
PIPES_DROP = "PIPES:DROP"


def on(kind: str, resource: str) -> str:
    """The scope of ``kind`` on ``resource``."""
    return f"{kind}:{resource}"


def append(datasource: str) -> str:
    return on(DATASOURCES_APPEND, datasource)


def read_datasource(datasource: str) -> str:
    return on(DATASOURCES_READ, datasource)


def read_pipe(pipe: str) -> str:
    return on(PIPES_READ, pipe)


def split(scope: str) -> tuple[str, str]:
    """``(kind, resource)`` of a scope on a resource; ``(scope, "")`` of one that stands alone."""
    kind, _, resource = scope.rpartition(":") if scope.count(":") == 2 else (scope, "", "")
    return kind, resource


def reads(scope: str) -> bool:
    """Whether ``scope`` reads some datasource or pipe."""
    return scope.startswith((on(DATASOURCES_READ, ""), on(PIPES_READ, "")))


def may_append(datasource: str) -> tuple[str, ...]:
    """The scopes of which any one (or ADMIN) allows appending to ``datasource``."""
    return (DATASOURCES_CREATE, append(datasource))
