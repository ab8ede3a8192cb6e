"""The body of an Events API request, turned into NDJSON for the engine.

Gzip is recognised by ``Content-Encoding`` or by its magic bytes. The body is NDJSON, a single
JSON object or a JSON array of objects, read by ``evtrack.ndjson.as_ndjson``, which ``evtrack send``
applies to a whole file too.
"""

from __future__ import annotations

import zlib

from ..errors import BadRequest, PayloadTooLarge
from ..ndjson import as_ndjson

__all__ = ["decode_body", "as_ndjson"]

GZIP_MAGIC = b"\x1f\x8b"
# Input is fed to zlib a slice at a time, so that no step copies more than a slice: a finished
# member's ``unused_data`` is the rest of its slice, not the rest of the body.
INFLATE_SLICE = 64 * 1024
# A client sends one gzip member; a body of thousands of empty ones is only work for the server.
MAX_GZIP_MEMBERS = 1000


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
