"""Acknowledged events go into every table exactly once, whatever kill -9 interrupts.

Counts are of raw rows, in tables that cannot hide a double: a plain MergeTree and an
AggregatingMergeTree fed by materialized pipes. (``events`` is a ReplacingMergeTree read with
FINAL, which would hide a doubled insert; that is how a doubled replay once went unseen.)
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from .conftest import ROOT
from .served import Served, evtrack

PLAIN = """DESCRIPTION >
    Every event id inserted into events, one row per insert: a double cannot hide here.

SCHEMA >
    `event_id` String,
    `event_type` LowCardinality(String)

ENGINE "MergeTree"
ENGINE_SORTING_KEY "event_id"
"""
PLAIN_MV = """DESCRIPTION >
    Each row inserted into events, as it is.

NODE plain_rows
SQL >
    SELECT event_id, event_type FROM events

TYPE MATERIALIZED
DATASOURCE plain_ids
"""
COUNTS = """DESCRIPTION >
    Rows inserted into events, per event type, as aggregate states.

SCHEMA >
    `event_type` LowCardinality(String),
    `inserted` AggregateFunction(count)

ENGINE "AggregatingMergeTree"
ENGINE_SORTING_KEY "event_type"
"""
COUNTS_MV = """DESCRIPTION >
    Counts each insert into events.

NODE counted
SQL >
    SELECT event_type, countState() AS inserted FROM events GROUP BY event_type

TYPE MATERIALIZED
DATASOURCE type_counts
"""
EVENT = '{"event_id": "%s", "event_type": "t%d", "user_id": "u%d", "timestamp": "2023-05-01 00:00:00"}'


def make_project(folder):
    shutil.copytree(ROOT / "datasources", folder / "datasources")
    shutil.copytree(ROOT / "pipes", folder / "pipes")
    for path, text in {"datasources/plain_ids.datasource": PLAIN, "pipes/plain_ids_mv.pipe": PLAIN_MV,
                       "datasources/type_counts.datasource": COUNTS, "pipes/type_counts_mv.pipe": COUNTS_MV}.items():
        (folder / path).write_text(text)
    return folder


def sql(server, query: str) -> list[dict]:
    answer = httpx.get(f"{server.url}/v0/sql", params={"q": query + " FORMAT JSON", "token": server.admin}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def test_kill_9_loop_during_202_traffic_doubles_no_row_in_any_table(tmp_path):
    project = make_project(tmp_path / "project")
    data = tmp_path / "store"
    sent: set[str] = set()
    acked: set[str] = set()
    for kill in range(4):
        server = Served(data)
        if kill == 0:
            deployed = evtrack("--host", server.url, "--token", server.admin, "deploy", cwd=project)
            assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        acked_before, stop = len(acked), threading.Event()

        def sender(n: int) -> None:
            with httpx.Client(base_url=server.url, timeout=10,
                              headers={"Authorization": f"Bearer {server.admin}"}) as http:
                for i in range(100_000):
                    if stop.is_set():
                        return
                    ids = [f"k{kill}-{n}-{i}-{j}" for j in range(40)]
                    sent.update(ids)
                    body = "\n".join(EVENT % (event_id, j % 3, j) for j, event_id in enumerate(ids))
                    try:
                        answer = http.post("/v0/events?name=events", content=body)
                    except httpx.HTTPError:
                        return  # the server is gone
                    if answer.status_code == 202:
                        acked.update(ids)

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while len(acked) - acked_before < 4000 + 1500 * kill and time.monotonic() < deadline:
            time.sleep(0.01)
        server.process.send_signal(signal.SIGKILL)
        server.process.communicate(timeout=30)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        server.stop()
        assert len(acked) - acked_before >= 4000, "too few events acknowledged before the kill"

    restarted = Served(data)  # replays what the last kill left
    try:
        [plain] = sql(restarted, "SELECT count() AS rows, uniqExact(event_id) AS ids FROM plain_ids")
        stored = {row["event_id"] for row in sql(restarted, "SELECT DISTINCT event_id FROM plain_ids")}
        [counted] = sql(restarted, "SELECT toUInt64(sum(n)) AS rows FROM "
                                   "(SELECT countMerge(inserted) AS n FROM type_counts GROUP BY event_type)")
        [raw] = sql(restarted, "SELECT count() AS rows FROM events")
    finally:
        assert restarted.stop() == 0
    assert acked <= stored <= sent  # nothing acknowledged is lost, nothing unsent appears
    assert plain["rows"] == plain["ids"] == len(stored)  # and no event is there twice...
    assert counted["rows"] == len(stored)  # ...nor counted twice by a rollup
    assert raw["rows"] == len(stored)
    assert not list((data / "wal").glob("*.wal"))


def plain_rows(engine) -> tuple[int, int, int]:
    """Raw rows in events, in the plain target, and counted by the rollup."""
    body = engine.sql("SELECT (SELECT count() FROM events) AS events, (SELECT count() FROM plain_ids) AS plain, "
                      "(SELECT toUInt64(sum(n)) FROM (SELECT countMerge(inserted) AS n FROM type_counts "
                      "GROUP BY event_type)) AS counted")
    row = json.loads(body)["data"][0]
    return row["events"], row["plain"], row["counted"]


def test_a_replayed_segment_whose_insert_had_run_adds_no_row_anywhere(tmp_path):
    """The crash came after the flush's insert, before its segment was deleted."""
    from evtrack.engine import Engine
    from evtrack.engine.ingest.wal import import_id
    from evtrack.project import load_project

    payload = "\n".join(EVENT % (f"r{i}", i % 3, i) for i in range(1000)).encode()
    with Engine.open(tmp_path / "store") as engine:
        engine.deploy(load_project(make_project(tmp_path / "project")))
        engine.wal.write("events", payload)
        segment = engine.wal.rotate()
        engine.append_many("events", [payload], [import_id(segment, "events")], once=True)  # as a flush does
        engine.wal.close()  # and the process died here
    with Engine.open(tmp_path / "store") as engine:
        assert not engine.wal.pending()
        assert plain_rows(engine) == (1000, 1000, 1000)


