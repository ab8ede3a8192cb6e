"""Tokens: ``/v0/tokens`` and ``/v0/tokens/{name}`` (list, create, add scopes), and ``GET /tokens``,
Tinybird Local's token discovery, which answers loopback clients only."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import scopes
from ...errors import MissingParameter, NotFound, TooManyFields
from .. import shapes
from ..auth import require, workspace_of
from ..bodies import MAX_FIELDS, read_body
from ..calls import call

__all__ = ["LOOPBACK", "discover", "list_or_create", "one"]

LOOPBACK = ("127.0.0.1", "::1")


async def list_or_create(request: Request) -> Response:
    engine = workspace_of(request)
    require(request, engine.tokens, scopes.TOKENS)
    if request.method == "POST":
        name = request.query_params.get("name")
        if not name:
            raise MissingParameter("name")
        granted = [v for k, v in request.query_params.multi_items() if k == "scope"]
        return JSONResponse(shapes.token(await call(engine.tokens.grant, name, granted, replace=True)))
    return JSONResponse({"tokens": [shapes.token(t) for t in engine.tokens.all()]})


async def one(request: Request) -> Response:
    """``GET`` a token, or ``PUT`` scopes on it (created if new), from the query string or a form body."""
    engine = workspace_of(request)
    require(request, engine.tokens, scopes.TOKENS)
    found = engine.tokens.get(request.path_params["name"])
    if request.method == "PUT":
        body = (await read_body(request)).decode("utf-8", "replace")
        granted = [v for k, v in request.query_params.multi_items() if k == "scope"]
        try:
            granted += [v for k, v in parse_qsl(body, max_num_fields=MAX_FIELDS) if k == "scope"]
        except ValueError:  # counted before anything is parsed
            raise TooManyFields(MAX_FIELDS) from None
        found = await call(engine.tokens.grant, request.path_params["name"], granted)
    if found is None:
        raise NotFound(f"Token '{request.path_params['name']}' not found")
    return JSONResponse(shapes.token(found))


async def discover(request: Request) -> Response:
    """What Tinybird Local answers: the admin token, under each of its names. Any other client gets
    the 404 of a path no route serves."""
    if (request.client.host if request.client else "") not in LOOPBACK:
        raise NotFound()
    engine = request.app.state.engine
    admin_token = engine.default.tokens.admin.token
    user_token = await call(lambda: engine.user_token)  # made, and written, on first use
    return JSONResponse({"user_token": user_token, "admin_token": admin_token, "workspace_admin_token": admin_token})
