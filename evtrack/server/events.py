"""The body of an Events API request, turned into NDJSON for the engine.

Gzip is recognised by ``Content-Encoding`` or by its magic bytes. The body is NDJSON, or, as
the API description's own curl example sends it, a single JSON object (pretty-printed over
several lines), or a JSON array of objects (one event each). Which one is decided by parsing the whole body,
not by its first byte: only a body that is one JSON document is taken as one.
"""

from __future__ import annotations

import json
import zlib

from ..errors import BadRequest, EvtrackError

__all__ = ["decode_body", "as_ndjson"]

GZIP_MAGIC = b"\x1f\x8b"


def decode_body(body: bytes, content_encoding: str = "", limit: int | None = None) -> bytes:
    """The body, inflated if gzip; a body that inflates past ``limit`` is refused (413) before it all is."""
    if "gzip" not in content_encoding.lower() and body[:2] != GZIP_MAGIC:
        return body
    out, rest = [], body
    size = 0
    try:
        while rest:
            inflater = zlib.decompressobj(wbits=31)  # one gzip member; concatenated members loop
            chunk = inflater.decompress(rest, (limit + 1 - size) if limit else 0)
            size += len(chunk)
            out.append(chunk)
            if limit and (size > limit or inflater.unconsumed_tail):
                raise EvtrackError(f"The body inflates to more than {limit} bytes", status=413)
            if not inflater.eof:
                raise BadRequest("Invalid gzip body: truncated")
            rest = inflater.unused_data
    except zlib.error as exc:
        raise BadRequest(f"Invalid gzip body: {str(exc).rpartition(': ')[2]}") from None
    return b"".join(out)


def as_ndjson(body: bytes) -> bytes:
    """NDJSON for the engine: a lone JSON object or array of objects becomes one line per object."""
    stripped = body.strip()
    if not stripped or stripped[:1] not in (b"{", b"["):
        return body
    try:
        document = json.loads(stripped)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting is for the engine to judge
        return body  # not one JSON document: NDJSON, whose lines are checked one by one
    if isinstance(document, dict):
        return json.dumps(document, ensure_ascii=False).encode() + b"\n"
    if isinstance(document, list) and document and all(isinstance(item, dict) for item in document):
        return b"".join(json.dumps(item, ensure_ascii=False).encode() + b"\n" for item in document)
    return body  # anything else is one line, quarantined as not a JSON object
