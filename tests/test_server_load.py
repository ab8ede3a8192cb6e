"""The server under load and abuse, in-process: coalescing, back-pressure, limits, shutdown, bad bodies."""

from __future__ import annotations

import gzip
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from evtrack.server.app import create_app
from evtrack.server.bodies import GZIP_MAGIC
from evtrack.server.buffer import IngestBuffer

from .conftest import data

EVENT = b'{"event_type": "tap", "user_id": "u%d", "timestamp": "2023-03-01 00:00:00", "event_id": "id%d"}\n'


def stored(engine) -> int:
    return data(engine.sql("SELECT count() AS n FROM events FINAL"))[0]["n"]


def app_for(engine, **buffer):
    return TestClient(create_app(engine, max_body=64 * 1024, buffer=IngestBuffer(engine, **buffer)),
                      base_url="http://127.0.0.1:7181")


def auth(engine):
    return {"Authorization": f"Bearer {engine.tokens.admin.token}"}


def test_many_single_event_requests_are_coalesced_into_few_inserts(fresh_engine):
    buffer = IngestBuffer(fresh_engine, flush_interval=0.2)
    with TestClient(create_app(fresh_engine, buffer=buffer)) as http:
        def one(i):
            return http.post("/v0/events?name=events&wait=true", headers=auth(fresh_engine), content=EVENT % (i, i))

        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(one, range(400)))
    assert all(a.status_code == 200 and a.json() == {"successful_rows": 1, "quarantined_rows": 0} for a in answers)
    assert stored(fresh_engine) == 400
    assert buffer.flushes < 40  # 400 requests, a handful of inserts


def test_a_full_buffer_answers_429_with_retry_headers(fresh_engine):
    with app_for(fresh_engine, max_pending_bytes=150, flush_interval=60) as http:
        first = http.post("/v0/events?name=events", headers=auth(fresh_engine), content=EVENT % (1, 1))
        second = http.post("/v0/events?name=events", headers=auth(fresh_engine), content=EVENT % (2, 2))
        assert first.status_code == 202
        assert (second.status_code, second.text) == (429, "Too many requests\n")
        assert second.headers["retry-after"] == "240" and second.headers["x-ratelimit-remaining"] == "0"
        assert {"x-ratelimit-limit", "x-ratelimit-reset"} <= set(second.headers)
    # leaving the client shuts the app down: what was acknowledged is flushed, not lost
    assert stored(fresh_engine) == 1


def test_clean_shutdown_flushes_acknowledged_events(fresh_engine):
    # The first request is flushed at once; the next flush may start only a minute later.
    with app_for(fresh_engine, flush_interval=60, flush_gap=60) as http:
        for i in range(20):
            assert http.post("/v0/events?name=events", headers=auth(fresh_engine), content=EVENT % (i, i)).status_code == 202
        assert stored(fresh_engine) <= 1  # the rest is queued
    assert stored(fresh_engine) == 20


def test_body_over_the_limit_is_413(fresh_engine):
    with app_for(fresh_engine) as http:
        response = http.post("/v0/events?name=events", headers=auth(fresh_engine), content=b"x" * (64 * 1024 + 1))
    assert (response.status_code, response.text) == (413, "The body is larger than 65536 bytes\n")


def test_gzip_bomb_is_refused_without_inflating_it_all(fresh_engine):
    bomb = gzip.compress(b"\n" * (64 * 1024 * 1024), compresslevel=9)  # 64 MB of newlines in ~64 KB
    with app_for(fresh_engine) as http:
        response = http.post("/v0/events?name=events", headers=auth(fresh_engine), content=bomb[:60 * 1024])
        whole = http.post("/v0/events?name=events", headers={**auth(fresh_engine), "Content-Encoding": "gzip"},
                          content=gzip.compress(b"\n" * (1024 * 1024)))
    assert (response.status_code, response.text) == (413, "The body inflates to more than 65536 bytes\n")
    assert (whole.status_code, whole.text) == (413, "The body inflates to more than 65536 bytes\n")


BAD_BODIES = {
    "not json": b"definitely not json\n",
    "truncated gzip": gzip.compress(EVENT % (1, 1))[:-6],
    "binary": bytes(range(256)) * 4,
    "deep nesting": b'{"event_type": "a", "timestamp": "2023-01-01 00:00:00", "properties": ' + b"[" * 5000 + b"]" * 5000 + b"}\n",
    "wrong types": b'{"event_type": {"x": 1}, "timestamp": [1, 2], "user_id": 3.5}\n',
    "empty": b"",
    "only blanks": b"\n \n\t\n",
    "nul bytes": b'{"event_type": "a\\u0000b", "timestamp": "2023-01-01 00:00:00"}\n\x00\n',
    "array of scalars": b"[1, 2, 3]",
    "top-level string": b'"hello"',
}


# (stored, quarantined) for each body, hand-counted (the binary body has 4 newline bytes: 5 lines,
# none blank); None: refused with 400
EXPECTED = {
    "not json": (0, 1), "truncated gzip": None, "binary": (0, 5), "deep nesting": (0, 1), "wrong types": (0, 1),
    "empty": (0, 0), "only blanks": (0, 0), "nul bytes": (1, 1), "array of scalars": (0, 1),
    "top-level string": (0, 1),
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
@pytest.mark.parametrize("content_type", ["application/x-ndjson", "text/csv", "application/json", None])
def test_bad_bodies_never_get_a_5xx_and_lose_nothing(fresh_engine, name, content_type):
    body = BAD_BODIES[name]
    headers = {**auth(fresh_engine), **({"Content-Type": content_type} if content_type else {})}
    with app_for(fresh_engine) as http:
        response = http.post("/v0/events?name=events&wait=true", headers=headers, content=body)
    if EXPECTED[name] is None:
        assert (response.status_code, response.text) == (400, "Invalid gzip body: truncated\n")
        return
    assert response.status_code == 200, response.text
    stored_rows, quarantined_rows = EXPECTED[name]
    assert response.json() == {"successful_rows": stored_rows, "quarantined_rows": quarantined_rows}
    assert stored(fresh_engine) == stored_rows


def _lines_as_documented(body: bytes) -> int:
    """The rule of docs/serving.md (the Events API's row): one JSON object is one event, a JSON
    array of objects one per object, anything else one per non-blank line."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        document = None
    if isinstance(document, dict):
        return 1
    if isinstance(document, list) and document and all(isinstance(item, dict) for item in document):
        return len(document)
    return sum(1 for line in body.split(b"\n") if line.strip())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.fixed_dictionaries({"event_type": st.text(max_size=20), "timestamp": st.one_of(
        st.datetimes().map(str), st.text(max_size=30), st.integers(), st.none())}).map(lambda d: json.dumps(d).encode()),
), max_size=20))
def test_any_body_is_stored_or_quarantined_line_for_line(fresh_engine, lines):
    body = b"\n".join(line.replace(b"\n", b" ") for line in lines)
    # A body that starts with gzip's magic bytes is a gzip body (docs/serving.md, as Tinybird does):
    # inflated, or refused as a bad one. Those are tested in test_bodies.py; here, the lines.
    assume(not body.startswith(GZIP_MAGIC))
    with app_for(fresh_engine) as http:
        response = http.post("/v0/events?name=events&wait=true", headers=auth(fresh_engine), content=body)
    assert response.status_code < 500, response.text
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["successful_rows"] + answer["quarantined_rows"] == _lines_as_documented(body)
