"""tinybird.pipe_stats_rt: every endpoint call kept, as Tinybird documents the service datasource
(its columns, one row a call, errors flagged), readable in SQL with a token that may read it."""

from __future__ import annotations

import time

import httpx

from .served import Served, evtrack
from .conftest import ROOT


def _rows(server: Served, query: str, expected: int, timeout: float = 20) -> list[dict]:
    """The answer to ``query`` once it has ``expected`` rows (the server writes them each second)."""
    deadline = time.monotonic() + timeout
    while True:
        data = httpx.get(f"{server.url}/v0/sql", params={"token": server.admin, "q": f"{query} FORMAT JSON"}).json()["data"]
        if len(data) >= expected or time.monotonic() > deadline:
            return data
        time.sleep(0.1)


def test_every_endpoint_call_is_kept_in_pipe_stats_rt(tmp_path):
    store = tmp_path / "store"
    assert evtrack("--data", str(store), "deploy", "--project", str(ROOT)).returncode == 0
    assert evtrack("--data", str(store), "send", str(ROOT / "fixtures" / "events.ndjson")).returncode == 0
    server = Served(store)
    try:
        dashboard = server.token("dashboard")
        ok = httpx.get(f"{server.url}/v0/pipes/event_stats.json", params={"token": dashboard, "platform": "web"},
                       headers={"User-Agent": "probe/0"})
        bad = httpx.get(f"{server.url}/v0/pipes/event_stats.json", params={"token": dashboard, "start_date": "x"},
                        headers={"User-Agent": "probe/1"})
        assert (ok.status_code, bad.status_code) == (200, 400)
        rows = _rows(server, "SELECT pipe_name, status_code, error, method, url, parameters, token_name, user_agent, "
                             "result_rows, read_rows > 0 AS read_some, duration > 0 AS timed "
                             "FROM tinybird.pipe_stats_rt ORDER BY error", 2)
        assert rows == [
            {"pipe_name": "event_stats", "status_code": 200, "error": 0, "method": "GET",
             "url": "/v0/pipes/event_stats.json?platform=web", "parameters": {"platform": "web"},
             "token_name": "dashboard", "user_agent": "probe/0", "result_rows": ok.json()["rows"],
             "read_some": 1, "timed": 1},
            {"pipe_name": "event_stats", "status_code": 400, "error": 1, "method": "GET",
             "url": "/v0/pipes/event_stats.json?start_date=x", "parameters": {"start_date": "x"},
             "token_name": "dashboard", "user_agent": "probe/1", "result_rows": 0, "read_some": 0, "timed": 1},
        ]
        assert ok.json()["rows"] > 0
        refused = httpx.get(f"{server.url}/v0/sql", params={"token": dashboard,
                                                            "q": "SELECT count() FROM tinybird.pipe_stats_rt"})
        assert (refused.status_code, refused.json()["error"]) == (
            403, "token needs scope DATASOURCES:READ:tinybird.pipe_stats_rt")
        # The service's own calls are not kept: the SQL reads above added no row.
        assert _rows(server, "SELECT count() AS n FROM tinybird.pipe_stats_rt", 1) == [{"n": 2}]
    finally:
        assert server.stop() == 0
