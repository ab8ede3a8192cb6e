"""Copy pipes over HTTP, as Tinybird's Copy Pipes API: ``POST /v0/pipes/{name}/copy`` and ``GET /v0/jobs/{id}``.

A run's parameters come as on an endpoint call (query string, form fields or a JSON object);
``_mode=append|replace`` overrides the pipe's COPY_MODE, as tinybird-cli's ``tb pipe copy run
--mode`` sends it. The token needs ADMIN or ``PIPES:READ`` on the pipe (Tinybird asks for a read
token on the pipe to run its copy).

Unlike Tinybird, which queues the job and answers at once, the run happens before the answer
(copies on one machine are short): the job comes back ``done`` with its row count, and a failure
is the request's error (400 with the template's or ClickHouse's message). The last jobs are kept
in memory for ``GET /v0/jobs/{id}``, which ``tb pipe copy run --wait`` polls.
``PUT /v0/pipes/{name}/nodes/{node}/copy`` is what ``tb push`` calls to set a copy node up.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import BadRequest, NoAccess, NotFound, UnreadableParameters
from .. import scopes
from ..project import parse_pipe, pipe_text
from .admin import _id, _pipe_json
from .auth import require
from .bodies import request_fields
from .calls import call

__all__ = ["routes", "keep_job", "now", "KEPT_JOBS"]

KEPT_JOBS = 100
_NOT_PARAMS = ("_mode", "on_demand_compute")


def routes() -> list[Route]:
    return [
        Route("/v0/pipes/{name}/copy", run_copy, methods=["POST"]),
        Route("/v0/pipes/{name}/nodes/{node}/copy", set_copy, methods=["PUT"]),
        Route("/v0/jobs/{job_id}", get_job, methods=["GET"]),
    ]


async def set_copy(request: Request) -> Response:
    """What `tb push` calls after creating a copy pipe: the node's target, schedule and mode, as form
    fields (``target_datasource``, ``schedule_cron``, ``mode``); the pipe is deployed again with them.
    No ``schedule_cron`` (or ``None``) means on demand, as on Tinybird."""
    engine = request.app.state.engine
    require(request, engine.tokens, scopes.PIPES_CREATE)
    ref = request.path_params["name"]
    name = next((n for n in engine.pipe_names() if ref in (n, _id("pipe", n))), ref)
    pipe = engine.pipe(name)
    node = next((n for n in pipe.nodes if request.path_params["node"] in (n.name, _id("pipe", name, n.name))), None)
    if node is None:
        raise NotFound(f"Node '{request.path_params['node']}' not found")
    fields, _ = await request_fields(request)
    target = fields.get("target_datasource") or (pipe.copy.datasource if pipe.copy else "")
    schedule = fields.get("schedule_cron") or ""
    nodes = [{"name": n.name, "sql": n.sql, "description": n.description, "type": "standard"} for n in pipe.nodes]
    nodes[pipe.nodes.index(node)].update(
        type="copy", datasource=target, copy_schedule="" if schedule == "None" else schedule,
        copy_mode=fields.get("mode") or (pipe.copy.copy_mode if pipe.copy else ""))
    text = pipe_text({"name": name, "description": pipe.description, "nodes": nodes}, tokens=pipe.tokens)
    await call(lambda: engine.deploy_pipe(parse_pipe(name, text)))
    return JSONResponse(_pipe_json(request, engine.pipe(name)))


def _jobs(request: Request) -> OrderedDict:
    state = request.app.state
    if not hasattr(state, "copy_jobs"):
        state.copy_jobs = OrderedDict()
    return state.copy_jobs


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


async def run_copy(request: Request) -> Response:
    engine = request.app.state.engine
    name = request.path_params["name"]
    pipe = engine.pipe(name)
    require(request, engine.tokens, scopes.read_pipe(name), refusal=NoAccess)
    if pipe.copy is None:
        raise BadRequest(f"The pipe '{name}' is not a copy pipe (it has no TYPE COPY node)")
    params, payload = await request_fields(request)
    if payload is not None:
        raise UnreadableParameters()
    mode = params.get("_mode") or None
    created = now()
    rows = await call(engine.run_copy, name, {k: v for k, v in params.items() if k not in _NOT_PARAMS}, mode)
    target = pipe.copy.datasource
    job = keep_job(request, "copy", name, target, created, mode=(mode or pipe.copy.copy_mode or "append").lower(),
                   statistics={"row_count": rows})
    return JSONResponse({**_pipe_json(request, pipe), "job": job,
                         "tags": {"copy_target_datasource": target}})  # tb reads the datasource by it


def keep_job(request: Request, kind: str, pipe: str, target: str, created: str, **extra) -> dict:
    """A finished job as Tinybird describes one (``GET /v0/jobs/{id}`` answers it while it is kept)."""
    job_id = str(uuid.uuid4())
    job = {
        "kind": kind, "id": job_id, "job_id": job_id, "status": "done", "created_at": created,
        "started_at": created, "updated_at": now(), "is_cancellable": False,
        "job_url": f"{str(request.base_url).rstrip('/')}/v0/jobs/{job_id}",
        "pipe_id": _id("pipe", pipe), "pipe_name": pipe,
        "datasource": {"id": _id("datasource", target), "name": target}, **extra,
    }
    jobs = _jobs(request)
    jobs[job_id] = job
    while len(jobs) > KEPT_JOBS:
        jobs.popitem(last=False)
    return job


async def get_job(request: Request) -> Response:
    engine = request.app.state.engine
    job = _jobs(request).get(request.path_params["job_id"])
    pipe = job["pipe_name"] if job else ""
    require(request, engine.tokens, scopes.read_pipe(pipe))
    if job is None:
        raise NotFound("Job not found")
    return JSONResponse(job)
