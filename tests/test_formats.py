"""CSV and Parquet go in wherever NDJSON does: read by ClickHouse, their rows become the ingest's
NDJSON lines, so bad rows are quarantined with their reason as NDJSON lines are. Counts are by hand."""

from __future__ import annotations

import gzip
import json
import shutil

import httpx

from evtrack.engine import Engine

from .conftest import ROOT
from .served import Served, evtrack, tb

HEADER = "event_id,event_type,user_id,timestamp\n"
ROWS = "c1,tap,u1,2023-03-01 00:00:00\nc2,tap,u2,not a date\nc3,view,u3,2023-03-02 00:00:00\n"
# Without a header, columns go by position: the datasource's order.
POSITIONAL = "p1,tap,u1,s1,2023-03-01 00:00:00,web,1.0,desktop,Linux,ES,{}\n"


def stored(store, sql: str) -> list:
    out = evtrack("--data", str(store), "sql", sql, "--format", "json")
    return json.loads(out.stdout)["data"]


def test_evtrack_send_reads_csv_with_or_without_header_gzip_and_parquet(tmp_path):
    store = tmp_path / "store"
    assert evtrack("--data", str(store), "deploy").returncode == 0
    (tmp_path / "a.csv").write_text(HEADER + ROWS)
    (tmp_path / "b.csv.gz").write_bytes(gzip.compress(POSITIONAL.encode()))
    first = evtrack("--data", str(store), "send", str(tmp_path / "a.csv"), "--json")
    assert (json.loads(first.stdout)["stored"], json.loads(first.stdout)["quarantined"]) == (2, 1)
    second = evtrack("--data", str(store), "send", str(tmp_path / "b.csv.gz"), "--json")
    assert json.loads(second.stdout)["stored"] == 1
    assert stored(store, "SELECT event_id, user_id, country FROM events ORDER BY event_id") == [
        {"event_id": "c1", "user_id": "u1", "country": ""}, {"event_id": "c3", "user_id": "u3", "country": ""},
        {"event_id": "p1", "user_id": "u1", "country": "ES"}]
    assert stored(store, "SELECT c__error FROM events_quarantine") == [
        {"c__error": ["value 'not a date' on column 'timestamp' is not DateTime"]}]
    # Parquet: the events exported, emptied, sent back.
    assert evtrack("--data", str(store), "export", "events", "-o", str(tmp_path / "e.parquet")).returncode == 0
    assert evtrack("--data", str(store), "truncate", "events", "--cascade", "--yes").returncode == 0
    (tmp_path / "e.parquet").rename(tmp_path / "exported.bin")  # a name that says nothing: --format does
    back = evtrack("--data", str(store), "send", str(tmp_path / "exported.bin"), "--format", "parquet", "--json")
    assert json.loads(back.stdout)["stored"] == 3
    assert [r["event_id"] for r in stored(store, "SELECT event_id FROM events ORDER BY event_id")] == ["c1", "c3", "p1"]


def test_the_unmodified_tb_appends_csv_and_parquet_through_evtrack_serve(tmp_path):
    project = tmp_path / "project"
    for part in ("datasources", "pipes"):
        shutil.copytree(ROOT / part, project / part)
    (project / "rows.csv").write_text(HEADER + ROWS)
    with Engine.open(tmp_path / "source") as engine:  # a Parquet file of three events, made by ClickHouse
        engine.store.run(f"SELECT concat('q', toString(number)) AS event_id, 'tap' AS event_type, 'u9' AS user_id, "
                         f"toDateTime('2023-04-01 00:00:00') + number AS timestamp FROM numbers(3) "
                         f"INTO OUTFILE '{project / 'rows.parquet'}' FORMAT Parquet")
    server = Served(tmp_path / "store")
    try:
        assert evtrack("--host", server.url, "--token", server.admin, "deploy", cwd=project).returncode == 0
        assert tb("auth", "--host", server.url, "--token", server.admin, cwd=project).returncode == 0
        for name in ("rows.csv", "rows.parquet"):
            appended = tb("datasource", "append", "events", name, cwd=project)
            assert appended.returncode == 0, appended.stdout + appended.stderr
        counted = httpx.get(f"{server.url}/v0/sql", params={"token": server.admin, "q":
                            "SELECT (SELECT count() FROM events) AS stored, (SELECT count() FROM events_quarantine) AS bad"})
        assert counted.json()["data"] == [{"stored": 5, "bad": 1}]  # c1, c3 and q0-q2; c2's date quarantined
    finally:
        assert server.stop() == 0
