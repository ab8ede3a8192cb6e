"""Datasources as ``tb`` deploys, inspects and appends to them: ``/v0/datasources`` (list; create from a
schema, or ``mode=append``), ``/v0/datasources/{name}`` (its description, or its datafile as
``{name}.datasource``) and ``/v0/datasources/{name}/alter``.

A datasource pushed over HTTP is turned back into datafile text and parsed by tinybird-cli's own
parser, then deployed by the same engine call as ``evtrack deploy``.
"""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from ... import scopes
from ...engine import Engine
from ...errors import BadRequest, MissingParameter, PayloadTooLarge
from ...project import Datasource, datasource_text, parse_datasource
from .. import shapes
from ..auth import require, workspace_of
from ..bodies import decode_body, request_fields
from ..calls import call
from . import imports

__all__ = ["alter", "create_or_append", "describe", "list_all"]


async def _described(engine: Engine, ds: Datasource) -> dict:
    """The datasource's shape, with its statistics, which are read from the database."""
    return shapes.datasource(ds, await call(engine.datasource_stats, ds.name))


async def list_all(request: Request) -> Response:
    engine = workspace_of(request)
    require(request, engine.tokens, scopes.ADMIN)
    every = await call(lambda: list(engine.datasources.values()))  # parsed on first use
    return JSONResponse({"datasources": [await _described(engine, ds) for ds in every]})


async def describe(request: Request) -> Response:
    engine = workspace_of(request)
    name = request.path_params["name"]
    require(request, engine.tokens, scopes.read_datasource(name.removesuffix(".datasource")))
    if name.endswith(".datasource"):
        return PlainTextResponse(engine.datasource(name.removesuffix(".datasource")).source)
    return JSONResponse(await _described(engine, engine.datasource(name)))


async def create_or_append(request: Request) -> Response:
    engine = workspace_of(request)
    params, payload = await request_fields(request)
    name, mode = params.get("name", ""), params.get("mode", "create")
    if not name:
        raise MissingParameter("name")
    if mode == "append":
        require(request, engine.tokens, *scopes.may_append(name))
        return await _append(request, engine, name, payload)
    if mode == "replace":  # tb datasource replace: the whole datasource, or where replace_condition holds
        require(request, engine.tokens, scopes.DATASOURCES_CREATE)
        return await _append(request, engine, name, payload, replace=True,
                             condition=params.get("replace_condition") or None)
    require(request, engine.tokens, scopes.DATASOURCES_CREATE)
    if not params.get("schema"):
        raise BadRequest("Only datasources created from a schema are supported: send 'schema'")
    ds = await call(parse_datasource, name, datasource_text(params))
    await call(engine.deploy_datasource, ds, params.get("force", "").lower() == "true")
    return JSONResponse({"datasource": await _described(engine, engine.datasource(name))})


async def alter(request: Request) -> Response:
    """tb push --force on an existing datasource: a dry run lists the operations, then they are applied."""
    engine = workspace_of(request)
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


async def _append(request: Request, engine: Engine, name: str, payload, replace: bool = False,
                  condition: str | None = None) -> Response:
    """`tb datasource append` (multipart) and SDK appends (raw body), within the same limits as events;
    with ``replace``, `tb datasource replace`."""
    fmt = request.query_params.get("format", "ndjson")
    if fmt not in ("ndjson", "json", "csv", "parquet"):
        raise BadRequest(f"Unsupported format '{fmt}': append NDJSON, CSV or Parquet")
    if replace and fmt in ("csv", "parquet"):
        raise BadRequest(imports.REPLACE_TAKES_NDJSON)
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
    data = await call(decode_body, data, request.headers.get("content-encoding", ""), limit)
    result = await imports.ingest(request, engine, name, data, fmt, replace, condition)
    return JSONResponse({
        "id": result.import_id, "job_id": result.import_id, "import_id": result.import_id, "status": "done",
        "datasource": await _described(engine, engine.datasource(name)), "quarantine_rows": result.quarantined_rows,
        "invalid_lines": 0, "error": False, "blocks": [], "successful_rows": result.successful_rows,
    })

