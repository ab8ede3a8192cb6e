"""What the server did, as Tinybird shows it: `tinybird.datasources_ops_log` and `tinybird.jobs_log`
written for every operation, Tinybird's documented example queries over them, and endpoints in
Prometheus' format, with the project's `metrics` pipe read by Prometheus' own parser.

Expected values are counted by hand over the lines each test sends.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from evtrack.engine import Engine
from evtrack.errors import BadRequest
from evtrack.project import load_project

from .served import Served, evtrack
from .test_change_kills_more import _project

GOOD = [{"event_id": f"e{i}", "event_type": "view", "user_id": f"u{i % 2}", "timestamp": "2024-05-01 10:00:00"}
        for i in range(4)]  # u0: e0, e2; u1: e1, e3
BAD = ["not json", '{"event_type": "view", "timestamp": "yesterday"}']


def _ndjson(rows: list[dict], bad: list[str] = ()) -> bytes:
    return "\n".join([*(json.dumps(row) for row in rows), *bad]).encode()


def _rows(engine, sql: str) -> list[dict]:
    return json.loads(engine.sql(sql + " FORMAT JSON"))["data"]


def test_every_operation_enters_the_ops_log_and_jobs_log_and_tinybirds_example_queries_run(tmp_path):
    with Engine.open(tmp_path / "store") as engine:
        engine.deploy(load_project(_project(tmp_path / "project")))
        engine.append("events", _ndjson(GOOD, BAD))                      # 4 stored, 2 quarantined
        engine.replace("events", _ndjson(GOOD[:3]))                       # 3 stored
        engine.delete("events", "user_id = 'u0'")                        # e0, e2 of the 3
        with pytest.raises(BadRequest):
            engine.delete("events", "no_such_column = 1")                 # refused: an error entry
        engine.run_copy("keep_users", {})                                 # keeps users not ending in 1: none left
        engine.truncate("events")
        engine.service.flush()  # what a closing workspace writes; a running one writes within a second
        ops = _rows(engine, "SELECT event_type, datasource_name, result, rows, rows_quarantine, pipe_name, "
                            "error IS NOT NULL AS failed FROM tinybird.datasources_ops_log "
                            "WHERE event_type NOT IN ('create', 'populateview') ORDER BY timestamp, event_type")
        # (timestamps are to the second: compared as a set of entries)
        assert sorted((o["event_type"], o["result"], o["rows"] or 0, o["rows_quarantine"] or 0) for o in ops) == sorted([
            ("append", "ok", 4, 2), ("replace", "ok", 3, 0), ("delete", "ok", 2, 0), ("delete", "error", 0, 0),
            ("copy", "ok", 0, 0), ("truncate", "ok", 0, 0)]), ops
        assert {o["datasource_name"] for o in ops} == {"events"}
        assert [o["pipe_name"] for o in ops if o["event_type"] == "copy"] == ["keep_users"]
        created = _rows(engine, "SELECT datasource_name FROM tinybird.datasources_ops_log WHERE event_type = 'create' "
                                "ORDER BY datasource_name")
        assert [c["datasource_name"] for c in created] == sorted(
            ["events", "events_by_day", "events_by_user", "events_sessions_by_type", "events_users_by_type",
             "events_by_country"])
        # the deploy populated each materialized pipe's target (and those fed from it)
        populated = _rows(engine, "SELECT datasource_name, pipe_name, result FROM tinybird.datasources_ops_log "
                                  "WHERE event_type = 'populateview'")
        assert {(p["datasource_name"], p["pipe_name"], p["result"]) for p in populated} >= {
            (f"{name}", f"{name}_mv", "ok") for name in ("events_by_day", "events_by_user", "events_sessions_by_type",
                                                         "events_users_by_type", "events_by_country")}, populated
        jobs = _rows(engine, "SELECT job_type, status, JSONExtractString(job_metadata, 'pipe_name') AS pipe "
                             "FROM tinybird.jobs_log WHERE job_type != 'populateview' ORDER BY created_at, job_type")
        assert sorted((j["job_type"], j["status"], j["pipe"]) for j in jobs) == sorted([
            ("import", "done", ""), ("import", "done", ""), ("delete_data", "done", ""), ("delete_data", "error", ""),
            ("copy", "done", "keep_users")])

        # Tinybird's documented health checks over the ops log, unchanged but for the datasource id.
        every = _rows(engine, "SELECT * FROM tinybird.datasources_ops_log "
                              "WHERE toDate(timestamp) > now() - INTERVAL 7 DAY ORDER BY timestamp DESC")
        assert len(every) == len(ops) + len(created) + len(populated)
        [health] = _rows(engine, "SELECT countIf(result != 'ok') / countIf(result == 'ok') * 100 percentage_failed, "
                                 "sum(rows_quarantine) / sum(rows) * 100 quarantined_rows FROM tinybird.datasources_ops_log")
        # 1 failed of the 5 operations, 6 creates and the populates that were ok; 2 quarantined of 9 rows (4 + 3 + 2 + 0)
        assert health["percentage_failed"] == pytest.approx(100 / (5 + 6 + len(populated)))
        assert health["quarantined_rows"] == pytest.approx(2 / 9 * 100)
        events_id = next(o["datasource_id"] for o in every if o["datasource_name"] == "events")
        [duration] = _rows(engine, f"SELECT avg(elapsed_time) avg_duration FROM tinybird.datasources_ops_log "
                                   f"WHERE datasource_id = '{events_id}'")
        assert duration["avg_duration"] >= 0


def _metrics(server: Served) -> dict[tuple[str, tuple], float]:
    answer = httpx.get(f"{server.url}/v0/pipes/metrics.prometheus",
                       headers={"Authorization": f"Bearer {server.token('metrics')}"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


def test_the_metrics_pipe_is_a_prometheus_scrape_target_counting_rows_calls_and_errors(tmp_path):
    assert evtrack("--data", str(tmp_path / "store"), "deploy").returncode == 0
    server = Served(tmp_path / "store")
    try:
        auth = {"Authorization": f"Bearer {server.admin}"}
        for body in (_ndjson(GOOD, BAD), _ndjson(GOOD[:1])):              # 5 stored, 2 quarantined
            sent = httpx.post(f"{server.url}/v0/events", params={"name": "events", "wait": "true"}, content=body,
                              headers=auth)
            assert sent.status_code == 200, sent.text
        for params in ({}, {}, {"start_date": "not a date"}):             # two 200s, one 400
            httpx.get(f"{server.url}/v0/pipes/get_events.json", params=params, headers=auth)
        expected = {
            ("evtrack_rows_appended_last_hour", (("datasource", "events"), ("outcome", "stored"))): 5.0,
            ("evtrack_rows_appended_last_hour", (("datasource", "events"), ("outcome", "quarantined"))): 2.0,
            ("evtrack_endpoint_calls_last_hour", (("pipe", "get_events"), ("status", "200"))): 2.0,
            ("evtrack_endpoint_calls_last_hour", (("pipe", "get_events"), ("status", "400"))): 1.0,
        }
        deadline, seen = time.monotonic() + 15, {}
        while time.monotonic() < deadline:  # the logs are written within a second or two
            seen = _metrics(server)
            if all(seen.get(key) == value for key, value in expected.items()):
                break
            time.sleep(0.3)
        assert {key: seen.get(key) for key in expected} == expected, seen
        latency = {labels: value for (name, labels), value in seen.items() if name == "evtrack_endpoint_latency_seconds"}
        assert {(("pipe", "get_events"), ("quantile", q)) for q in ("0.5", "0.99")} <= set(latency)  # and the scrapes
        assert all(0 < value < 10 for value in latency.values())

        # A pipe whose result has not Prometheus' columns: a 400 in Tinybird's words.
        wrong = httpx.get(f"{server.url}/v0/pipes/get_events.prometheus", headers=auth)
        assert wrong.status_code == 400
        assert wrong.json()["error"].startswith("Prometheus requires the query output to conform to a specific "
                                                "structure: "), wrong.text
    finally:
        assert server.stop() == 0


def test_evtrack_logs_prints_what_was_done_newest_last_and_refuses_a_bad_since(tmp_path):
    store = str(tmp_path / "store")
    assert evtrack("--data", store, "deploy").returncode == 0
    (tmp_path / "events.ndjson").write_bytes(_ndjson(GOOD, BAD))
    evtrack("--data", store, "send", str(tmp_path / "events.ndjson"))  # exit 1: two lines quarantined
    shown = evtrack("--data", store, "logs", "--source", "datasources_ops_log", "--since", "10m")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert [line.split("  ")[1:5] for line in lines][-1] == ["datasources_ops_log", "append", "events", "ok"]
    assert sum(" create " in f" {line} " for line in lines) == 5  # the project's five datasources, first
    bad = evtrack("--data", store, "logs", "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr and "30m, 1h, 2d, 1w" in bad.stderr


def test_evtrack_logs_follow_prints_each_record_once_as_it_comes(tmp_path):
    from evtrack.logs import DEFAULT_SOURCES, follow, since_time

    with Engine.open(tmp_path / "store") as engine:
        engine.deploy(load_project(_project(tmp_path / "project")))
        engine.service.flush()
        printed, rounds = [], iter(range(3))
        def run(sql):  # between the reads of `follow`, one more append each time
            engine.service.flush()
            return engine.sql(sql)
        def stop():
            step = next(rounds, None)
            if step is None:
                return True
            engine.append("events", _ndjson([{**GOOD[0], "event_id": f"f{step}"}]))
            return False
        follow(run, list(DEFAULT_SOURCES), since_time("10m"), 100, printed.append, interval=0, stop=stop)
    # each record once, however many reads saw it: the six creates, the three appends (one a read)
    assert sum("  append  events" in line for line in printed) == 3, printed
    assert sum("  create  " in line for line in printed) == 6, printed
