"""Jobs, ``GET /v0/jobs/{id}``: the last finished jobs (copy runs, populates, appends) as Tinybird
describes them, kept in memory for ``tb pipe copy run --wait``, ``tb push --populate`` and the
appends of Forward ``tb`` to poll."""

from __future__ import annotations

from collections import OrderedDict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import scopes
from ...errors import NotFound
from .. import shapes
from ..auth import require, workspace_of

__all__ = ["KEPT_JOBS", "get", "keep", "remember"]

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
    jobs[job["id"]] = job
    while len(jobs) > KEPT_JOBS:
        jobs.popitem(last=False)
    return job


async def get(request: Request) -> Response:
    engine = workspace_of(request)
    job = _jobs(request).get(request.path_params["job_id"])
    if job is not None and job["kind"] == "import":  # whoever may append to the datasource sees its imports
        require(request, engine.tokens, *scopes.may_append(job["datasource"]["name"]))
    else:
        require(request, engine.tokens, scopes.read_pipe(job["pipe_name"] if job else ""))
    if job is None:
        raise NotFound("Job not found")
    return JSONResponse(job)
