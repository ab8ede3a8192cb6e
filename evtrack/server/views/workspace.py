"""The workspace, ``GET /v0/workspace``: what ``tb auth`` reads to check a host and a token."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import scopes
from .. import shapes
from ..auth import require, workspace_of

__all__ = ["describe"]


async def describe(request: Request) -> Response:
    engine = workspace_of(request)
    require(request, engine.tokens, scopes.ADMIN)
    return JSONResponse(shapes.workspace(engine.id, engine.name, engine.kind))
