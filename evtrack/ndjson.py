"""Events as NDJSON, the way the Events API reads a body: used by the server on every body, and by
``evtrack send`` on a whole file, so that both take the same inputs.

A body is NDJSON, or, as the API description's own curl example sends it, a single JSON object
(pretty-printed over several lines), or a JSON array of objects (one event each). Which one is
decided by parsing the whole body, not by its first byte: only a body that is one JSON document is
taken as one. A leading UTF-8 byte order mark is an encoding mark, not data.
"""

from __future__ import annotations

import json
import re

__all__ = ["BOM", "as_ndjson", "read_head"]

BOM = b"\xef\xbb\xbf"


def as_ndjson(body: bytes) -> bytes:
    """NDJSON for the engine: a lone JSON object, or array of objects, becomes one line per object.

    Nothing is re-serialised: each object keeps its own bytes, its line breaks turned into spaces
    (a JSON document can only have them between tokens, never inside a string).
    """
    stripped = body.removeprefix(BOM).strip()
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


def read_head(stream) -> tuple[bytes, bytes | None]:
    """What was read from the start of ``stream`` to tell NDJSON from one JSON document, and the whole
    input as NDJSON (``as_ndjson``) when it is such a document, else None.

    NDJSON is told by its first lines; the whole input is read only when its first line is not a
    complete JSON value, or is one with nothing after it.
    """
    head = stream.readline()
    while head.isspace() and (line := stream.readline()):  # blank lines before the first
        head += line
    if head.removeprefix(BOM).lstrip()[:1] not in (b"{", b"["):
        return head, None
    if _is_json(head):
        while (line := stream.readline()) and not line.strip():
            head += line
        if line:  # another line follows a whole value: NDJSON
            return head + line, None
    else:
        head += stream.read()
    events = as_ndjson(head)
    return head, (None if events is head else events)


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
