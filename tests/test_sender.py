"""`evtrack send` to a host: retries, rejects, checkpoints and resume, against a stand-in for
Tinybird's Events API (httpx.MockTransport, answering as the contract says) and the real server."""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from evtrack.client import Client
from evtrack.errors import EvtrackError
from evtrack.sender import SendOptions, batches, send_path
from evtrack.server.app import create_app
from evtrack.settings import Secret, Target
from evtrack.targets import Remote

from . import reference
from .conftest import BAD_FIXTURE, FIXTURE, data

HOST = "https://api.tinybird.co"


class FakeEventsApi:
    """Tinybird's Events API as its contract describes it: stores events once per event_id,
    answers ``script`` (a list of status codes or "drop") first, then 200s."""

    def __init__(self, script=()):
        self.script = list(script)
        self.stored: dict[str, dict] = {}
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        step = self.script.pop(0) if self.script else 200
        if step == 429:
            return httpx.Response(429, text="Too many requests\n", headers={"Retry-After": "3"})
        if step == "429-reset":
            return httpx.Response(429, text="Too many requests\n", headers={"X-RateLimit-Reset": "2"})
        if step == 503:
            return httpx.Response(503, text="Service temporarily unavailable, no data ingested, please retry again\n")
        if step == "refused":
            raise httpx.ConnectError("connection refused")
        if step == 400:
            return httpx.Response(400, text="Missing 'name' parameter\n")
        good = bad = 0
        for line in gzip.decompress(request.content).splitlines():
            if not line.strip():
                continue
            try:  # identified as the datasource does: event_id, else derived from the content
                event = json.loads(line)
                self.stored.setdefault(reference.stored_row(event)["event_id"], event)
                good += 1
            except (ValueError, KeyError):
                bad += 1  # quarantined
        if step == "drop":  # stored, but the answer never arrives
            raise httpx.ReadTimeout("timed out")
        return httpx.Response(200, json={"successful_rows": good, "quarantined_rows": bad})


def remote(api, sleeps=None):
    client = Client(HOST, "p.token", http=httpx.Client(base_url=HOST, transport=httpx.MockTransport(api)),
                    sleep=(sleeps.append if sleeps is not None else lambda s: None))
    return Remote(Target(data=Path("."), host=HOST, token=Secret("p.token")), client=client)


@pytest.fixture(scope="module")
def unique():
    return {r["event_id"] for r in reference.load(FIXTURE)}


def test_retries_wait_as_told_and_count_every_event_once(tmp_path, unique):
    api = FakeEventsApi([429, 503, "refused", "drop", "429-reset", 503])
    sleeps: list[float] = []
    receipt = send_path(remote(api, sleeps), "events", FIXTURE,
                        SendOptions(batch_bytes=400_000, concurrency=1, rejects=tmp_path / "r.ndjson"))
    assert sleeps[0] == 3.0 and sleeps[4] == 2.0  # Retry-After, then X-RateLimit-Reset
    assert all(0 <= s <= 10 for s in sleeps) and len(sleeps) == 6
    assert receipt.retries == 6
    assert (receipt.lines, receipt.stored, receipt.rejected) == (6000, 6000, 0)
    assert set(api.stored) == unique  # every event, once, although one batch went twice


def test_a_final_4xx_is_not_retried(tmp_path):
    api = FakeEventsApi([400])
    with pytest.raises(EvtrackError, match="Missing 'name' parameter"):
        send_path(remote(api), "events", FIXTURE, SendOptions(concurrency=1, checkpoint=tmp_path / "c.json"))
    assert api.requests == 1


def test_resume_sends_only_what_was_not_acknowledged(tmp_path, unique):
    checkpoint = tmp_path / "events.checkpoint.json"
    options = SendOptions(batch_bytes=200_000, concurrency=1, checkpoint=checkpoint, resume=True)
    first = FakeEventsApi([200, 200, 200, 400])
    with pytest.raises(EvtrackError):
        send_path(remote(first), "events", FIXTURE, options)
    saved = json.loads(checkpoint.read_text())
    acknowledged = len(first.stored)
    assert 0 < saved["offset"] < FIXTURE.stat().st_size
    second = FakeEventsApi()
    receipt = send_path(remote(second), "events", FIXTURE, options)
    assert not set(first.stored) & set(second.stored)  # nothing acknowledged was sent again
    assert set(first.stored) | set(second.stored) == unique
    assert receipt.lines == 6000 - FIXTURE.read_bytes()[:saved["offset"]].count(b"\n")
    assert saved["line"] == FIXTURE.read_bytes()[:saved["offset"]].count(b"\n") + 1
    assert acknowledged and not checkpoint.exists()  # a finished send clears its checkpoint


def test_concurrent_batches_store_every_event_once(tmp_path, unique):
    api = FakeEventsApi()
    receipt = send_path(remote(api), "events", FIXTURE,
                        SendOptions(batch_bytes=50_000, concurrency=8, checkpoint=tmp_path / "c.json"))
    assert receipt.stored == 6000 and set(api.stored) == unique


def event(n: int, size: int = 0) -> bytes:
    """An event line of exactly ``size`` bytes (padded in its properties), or as short as it comes."""
    line = b'{"event_id": "e%d", "event_type": "click", "timestamp": "2023-07-15 14:30:00", "properties": "' % n
    return line + b"x" * max(0, size - len(line) - 2) + b'"}'


