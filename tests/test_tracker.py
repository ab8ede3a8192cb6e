"""`evtrack.Tracker` against a real `evtrack serve` on loopback and the embedded store: every event it
was given is stored once, raw, through a kill -9 and restart of the server, a proxy that answers 429,
holds and loses answers, and a kill -9 of the app with a spool; from threads and from a forked child.
Bad fields raise at the call, naming the field; a full queue drops by its policy, counted.

Counts are by hand (threads x events each) or from the events as generated here; each is read raw
and as distinct event ids.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from evtrack import AsyncTracker, Tracker
from evtrack.tracker import uuid7

from .conftest import ROOT
from .proxy import Proxy
from .served import Served, clean_env, evtrack


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _counts(url: str, token: str, prefix: str, expected: int | None = None) -> tuple[int, int]:
    """(raw rows, distinct event ids) of the events whose user starts with ``prefix``; with ``expected``,
    once that many ids are stored (the tracker's batches are acknowledged when the server has them in
    its log, and inserted at its next flush) or 30 s have passed."""
    q = (f"SELECT count() AS raw, uniqExact(event_id) AS ids FROM events WHERE startsWith(user_id, '{prefix}') "
         "FORMAT JSON")
    deadline = time.monotonic() + 30
    while True:
        row = httpx.get(f"{url}/v0/sql", params={"q": q, "token": token}, timeout=30).json()["data"][0]
        if expected is None or row["ids"] >= expected or time.monotonic() > deadline:
            return row["raw"], row["ids"]
        time.sleep(0.1)


def _serve(data):
    port = _free_port()
    served = Served(data, "--port", str(port))
    assert evtrack("--host", served.url, "--token", served.admin, "deploy").returncode == 0
    return served, data, port


@pytest.fixture
def server(tmp_path):
    """A server of its own, for the test that kills it."""
    served = _serve(tmp_path / "store")
    yield served
    served[0].stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One server for the tests that only track into it (each its own users)."""
    served = _serve(tmp_path_factory.mktemp("tracked") / "store")
    yield served
    served[0].stop()


def _sql(url: str, token: str, q: str) -> list[dict]:
    return httpx.get(f"{url}/v0/sql", params={"q": f"{q} FORMAT JSON", "token": token}, timeout=60).json()["data"]


def _stored_once(url: str, token: str, prefix: str, expected: int) -> None:
    """Every tracked event (users starting with ``prefix``) stored once: in ``events`` and in
    ``events_by_user`` (one row per event) raw, not only as read."""
    raw, ids = _counts(url, token, prefix, expected)
    by_user = _sql(url, token, f"SELECT count() AS n FROM events_by_user WHERE startsWith(user_id, '{prefix}')")
    assert (raw, ids, by_user[0]["n"]) == (expected, expected, expected)


EVENT_TYPES = ("tap", "view", "buy")
DAY = dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc)


def _acceptance_event(n: int, i: int) -> dict:
    """The i-th event of thread n: three types, 50 users and 10 sessions per thread, over one day."""
    return {"event_type": EVENT_TYPES[i % 3], "user_id": f"k{n}_{i % 50}", "session_id": f"k{n}_s{i % 10}",
            "timestamp": DAY + dt.timedelta(seconds=i % 86_400), "properties": {"i": i}}


def _reference(threads: int, each: int) -> dict[str, tuple[int, int, int]]:
    """Per event type: (events, users, sessions), counted here from the events as generated."""
    out = {}
    for event_type in EVENT_TYPES:
        events = [_acceptance_event(n, i) for n in range(threads) for i in range(each)
                  if _acceptance_event(n, i)["event_type"] == event_type]
        out[event_type] = (len(events), len({e["user_id"] for e in events}), len({e["session_id"] for e in events}))
    return out


def _stats(url: str, token: str, **params) -> dict[str, tuple[int, int, int]]:
    rows = httpx.get(f"{url}/v0/pipes/event_stats.json", params={"token": token, **params}, timeout=60).json()["data"]
    return {r["event_type"]: (r["event_count"], r["unique_users"], r["session_count"]) for r in rows}


