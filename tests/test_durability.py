"""A real `evtrack serve` on loopback: acknowledged events survive kill -9, and many clients lose nothing."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx

from .served import Served, evtrack

EVENT = '{"event_id": "%s", "event_type": "tap", "user_id": "u%d", "timestamp": "2023-03-01 00:00:%02d"}'


def count(server, sql: str) -> int:
    response = httpx.get(f"{server.url}/v0/sql", params={"q": sql, "token": server.admin}, timeout=30)
    return response.json()["data"][0]["n"]


def test_acknowledged_events_survive_kill_9(tmp_path):
    server = Served(tmp_path / "store")
    try:
        assert evtrack("--host", server.url, "--token", server.admin, "deploy").returncode == 0
        acknowledged = 0
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin}"}, timeout=30) as http:
            for batch in range(20):
                body = "\n".join(EVENT % (f"b{batch}-{i}", i, i % 60) for i in range(50))
                answer = http.post("/v0/events?name=events&wait=true", content=body)
                assert answer.status_code == 200
                acknowledged += answer.json()["successful_rows"]
        server.process.send_signal(signal.SIGKILL)
        server.process.communicate(timeout=30)
    finally:
        server.stop()
    restarted = Served(tmp_path / "store")  # a stale server.json from the killed process is replaced
    try:
        assert acknowledged == 1000
        # Raw rows, in events and in the materialized target: FINAL would hide a doubled insert.
        assert count(restarted, "SELECT count() AS n FROM events") == acknowledged
        assert count(restarted, "SELECT count() AS n FROM events_by_user") == acknowledged
    finally:
        assert restarted.stop() == 0


def test_many_concurrent_clients_lose_nothing(tmp_path):
    """A bounded load test: 16 clients, 50 single-event requests each, on loopback."""
    server = Served(tmp_path / "store")
    try:
        assert evtrack("--host", server.url, "--token", server.admin, "deploy").returncode == 0
        acked: list[int] = []

        def client(n: int) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                for i in range(50):
                    answer = http.post(f"/v0/events?name=events&wait={'true' if i % 2 else 'false'}",
                                       content=EVENT % (f"c{n}-{i}", n, i % 60),
                                       headers={"Authorization": f"Bearer {server.token('tracker')}"})
                    if answer.status_code in (200, 202):
                        acked.append(answer.json()["successful_rows"])

        answers: list[int] = []

        def reader() -> None:  # queries keep answering while events come in
            with httpx.Client(base_url=server.url, timeout=30) as http:
                while any(t.is_alive() for t in threads):
                    answers.append(http.get("/v0/pipes/event_stats.json",
                                            params={"token": server.token("dashboard")}).status_code)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        query_thread = threading.Thread(target=reader)
        query_thread.start()
        for thread in threads + [query_thread]:
            thread.join(timeout=120)
        assert sum(acked) == 800
        assert answers and set(answers) == {200}
    finally:
        assert server.stop() == 0  # the clean stop flushes what was accepted with 202
    reopened = evtrack("--data", str(tmp_path / "store"), "sql", "SELECT (SELECT count() FROM events) AS n, "
                       "(SELECT count() FROM events_by_user) AS m", "--format", "json")
    assert json.loads(reopened.stdout)["data"] == [{"n": 800, "m": 800}]


def test_events_acknowledged_with_202_survive_kill_9(tmp_path):
    """1,500 single events answered 202, then kill -9 at once: every one is stored after a restart."""
    server = Served(tmp_path / "store")
    try:
        assert evtrack("--host", server.url, "--token", server.admin, "deploy").returncode == 0
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin}"}, timeout=30) as http:
            for i in range(1500):
                answer = http.post("/v0/events?name=events", content=EVENT % (f"k{i}", i % 40, i % 60))
                assert answer.status_code == 202
        server.process.send_signal(signal.SIGKILL)
        server.process.communicate(timeout=30)
    finally:
        server.stop()
    restarted = Served(tmp_path / "store")
    try:
        assert count(restarted, "SELECT count() AS n FROM events") == 1500  # raw rows: each once
        assert count(restarted, "SELECT count() AS n FROM events_by_user") == 1500
    finally:
        assert restarted.stop() == 0
    assert not list((tmp_path / "store" / "wal").glob("*.wal"))  # replayed and trimmed


NO_ID = '{"event_type": "tap", "user_id": "anon%d", "timestamp": "2023-04-01 00:%02d:%02d"}'


def test_kill_9_during_mixed_load_loses_and_doubles_nothing(tmp_path):
    """Several clients send (202 and 200, with and without event_id) while others read; kill -9 in the middle;
    after a restart every acknowledged event is stored exactly once, and no quarantined line twice."""
    server = Served(tmp_path / "store")
    acked: dict[str, str] = {}  # event body -> the event's identity as sent
    stop = threading.Event()
    try:
        assert evtrack("--host", server.url, "--token", server.admin, "deploy").returncode == 0

        def sender(n: int) -> None:
            with httpx.Client(base_url=server.url, timeout=10) as http:
                for i in range(400):
                    if stop.is_set():
                        return
                    body = NO_ID % (n * 1000 + i, (n * 7 + i // 60) % 60, i % 60) if i % 3 == 0 else EVENT % (f"m{n}-{i}", n, i % 60)
                    if i % 50 == 7:
                        body += '\n{"event_type": "bad", "timestamp": "never", "event_id": "bad-%d-%d"}' % (n, i)
                    try:
                        answer = http.post(f"/v0/events?name=events&wait={'true' if i % 4 == 1 else 'false'}",
                                           content=body, headers={"Authorization": f"Bearer {server.admin}"})
                    except httpx.HTTPError:
                        return
                    if answer.status_code in (200, 202):
                        acked[body] = answer.status_code

        def reader() -> None:
            with httpx.Client(base_url=server.url, timeout=10) as http:
                while not stop.is_set():
                    try:
                        http.get("/v0/pipes/event_stats.json", params={"token": server.admin})
                    except httpx.HTTPError:
                        return

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(6)] + [threading.Thread(target=reader)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acked) < 600 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.process.send_signal(signal.SIGKILL)
        server.process.communicate(timeout=30)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        server.stop()
    assert len(acked) >= 600
    good = [b.split("\n")[0] for b in acked]
    bad = sum(1 for b in acked if "\n" in b)
    restarted = Served(tmp_path / "store")
    try:
        events = [json.loads(line) for line in good]
        ids = {e["event_id"] for e in events if "event_id" in e}
        anonymous = {e["user_id"] for e in events if "event_id" not in e}  # one event per anonymous user
        # Raw rows (no FINAL, which would hide a double), in events and in its materialized target.
        stored_ids = [r["event_id"] for r in _rows(restarted, "SELECT event_id FROM events WHERE event_id LIKE 'm%'")]
        stored_users = [r["user_id"] for r in _rows(restarted, "SELECT user_id FROM events WHERE user_id LIKE 'anon%'")]
        assert count(restarted, "SELECT count() AS n FROM events_by_user") == len(stored_ids) + len(stored_users)
        assert ids <= set(stored_ids) and anonymous <= set(stored_users)  # every acknowledged event is there
        assert len(stored_ids) == len(set(stored_ids)) and len(stored_users) == len(set(stored_users))  # once
        quarantined = _rows(restarted, "SELECT c__error FROM events_quarantine")
        assert len(quarantined) >= bad  # every acknowledged bad line is quarantined...
        assert count(restarted, "SELECT count() AS n FROM (SELECT c__import_id, event_id FROM events_quarantine "
                                "GROUP BY c__import_id, event_id HAVING count() > 1)") == 0  # ...and none twice
    finally:
        assert restarted.stop() == 0


def _rows(server, sql: str) -> list[dict]:
    response = httpx.get(f"{server.url}/v0/sql", params={"q": sql + " FORMAT JSON", "token": server.admin}, timeout=30)
    return response.json()["data"]


def test_a_replayed_segment_whose_insert_had_run_counts_nothing_twice(tmp_path, project):
    """The crash came after the insert and before the segment was deleted: the replay undoes nothing
    and doubles nothing (two events stored once, one bad line quarantined once)."""
    from evtrack.engine import Engine
    from evtrack.engine.ingest.wal import import_id

    payload = (EVENT % ("r1", 1, 1) + "\n" + NO_ID % (1, 2, 3) + "\n" + '{"event_type": "x", "timestamp": "never"}').encode()
    with Engine.open(tmp_path / "store") as engine:
        engine.deploy(project)
        engine.wal.write("events", payload)
        segment = engine.wal.rotate()
        engine.append_many("events", [payload], [import_id(segment, "events")], once=True)  # the insert ran...
        engine.wal.close()  # ...and the process died before dropping the segment
    with Engine.open(tmp_path / "store") as engine:
        assert not engine.wal.pending()
        assert data(engine.sql("SELECT (SELECT count() FROM events) AS stored, (SELECT count() FROM events_by_user) "
                               "AS by_user, (SELECT count() FROM events_quarantine) AS quarantined")) == [
            {"stored": 2, "by_user": 2, "quarantined": 1}]


def data(body: bytes) -> list[dict]:
    return json.loads(body)["data"]
