"""One request cannot stall, leak into or crash `evtrack serve`: limits, isolation, cancellation.

Bounded and on loopback: the heavy queries here are cut by a time limit, a cancel or a stop.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from evtrack.engine.store import QueryLimits
from evtrack.server.app import create_app

from .served import Served, evtrack
from .test_durability import EVENT, count

RUNAWAY = "SELECT count() FROM numbers(1000000000000)"  # hours of work: only a limit or a cancel ends it


def sql(http, token: str, query: str, **params):
    return http.get("/v0/sql", params={"q": query, "token": token, **params})


# -- nothing crosses between requests ---------------------------------------------------------------
@pytest.fixture
def limited(engine):
    """The shared store with small limits, so each failure kind happens at once and on any machine."""
    from starlette.testclient import TestClient

    engine.read_limits = QueryLimits(max_execution_time=1, max_memory_usage=100 << 20, max_result_bytes=1 << 20)
    try:
        with TestClient(create_app(engine)) as client:
            yield client
    finally:
        engine.read_limits = None


FAILURES = {
    "memory limit": ("sql", "SELECT groupArray(repeat('a', 1000000)) FROM numbers(30000)", 400, "MEMORY_LIMIT_EXCEEDED"),
    "timeout": ("sql", RUNAWAY, 408, "TIMEOUT_EXCEEDED"),
    "result too large": ("sql", "SELECT number, toString(number) FROM numbers(10000000)", 400, "Limit for result exceeded"),
    "syntax error": ("sql", "SELECT count( FROM events", 400, "Syntax error"),
    "unknown table": ("sql", "SELECT * FROM nowhere", 400, "Resource 'nowhere' not found"),
    "template error": ("pipe", {"start_date": "yesterday"}, 400, "Error validating 'yesterday' to type DateTime"),
}


@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_a_failed_request_leaves_nothing_in_the_next_answer(engine, limited, kind):
    route, what, status, text = FAILURES[kind]
    admin = engine.tokens.admin.token
    dashboard = next(t.token for t in engine.tokens.all() if t.name == "dashboard")
    expected = limited.get("/v0/pipes/event_stats.json", params={"token": dashboard, "platform": "web"})
    assert expected.status_code == 200

    if route == "sql":
        failed = sql(limited, admin, what, )
    else:
        failed = limited.get("/v0/pipes/event_stats.json", params={"token": admin, **what})
    assert failed.status_code == status, failed.text
    assert text in failed.json()["error"]

    for _ in range(3):  # whichever pooled connection serves it, another token gets exactly its own body
        after = limited.get("/v0/pipes/event_stats.json", params={"token": dashboard, "platform": "web"})
        assert after.status_code == 200
        body = json.loads(after.text)  # one valid JSON document, nothing glued in front
        assert [m["name"] for m in body["meta"]] == ["event_type", "event_count", "unique_users", "session_count",
                                                     "first_seen", "last_seen"]
        assert body["data"] == expected.json()["data"]


# -- a real server on loopback ----------------------------------------------------------------------
@pytest.fixture
def loaded_server(tmp_path):
    """A served store with the project and a few events, with a 15 s limit on reads: the heavy query must
    outlast twenty small requests even while the suite's other worker loads both cores."""
    server = Served(tmp_path / "store", "--max-execution-time", "15")
    try:
        assert evtrack("--host", server.url, "--token", server.admin, "deploy").returncode == 0
        with httpx.Client(base_url=server.url, timeout=30) as http:
            body = "\n".join(EVENT % (f"seed-{i}", i % 7, i % 60) for i in range(200))
            assert http.post(f"/v0/events?name=events&wait=true&token={server.admin}", content=body).status_code == 200
        yield server
    finally:
        server.stop()


def test_small_reads_and_appends_do_not_wait_behind_a_heavy_query(loaded_server):
    server = loaded_server
    heavy: list[httpx.Response] = []
    runner = threading.Thread(target=lambda: heavy.append(
        httpx.get(f"{server.url}/v0/sql", params={"q": RUNAWAY, "token": server.admin}, timeout=60)))
    started = time.monotonic()
    runner.start()
    wait_for_cpu(server, busy=True)  # the heavy query is running
    reads, appends = [], []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i in range(10):
            t = time.monotonic()
            got = http.get("/v0/pipes/get_events.json", params={"token": server.token("dashboard"), "limit": 5})
            reads.append(time.monotonic() - t)
            assert got.status_code == 200 and len(got.json()["data"]) == 5
            t = time.monotonic()
            sent = http.post(f"/v0/events?name=events&wait=true&token={server.token('tracker')}",
                             content=EVENT % (f"during-{i}", i, i))
            appends.append(time.monotonic() - t)
            assert sent.status_code == 200 and sent.json() == {"successful_rows": 1, "quarantined_rows": 0}
    still_running = runner.is_alive()
    runner.join(timeout=60)
    # A generous bound, far under the heavy query's 15 s: before, each of these waited for it to end.
    assert max(reads) < 2.5 and max(appends) < 2.5, (reads, appends)
    assert still_running, "the heavy query ended before the small requests: the test proved nothing"
    assert heavy[0].status_code == 408 and "Timeout exceeded" in heavy[0].json()["error"]
    assert 5.5 < time.monotonic() - started < 30
    assert count(server, "SELECT count() AS n FROM events WHERE event_id LIKE 'during-%'") == 10