def test_four_threads_track_100k_events_through_a_kill_9_and_restart_of_the_server(server):
    """The acceptance run: 4 threads x 25,000 events, the server killed with kill -9 halfway and
    started again 3 s later; after close(), every event is stored once, raw, in events and in the
    rollup of one row per event, and event_stats (which reads the other rollups) answers what the
    events define, over all time and over the day (its whole-day rollup)."""
    served, data, port = server
    # While the server is down the queue fills: the threads wait for room rather than drop.
    tracker = Tracker(host=served.url, token=served.admin, on_overflow="block")
    threads, each = 4, 25_000
    half = threading.Barrier(threads + 1)

    def track(n: int) -> None:
        for i in range(each):
            tracker.track(**_acceptance_event(n, i))
            if i == each // 2:
                half.wait()

    workers = [threading.Thread(target=track, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    half.wait()  # every thread is halfway: the server goes down hard, and comes back 3 s later
    served.process.kill()
    served.process.communicate(timeout=30)
    time.sleep(3)
    restarted = Served(data, "--port", str(port))
    try:
        for worker in workers:
            worker.join()
        result = tracker.close(timeout=120)
        assert result["left"] == 0 and tracker.stats["dropped"] == 0, (result, tracker.stats)
        _stored_once(restarted.url, restarted.admin, "k", threads * each)
        expected = _reference(threads, each)
        assert _stats(restarted.url, restarted.admin) == expected
        assert _stats(restarted.url, restarted.admin, start_date="2026-03-02 00:00:00",
                      end_date="2026-03-02 23:59:59") == expected
    finally:
        restarted.stop()


def test_429s_slow_and_lost_answers_through_a_loopback_proxy_store_every_event_once(shared):
    """Through a real proxy, requests in turn: passed, answered 429, held 0.3 s, forwarded with the
    answer lost (the server stored it), dropped unsent. The tracker retries each batch with its
    idempotency key, so a lost answer's resend is not stored twice."""
    served, _, _ = shared
    kinds = ["pass", ("429", 0.05), ("delay", 0.3), "lose", "drop"]

    def plan(n: int):
        return kinds[n % len(kinds)]

    proxy = Proxy(served.url, plan)
    try:
        with Tracker(host=proxy.url, token=served.admin, flush_at=250, flush_interval=0.1) as tracker:
            for i in range(10_000):
                tracker.track("tap", user_id=f"x{i % 100}", properties={"i": i})
        assert tracker.stats["sent"] == 10_000 and tracker.stats["retried"] > 0, tracker.stats
        assert all(proxy.counts[kind] for kind in ("429", "delay", "lose", "drop", "pass")), proxy.counts
        _stored_once(served.url, served.admin, "x", 10_000)
    finally:
        proxy.close()


APP = """
import sys, threading, time
from evtrack import AsyncTracker, Tracker
host, token, spool, threads, each = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
tracker = Tracker(host=host, token=token, spool_dir=spool, flush_interval=0.2)
def track(n):
    for i in range(each):
        tracker.track("tap", user_id=f"a{n}_{i % 50}", event_id=f"a{n}-{i}")
workers = [threading.Thread(target=track, args=(n,)) for n in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
print(tracker.stats["sent"], flush=True)
time.sleep(600)
"""


def test_a_kill_9_of_the_app_loses_nothing_it_spooled(shared, tmp_path):
    """An app tracks 100,000 events with a spool, through a proxy that holds each request 0.5 s, and is
    killed (kill -9) once its threads have tracked everything, with most not yet sent. A new Tracker
    on the spool sends the rest: every event is stored once, raw."""
    served, _, _ = shared
    proxy = Proxy(served.url, lambda n: ("delay", 0.5))
    spool = tmp_path / "spool"
    threads, each = 4, 25_000
    try:
        app = subprocess.Popen([sys.executable, "-c", APP, proxy.url, served.admin, str(spool), str(threads), str(each)],
                               cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sent_before = int(app.stdout.readline() or -1)
        app.kill()
        _, err = app.communicate(timeout=30)
        assert app.returncode == -9 and 0 <= sent_before < threads * each, (sent_before, err)
        with Tracker(host=served.url, token=served.admin, spool_dir=spool, close_timeout=120) as tracker:
            recovered = tracker.stats["recovered"]
        # Left on disk: what was not acknowledged when the app was killed (it had sent sent_before by the
        # time its threads were done, and went on until the kill).
        assert 0 < recovered <= threads * each - sent_before, (recovered, sent_before)
        assert tracker.stats["sent"] == recovered and not list(spool.iterdir())
        _stored_once(served.url, served.admin, "a", threads * each)
    finally:
        proxy.close()


REACHED = {"events": "user_id", "events_by_user": "user_id", "events_by_day": "user_id",
           "events_users_by_type": "user_id", "events_sessions_by_type": "session_id"}


def _raw_rows(url: str, token: str, prefix: str) -> dict[str, int]:
    """Raw rows (no FINAL) of ``prefix``'s events in every table an append to events reaches."""
    return {table: _sql(url, token, f"SELECT count() AS n FROM {table} WHERE startsWith({column}, '{prefix}')")[0]["n"]
            for table, column in REACHED.items()}


def test_a_resend_with_the_same_idempotency_key_is_stored_once_even_after_a_restart(server):
    """Raw rows in every table the append reaches are as one copy made them, after a resend with the
    key across a kill -9 and restart; a resend under another key adds rows to each (so the count
    would see a double)."""
    served, data, port = server
    body = "\n".join(json.dumps({"event_id": f"i{i}", "event_type": "tap", "user_id": f"idem{i}",
                                  "session_id": f"idem_s{i}", "timestamp": "2026-03-02 00:00:00"})
                     for i in range(20))

    def post(url: str, key: str) -> int:
        return httpx.post(f"{url}/v0/events", params={"name": "events", "wait": "false"}, content=body,
                          headers={"Authorization": f"Bearer {served.admin}", "Idempotency-Key": key}).status_code

    assert post(served.url, "key-1") == 202 and post(served.url, "key-1") == 202
    _counts(served.url, served.admin, "idem", 20)
    time.sleep(0.5)  # a second copy, had one been queued, would be flushed by now
    # 20 distinct users, sessions and pairs, one day: 20 raw rows in each table, by hand.
    assert _raw_rows(served.url, served.admin, "idem") == dict.fromkeys(REACHED, 20)
    served.process.kill()  # the answer may have been lost: the key outlives the process
    served.process.communicate(timeout=30)
    restarted = Served(data, "--port", str(port))
    try:
        assert post(restarted.url, "key-1") == 202
        raw, _ = _counts(restarted.url, restarted.admin, "idem", 20)
        time.sleep(0.5)  # a second copy, had one been queued, would be flushed by now
        assert _counts(restarted.url, restarted.admin, "idem") == (20, 20)
        assert _raw_rows(restarted.url, restarted.admin, "idem") == dict.fromkeys(REACHED, 20)
        assert post(restarted.url, "key-2") == 202  # another key: stored again (read once, by event_id)
        deadline = time.monotonic() + 30
        while _counts(restarted.url, restarted.admin, "idem")[0] < 40 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _counts(restarted.url, restarted.admin, "idem") == (40, 20)
        assert _raw_rows(restarted.url, restarted.admin, "idem") == dict.fromkeys(REACHED, 40)
    finally:
        restarted.stop()


def test_a_forked_child_sends_its_own_events_and_not_its_parents(shared):
    served, _, _ = shared
    tracker = Tracker(host=served.url, token=served.admin, flush_interval=60)  # nothing sent before the fork
    for i in range(50):
        tracker.track("tap", user_id=f"f_parent_{i}")
    child = os.fork()
    if child == 0:  # the child: a sender of its own, an empty queue
        try:
            for i in range(100):
                tracker.track("tap", user_id=f"f_child_{i}")
            tracker.close(timeout=60)
        finally:
            os._exit(0 if tracker.stats["sent"] == 100 else 1)
    for i in range(50, 100):
        tracker.track("tap", user_id=f"f_parent_{i}")
    assert tracker.close(timeout=60)["left"] == 0
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _counts(served.url, served.admin, "f_parent_", 100) == (100, 100)
    assert _counts(served.url, served.admin, "f_child_", 100) == (100, 100)


def test_a_field_the_datasource_lacks_or_a_wrong_value_raises_at_the_call(shared):
    served, _, _ = shared
    with Tracker(host=served.url, token=served.admin) as tracker:
        with pytest.raises(TypeError, match="field 'colour': the datasource 'events' has no such column"):
            tracker.track("tap", user_id="u", colour="red")
        with pytest.raises(TypeError, match="field 'platform': a int cannot go into the column 'platform'"):
            tracker.track("tap", user_id="u", platform=3)
        assert tracker.track("tap", user_id="ok", platform="web", event_id="given-id") == "given-id"
    assert _counts(served.url, served.admin, "ok", 1) == (1, 1)


def test_a_full_queue_drops_by_its_policy_and_counts_it(tmp_path):
    """The host answers nothing (a closed loopback port): the queue fills, and the drops are counted."""
    from evtrack.targets import Embedded

    store = tmp_path / "store"
    assert evtrack("--data", str(store), "deploy").returncode == 0
    target = Embedded(store)

    class Down:  # as a host that cannot be reached: the datasource known, every send refused
        engine = target.engine

        def delivery(self, datasource, options):
            from evtrack.errors import EvtrackError
            from evtrack.targets import Delivery

            def deliver(payload, key=None):
                raise EvtrackError("cannot reach http://127.0.0.1:9", status=503)

            return Delivery(deliver=deliver, max_line=None, whole_file=None, concurrency=1)

    try:
        tracker = Tracker(target=Down(), max_queue_size=10, flush_at=5, flush_interval=0.05)
        for i in range(25):
            tracker.track("tap", user_id=f"d{i}")
        # At most the queue's 10 and a batch of 5 taken out to send (put back when it fails) are held.
        assert tracker.stats["queued"] + tracker.stats["dropped"] == 25 and tracker.stats["dropped"] >= 10
        assert tracker.close(timeout=0.5)["left"] > 0  # kept to the end, never sent: said, not hidden
    finally:
        target.close()


def test_embedded_tracking_writes_through_the_engines_ingest(tmp_path):
    store = tmp_path / "store"
    assert evtrack("--data", str(store), "deploy").returncode == 0
    with Tracker(data=store) as tracker:
        for i in range(300):
            tracker.track("tap", user_id=f"e{i % 7}", properties={"n": i})
    answer = evtrack("--data", str(store), "sql", "SELECT count() AS n, uniqExact(event_id) AS ids FROM events",
                     "--format", "json")
    assert json.loads(answer.stdout)["data"] == [{"n": 300, "ids": 300}], answer.stderr


def test_event_ids_are_time_ordered_uuids():
    first, second = uuid7(), uuid7()
    assert len(first) == 36 and first[14] == "7" and first[19] in "89ab"
    time.sleep(0.002)
    assert uuid7() > first and first != second


def test_an_asyncio_app_tracks_without_waiting_for_the_network(shared):
    """Fifty tasks track through a proxy that holds every request 1 s: the loop is never held up (a
    ticker's longest gap, flush included, stays under half the proxy's delay, however busy the
    machine), and every event is stored once."""
    served, _, _ = shared
    proxy = Proxy(served.url, lambda n: ("delay", 1.0))

    async def app() -> tuple[float, dict]:
        gaps, running = [], True

        async def ticker():
            last = time.perf_counter()
            while running:
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        async def task(n: int):
            for i in range(100):
                await tracker.track("tap", user_id=f"as{n}", properties={"i": i})
                await asyncio.sleep(0)

        tick = asyncio.create_task(ticker())
        async with AsyncTracker(host=proxy.url, token=served.admin, flush_at=100, flush_interval=0.05) as tracker:
            await asyncio.gather(*(task(n) for n in range(50)))
            assert (await tracker.flush(timeout=60))["left"] == 0
        running = False
        await tick
        return max(gaps), tracker.stats

    try:
        longest, stats = asyncio.run(app())
        assert stats["sent"] == 5_000 and proxy.counts["delay"] >= 1, (stats, proxy.counts)
        assert longest < 0.5, longest  # a call that waited for the network would hold it 1 s or more
        _stored_once(served.url, served.admin, "as", 5_000)
    finally:
        proxy.close()


def test_an_event_is_sent_as_it_was_when_tracked_in_requests_under_flush_bytes(tmp_path):
    """The queue in memory writes lines on the sender's thread: a properties dict the app changes
    after track() is sent as it was, and a batch bigger than flush_bytes goes as several requests."""
    store = tmp_path / "store"
    assert evtrack("--data", str(store), "deploy").returncode == 0
    with Tracker(data=store, flush_bytes=1_000, flush_interval=60) as tracker:
        shared_properties = {"step": 0}
        for i in range(40):
            shared_properties["step"] = i
            tracker.track("tap", user_id=f"m{i}", properties=shared_properties, event_id=f"m{i}")
        nested = {"tags": ["a"]}
        tracker.track("tap", user_id="nested", properties=nested, event_id="nested")
        nested["tags"].append("b")
    answer = evtrack("--data", str(store), "sql", "SELECT event_id, properties FROM events ORDER BY event_id",
                     "--format", "json")
    stored = {row["event_id"]: json.loads(row["properties"]) for row in json.loads(answer.stdout)["data"]}
    assert stored == {**{f"m{i}": {"step": i} for i in range(40)}, "nested": {"tags": ["a"]}}
    assert tracker.stats["sent"] == 41
    requests = evtrack("--data", str(store), "sql", "SELECT count() AS n, sum(rows) AS rows FROM "
                       "tinybird.datasources_ops_log WHERE datasource_name = 'events' AND event_type = 'append'",
                       "--format", "json")
    [logged] = json.loads(requests.stdout)["data"]
    # Each line holds at least its id, type, user, time and properties: over 100 bytes, so 41 lines
    # need at least 5 requests of 1,000 bytes.
    assert logged["rows"] == 41 and logged["n"] >= 5, (logged, requests.stderr)


EXITING = """
import sys
from evtrack import Tracker
tracker = Tracker(host=sys.argv[1], token=sys.argv[2], flush_interval=60)  # nothing goes before the exit
for i in range(3_000):
    tracker.track("tap", user_id=f"exit_{i % 30}", event_id=f"exit-{i}")
"""


def test_an_app_that_exits_without_close_sends_what_it_tracked(shared):
    """The interpreter's exit closes the Tracker (atexit): the queue is sent before the process ends."""
    served, _, _ = shared
    done = subprocess.run([sys.executable, "-c", EXITING, served.url, served.admin], cwd=ROOT, env=clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    _stored_once(served.url, served.admin, "exit_", 3_000)


def test_an_append_only_token_tracks_with_fields_checked_against_the_datafile(shared, monkeypatch):
    """The token an app carries may only append: the schema comes from the project's datafile."""
    served, _, _ = shared
    monkeypatch.chdir(ROOT)
    with Tracker(host=served.url, token=served.token("tracker")) as tracker:
        with pytest.raises(TypeError, match="field 'colour': the datasource 'events' has no such column"):
            tracker.track("tap", user_id="u", colour="red")
        for i in range(20):
            tracker.track("tap", user_id=f"append_only_{i}")
    assert tracker.stats["sent"] == 20
    _stored_once(served.url, served.admin, "append_only_", 20)
