"""A workspace's deployments, newest first: ``GET /v1/deployments`` and ``GET /v1/deployments/{id}``,
from its deployment history, in the shape Tinybird's CLI reads (``id``, ``live``, ``status``,
``created_at``), with what each created, changed or deleted."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import scopes
from ...errors import NotFound
from ..auth import require, workspace_of
from ..calls import call

__all__ = ["list_all", "one"]


def _shaped(history: list[dict]) -> list[dict]:
    live = next((entry["id"] for entry in reversed(history) if entry.get("status") == "done"), None)
    out, replaced = [], False
    for entry in reversed(history):
        status = entry.get("status", "")
        out.append({
            "id": entry["id"], "live": entry["id"] == live,
            "status": "deleted" if replaced else "data_ready" if status == "done" else status,
            "created_at": entry["started"].replace(" ", "T") + "Z",
            "finished_at": entry.get("finished", "").replace(" ", "T") + ("Z" if entry.get("finished") else ""),
            "errors": [entry["error"]] if entry.get("error") else [],
            **{kind: entry.get(kind, []) for kind in ("created", "changed", "deleted")},
        })
        replaced = replaced or entry["id"] == live
    return out


async def list_all(request: Request) -> Response:
    workspace = workspace_of(request)
    require(request, workspace.tokens, scopes.ADMIN)
    return JSONResponse({"deployments": _shaped(await call(workspace.deployments))})


async def one(request: Request) -> Response:
    workspace = workspace_of(request)
    require(request, workspace.tokens, scopes.ADMIN)
    found = next((d for d in _shaped(await call(workspace.deployments)) if d["id"] == request.path_params["id"]), None)
    if found is None:
        raise NotFound(f"Deployment '{request.path_params['id']}' not found")
    return JSONResponse({"deployment": found})
