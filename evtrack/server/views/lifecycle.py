"""Forgetting data over Tinybird's routes: delete rows by condition as a job
(``POST /v0/datasources/{name}/delete``, ``tb datasource delete --sql-condition``), truncate
(``POST /v0/datasources/{name}/truncate``) and drop (``DELETE /v0/datasources/{name}``,
``tb datasource rm``). Each first drains the workspace's ingest queue: a row acknowledged before
the call is inserted before it, so it cannot come back after it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import scopes
from ...errors import MissingParameter
from .. import shapes
from ..auth import require, workspace_of
from ..bodies import request_fields
from ..buffer import buffer_of
from ..calls import call
from . import jobs

__all__ = ["delete_rows", "drop", "truncate"]


def _allowed(request: Request, name: str):
    workspace = workspace_of(request)
    require(request, workspace.tokens, scopes.DATASOURCES_CREATE, scopes.on(scopes.DATASOURCES_DROP, name))
    workspace.datasource(name)
    return workspace


def _flag(params: dict, name: str, default: bool) -> bool:
    value = params.get(name)
    return default if value is None else value.lower() == "true"


async def delete_rows(request: Request) -> Response:
    name = request.path_params["name"]
    workspace = _allowed(request, name)
    params, _ = await request_fields(request)
    condition = params.get("delete_condition")
    if not condition:
        raise MissingParameter("delete_condition")
    dry_run = _flag(params, "dry_run", False)
    if not dry_run:
        await (await buffer_of(request.app, workspace)).drain()
    created = shapes.timestamp()
    deletion = await call(workspace.delete, name, condition, _flag(params, "cascade", True), dry_run)
    if dry_run:
        return JSONResponse({"rows_to_be_deleted": deletion.removed.get(name, 0), "removed": deletion.removed,
                             "skipped": deletion.skipped, "rebuilt": deletion.rebuilt})
    job = jobs.keep(request, "delete_data", "", name, created, delete_condition=deletion.condition,
                    rows_affected=deletion.removed.get(name, 0), removed=deletion.removed, skipped=deletion.skipped,
                    rebuilt=deletion.rebuilt)
    return JSONResponse(job)


async def truncate(request: Request) -> Response:
    name = request.path_params["name"]
    workspace = _allowed(request, name)
    params, _ = await request_fields(request)
    await (await buffer_of(request.app, workspace)).drain()
    emptied = await call(workspace.truncate, name, _flag(params, "cascade", False))
    return JSONResponse({"truncated": emptied})


async def drop(request: Request) -> Response:
    name = request.path_params["name"]
    workspace = _allowed(request, name)
    if _flag(dict(request.query_params), "dry_run", False):  # what `tb datasource rm` asks first
        await call(workspace.drop_datasource, name, True)
        return JSONResponse({"dependent_pipes": [], "dependent_nodes": []})
    await (await buffer_of(request.app, workspace)).drain()
    await call(workspace.drop_datasource, name)
    return Response(status_code=204)
