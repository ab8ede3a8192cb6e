"""Workspaces, as Tinybird Local serves them to its CLI: list (``GET /v1/user/workspaces``), create
(``POST /v1/workspaces?name=``) and delete (``DELETE /v1/workspaces/{id}``), with the user token
(or the default workspace's admin token, which Tinybird Local hands out as the local admin)."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import scopes
from ...errors import BadRequest, InvalidToken
from .. import shapes
from ..auth import token_value
from ..calls import call

__all__ = ["create", "delete", "list_all"]


def _require_user(request: Request) -> None:
    engine = request.app.state.engine
    value = token_value(request).encode()
    allowed = [engine.user_token, engine.default.tokens.admin.token]
    if not any(hmac.compare_digest(value, token.encode()) for token in allowed):
        raise InvalidToken()


async def list_all(request: Request) -> Response:
    """The user's workspaces: with the user token, or any workspace's admin token (one local user owns
    them all; ``tb info`` lists them with its workspace's token)."""
    found = request.app.state.engine.find_token(token_value(request))
    if found is None or scopes.ADMIN not in found[1].scopes:
        _require_user(request)
    engine = request.app.state.engine
    return JSONResponse({"organization_id": engine.default.id,
                         "workspaces": [shapes.listed_workspace(w) for w in engine.workspaces()]})


async def create(request: Request) -> Response:
    _require_user(request)
    name = request.query_params.get("name", "")
    created = await call(request.app.state.engine.create_workspace, name)
    return JSONResponse(shapes.listed_workspace(created))


async def delete(request: Request) -> Response:
    _require_user(request)
    engine = request.app.state.engine
    workspace = engine.workspace(request.path_params["id"])
    if workspace is engine.default:
        raise BadRequest("The default workspace cannot be deleted")
    buffer = request.app.state.buffers.pop(workspace.id, None)
    if buffer is not None:
        await buffer.stop()  # what it acknowledged goes in before the workspace goes
    await call(engine.delete_workspace, workspace.id)
    return JSONResponse(shapes.listed_workspace(workspace))
