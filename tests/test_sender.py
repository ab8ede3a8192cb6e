"""`evtrack send` to a host: retries, rejects, checkpoints and resume, against a stand-in for
Tinybird's Events API (httpx.MockTransport, answering as the contract says) and the real server."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from evtrack.client import Client
from evtrack.errors import EvtrackError
from evtrack.sender import SendOptions, send_path
from evtrack.server.app import create_app
from evtrack.settings import Secret, Target
from evtrack.targets import Remote

from . import reference
from .conftest import BAD_FIXTURE, FIXTURE, ROOT, data

HOST = "https://api.tinybird.co"


class FakeEventsApi:
    """Tinybird's Events API as its contract describes it: stores events once per event_id,
    answers ``script`` (a list of status codes or "drop") first, then 200s."""

    def __init__(self, script=(), columns=None):
        self.script = list(script)
        self.stored: dict[str, dict] = {}
        self.requests = 0
        self.columns = columns  # what GET /v0/datasources/events describes; None: the token may not read it

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.startswith("/v0/datasources/"):
            if self.columns is None:
                return httpx.Response(403, json={"error": "token needs scope DATASOURCES:READ:events"})
            return httpx.Response(200, json={"name": "events", "columns": self.columns})
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


def remote(api, sleeps=None, project_cwd=True):
    client = Client(HOST, "p.token", http=httpx.Client(base_url=HOST, transport=httpx.MockTransport(api)),
                    sleep=(sleeps.append if sleeps is not None else lambda s: None))
    return Remote(Target(data=Path("."), host=HOST, token=Secret("p.token")), client=client)


@pytest.fixture(autouse=True)
def in_project(monkeypatch):
    monkeypatch.chdir(ROOT)  # the client-side checks come from datasources/events.datasource


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


def test_lines_that_cannot_be_events_are_rejected_with_line_numbers(tmp_path):
    api = FakeEventsApi()
    rejects = tmp_path / "rejects.ndjson"
    receipt = send_path(remote(api), "events", BAD_FIXTURE, SendOptions(rejects=rejects))
    records = [json.loads(line) for line in rejects.read_text().splitlines()]
    # hand-checked against fixtures/bad_events.ndjson (line numbers count blank lines too)
    assert [(r["line"], r["reason"]) for r in records] == [
        (4, "not a JSON object"),
        (5, "missing required field 'event_type'"),
        (6, "missing required field 'timestamp'"),
        (7, "field 'timestamp': 'yesterday' is not a date"),
        (10, "not a JSON object"),
        (11, "not a JSON object"),  # not UTF-8
        (12, "not a JSON object"),
        (13, "field 'timestamp': true is not a date"),
    ]
    assert records[0]["text"] == "this is not json"
    # bad_1 (month 13) looks like a date: it is left to the server, which quarantines it
    assert (receipt.lines, receipt.rejected, receipt.stored, receipt.quarantined) == (13, 8, 4, 1)
    assert receipt.rejects_file == str(rejects)


def test_every_line_is_accounted_for_against_the_real_server(tmp_path, fresh_engine):
    with TestClient(create_app(fresh_engine), base_url="http://127.0.0.1:7181") as http:
        client = Client("http://127.0.0.1:7181", fresh_engine.tokens.get("tracker").token, http=http)
        target = Remote(Target(data=fresh_engine.store.path, host="http://127.0.0.1:7181", token=Secret("x")),
                        client=client, snapshot=fresh_engine.store.path)
        receipt = send_path(target, "events", BAD_FIXTURE, SendOptions(rejects=tmp_path / "r.ndjson"))
    assert (receipt.lines, receipt.stored, receipt.quarantined, receipt.rejected) == (13, 4, 1, 8)
    assert data(fresh_engine.sql("SELECT c__error FROM events_quarantine")) == [
        {"c__error": ["value '2023-13-45 10:00:00' on column 'timestamp' is not DateTime"]}]


@pytest.mark.parametrize("line, reason", [
    (b'{"event_type": "a", "timestamp": "2023-07-15T14:30:00Z"}', None),
    (b'{"event_type": "a", "timestamp": 1689431400}', None),
    (b'{"event_type": "a", "timestamp": "15/07/2023 14:30"}', None),  # unusual, but the server may take it
    (b'{"event_type": 7, "timestamp": "2023-07-15 14:30:00"}', None),  # the server stores 7 as text
    (b'{"event_type": null, "timestamp": "2023-07-15 14:30:00"}', "missing required field 'event_type'"),
    (b'{"event_type": "a", "timestamp": null}', "missing required field 'timestamp'"),
    (b'{"event_type": "a", "timestamp": {"at": 1}}', "field 'timestamp': {\"at\": 1} is not a date"),
    (b'{"event_type": "a", "timestamp": "soon"}', "field 'timestamp': 'soon' is not a date"),
    (b'"just a string"', "not a JSON object"),
])
def test_client_side_checks(line, reason):
    from evtrack.project import load_project
    from evtrack.sender import Checks

    assert Checks("events", load_project(ROOT).datasources["events"].columns).reason(line) == reason


def test_client_side_checks_find_each_bad_line_of_a_large_batch():
    """A batch is checked in large ranges at once; each bad line must still be found, by number."""
    from evtrack.project import load_project
    from evtrack.sender import Batch, Checks

    good = b'{"event_type": "view", "timestamp": "2023-07-15 14:30:00", "n": %d}'
    bad = {  # line number -> a line that is not a valid event on its own
        7: b'{"event_type": "view"}',
        500: b'{"event_type": "a", "timestamp": "2023-07-15"},{"event_type": "b", "timestamp": "2023-07-15"}',
        501: b'{"event_type": "a", "timestamp": "2023-07-15", "x": "',
        502: b'"}',
        1999: b'not json',
        3000: b'[{"event_type": "a", "timestamp": "2023-07-15"}]',
    }
    blank = {40: b"", 41: b"   \r"}
    odd = {**bad, **blank}
    lines = [odd[n] if n in odd else good % n for n in range(1, 3001)]
    checks = Checks("events", load_project(ROOT).datasources["events"].columns)
    payload, rejects = checks.split(Batch(0, 0, 1, b"\n".join(lines) + b"\n"))
    assert [r["line"] for r in rejects] == sorted(bad)
    assert payload.split(b"\n")[:-1] == [line for n, line in enumerate(lines, 1) if n not in bad and n not in blank]

    clean = b"\n".join(good % n for n in range(1, 3001)) + b"\n"
    assert checks.split(Batch(0, 0, 1, clean)) == (clean, [])


def test_a_resumed_send_records_each_reject_once(tmp_path):
    lines = FIXTURE.read_bytes().splitlines(keepends=True)
    bad_at = list(range(300, 6000, 700))  # 0-based indexes of the lines replaced by a bad one
    for i in bad_at:
        lines[i] = b"not an event\n"
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


def test_checks_follow_the_columns_the_host_describes(tmp_path):
    """Lines are checked against the datasource as deployed on the host, when the token may read it."""
    described = [  # as Tinybird's datasource API lists columns; here user_id is required
        {"name": "event_type", "type": "String", "jsonpath": "$.event_type", "default_value": None, "nullable": False},
        {"name": "user_id", "type": "String", "jsonpath": "$.user_id", "default_value": None, "nullable": False},
        {"name": "timestamp", "type": "DateTime", "jsonpath": "$.timestamp", "default_value": None, "nullable": False},
        {"name": "platform", "type": "String", "jsonpath": "$.platform", "default_value": "DEFAULT ''",
         "nullable": False},
    ]
    source = tmp_path / "events.ndjson"
    source.write_text('{"event_type": "a", "user_id": "u1", "timestamp": "2023-07-15 14:30:00"}\n'
                      '{"event_type": "a", "timestamp": "2023-07-15 14:30:00"}\n')
    rejects = tmp_path / "rejects.ndjson"
    receipt = send_path(remote(FakeEventsApi(columns=described)), "events", source, SendOptions(rejects=rejects))
    assert (receipt.stored, receipt.rejected) == (1, 1)
    assert json.loads(rejects.read_text())["reason"] == "missing required field 'user_id'"

    # A token that may not read the datasource: the local datafile says user_id may be omitted.
    receipt = send_path(remote(FakeEventsApi()), "events", source, SendOptions(rejects=rejects))
    assert (receipt.stored, receipt.rejected) == (2, 0)
