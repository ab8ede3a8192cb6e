"""A workspace's deployments, as Tinybird's current CLI reads and moves them.

- ``GET /v1/deployments``: oldest first, without the deleted ones unless ``include_deleted=true``
  (``tb deployment promote`` takes the first as the live one and the second as its candidate);
- ``GET /v1/deployments/{id}``: one, deleted or not (``tb deploy`` polls it);
- ``POST /v1/deployments/{id}/set-live``: promote a staged deployment (``tb deployment promote``):
  the engine's deploy applies its files, crash-safe, and it becomes the live one;
- ``DELETE /v1/deployments/{id}``: discard a staged deployment (``tb deployment discard``), or remove
  one that a promotion already replaced; the live one stays.

Each in the shape the CLI reads: ``id``, ``live``, ``status`` (``data_ready``, ``deleted``,
``failed``), ``created_at``, and what it created, changed or deleted.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import scopes
from ...engine import Workspace
from ...errors import BadRequest, NotFound
from ..auth import require, workspace_of
from ..calls import call
from .builds import ProjectErrors, apply_project, parse_project

__all__ = ["discard", "list_all", "one", "set_live"]

# A history entry's status, as Tinybird names a deployment's (a replaced live one is "deleted").
_STATUS = {"done": "data_ready", "staged": "data_ready", "discarded": "deleted", "failed": "failed"}


def _shaped(workspace: Workspace) -> list[dict]:
    live = workspace.live_deployment()
    out = []
    for entry in workspace.deployments():
        status = entry.get("status", "")
        shaped = _STATUS.get(status, "deleted")  # else a note of a refill finished or undone on open
        if status == "done" and entry["id"] != live:
            shaped = "deleted"
        out.append({
            "id": entry["id"], "live": entry["id"] == live, "status": shaped,
            "created_at": entry["started"].replace(" ", "T") + "Z",
            "finished_at": entry.get("finished", "").replace(" ", "T") + ("Z" if entry.get("finished") else ""),
            "errors": [entry["error"]] if entry.get("error") else [],
            **{kind: entry.get(kind, []) for kind in ("created", "changed", "deleted")},
        })
    return out


async def _found(request: Request) -> tuple[Workspace, dict]:
    workspace = workspace_of(request)
    require(request, workspace.tokens, scopes.ADMIN)
    wanted = request.path_params["id"]
    found = next((d for d in await call(_shaped, workspace) if d["id"] == wanted), None)
    if found is None:
        raise NotFound(f"Deployment '{wanted}' not found")
    return workspace, found


async def list_all(request: Request) -> Response:
    workspace = workspace_of(request)
    require(request, workspace.tokens, scopes.ADMIN)
    every = await call(_shaped, workspace)
    if request.query_params.get("include_deleted", "").lower() != "true":
        every = [d for d in every if d["status"] not in ("deleted", "failed")]
    return JSONResponse({"deployments": every})


async def one(request: Request) -> Response:
    _, found = await _found(request)
    return JSONResponse({"deployment": found})


async def set_live(request: Request) -> Response:
    workspace, found = await _found(request)
    if not found["live"]:
        files, destructive = await call(workspace.staged, found["id"])
        try:
            project = await call(parse_project, files)
            await call(apply_project, workspace, project, destructive, found["id"])
        except ProjectErrors as exc:
            raise BadRequest(f"Deployment {found['id']} cannot be promoted: "
                             + "; ".join(f"{e['filename']}: {e['error']}" for e in exc.errors)) from None
        await call(workspace.promoted, found["id"])
        _, found = await _found(request)
    return JSONResponse({"deployment": found})


async def discard(request: Request) -> Response:
    workspace, found = await _found(request)
    if found["live"]:
        raise BadRequest(f"Deployment {found['id']} is live: promote another one before removing it")
    if found["status"] == "data_ready":  # staged
        await call(workspace.discard, found["id"])
        _, found = await _found(request)
    return JSONResponse({"deployment": found})
