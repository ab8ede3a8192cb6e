"""Reading request bodies and parameters as Tinybird does, within the body size limit."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from ..errors import BadRequest, PayloadTooLarge, TooManyFields

__all__ = ["MAX_FIELDS", "read_body", "request_fields"]

# Fields (and files) in one form or JSON body: a call sends a few parameters, and each field costs
# work and memory of its own however small the body. Starlette's own default for forms.
MAX_FIELDS = 1000


async def request_fields(request: Request) -> tuple[dict[str, str], bytes | UploadFile | None]:
    """A request's named fields and its payload, read as Tinybird reads them, within the body limit.

    Fields come from the query string, then (on POST and PUT) from form fields (URL-encoded or
    multipart) or from a body that is one JSON object; the body wins over the query string. The
    payload is a multipart file part, or any other body (NDJSON, SQL text). The caller closes an
    uploaded file.
    """
    fields = dict(request.query_params)
    if request.method not in ("POST", "PUT"):
        return fields, None
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request)  # a form too: the limit is on the whole body, not on each part
    if kind == "multipart/form-data":
        form = await _multipart(request.headers, body)
        upload = None
        for key, value in form.multi_items():
            if isinstance(value, str):
                fields[key] = value
            elif upload is None:
                upload = value
            else:
                await value.close()
        return fields, upload
    if kind == "application/x-www-form-urlencoded":
        try:
            fields.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=MAX_FIELDS))
        except ValueError:  # counted before anything is parsed
            raise TooManyFields(MAX_FIELDS) from None
        return fields, None
    if kind == "application/json" and body.lstrip()[:1] == b"{":
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            document = None
        if isinstance(document, dict):
            if len(document) > MAX_FIELDS:
                raise TooManyFields(MAX_FIELDS)
            fields.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in document.items() if v is not None})
            return fields, None
    return fields, body or None


async def _multipart(headers: Headers, body: bytes) -> FormData:
    """A multipart form read whole (so within the body limit), with at most ``MAX_FIELDS`` parts of each kind."""

    async def once():
        yield body

    # No part can be larger than the body that holds it: the size limit is the body's.
    parser = MultiPartParser(headers, once(), max_files=MAX_FIELDS, max_fields=MAX_FIELDS, max_part_size=len(body) + 1)
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise BadRequest(exc.message) from None


async def read_body(request: Request) -> bytes:
    """The body, refused with 413 once it passes the limit (without reading the rest)."""
    limit = request.app.state.max_body
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)
