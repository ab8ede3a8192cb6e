"""The Events API, ``POST /v0/events?name=&wait=``: NDJSON (or JSON documents) appended through the
server's ingest buffer, answered 202 once logged or, with ``wait=true``, 200 once inserted. A request
with ``wait=false`` and an ``Idempotency-Key`` the log already has is answered as the first was, and
stored once (see ``evtrack.engine.ingest.wal``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import scopes
from ...errors import InvalidEventsToken, MissingParameter
from ...ndjson import as_ndjson
from ..auth import request_token, workspace_of
from ..bodies import decode_body, read_body
from ..buffer import buffer_of, count_lines
from ..calls import call

__all__ = ["send"]


async def send(request: Request) -> Response:
    engine = workspace_of(request)
    name = request.query_params.get("name")
    if not name:
        raise MissingParameter("name")
    token = request_token(request, engine.tokens)
    if token is None or not token.allows(*scopes.may_append(name)):
        raise InvalidEventsToken()
    engine.datasource(name)
    limit = request.app.state.max_body
    raw, encoding = await read_body(request), request.headers.get("content-encoding", "")
    # Inflating and reading the body happen off the event loop, beside other requests and inserts.
    body = await call(lambda: as_ndjson(decode_body(raw, encoding, limit)))
    wait = request.query_params.get("wait", "").lower() == "true"
    key = request.headers.get("idempotency-key") or None
    result = await (await buffer_of(request.app, engine)).submit(name, body, wait, key)
    if result is None:  # queued: its rows are stored or quarantined at the next flush
        return JSONResponse({"successful_rows": count_lines(body), "quarantined_rows": 0}, status_code=202)
    return JSONResponse({"successful_rows": result.successful_rows, "quarantined_rows": result.quarantined_rows})