def test_limits_answer_with_their_status_and_the_database_text(tmp_path):
    server = Served(tmp_path / "store", "--max-execution-time", "1", "--max-query-memory", "100M",
                    "--max-result-bytes", "1M")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            timed_out = sql(http, server.admin, RUNAWAY)
            assert timed_out.status_code == 408
            assert timed_out.json()["error"].startswith("[Error] Code: 159. DB::Exception: Timeout exceeded: elapsed")
            memory = sql(http, server.admin, "SELECT groupArray(repeat('a', 1000)) FROM numbers(3000000)")
            assert memory.status_code == 400
            assert "Query memory limit exceeded" in memory.json()["error"]
            assert "(MEMORY_LIMIT_EXCEEDED)" in memory.json()["error"]
            big = sql(http, server.admin, "SELECT number, toString(number) FROM numbers(10000000)")
            assert big.status_code == 400 and "Limit for result exceeded" in big.json()["error"]
            fine = sql(http, server.admin, "SELECT count() AS n FROM numbers(1000)")
            assert fine.status_code == 200 and fine.json()["data"] == [{"n": 1000}]
    finally:
        assert server.stop() == 0


def test_a_client_that_goes_away_cancels_its_query(tmp_path):
    server = Served(tmp_path / "store", "--max-execution-time", "0")  # no time limit: only the cancel can end it
    try:
        address = urlsplit(server.url)
        with socket.create_connection((address.hostname, address.port), timeout=30) as client:
            query = urlencode({"q": RUNAWAY, "token": server.admin})
            client.sendall(f"GET /v0/sql?{query} HTTP/1.1\r\nHost: {address.netloc}\r\n\r\n".encode())
            wait_for_cpu(server, busy=True)  # the query runs...
        wait_for_cpu(server, busy=False, seconds=5)  # ...and stops once its client has gone
        # ...for good: a running query keeps both cores busy (about 2 s of CPU a second).
        assert cpu_used(server, 1.0) < 0.4
        assert server.stop() == 0
    finally:
        server.stop()


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, from /proc."""
    import os
    from pathlib import Path

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_used(server, window: float) -> float:
    """The CPU seconds the server spends over the next ``window`` seconds."""
    before = _cpu_seconds(server.process.pid)
    time.sleep(window)
    return _cpu_seconds(server.process.pid) - before


def wait_for_cpu(server, *, busy: bool, seconds: float = 30.0) -> None:
    """Wait until the otherwise idle server runs a query (over half a core in a quarter of a second: a
    runaway scan takes every core), or until it no longer does (under a fifth of a core)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        used = cpu_used(server, 0.25)
        if (busy and used > 0.125) or (not busy and used < 0.05):
            return
    raise AssertionError(f"the server was not {'busy' if busy else 'idle'} within {seconds} s")


def test_sigterm_during_a_runaway_query_stops_the_server_and_writes_what_was_queued(tmp_path):
    server = Served(tmp_path / "store", "--max-execution-time", "0")
    try:
        assert evtrack("--host", server.url, "--token", server.admin, "deploy").returncode == 0
        runaway = threading.Thread(target=lambda: _ignore_errors(
            lambda: httpx.get(f"{server.url}/v0/sql", params={"q": RUNAWAY, "token": server.admin}, timeout=60)))
        runaway.start()
        wait_for_cpu(server, busy=True)  # the runaway query is running
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(50):  # acknowledged with 202: queued, not yet written
                answer = http.post(f"/v0/events?name=events&token={server.admin}", content=EVENT % (f"q-{i}", i, i))
                assert answer.status_code == 202
        t = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.communicate(timeout=30)
        assert server.process.returncode == 0
        assert time.monotonic() - t < 8
        runaway.join(timeout=30)
    finally:
        server.stop()
    reopened = evtrack("--data", str(tmp_path / "store"), "sql", "SELECT count() AS n FROM events", "--format", "json")
    assert json.loads(reopened.stdout)["data"] == [{"n": 50}]


def _ignore_errors(call) -> None:
    try:
        call()
    except httpx.HTTPError:
        pass


def test_commands_after_a_killed_server_open_the_store_with_a_notice(tmp_path):
    data = tmp_path / "store"
    server = Served(data)
    try:
        assert evtrack("--host", server.url, "--token", server.admin, "deploy").returncode == 0
        server.process.send_signal(signal.SIGKILL)
        server.process.communicate(timeout=30)
    finally:
        server.stop()
    assert (data / "server.json").exists()
    done = evtrack("--data", str(data), "sql", "SELECT count() AS n FROM events", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["data"] == [{"n": 0}]
    assert done.stderr.splitlines() == [
        f"Notice: evtrack serve (pid {server.process.pid}) on {data} is no longer running; opening the store directly"]
    assert not (data / "server.json").exists()
