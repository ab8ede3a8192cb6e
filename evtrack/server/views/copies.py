"""Copy pipes over HTTP, as Tinybird's Copy Pipes API: ``POST /v0/pipes/{name}/copy`` runs one, and
``PUT /v0/pipes/{name}/nodes/{node}/copy`` is what ``tb push`` calls to set a copy node up.

A run's parameters come as on an endpoint call (query string, form fields or a JSON object);
``_mode=append|replace`` overrides the pipe's COPY_MODE, as tinybird-cli's ``tb pipe copy run
--mode`` sends it. The token needs ADMIN or ``PIPES:READ`` on the pipe (Tinybird asks for a read
token on the pipe to run its copy).

Unlike Tinybird, which queues the job and answers at once, the run happens before the answer
(copies on one machine are short): the job comes back ``done`` with its row count, and a failure
is the request's error (400 with the template's or ClickHouse's message). The job is kept for
``GET /v0/jobs/{id}`` (``views.jobs``), which ``tb pipe copy run --wait`` polls.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import scopes
from ...errors import NoAccess, NotACopyPipe, UnreadableParameters
from ...project import parse_pipe, pipe_text
from .. import shapes
from ..auth import require, workspace_of
from ..bodies import request_fields
from ..calls import call
from . import jobs
from .pipes import find_node

__all__ = ["run", "set_up"]

_NOT_PARAMS = ("_mode", "on_demand_compute")


async def set_up(request: Request) -> Response:
    """What `tb push` calls after creating a copy pipe: the node's target, schedule and mode, as form
    fields (``target_datasource``, ``schedule_cron``, ``mode``); the pipe is deployed again with them.
    No ``schedule_cron`` (or ``None``) means on demand, as on Tinybird."""
    engine = workspace_of(request)
    require(request, engine.tokens, scopes.PIPES_CREATE)
    ref = request.path_params["name"]
    name = next((n for n in engine.pipe_names() if ref in (n, shapes.resource_id("pipe", n))), ref)
    pipe = engine.pipe(name)
    node = find_node(pipe, request.path_params["node"])
    fields, _ = await request_fields(request)
    target = fields.get("target_datasource") or (pipe.copy.datasource if pipe.copy else "")
    schedule = fields.get("schedule_cron") or ""
    nodes = [{"name": n.name, "sql": n.sql, "description": n.description, "type": "standard"} for n in pipe.nodes]
    nodes[pipe.nodes.index(node)].update(
        type="copy", datasource=target, copy_schedule="" if schedule == "None" else schedule,
        copy_mode=fields.get("mode") or (pipe.copy.copy_mode if pipe.copy else ""))
    text = pipe_text({"name": name, "description": pipe.description, "nodes": nodes}, tokens=pipe.tokens)
    await call(lambda: engine.deploy_pipe(parse_pipe(name, text)))
    return JSONResponse(shapes.pipe(engine.pipe(name), str(request.base_url)))


async def run(request: Request) -> Response:
    engine = workspace_of(request)
    name = request.path_params["name"]
    pipe = engine.pipe(name)
    require(request, engine.tokens, scopes.read_pipe(name), refusal=NoAccess)
    if pipe.copy is None:
        raise NotACopyPipe(name)
    params, payload = await request_fields(request)
    if payload is not None:
        raise UnreadableParameters()
    mode = params.get("_mode") or None
    created = shapes.timestamp()
    rows = await call(engine.run_copy, name, {k: v for k, v in params.items() if k not in _NOT_PARAMS}, mode)
    target = pipe.copy.datasource
    job = jobs.keep(request, "copy", name, target, created, mode=(mode or pipe.copy.copy_mode or "append").lower(),
                    statistics={"row_count": rows})
    return JSONResponse({**shapes.pipe(pipe, str(request.base_url)), "job": job,
                         "tags": {"copy_target_datasource": target}})  # tb reads the datasource by it
