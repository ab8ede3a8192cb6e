"""A real `evtrack serve` on loopback: acknowledged events survive kill -9, and many clients lose nothing."""

from __future__ import annotations

import json
import signal
import threading

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
        assert count(restarted, "SELECT count() AS n FROM events FINAL") == acknowledged
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
    reopened = evtrack("--data", str(tmp_path / "store"), "sql", "SELECT count() AS n FROM events FINAL", "--format", "json")
    assert json.loads(reopened.stdout)["data"] == [{"n": 800}]
