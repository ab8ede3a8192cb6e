"""The body of an Events API request, turned into NDJSON for the engine.

Gzip is recognised by ``Content-Encoding`` or by its magic bytes. The body is NDJSON, or, as
the API description's own curl example sends it, a single JSON object (pretty-printed over
several lines), or a JSON array of objects (one event each). Which one is decided by parsing the whole body,
not by its first byte: only a body that is one JSON document is taken as one.
"""

from __future__ import annotations

import json
import re
import zlib

from ..errors import BadRequest, EvtrackError

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
                    raise EvtrackError(f"The body inflates to more than {limit} bytes", status=413)
                data = b""
                if inflater.eof:  # what follows in this slice is the next member
                    data, inflater = inflater.unused_data, None
    except zlib.error as exc:
        raise BadRequest(f"Invalid gzip body: {str(exc).rpartition(': ')[2]}") from None
    if inflater is not None:
        raise BadRequest("Invalid gzip body: truncated")
    return b"".join(out)


def as_ndjson(body: bytes) -> bytes:
    """NDJSON for the engine: a lone JSON object, or array of objects, becomes one line per object.

    Nothing is re-serialised: each object keeps its own bytes, its line breaks turned into spaces
    (a JSON document can only have them between tokens, never inside a string).
    """
    stripped = body.strip()
    if not stripped or stripped[:1] not in (b"{", b"["):
        return body
    newline = stripped.find(b"\n")
    if newline > 0 and _is_json(stripped[:newline]):
        return body  # a whole value on the first line with more after it: NDJSON, no need to decode it all
    try:
        text = stripped.decode("utf-8")
        document, end = _DECODER.raw_decode(text)
    except (ValueError, RecursionError):  # not one document (or too deep): line by line, as NDJSON
        return body
    if end != len(text):
        return body
    if isinstance(document, dict):
        return _one_line(stripped)
    if isinstance(document, list) and document and all(isinstance(item, dict) for item in document):
        return b"".join(_one_line(element) for element in _elements(text))
    return body  # anything else is one line, quarantined as not a JSON object


_DECODER = json.JSONDecoder()
_BETWEEN = re.compile(r"[\s,]*")


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except (ValueError, RecursionError):
        return False
    return True


def _one_line(document: bytes) -> bytes:
    return document.replace(b"\r", b" ").replace(b"\n", b" ") + b"\n"


def _elements(text: str):
    """The raw text of each element of a JSON array already known to be valid."""
    at = text.index("[") + 1
    while True:
        at = _BETWEEN.match(text, at).end()
        if text[at] == "]":
            return
        _, end = _DECODER.raw_decode(text, at)
        yield text[at:end].encode()
        at = end
