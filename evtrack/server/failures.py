"""How every failure is answered: one function builds the body, from the error's status and text.

Errors are ``EvtrackError``s (``evtrack.errors``), raised anywhere below a view. The body is
Tinybird's JSON ``{"error", "documentation"}``, a template's ``custom_error`` body as it is, or,
on the Events API, plain text ending in a newline. Starlette's own 404 and 405, and anything
unexpected (a 500, logged), are answered the same way.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from ..errors import EvtrackError, MethodNotAllowed, NotFound
from . import shapes

__all__ = ["EVENTS_PATH", "HANDLERS"]

log = logging.getLogger("evtrack.server")
EVENTS_PATH = "/v0/events"  # the Events API: its errors are plain text


def error_response(request: Request, error: EvtrackError) -> Response:
    if request.url.path == EVENTS_PATH:
        response = PlainTextResponse(error.message.rstrip("\n") + "\n", status_code=error.status)
    elif error.body is not None:
        response = JSONResponse(error.body, status_code=error.status)
    else:
        response = JSONResponse(shapes.error(error.message), status_code=error.status)
    response.headers.update(getattr(error, "headers", {}))
    return response


async def evtrack_error(request: Request, exc: EvtrackError) -> Response:
    return error_response(request, exc)


async def http_error(request: Request, exc: HTTPException) -> Response:
    known = {404: NotFound, 405: MethodNotAllowed}.get(exc.status_code)
    return error_response(request, known() if known else EvtrackError(str(exc.detail), status=exc.status_code))


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(request, EvtrackError("Internal server error"))


HANDLERS = {EvtrackError: evtrack_error, HTTPException: http_error, Exception: unexpected_error}
