"""Jobs, ``GET /v0/jobs/{id}`` and ``GET /v0/jobs``: the last finished jobs (copy runs, populates,
appends) as Tinybird describes them, kept in memory for ``tb pipe copy run --wait``, ``tb push
--populate`` and the appends of Forward ``tb`` to poll, and for ``tb job ls``. Each job belongs to
the workspace of the request that made it; a token sees the jobs of its workspace it may poll."""

from __future__ import annotations

from collections import OrderedDict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import scopes
from ...errors import InvalidToken, NotFound
from .. import shapes
from ..auth import request_token, require, workspace_of

__all__ = ["KEPT_JOBS", "get", "keep", "list_all", "remember"]

KEPT_JOBS = 100


def _jobs(request: Request) -> OrderedDict:
    state = request.app.state
    if not hasattr(state, "copy_jobs"):
        state.copy_jobs = OrderedDict()
    return state.copy_jobs


def keep(request: Request, kind: str, pipe: str, target: str, created: str, **extra) -> dict:
    """A finished job, answered by ``GET /v0/jobs/{id}`` while it is among the last ``KEPT_JOBS``."""
    return remember(request, shapes.job(kind, pipe, target, created, str(request.base_url), **extra))


def remember(request: Request, job: dict) -> dict:
    """Keep ``job`` (a shape with an ``id``) among the last ``KEPT_JOBS``."""
    jobs = _jobs(request)
    jobs[job["id"]] = (workspace_of(request).id, job)
    while len(jobs) > KEPT_JOBS:
        jobs.popitem(last=False)
    return job


def _needs(job: dict | None) -> tuple[str, ...]:
    """The scopes of which any one (or ADMIN) lets a token poll ``job``."""
    if job is not None and job["kind"] == "import":  # whoever may append to the datasource sees its imports
        return scopes.may_append(job["datasource"]["name"])
    return (scopes.read_pipe(job["pipe_name"] if job else ""),)


async def get(request: Request) -> Response:
    engine = workspace_of(request)
    owner, job = _jobs(request).get(request.path_params["job_id"], (None, None))
    if owner != engine.id:
        job = None
    require(request, engine.tokens, *_needs(job))
    if job is None:
        raise NotFound("Job not found")
    return JSONResponse(job)


async def list_all(request: Request) -> Response:
    """``{"jobs": [...]}``, newest first, filtered by ``?status=`` and ``?kind=`` as Tinybird's."""
    engine = workspace_of(request)
    token = request_token(request, engine.tokens)
    if token is None:
        raise InvalidToken()
    status, kind = request.query_params.get("status"), request.query_params.get("kind")
    found = [job for owner, job in reversed(_jobs(request).values())
             if owner == engine.id and token.allows(*_needs(job))
             and status in (None, job["status"]) and kind in (None, job["kind"])]
    return JSONResponse({"jobs": found})
