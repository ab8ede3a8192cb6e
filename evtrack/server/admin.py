"""What the unmodified ``tb`` CLI and the SDKs need besides events and endpoints: the workspace,
datasources, pipes and tokens, in the shapes Tinybird answers with.

Datasources and pipes pushed over HTTP are turned back into datafile text and parsed by
tinybird-cli's own parser, then deployed by the same engine calls as ``evtrack deploy``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from urllib.parse import parse_qsl

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..engine import FORMATS, Engine
from ..engine.guard import check_parsable, check_template
from ..engine.ingest import quarantine_name
from ..engine.materialized import output_columns
from ..engine.pipes import pipe_sql
from .. import scopes
from ..errors import BadRequest, MissingParameter, NotFound, PayloadTooLarge, TooManyFields
from ..project import Datasource, Pipe, datasource_text, parse_datasource, parse_pipe, pipe_text
from .auth import require
from .bodies import MAX_FIELDS, read_body, request_fields
from .calls import call
from .events import as_ndjson, decode_body

__all__ = ["routes"]

_STARTED = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def routes(pipe_endpoint) -> list[Route]:
    async def pipe_file(request: Request) -> Response:
        name, dot, ext = request.path_params["name"].rpartition(".")
        if dot and ext in FORMATS:
            return await pipe_endpoint(request, name, ext)
        if dot and ext not in ("pipe",) and name in _engine(request).pipe_names():
            raise BadRequest(f"Format '{ext}' is not supported; use .json, .csv, .ndjson or .parquet")
        if request.method == "DELETE":
            return await delete_pipe(request)
        if request.method == "POST":
            return await pipe_endpoint(request, request.path_params["name"], "json")
        return await get_pipe(request)

    return [
        Route("/v0/workspace", workspace, methods=["GET"]),
        Route("/v0/datasources", datasources, methods=["GET", "POST"]),
        Route("/v0/datasources/{name}", get_datasource, methods=["GET"]),
        Route("/v0/datasources/{name}/alter", alter_datasource, methods=["POST"]),
        Route("/v0/pipes", pipes, methods=["GET", "POST"]),
        Route("/v0/pipes/{name}", pipe_file, methods=["GET", "POST", "DELETE"]),
        Route("/v0/pipes/{name}/nodes/{node}/endpoint", set_endpoint, methods=["POST"]),
        Route("/v0/pipes/{name}/nodes/{node}/analysis", analyze_node, methods=["GET"]),
        Route("/v0/tokens", tokens, methods=["GET", "POST"]),
        Route("/v0/tokens/{name}", token, methods=["GET", "PUT"]),
        Route("/v0/sql_tables", sql_tables, methods=["POST"]),
    ]


def _engine(request: Request) -> Engine:
    return request.app.state.engine


def _id(*parts: str) -> str:
    return "t_" + hashlib.md5("/".join(parts).encode()).hexdigest()


# -- workspace ------------------------------------------------------------------------------
async def workspace(request: Request) -> Response:
    engine = _engine(request)
    require(request, engine.tokens, scopes.ADMIN)
    return JSONResponse({
        "id": engine.tokens.workspace_id, "name": "evtrack", "user_email": "evtrack@localhost",
        "user_id": engine.tokens.workspace_id, "scope": "admin", "is_branch": False, "release": None,
        "main": None, "releases": [], "plan": "dev",
    })


# -- datasources ----------------------------------------------------------------------------
def _datasource_json(ds: Datasource, statistics: dict[str, int]) -> dict:
    engine_args = ds.engine
    return {
        "id": _id("datasource", ds.name), "name": ds.name, "description": ds.description,
        "cluster": "evtrack", "tags": {}, "created_at": _STARTED, "updated_at": _STARTED,
        "replicated": False, "version": 0, "project": None, "headers": {}, "shared_with": [],
        "engine": {"engine": engine_args.split("(")[0], "engine_full": engine_args},
        "columns": [
            {"name": c.name, "type": c.type, "codec": None, "default_value": f"DEFAULT {c.default}" if c.default else None,
             "jsonpath": c.jsonpath, "nullable": c.nullable, "normalized_name": c.name}
            for c in ds.columns
        ],
        "schema": {"sql_schema": ds.schema}, "type": "ndjson", "indexes": [], "new_columns_detected": {}, "used_by": [],
        "statistics": statistics,
        "quarantine": quarantine_name(ds.name),
    }


async def _described(engine: Engine, ds: Datasource) -> dict:
    """The datasource with its statistics, which are read from the database."""
    return _datasource_json(ds, await call(engine.datasource_stats, ds.name))


async def datasources(request: Request) -> Response:
    engine = _engine(request)
    if request.method == "POST":
        return await post_datasource(request)
    require(request, engine.tokens, scopes.ADMIN)
    every = await call(lambda: list(engine.datasources.values()))  # parsed on first use
    return JSONResponse({"datasources": [await _described(engine, ds) for ds in every]})


async def get_datasource(request: Request) -> Response:
    engine = _engine(request)
    name = request.path_params["name"]
    require(request, engine.tokens, scopes.read_datasource(name.removesuffix(".datasource")))
    if name.endswith(".datasource"):
        return PlainTextResponse(engine.datasource(name.removesuffix(".datasource")).source)
    return JSONResponse(await _described(engine, engine.datasource(name)))


async def post_datasource(request: Request) -> Response:
    engine = _engine(request)
    params, payload = await request_fields(request)
    name, mode = params.get("name", ""), params.get("mode", "create")
    if not name:
        raise MissingParameter("name")
    if mode == "append":
        require(request, engine.tokens, scopes.DATASOURCES_CREATE, scopes.append(name))
        return await _append(request, engine, name, payload)
    require(request, engine.tokens, scopes.DATASOURCES_CREATE)
    if not params.get("schema"):
        raise BadRequest("Only datasources created from a schema are supported: send 'schema'")
    ds = await call(parse_datasource, name, datasource_text(params))
    await call(engine.deploy_datasource, ds, params.get("force", "").lower() == "true")
    return JSONResponse({"datasource": await _described(engine, engine.datasource(name))})


async def alter_datasource(request: Request) -> Response:
    """tb push --force on an existing datasource: a dry run lists the operations, then they are applied."""
    engine = _engine(request)
    require(request, engine.tokens, scopes.DATASOURCES_CREATE)
    old = engine.datasource(request.path_params["name"])
    params, _ = await request_fields(request)
    settings = {**dict(old.engine_settings), "description": params.get("description") or old.description,
                "schema": params.get("schema") or old.schema}
    new = await call(parse_datasource, old.name, datasource_text(settings))
    operations = await call(engine.plan_datasource, new)
    if not operations:
        raise BadRequest("There were no operations to perform")
    if params.get("dry", "false").lower() != "true":
        await call(engine.deploy_datasource, new)
    return JSONResponse({"operations": operations, "dependencies": []})


async def _append(request: Request, engine: Engine, name: str, payload) -> Response:
    """`tb datasource append` (multipart) and SDK appends (raw body), within the same limits as events."""
    if request.query_params.get("format", "ndjson") not in ("ndjson", "json"):
        raise BadRequest("Only NDJSON appends are supported")
    limit = request.app.state.max_body
    if isinstance(payload, UploadFile):
        try:
            if (payload.size or 0) > limit:
                raise PayloadTooLarge(limit)
            data = await payload.read()
        finally:
            await payload.close()
    else:
        data = payload or b""
    encoding = request.headers.get("content-encoding", "")
    payload = await call(lambda: as_ndjson(decode_body(data, encoding, limit)))
    result = await call(engine.append, name, payload)
    return JSONResponse({
        "id": result.import_id, "job_id": result.import_id, "import_id": result.import_id, "status": "done",
        "datasource": await _described(engine, engine.datasource(name)), "quarantine_rows": result.quarantined_rows,
        "invalid_lines": 0, "error": False, "blocks": [], "successful_rows": result.successful_rows,
    })


# -- pipes ------------------------------------------------------------------------------------
def _pipe_json(request: Request, pipe: Pipe) -> dict:
    endpoint, materialized, copy = pipe.endpoint, pipe.materialized, pipe.copy
    nodes = [{
        "id": _id("pipe", pipe.name, n.name), "name": n.name, "sql": n.sql, "description": n.description or None,
        "materialized": n.datasource or None, "cluster": None, "tags": {}, "created_at": _STARTED,
        "updated_at": _STARTED, "version": 0, "project": None, "result": None, "ignore_sql_errors": False,
        "node_type": "endpoint" if n is endpoint else "materialized" if n is materialized else "copy" if n is copy
        else "standard",
        "dependencies": [], "params": [],
    } for n in pipe.nodes]
    kind = "endpoint" if endpoint else "materialized" if materialized else "copy" if copy else "default"
    return {
        "id": _id("pipe", pipe.name), "name": pipe.name, "description": pipe.description or None,
        "endpoint": _id("pipe", pipe.name, endpoint.name) if endpoint else None,
        "type": kind, "created_at": _STARTED, "updated_at": _STARTED,
        "parent": None, "nodes": nodes, **({"copy_node": _id("pipe", pipe.name, copy.name),
                                             "copy_target_datasource": _id("datasource", copy.datasource)} if copy else {}), "url": f"{str(request.base_url).rstrip('/')}/v0/pipes/{pipe.name}.json",
    }


async def pipes(request: Request) -> Response:
    engine = _engine(request)
    if request.method == "POST":
        return await post_pipe(request)
    require(request, engine.tokens, scopes.ADMIN)
    return JSONResponse({"pipes": [_pipe_json(request, p) for p in engine.pipes()]})


async def get_pipe(request: Request) -> Response:
    engine = _engine(request)
    require(request, engine.tokens, scopes.ADMIN)
    name = request.path_params["name"]
    if name.endswith(".pipe"):
        return PlainTextResponse(engine.pipe(name.removesuffix(".pipe")).source)
    return JSONResponse(_pipe_json(request, engine.pipe(name)))


async def delete_pipe(request: Request) -> Response:
    engine = _engine(request)
    require(request, engine.tokens, scopes.ADMIN)
    await call(engine.drop_pipe, request.path_params["name"])
    return Response(status_code=204)


async def post_pipe(request: Request) -> Response:
    engine = _engine(request)
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
    from . import copies  # it builds on this module

    for node in document["nodes"]:  # within ClickHouse's parser limits before the datafile parser reads them
        if isinstance(node, dict) and isinstance(node.get("sql"), str):
            await call(check_template, engine.store, node["sql"])
    pipe = await call(parse_pipe, name, pipe_text(document))
    created = copies.now()
    await call(engine.deploy_pipe, pipe)
    answer = _pipe_json(request, engine.pipe(name))
    if pipe.materialized is not None:  # as Tinybird answers: the target, which the project defines itself
        target = pipe.materialized.datasource
        answer.update(datasource={"id": _id("datasource", target), "name": target}, created_datasource=False)
        if request.query_params.get("populate", "").lower() == "true":
            # Deploying backfilled the target already: `tb push --populate` gets the finished job to wait for.
            answer["job"] = copies.keep_job(request, "populateview", name, target, created)
    return JSONResponse(answer)


async def analyze_node(request: Request) -> Response:
    """What `tb push` asks before it creates a materialized pipe: the node's columns, checked against
    the target datasource (``datasource=``) when one is named; a 400 naming what does not fit."""
    engine = _engine(request)
    require(request, engine.tokens, scopes.PIPES_CREATE)
    pipe = engine.pipe(request.path_params["name"])
    node = next((n for n in pipe.nodes if request.path_params["node"] in (n.name, _id("pipe", pipe.name, n.name))), None)
    if node is None:
        raise NotFound(f"Node '{request.path_params['node']}' not found")
    sql = await call(pipe_sql, pipe, {}, engine.tables(), node=node)
    produced = await call(output_columns, engine.store, sql)
    target = request.query_params.get("datasource")
    analysis: dict = {"pipe": {"name": pipe.name}, "sql": sql,
                      "columns": [{"name": name, "type": type_} for name, type_ in produced]}
    if target:
        columns = [c.name for c in engine.datasource(target).columns]
        missing = [name for name, _ in produced if name not in columns]
        if missing:
            raise BadRequest(f"The node '{node.name}' returns {', '.join(repr(m) for m in missing)}, which the "
                             f"datasource '{target}' does not have (its columns: {', '.join(columns)})")
        analysis["datasource"] = {"name": target}
    return JSONResponse({"analysis": analysis, "warnings": []})


async def set_endpoint(request: Request) -> Response:
    engine = _engine(request)
    require(request, engine.tokens, scopes.PIPES_CREATE)
    pipe = engine.pipe(request.path_params["name"])
    node_ref = request.path_params["node"]
    node = next((n for n in pipe.nodes if node_ref in (n.name, _id("pipe", pipe.name, n.name))), None)
    if node is None:
        raise NotFound(f"Node '{node_ref}' not found")
    document = {"name": pipe.name, "description": pipe.description,
                "nodes": [{"name": n.name, "sql": n.sql, "description": n.description,
                           "type": "endpoint" if n is node else "standard"} for n in pipe.nodes]}
    text = pipe_text(document, tokens=pipe.tokens)
    await call(lambda: engine.deploy_pipe(parse_pipe(pipe.name, text)))
    return JSONResponse(_pipe_json(request, engine.pipe(pipe.name)))


# -- tokens -----------------------------------------------------------------------------------
async def tokens(request: Request) -> Response:
    engine = _engine(request)
    require(request, engine.tokens, scopes.TOKENS)
    if request.method == "POST":
        name = request.query_params.get("name")
        if not name:
            raise MissingParameter("name")
        granted = [v for k, v in request.query_params.multi_items() if k == "scope"]
        made = await call(engine.tokens.grant, name, granted, replace=True)
        return JSONResponse(made.public(show=True))
    return JSONResponse({"tokens": [t.public(show=True) for t in engine.tokens.all()]})


async def token(request: Request) -> Response:
    engine = _engine(request)
    require(request, engine.tokens, scopes.TOKENS)
    found = engine.tokens.get(request.path_params["name"])
    if request.method == "PUT":
        body = (await read_body(request)).decode("utf-8", "replace")
        granted = [v for k, v in request.query_params.multi_items() if k == "scope"]
        try:
            granted += [v for k, v in parse_qsl(body, max_num_fields=MAX_FIELDS) if k == "scope"]
        except ValueError:  # counted before anything is parsed
            raise TooManyFields(MAX_FIELDS) from None
        found = await call(engine.tokens.grant, request.path_params["name"], granted)
    if found is None:
        raise NotFound(f"Token '{request.path_params['name']}' not found")
    return JSONResponse(found.public(show=True))


async def sql_tables(request: Request) -> Response:
    """Tables a query uses, for a ``tb`` without tinybird-cli's local toolset."""
    engine = _engine(request)
    require(request, engine.tokens, scopes.ADMIN)
    from tinybird.sql_toolset import sql_get_used_tables

    body = await read_body(request)
    try:
        queries = json.loads(body).get("queries", [])
    except (ValueError, AttributeError, RecursionError):
        queries = None
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise BadRequest("The body must be JSON: {\"queries\": [\"SELECT ...\"]}")
    for query in queries:
        await call(check_parsable, engine.store, query)
    tables = await call(lambda: [[list(t) for t in sql_get_used_tables(q, raising=False)] for q in queries])
    return JSONResponse({"tables": tables})
