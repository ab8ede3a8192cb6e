"""Appends and replaces as Tinybird's current CLI (Forward ``tb``) sends them: ``POST
/v1/datasources/{name}/append`` (and ``/replace``, with an optional ``replace_condition``) with
``format=ndjson``, ``csv`` or ``parquet`` and the file as the raw body (gzip by ``Content-Encoding``). The
append is done when the answer comes, and answered as Tinybird answers it, as an import job
(``id``, ``import_id``) that ``GET /v0/jobs/{id}`` then describes as done. A replace takes NDJSON."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import scopes
from ...engine import AppendResult
from ...errors import BadRequest
from ...ndjson import as_ndjson
from .. import shapes
from ..auth import require, workspace_of
from ..bodies import decode_body, read_body
from ..buffer import buffer_of
from ..calls import call
from . import jobs

__all__ = ["append", "ingest", "replace"]

FORMATS = ("ndjson", "csv", "parquet")
REPLACE_TAKES_NDJSON = "A replace takes NDJSON: convert the file, or truncate and append it"


async def append(request: Request) -> Response:
    return await _import(request, replace=False)


async def replace(request: Request) -> Response:
    return await _import(request, replace=True)


async def ingest(request: Request, workspace, name: str, data: bytes, fmt: str, replace: bool = False,
                 condition: str | None = None) -> AppendResult:
    """A decoded body into ``name``: appended (NDJSON, or CSV and Parquet rows, which ClickHouse turns
    into the ingest's NDJSON lines), or, with ``replace``, in place of its rows (where ``condition``
    holds), once what the server acknowledged before is in. Both append routes end here."""
    if replace:
        payload = await call(as_ndjson, data)
        await (await buffer_of(request.app, workspace)).drain()
        return await call(workspace.replace, name, payload, condition)
    if fmt in ("csv", "parquet"):
        return await call(workspace.append_rows, name, data, fmt)
    return await call(workspace.append, name, await call(as_ndjson, data))


async def _import(request: Request, replace: bool) -> Response:
    workspace = workspace_of(request)
    name = request.path_params["name"]
    require(request, workspace.tokens, *((scopes.DATASOURCES_CREATE,) if replace else scopes.may_append(name)))
    fmt = request.query_params.get("format", "ndjson").lower()
    if fmt not in FORMATS:
        raise BadRequest(f"Format '{fmt}' is not supported: append NDJSON, CSV or Parquet")
    if replace and fmt != "ndjson":
        raise BadRequest(REPLACE_TAKES_NDJSON)
    workspace.datasource(name)
    created = shapes.timestamp()
    body = await read_body(request)
    data = await call(decode_body, body, request.headers.get("content-encoding", ""), request.app.state.max_body)
    condition = request.query_params.get("replace_condition") or None
    result = await ingest(request, workspace, name, data, fmt, replace, condition)
    job = jobs.remember(request, shapes.import_job(result.import_id, name, created, str(request.base_url),
                                                   result.successful_rows, result.quarantined_rows,
                                                   "replace" if replace else "append"))
    return JSONResponse(job)
