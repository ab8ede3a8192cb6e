"""Slow engine work never stalls `evtrack serve`'s event loop: every call that can reach chDB or wait
for a lock runs in a worker thread, so the loop goes on answering.

In-process (Starlette's TestClient runs the app on one event loop and takes requests from several
threads at once), from a loopback client address. Bounded: the long read is cancelled and the
held deploy released at the end, whatever happened; threads and events order the steps, no sleep.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from starlette.testclient import TestClient

from evtrack.server.app import create_app

from .conftest import data

ENDLESS = "numbers(1000000000000)"  # hours of work: only a cancel ends it
RUNAWAY = f"SELECT count() FROM {ENDLESS}"
HELD = "held_until_released"  # the datasource whose deploy waits in the database
EVENT = b'{"event_id": "during-deploy", "event_type": "page_view", "timestamp": "2023-07-15 14:30:00"}'
BOUND = 0.3  # seconds: each quick request, while the read runs and the deploy waits


def hold_in_the_store(store, monkeypatch, release: threading.Event) -> dict[str, threading.Event]:
    """Statements of the store as they start: the long read is seen, and the held datasource's
    CREATE TABLE waits for ``release``, as a deploy slow in the database waits, holding the
    workspace alone. Events say when each has started."""
    started = {"read": threading.Event(), "deploy": threading.Event()}

    def watched(real):
        def statement(sql: str, *args, **kwargs):
            if ENDLESS in sql:  # as the SQL API rewrote it
                started["read"].set()
            if sql.lstrip().startswith("CREATE TABLE") and HELD in sql:
                started["deploy"].set()
                release.wait(timeout=60)
            return real(sql, *args, **kwargs)
        return statement

    monkeypatch.setattr(store, "run", watched(store.run))
    monkeypatch.setattr(store, "execute", watched(store.execute))
    return started


def timed(call, *args, **kwargs):
    began = time.monotonic()
    response = call(*args, **kwargs)
    return response, time.monotonic() - began


def test_tokens_appends_and_reads_answer_while_a_long_read_runs_and_a_deploy_waits(fresh_engine, monkeypatch):
    engine = fresh_engine
    admin = {"Authorization": f"Bearer {engine.tokens.admin.token}"}
    dashboard = engine.tokens.get("dashboard").token
    release = threading.Event()
    with TestClient(create_app(engine), base_url="http://127.0.0.1:7181", client=("127.0.0.1", 50000)) as http, \
            ThreadPoolExecutor(max_workers=5) as pool:
        expected = http.get("/v0/pipes/event_stats.json", params={"token": dashboard})
        assert expected.status_code == 200
        started = hold_in_the_store(engine.store, monkeypatch, release)
        try:
            heavy = pool.submit(http.get, "/v0/sql", params={"q": RUNAWAY}, headers=admin)
            assert started["read"].wait(timeout=30)
            deploy = pool.submit(http.post, "/v0/datasources", headers=admin,
                                 data={"name": HELD, "schema": "`a` String `json:$.a`"})
            assert started["deploy"].wait(timeout=30)

            tokens = pool.submit(timed, http.get, "/tokens")
            append = pool.submit(timed, http.post, "/v0/events?name=events", headers=admin, content=EVENT)
            read = pool.submit(timed, http.get, "/v0/pipes/event_stats.json", params={"token": dashboard})
            (tokens, tokens_took), (append, append_took), (read, read_took) = (
                f.result(timeout=30) for f in (tokens, append, read))
            still_waiting = not heavy.done() and not deploy.done()
        finally:
            release.set()
            engine.store.cancel()
        assert tokens.status_code == 200 and tokens.json()["admin_token"] == engine.tokens.admin.token
        assert append.status_code == 202 and append.text == '{"successful_rows":1,"quarantined_rows":0}'
        assert read.status_code == 200 and data(read.content) == data(expected.content)
        assert max(tokens_took, append_took, read_took) < BOUND, (tokens_took, append_took, read_took)
        assert still_waiting, "the read or the deploy ended before the quick requests: the test proved nothing"

        assert deploy.result(timeout=60).status_code == 200
        assert deploy.result().json()["datasource"]["name"] == HELD
        assert heavy.result(timeout=60).status_code == 400
        assert heavy.result().json()["error"] == \
            "[Error] Code: 394. DB::Exception: Query was cancelled. (QUERY_WAS_CANCELLED)"
    # The app stopped: what was acknowledged is written.
    [row] = data(engine.sql("SELECT count() AS n FROM events WHERE event_id = 'during-deploy'"))
    assert row["n"] == 1
