"""``create_app(engine)``: Tinybird's HTTP API over the embedded engine.

A thin skin: each route checks the token's scope, reads its parameters, calls one engine
method (in a worker thread: chDB calls block) and shapes the answer as Tinybird does. Errors
are ``EvtrackError``s turned into one body by one handler: JSON ``{"error", "documentation"}``
everywhere, plain text ending in a newline on the Events API.
"""

from __future__ import annotations

import contextlib
import logging
import re

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .. import scopes
from ..engine import Engine
from ..errors import (BadRequest, EvtrackError, InvalidEventsToken, InvalidToken, MethodNotAllowed, MissingParameter,
                      MissingScope, NotFound, UnreadableParameters)
from . import admin, copies, web
from .auth import require_pipe_read, request_token
from .bodies import read_body, request_fields
from .buffer import IngestBuffer, count_lines
from .cors import CORSMiddleware
from .events import as_ndjson, decode_body
from .calls import call, cancellable_read

__all__ = ["create_app", "DOCS"]

log = logging.getLogger("evtrack.server")
DOCS = "https://www.tinybird.co/docs/api-reference"
MEDIA_TYPES = {"json": "application/json", "csv": "text/csv", "ndjson": "application/x-ndjson",
               "parquet": "application/vnd.apache.parquet"}
EVENTS_PATH = "/v0/events"
DEFAULT_MAX_BODY = 10 * 1024 * 1024


def create_app(engine: Engine, *, max_body: int = DEFAULT_MAX_BODY, buffer: IngestBuffer | None = None,
               scheduler=None) -> Starlette:
    """``scheduler`` (an ``evtrack.engine.copies.CopyScheduler``), when given, runs the scheduled copy pipes."""
    buffer = buffer or IngestBuffer(engine)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await buffer.start()
        if scheduler is not None:
            scheduler.start()
        try:
            yield
        finally:
            if scheduler is not None:
                await call(scheduler.stop)
            await buffer.stop()  # a clean shutdown flushes what was acknowledged

    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route(EVENTS_PATH, events, methods=["POST"]),
            Route("/v0/sql", sql, methods=["GET", "POST"]),
            Route("/tokens", local_tokens, methods=["GET"]),
            *copies.routes(),
            *admin.routes(pipe_endpoint),
            *web.routes(),
        ],
        middleware=[Middleware(CORSMiddleware)],
        exception_handlers={EvtrackError: evtrack_error, HTTPException: http_error, Exception: unexpected_error},
    )
    app.state.engine = engine
    app.state.max_body = max_body
    app.state.buffer = buffer
    return app


# -- errors ---------------------------------------------------------------------------------
def error_response(request: Request, status: int, message: str, body=None) -> Response:
    if request.url.path == EVENTS_PATH:
        return PlainTextResponse(message.rstrip("\n") + "\n", status_code=status)
    if body is not None:
        return JSONResponse(body, status_code=status)
    return JSONResponse({"error": message, "documentation": DOCS}, status_code=status)


async def evtrack_error(request: Request, exc: EvtrackError) -> Response:
    response = error_response(request, exc.status, exc.message, exc.body)
    response.headers.update(getattr(exc, "headers", {}))
    return response


async def http_error(request: Request, exc: HTTPException) -> Response:
    known = {404: NotFound, 405: MethodNotAllowed}.get(exc.status_code)
    error = known() if known else EvtrackError(str(exc.detail), status=exc.status_code)
    return await evtrack_error(request, error)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(request, 500, "Internal server error")


# -- the Events API -------------------------------------------------------------------------
async def events(request: Request) -> Response:
    engine: Engine = request.app.state.engine
    name = request.query_params.get("name")
    if not name:
        raise MissingParameter("name")
    token = request_token(request, engine.tokens)
    if token is None or not token.allows(scopes.DATASOURCES_CREATE, scopes.append(name)):
        raise InvalidEventsToken()
    engine.datasource(name)
    limit = request.app.state.max_body
    raw, encoding = await read_body(request), request.headers.get("content-encoding", "")
    # Inflating and reading the body happen off the event loop, beside other requests and inserts.
    body = await call(lambda: as_ndjson(decode_body(raw, encoding, limit)))
    wait = request.query_params.get("wait", "").lower() == "true"
    result = await request.app.state.buffer.submit(name, body, wait)
    if result is None:  # queued: its rows are stored or quarantined at the next flush
        return JSONResponse({"successful_rows": count_lines(body), "quarantined_rows": 0}, status_code=202)
    return JSONResponse({"successful_rows": result.successful_rows, "quarantined_rows": result.quarantined_rows})


# -- endpoints --------------------------------------------------------------------------------
async def pipe_endpoint(request: Request, name: str, fmt: str) -> Response:
    engine: Engine = request.app.state.engine
    if request_token(request, engine.tokens, jwt=True) is None:
        raise InvalidToken()
    engine.pipe(name)
    token = require_pipe_read(request, engine.tokens, name, jwt=True)
    params, payload = await request_fields(request)
    if payload is not None:
        raise UnreadableParameters()
    params.update(token.fixed_params(name))  # a JWT's fixed_params win over the request's
    body = await cancellable_read(request, engine.query_pipe, name, params, fmt, params.get("q"))
    return Response(body, media_type=MEDIA_TYPES[fmt])


# -- the SQL API ------------------------------------------------------------------------------
async def sql(request: Request) -> Response:
    engine: Engine = request.app.state.engine
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


_FROM_TABLE = re.compile(r"\bFROM\s+`?([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)  # only to name a scope in a 403


def _media_type(query: str) -> str:
    from ..engine.sqlapi import split_format

    fmt = (split_format(query)[1] or "JSON").lower()
    if fmt.startswith("json") and "each" not in fmt:
        return "application/json"
    if "each" in fmt:
        return "application/x-ndjson"
    return "text/csv" if fmt.startswith("csv") else "application/octet-stream" if fmt == "parquet" else "text/plain"


# -- Tinybird Local's token discovery ----------------------------------------------------------
async def local_tokens(request: Request) -> Response:
    client = request.client.host if request.client else ""
    # "testclient" is what Starlette's in-process test client reports: it never comes off a socket.
    if client not in ("127.0.0.1", "::1", "testclient"):
        raise NotFound()
    admin_token = request.app.state.engine.tokens.admin.token
    return JSONResponse({"user_token": admin_token, "admin_token": admin_token, "workspace_admin_token": admin_token})
