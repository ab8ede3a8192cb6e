"""Secrets, ``/v0/variables``: Forward ``tb`` sets one per entry of a project's ``.env`` before
any command, and aborts the command if it cannot. evtrack keeps them per workspace while it runs
(values are never answered back); its pipes do not read them (``tb_secret``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import scopes
from ...errors import MissingParameter, NotFound
from .. import shapes
from ..auth import require, workspace_of
from ..bodies import request_fields

__all__ = ["create", "delete", "list_all", "one", "update"]


def _kept(request: Request) -> dict[str, dict]:
    workspace = workspace_of(request)
    require(request, workspace.tokens, scopes.ADMIN)
    state = request.app.state
    if not hasattr(state, "variables"):
        state.variables = {}
    return state.variables.setdefault(workspace.id, {})


def _described(name: str, kept: dict) -> dict:
    return {"name": name, "type": "secret", "created_at": kept["created_at"], "updated_at": kept["updated_at"],
            "edited_by": ""}


def _found(request: Request) -> tuple[dict, str]:
    variables, name = _kept(request), request.path_params["name"]
    if name not in variables:
        raise NotFound(f"Variable '{name}' not found")
    return variables, name


async def list_all(request: Request) -> Response:
    variables = _kept(request)
    return JSONResponse({"variables": [_described(name, kept) for name, kept in sorted(variables.items())]})


async def one(request: Request) -> Response:
    variables, name = _found(request)
    return JSONResponse(_described(name, variables[name]))


async def create(request: Request) -> Response:
    variables = _kept(request)
    fields, _ = await request_fields(request)
    if not fields.get("name"):
        raise MissingParameter("name")
    now = shapes.timestamp()
    variables[fields["name"]] = {"value": fields.get("value", ""), "created_at": now, "updated_at": now}
    return JSONResponse(_described(fields["name"], variables[fields["name"]]))


async def update(request: Request) -> Response:
    variables, name = _found(request)
    fields, _ = await request_fields(request)
    variables[name].update(value=fields.get("value", ""), updated_at=shapes.timestamp())
    return JSONResponse(_described(name, variables[name]))


async def delete(request: Request) -> Response:
    variables, name = _found(request)
    return JSONResponse(_described(name, variables.pop(name)))
