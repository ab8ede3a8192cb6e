"""Pipes as ``tb`` deploys and inspects them: ``/v0/pipes`` (list, create), ``/v0/pipes/{name}`` (its
description, its datafile as ``{name}.pipe``, DELETE), and a node made the endpoint or analysed.

A pipe pushed over HTTP is turned back into datafile text and parsed by tinybird-cli's own parser,
then deployed by the same engine call as ``evtrack deploy``.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from ... import scopes
from ...engine.sql.guard import check_template
from ...engine.deploy.materialized import output_columns, written_columns
from ...engine.sql.pipes import pipe_reader, pipe_sql
from ...engine.store import public_text
from ...errors import BadRequest, NotFound
from ...project import Node, Pipe, parse_pipe, pipe_text
from .. import shapes
from ..auth import require, workspace_of
from ..bodies import read_body
from ..calls import call
from . import jobs
from .endpoints import pipe_name

__all__ = ["analyze_node", "create", "datafile", "delete", "describe", "find_node", "list_all", "set_endpoint"]


def find_node(pipe: Pipe, ref: str) -> Node:
    """A node of ``pipe`` by its name or its id."""
    node = next((n for n in pipe.nodes if ref in (n.name, shapes.resource_id("pipe", pipe.name, n.name))), None)
    if node is None:
        raise NotFound(f"Node '{ref}' not found")
    return node


async def list_all(request: Request) -> Response:
    engine = workspace_of(request)
    require(request, engine.tokens, scopes.ADMIN)
    return JSONResponse({"pipes": [shapes.pipe(p, str(request.base_url)) for p in engine.pipes()]})


async def describe(request: Request) -> Response:
    name = pipe_name(request)
    engine = workspace_of(request)
    require(request, engine.tokens, scopes.ADMIN)
    return JSONResponse(shapes.pipe(engine.pipe(name), str(request.base_url)))


async def datafile(request: Request) -> Response:
    """``/v0/pipes/{name}.pipe``: the pipe's datafile, as deployed."""
    engine = workspace_of(request)
    require(request, engine.tokens, scopes.ADMIN)
    return PlainTextResponse(engine.pipe(request.path_params["name"]).source)


async def delete(request: Request) -> Response:
    name = pipe_name(request)
    engine = workspace_of(request)
    require(request, engine.tokens, scopes.ADMIN)
    await call(engine.drop_pipe, name)
    return Response(status_code=204)


async def create(request: Request) -> Response:
    engine = workspace_of(request)
    require(request, engine.tokens, scopes.PIPES_CREATE)
    body = await read_body(request)
    try:
        document = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        document = {"name": request.query_params.get("name"), "nodes": [{"name": "node_0", "sql": body.decode()}]}
    if not isinstance(document, dict) or not isinstance(document.get("nodes", []), list):
        raise BadRequest("The body must be a JSON object: {\"name\", \"nodes\": [...]}")
    name = document.get("name") or request.query_params.get("name")
    if not name or not document.get("nodes"):
        raise BadRequest("A pipe needs a name and at least one node")
    for node in document["nodes"]:  # within ClickHouse's parser limits before the datafile parser reads them
        if isinstance(node, dict) and isinstance(node.get("sql"), str):
            await call(check_template, engine.store, node["sql"])
    pipe = await call(parse_pipe, name, pipe_text(document))
    created = shapes.timestamp()
    await call(engine.deploy_pipe, pipe)
    answer = shapes.pipe(engine.pipe(name), str(request.base_url))
    if pipe.materialized is not None:  # as Tinybird answers: the target, which the project defines itself
        target = pipe.materialized.datasource
        answer.update(datasource={"id": shapes.resource_id("datasource", target), "name": target},
                      created_datasource=False)
        if request.query_params.get("populate", "").lower() == "true":
            # Deploying backfilled the target already: `tb push --populate` gets the finished job to wait for.
            answer["job"] = jobs.keep(request, "populateview", name, target, created)
    return JSONResponse(answer)


async def analyze_node(request: Request) -> Response:
    """What `tb push` asks before it creates a materialized pipe: the node's columns (its SQL reading
    the workspace's pipes by name, as the deploy does), checked against the target datasource
    (``datasource=``) when one is named as the deploy checks them: a 400 naming what does not fit."""
    engine = workspace_of(request)
    require(request, engine.tokens, scopes.PIPES_CREATE)
    pipe = engine.pipe(request.path_params["name"])
    node = find_node(pipe, request.path_params["node"])
    pipes = pipe_reader(pipe, {p.name: p for p in engine.pipes()})
    sql = await call(pipe_sql, pipe, {}, engine.tables(), engine.database, node=node, pipes=pipes)
    produced = await call(output_columns, engine.store, sql)
    target = request.query_params.get("datasource")
    # The node's SQL as it reads, in the names the user wrote: never the workspace's database.
    analysis: dict = {"pipe": {"name": pipe.name}, "sql": public_text(sql),
                      "columns": [{"name": name, "type": type_} for name, type_ in produced]}
    if target and target != "None":
        await call(written_columns, engine.store, pipe, produced, engine.datasource(target).columns, node, target)
        analysis["datasource"] = {"name": target}
    return JSONResponse({"analysis": analysis, "warnings": []})


async def set_endpoint(request: Request) -> Response:
    engine = workspace_of(request)
    require(request, engine.tokens, scopes.PIPES_CREATE)
    pipe = engine.pipe(request.path_params["name"])
    node = find_node(pipe, request.path_params["node"])
    document = {"name": pipe.name, "description": pipe.description,
                "nodes": [{"name": n.name, "sql": n.sql, "description": n.description,
                           "type": "endpoint" if n is node else "standard"} for n in pipe.nodes]}
    text = pipe_text(document, tokens=pipe.tokens)
    await call(lambda: engine.deploy_pipe(parse_pipe(pipe.name, text)))
    return JSONResponse(shapes.pipe(engine.pipe(pipe.name), str(request.base_url)))
