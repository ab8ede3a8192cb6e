"""Reading request bodies and parameters as Tinybird does, within the body size limit.

A body is read up to the limit (``read_body``); gzip, recognised by ``Content-Encoding`` or by its
magic bytes, is inflated in one pass within the same limit (``decode_body``); parameters come from
the query string, a form or a JSON object (``request_fields``).
"""

from __future__ import annotations

import json
import zlib
from urllib.parse import parse_qsl

from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from ..errors import BadRequest, PayloadTooLarge, TooManyFields

__all__ = ["MAX_FIELDS", "decode_body", "read_body", "read_form", "request_fields"]

# Fields (and files) in one form or JSON body: a call sends a few parameters, and each field costs
# work and memory of its own however small the body. Starlette's own default for forms.
MAX_FIELDS = 1000

GZIP_MAGIC = b"\x1f\x8b"
# Input is fed to zlib a slice at a time, so that no step copies more than a slice: a finished
# member's ``unused_data`` is the rest of its slice, not the rest of the body.
INFLATE_SLICE = 64 * 1024
# A client sends one gzip member; a body of thousands of empty ones is only work for the server.
MAX_GZIP_MEMBERS = 1000


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


async def read_form(request: Request) -> FormData:
    """A multipart body's parts, every one of them (files included), within the body limit."""
    return await _multipart(request.headers, await read_body(request))


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


def decode_body(body: bytes, content_encoding: str = "", limit: int | None = None) -> bytes:
    """The body, inflated if gzip, in one pass over it.

    A body that inflates past ``limit`` is refused (413) as soon as it does, and one of more than
    ``MAX_GZIP_MEMBERS`` concatenated gzip members with a 400.
    """
    if "gzip" not in content_encoding.lower() and body[:2] != GZIP_MAGIC:
        return body
    out, size, members, inflater = [], 0, 0, None
    view = memoryview(body)
    try:
        for start in range(0, len(view), INFLATE_SLICE):
            data = view[start:start + INFLATE_SLICE]
            while data:
                if inflater is None:  # a member starts
                    members += 1
                    if members > MAX_GZIP_MEMBERS:
                        raise BadRequest(f"Invalid gzip body: more than {MAX_GZIP_MEMBERS} concatenated members")
                    inflater = zlib.decompressobj(wbits=31)
                chunk = inflater.decompress(data, (limit + 1 - size) if limit else 0)
                size += len(chunk)
                out.append(chunk)
                if limit and (size > limit or inflater.unconsumed_tail):
                    raise PayloadTooLarge(limit, inflated=True)
                data = b""
                if inflater.eof:  # what follows in this slice is the next member
                    data, inflater = inflater.unused_data, None
    except zlib.error as exc:
        raise BadRequest(f"Invalid gzip body: {str(exc).rpartition(': ')[2]}") from None
    if inflater is not None:
        raise BadRequest("Invalid gzip body: truncated")
    return b"".join(out)
