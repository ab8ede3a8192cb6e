"""The body of an Events API request, turned into NDJSON for the engine.

Gzip is recognised by ``Content-Encoding`` or by its magic bytes. The body is NDJSON, or, as
the API description's own curl example sends it, a single JSON object (pretty-printed over
several lines), or a JSON array of objects (one event each). Which one is decided by parsing the whole body,
not by its first byte: only a body that is one JSON document is taken as one.
"""

from __future__ import annotations

import gzip
import json
import zlib

from ..errors import BadRequest

__all__ = ["decode_body", "as_ndjson"]

GZIP_MAGIC = b"\x1f\x8b"


def decode_body(body: bytes, content_encoding: str = "") -> bytes:
    if "gzip" in content_encoding.lower() or body[:2] == GZIP_MAGIC:
        try:
            return gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as exc:
            raise BadRequest(f"Invalid gzip body: {exc}") from None
    return body


def as_ndjson(body: bytes) -> bytes:
    """NDJSON for the engine: a lone JSON object or array of objects becomes one line per object."""
    stripped = body.strip()
    if not stripped or stripped[:1] not in (b"{", b"["):
        return body
    try:
        document = json.loads(stripped)
    except (ValueError, UnicodeDecodeError):
        return body  # not one JSON document: NDJSON, whose lines are checked one by one
    if isinstance(document, dict):
        return json.dumps(document, ensure_ascii=False).encode() + b"\n"
    if isinstance(document, list) and document and all(isinstance(item, dict) for item in document):
        return b"".join(json.dumps(item, ensure_ascii=False).encode() + b"\n" for item in document)
    return body  # anything else is one line, quarantined as not a JSON object