def test_a_line_over_the_limit_is_rejected_with_its_line_number_and_the_rest_is_sent(tmp_path):
    at_limit, over = event(4, 1048576), event(5, 1048577)
    assert (len(at_limit), len(over)) == (1048576, 1048577)
    source = tmp_path / "events.ndjson"
    source.write_bytes(b"\n".join([event(1), event(2), event(3), at_limit, over, event(6)]) + b"\n")
    rejects = tmp_path / "rejects.ndjson"
    api = FakeEventsApi()
    receipt = send_path(remote(api), "events", source, SendOptions(batch_bytes=300_000, rejects=rejects))
    shown = over[:1000].decode()
    assert [json.loads(line) for line in rejects.read_text().splitlines()] == [
        {"line": 5, "reason": f"Line is too long: 1048577 bytes, at most 1048576: '{shown}...'", "text": shown}]
    assert (receipt.lines, receipt.stored, receipt.quarantined, receipt.rejected) == (6, 5, 0, 1)
    assert receipt.rejects == [f"line 5: Line is too long: 1048577 bytes, at most 1048576: '{shown}...'"]
    assert sorted(api.stored) == ["e1", "e2", "e3", "e4", "e6"]


def test_batches_read_past_each_line_over_the_limit():
    """Wherever a long line falls (first, inside a block, across blocks, last without a newline), it
    is a batch of its own with its line number; every other line is sent once, in order."""
    lengths = {1: 101, 7: 5000, 42: 100, 43: 101, 500: 150, 501: 3000, 3000: 2500}  # line -> bytes
    lines = [b"y" * lengths.get(n, 10 + n % 50) for n in range(1, 3001)]
    source = b"\n".join(lines)  # no newline at the end: the input ends inside the last line
    got = list(batches(io.BytesIO(source), batch_bytes=1024, max_line=100))
    rejects = [reject for batch in got for reject in batch.rejects]
    assert [(r["line"], r["reason"][:40]) for r in rejects] == [
        (1, "Line is too long: 101 bytes, at most 100"), (7, "Line is too long: 5000 bytes, at most 10"),
        (43, "Line is too long: 101 bytes, at most 100"), (500, "Line is too long: 150 bytes, at most 100"),
        (501, "Line is too long: 3000 bytes, at most 10"), (3000, "Line is too long: 2500 bytes, at most 10")]
    long = {1, 7, 43, 500, 501, 3000}
    assert b"".join(b.data for b in got) == b"".join(line + b"\n" for n, line in enumerate(lines, 1) if n not in long)
    assert all(len(b.data) <= 1024 for b in got)
    assert [b.start for b in got[1:]] == [b.end for b in got[:-1]] and got[-1].end == len(source)
    assert [b.first_line for b in got[1:]] == [b.next_line for b in got[:-1]]


class _LongLineStream:
    """A line, then one of ``size`` bytes made as it is read, then another line."""

    def __init__(self, size: int):
        self.parts = [b'{"n": 1}\n', size, b'\n{"n": 2}\n']

    def read(self, n: int) -> bytes:
        while self.parts and not self.parts[0]:
            self.parts.pop(0)
        if not self.parts:
            return b""
        part = self.parts[0]
        if isinstance(part, int):
            self.parts[0] = part - min(n, part)
            return b"x" * min(n, part)
        self.parts[0] = part[n:]
        return part[:n]


def test_a_line_over_the_limit_is_never_held_whole():
    tracemalloc.start()
    try:
        got = [(b.data, [r["line"] for r in b.rejects])
               for b in batches(_LongLineStream(64 * 1024 * 1024), batch_bytes=1024 * 1024, max_line=1024 * 1024)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == [(b'{"n": 1}\n', []), (b"", [2]), (b'{"n": 2}\n', [])]
    assert peak < 8 * 1024 * 1024  # a few blocks of 1 MB, not the 64 MB line


def test_every_line_is_accounted_for_against_the_real_server(tmp_path, fresh_engine):
    with TestClient(create_app(fresh_engine), base_url="http://127.0.0.1:7181") as http:
        client = Client("http://127.0.0.1:7181", fresh_engine.tokens.get("tracker").token, http=http)
        target = Remote(Target(data=fresh_engine.store.path, host="http://127.0.0.1:7181", token=Secret("x")),
                        client=client, snapshot=fresh_engine.store.path)
        receipt = send_path(target, "events", BAD_FIXTURE, SendOptions(rejects=tmp_path / "r.ndjson"))
    # hand-counted: 4 good lines (one an exact duplicate), 9 bad, 2 blank; the server checks every line
    assert (receipt.lines, receipt.stored, receipt.quarantined, receipt.rejected) == (13, 4, 9, 0)
    assert len(data(fresh_engine.sql("SELECT c__error FROM events_quarantine"))) == 9


def test_a_resumed_send_records_each_reject_once(tmp_path):
    lines = FIXTURE.read_bytes().splitlines(keepends=True)
    bad_at = list(range(300, 6000, 700))  # 0-based indexes of the lines replaced by a bad one
    for i in bad_at:
        lines[i] = b"x" * 1048577 + b"\n"  # over the limit: rejected before sending
    source = tmp_path / "events.ndjson"
    source.write_bytes(b"".join(lines))
    rejects = tmp_path / "rejects.ndjson"
    options = SendOptions(batch_bytes=200_000, concurrency=1, checkpoint=tmp_path / "c.json", rejects=rejects,
                          resume=True)
    with pytest.raises(EvtrackError):  # the fourth batch fails, after its rejects were recorded
        send_path(remote(FakeEventsApi([200, 200, 200, 400])), "events", source, options)
    receipt = send_path(remote(FakeEventsApi()), "events", source, options)
    recorded = [json.loads(line)["line"] for line in rejects.read_text().splitlines()]
    assert recorded == [i + 1 for i in bad_at]
    assert receipt.rejects_file == str(rejects)
