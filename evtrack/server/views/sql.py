"""The SQL API, ``GET|POST /v0/sql``: read-only SQL over what the token may read; and
``POST /v0/sql_tables``, the tables a query uses, for a ``tb`` without tinybird-cli's local toolset."""

from __future__ import annotations

import json
import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import scopes
from ...engine.sql.guard import check_parsable
from ...errors import BadRequest, InvalidToken, MissingScope
from ..auth import request_token, require, require_pipe_read, workspace_of
from ..bodies import read_body, request_fields
from ..calls import call, cancellable_read

__all__ = ["query", "tables"]

_FROM_TABLE = re.compile(r"\bFROM\s+`?([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)  # only to name a scope in a 403


async def query(request: Request) -> Response:
    engine = workspace_of(request)
    token = request_token(request, engine.tokens)
    if token is None:
        raise InvalidToken()
    params, payload = await request_fields(request)
    if isinstance(payload, bytes) and "q" not in params:  # `tb sql` posts long queries as the body
        params["q"] = payload.decode("utf-8", "replace")
    if not params.get("q", "").strip():
        raise BadRequest("missing q parameter. example q=select%201")
    if not token.reads_anything():
        # Refused before any parser sees the text: an append token is public, published in web pages.
        named = _FROM_TABLE.search(params["q"][:4096])
        raise MissingScope(scopes.read_datasource(named.group(1)) if named else scopes.DATASOURCES_READ)
    pipeline = params.get("pipeline")
    if pipeline:
        engine.pipe(pipeline)
        require_pipe_read(request, engine.tokens, pipeline)

    def readable(table: str) -> bool:
        return table == "_" or token.allows(scopes.read_datasource(table), scopes.read_pipe(table))

    body = await cancellable_read(request, engine.sql, params["q"], "json", pipeline, readable)
    return Response(body, media_type=_media_type(params["q"]))


def _media_type(query: str) -> str:
    from ...engine.sql.sqlapi import split_format

    fmt = (split_format(query)[1] or "JSON").lower()
    if fmt.startswith("json") and "each" not in fmt:
        return "application/json"
    if "each" in fmt:
        return "application/x-ndjson"
    return "text/csv" if fmt.startswith("csv") else "application/octet-stream" if fmt == "parquet" else "text/plain"


async def tables(request: Request) -> Response:
    engine = workspace_of(request)
    require(request, engine.tokens, scopes.ADMIN)
    body = await read_body(request)
    try:
        queries = json.loads(body).get("queries", [])
    except (ValueError, AttributeError, RecursionError):
        queries = None
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise BadRequest("The body must be JSON: {\"queries\": [\"SELECT ...\"]}")
    for q in queries:
        await call(check_parsable, engine.store, q)
    return JSONResponse({"tables": await call(_used_tables, queries)})


def _used_tables(queries: list[str]) -> list:
    from tinybird.sql_toolset import sql_get_used_tables

    return [[list(t) for t in sql_get_used_tables(q, raising=False)] for q in queries]
