"""Jobs, ``GET /v0/jobs/{id}``: the last finished jobs (copy runs, populates) as Tinybird describes
them, kept in memory for ``tb pipe copy run --wait`` and ``tb push --populate`` to poll."""

from __future__ import annotations

from collections import OrderedDict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import scopes
from ...errors import NotFound
from .. import shapes
from ..auth import require, workspace_of

__all__ = ["KEPT_JOBS", "get", "keep"]

KEPT_JOBS = 100


def _jobs(request: Request) -> OrderedDict:
    state = request.app.state
    if not hasattr(state, "copy_jobs"):
        state.copy_jobs = OrderedDict()
    return state.copy_jobs


def keep(request: Request, kind: str, pipe: str, target: str, created: str, **extra) -> dict:
    """A finished job, answered by ``GET /v0/jobs/{id}`` while it is among the last ``KEPT_JOBS``."""
    job = shapes.job(kind, pipe, target, created, str(request.base_url), **extra)
    jobs = _jobs(request)
    jobs[job["id"]] = job
    while len(jobs) > KEPT_JOBS:
        jobs.popitem(last=False)
    return job


async def get(request: Request) -> Response:
    engine = workspace_of(request)
    job = _jobs(request).get(request.path_params["job_id"])
    pipe = job["pipe_name"] if job else ""
    require(request, engine.tokens, scopes.read_pipe(pipe))
    if job is None:
        raise NotFound("Job not found")
    return JSONResponse(job)