CUT_INSERT = """
import sys
from pathlib import Path
from evtrack.engine import Engine
from evtrack.engine.ingest.wal import import_id

engine = Engine.open(Path(sys.argv[1]))
payload = Path(sys.argv[2]).read_bytes()
engine.wal.sync(engine.wal.write("events", payload))
segment = engine.wal.rotate()
print("logged", flush=True)
engine.append_many("events", [payload], [import_id(segment, "events")], once=True)  # as a flush does
print("inserted", flush=True)
"""


def test_an_insert_killed_in_its_middle_is_completed_by_the_replay_not_doubled(tmp_path):
    """kill -9 once the flush's insert has committed its first part in the plain target, and before
    it ends: the replay writes what was missing and nothing twice."""
    from evtrack.engine import Engine
    from evtrack.project import load_project

    total = 1_200_000  # several blocks of 262,144 rows, so the kill can land between them
    source = tmp_path / "events.ndjson"
    source.write_text("\n".join(EVENT % (f"c{i}", i % 3, i % 100) for i in range(total)))
    with Engine.open(tmp_path / "store") as engine:
        engine.deploy(load_project(make_project(tmp_path / "project")))
        folder = engine.store.run("SELECT data_paths[1] FROM system.tables "
                                  "WHERE database = 'evtrack' AND name = 'plain_ids'", "TSVRaw")
    parts = Path(folder.decode().strip())
    child = subprocess.Popen([sys.executable, "-c", CUT_INSERT, str(tmp_path / "store"), str(source)],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "logged\n"
    deadline = time.monotonic() + 120
    while not any(p.is_dir() and p.name.startswith("all_") for p in parts.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    with child.stdout:
        assert child.stdout.read() == ""  # killed before its insert ended: a part of it was written
    with Engine.open(tmp_path / "store") as engine:  # replays the segment
        assert not engine.wal.pending()
        assert plain_rows(engine) == (total,) * 3
