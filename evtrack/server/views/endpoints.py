"""Endpoints, ``GET|POST /v0/pipes/{name}.json|.csv|.ndjson|.parquet|.prometheus`` (and ``POST /v0/pipes/{name}``,
as JSON): a pipe's result for the request's parameters, read off the event loop and cancelled if
the client goes away. Each call is kept in ``tinybird.pipe_stats_rt`` (see ``pipestats``)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from ...engine import FORMATS
from ...errors import BadRequest, EvtrackError, InvalidToken, UnreadableParameters
from ..auth import request_token, require_pipe_read, workspace_of
from ..bodies import request_fields
from ..calls import cancellable_read

__all__ = ["MEDIA_TYPES", "pipe_name", "read", "read_json"]

MEDIA_TYPES = {"json": "application/json", "csv": "text/csv", "ndjson": "application/x-ndjson",
               "parquet": "application/vnd.apache.parquet", "prometheus": "text/plain; version=0.0.4; charset=utf-8"}


def pipe_name(request: Request) -> str:
    """The pipe ``/v0/pipes/{name}`` names. ``x.xml`` of a deployed ``x`` asks for an endpoint format
    there is not: a 400 saying which there are (``x.pipe`` is the pipe's datafile)."""
    name = request.path_params["name"]
    stem, dot, ext = name.rpartition(".")
    if dot and ext != "pipe" and ext not in FORMATS and stem in workspace_of(request).pipe_names():
        raise BadRequest(f"Format '{ext}' is not supported; use .json, .csv, .ndjson, .parquet or .prometheus")
    return name


async def read(request: Request, fmt: str) -> Response:
    """``/v0/pipes/{name}.{fmt}``: the route gives the format."""
    return await _answer(request, request.path_params["name"], fmt)


async def read_json(request: Request) -> Response:
    return await _answer(request, pipe_name(request), "json")


async def _answer(request: Request, name: str, fmt: str) -> Response:
    started = time.time()
    engine = workspace_of(request, jwt=True)
    if request_token(request, engine.tokens, jwt=True) is None:
        raise InvalidToken()
    engine.pipe(name)
    status, body, token_name, params = 500, b"", "", dict(request.query_params)
    try:  # from here on, the call is kept in tinybird.pipe_stats_rt, whatever its end
        token = require_pipe_read(request, engine.tokens, name, jwt=True)
        token_name = token.name
        params, payload = await request_fields(request)
        if payload is not None:
            raise UnreadableParameters()
        params.update(token.fixed_params(name))  # a JWT's fixed_params win over the request's
        body = await cancellable_read(request, engine.query_pipe, name, params, fmt, params.get("q"))
        status = 200
        return Response(body, media_type=MEDIA_TYPES[fmt])
    except EvtrackError as exc:
        status = exc.status
        raise
    finally:
        request.app.state.pipestats.record(request, engine, name, params, started, status, token_name,
                                           body if fmt == "json" else b"")
