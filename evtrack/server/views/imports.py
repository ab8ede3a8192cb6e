"""Appends as Tinybird's current CLI (Forward ``tb``) sends them: ``POST /v1/datasources/{name}/append``
with ``format=ndjson``, ``csv`` or ``parquet`` and the file as the raw body (gzip by ``Content-Encoding``). The
append is done when the answer comes, and answered as Tinybird answers it, as an import job
(``id``, ``import_id``) that ``GET /v0/jobs/{id}`` then describes as done."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import scopes
from ...errors import BadRequest
from ...ndjson import as_ndjson
from .. import shapes
from ..auth import require, workspace_of
from ..bodies import decode_body, read_body
from ..calls import call
from . import jobs

__all__ = ["append"]

FORMATS = ("ndjson", "csv", "parquet")


async def append(request: Request) -> Response:
    workspace = workspace_of(request)
    name = request.path_params["name"]
    require(request, workspace.tokens, *scopes.may_append(name))
    fmt = request.query_params.get("format", "ndjson").lower()
    if fmt not in FORMATS:
        raise BadRequest(f"Format '{fmt}' is not supported: append NDJSON, CSV or Parquet")
    workspace.datasource(name)
    created = shapes.timestamp()
    body = await read_body(request)
    limit = request.app.state.max_body
    data = await call(decode_body, body, request.headers.get("content-encoding", ""), limit)
    if fmt == "ndjson":
        result = await call(workspace.append, name, await call(as_ndjson, data))
    else:  # ClickHouse reads the rows, which become the ingest's NDJSON lines
        result = await call(workspace.append_rows, name, data, fmt)
    job = jobs.remember(request, shapes.import_job(result.import_id, name, created, str(request.base_url),
                                                   result.successful_rows, result.quarantined_rows))
    return JSONResponse(job)
