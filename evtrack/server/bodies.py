"""Reading request bodies and parameters as Tinybird does, within the body size limit."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from starlette.requests import Request

from ..errors import BadRequest, EvtrackError

__all__ = ["read_body", "request_params"]


async def request_params(request: Request) -> dict[str, str]:
    """Query string, then (on POST) form fields or a JSON object body, as Tinybird reads them."""
    params = dict(request.query_params)
    if request.method != "POST":
        return params
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request)
    if kind == "application/json":
        try:
            document = json.loads(body or b"{}")
        except ValueError:
            raise BadRequest("The body is not valid JSON") from None
        if not isinstance(document, dict):
            raise BadRequest("The JSON body must be an object of parameters")
        params.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in document.items() if v is not None})
    elif kind in ("application/x-www-form-urlencoded", ""):
        params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return params


async def read_body(request: Request) -> bytes:
    """The body, refused with 413 once it passes the limit (without reading the rest)."""
    limit = request.app.state.max_body
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise EvtrackError(f"The body is larger than {limit} bytes", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise EvtrackError(f"The body is larger than {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)
