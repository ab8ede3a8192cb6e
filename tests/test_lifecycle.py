"""Forgetting data: delete by condition everywhere a row was materialized, truncate, drop.

Counts are written by hand from the events each test sends, and read as raw rows.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import httpx
import pytest

from evtrack.engine import Engine
from evtrack.errors import BadRequest, SchemaConflict
from evtrack.project import load_project

from . import reference
from .conftest import FIXTURE, ROOT
from .served import Served, evtrack, tb
from .test_exactly_once import make_project

EVENT = '{"event_id": "%s", "event_type": "tap", "user_id": "%s", "session_id": "s", "timestamp": "2023-03-01 00:00:%02d"}'
USERS = {"u1": 4, "u2": 3, "u3": 2}  # events per user


def body() -> bytes:
    lines = [EVENT % (f"{user}-{i}", user, i) for user, count in USERS.items() for i in range(count)]
    return "\n".join(lines).encode()


def raw(engine, table: str, where: str = "1") -> int:
    return int(engine.store.run(f"SELECT count() FROM evtrack.`{table}` WHERE {where}", "TSV").strip())


@pytest.fixture
def rollups(tmp_path):
    with Engine.open(tmp_path / "store") as engine:
        engine.deploy(load_project(make_project(tmp_path / "project")))
        engine.append("events", body())
        yield engine


def test_erasing_a_user_removes_them_from_events_and_every_rollup_that_holds_them(rollups):
    engine = rollups
    dry = engine.delete("events", "user_id = 'u1'", dry_run=True)
    assert dry.removed == {"events": 4, "events_quarantine": 0, "events_by_user": 4, "events_by_user_quarantine": 0,
                           # u1's 4 taps are one row of the day, and one pair of type and user
                           "events_by_day": 1, "events_by_day_quarantine": 0,
                           "events_users_by_type": 1, "events_users_by_type_quarantine": 0}
    assert raw(engine, "events") == 9  # a dry run deletes nothing
    done = engine.delete("events", "user_id = 'u1'")
    assert done.removed == dry.removed
    # Rollups without the user's column cannot express the condition: rebuilt from their sources.
    assert (done.skipped, set(done.rebuilt)) == ({}, {"events_sessions_by_type", "plain_ids", "type_counts"})
    assert done.rebuilt["plain_ids"] == ("its columns cannot express the condition (no column user_id): rebuilt "
                                         "from 'events' once the rows are deleted")
    assert dry.rebuilt["plain_ids"].endswith(": would be rebuilt from 'events' once the rows are deleted")
    assert (raw(engine, "events"), raw(engine, "events_by_user"), raw(engine, "plain_ids")) == (5, 5, 5)
    assert raw(engine, "plain_ids", "startsWith(event_id, 'u1')") == 0
    counted = engine.store.run("SELECT countMerge(inserted) FROM evtrack.type_counts", "TSV")
    assert int(counted.strip()) == 5  # u2's 3 and u3's 2
    assert raw(engine, "events", "user_id = 'u1'") == raw(engine, "events_by_user", "user_id = 'u1'") == 0
    assert json.loads(engine.query_pipe("user_activity", {"user_id": "u1"}))["rows"] == 0
    kept = json.loads(engine.query_pipe("user_activity", {"user_id": "u2"}))["data"]
    assert kept[0]["event_count"] == 3


ROLLUPS = ("events_by_day", "events_sessions_by_type", "events_users_by_type")  # the rollups of event_stats
# Deletions the rollups of event_stats can express (a user, a session, a type), and ones they cannot
# (a time inside a day, a platform for the pairs, an event id): in turn, on one store, each checked
# against the reference over the events that are left.
DELETIONS = [
    ("user_id = 'user_0042'", lambda r: r["user_id"] == "user_0042", {"events_sessions_by_type"}),
    ("timestamp < '2023-03-15 10:20:00'", lambda r: r["timestamp"] < "2023-03-15 10:20:00", {*ROLLUPS}),
    ("platform = 'mobile' AND event_type = 'click'", lambda r: r["platform"] == "mobile" and r["event_type"] == "click",
     {"events_sessions_by_type", "events_users_by_type"}),
    ("session_id IN ('sess_user_0120_5630', '')", lambda r: r["session_id"] in ("sess_user_0120_5630", ""),
     {"events_users_by_type"}),
    ("event_type = 'signup'", lambda r: r["event_type"] == "signup", set()),
    ("endsWith(event_id, '7')", lambda r: r["event_id"].endswith("7"), {*ROLLUPS}),
]
STATS_PARAMS = [{}, {"platform": "web"}, {"event_type": "click"}, {"start_date": "2023-03-15 10:20:00"},
                {"start_date": "2023-03-01 00:00:00", "end_date": "2023-04-30 23:59:59", "platform": "mobile"},
                {"start_date": "2023-03-15 06:00:00", "end_date": "2023-06-02 05:59:59"}]


def test_every_deletion_leaves_event_stats_exact_whether_its_rollups_express_it_or_are_rebuilt(tmp_path, project):
    kept = reference.load(FIXTURE)
    with Engine.open(tmp_path / "store") as engine:
        engine.deploy(project)
        engine.append("events", FIXTURE)
        for condition, gone, rebuilt in DELETIONS:
            assert any(map(gone, kept)), condition  # each deletion removes something
            kept = [r for r in kept if not gone(r)]
            done = engine.delete("events", condition)
            assert (set(done.rebuilt), done.skipped) == (rebuilt, {}), condition
            assert raw(engine, "events") == len(kept)
            for params in STATS_PARAMS:
                got = json.loads(engine.query_pipe("event_stats", params))["data"]
                assert got == reference.event_stats(kept, **params), (condition, params)
        user = json.loads(engine.query_pipe("user_activity", {"user_id": "user_abc"}))["data"]
        assert user == reference.user_activity(kept, "user_abc")


@pytest.mark.parametrize("condition, error", [
    ("", "The delete condition is empty: give an SQL expression over the datasource's columns, such as user_id = 'u1'"),
    ("user_id IN (SELECT user_id FROM events_by_user)",
     "Invalid delete condition 'user_id IN (SELECT user_id FROM events_by_user)': it may use only the columns of "
     "'events', not events_by_user"),
    ("user_id IN (SELECT * FROM file('/etc/passwd'))",
     "[Error] DB::Exception: Usage of function file is restricted. Contact support@tinybird.co if you require "
     "access to this feature"),  # tinybird-cli's own refusal, as Tinybird words it
    ("1; DROP TABLE events",
     "Invalid delete condition '1; DROP TABLE events': only an expression over the columns of 'events' "
     "(no ';', comments, SETTINGS or FORMAT)"),
    ("1 -- the rest", "Invalid delete condition '1 -- the rest': only an expression over the columns of 'events' "
                      "(no ';', comments, SETTINGS or FORMAT)"),
])
def test_a_condition_is_an_expression_over_the_datasources_own_columns(rollups, condition, error):
    with pytest.raises(BadRequest) as refused:
        rollups.delete("events", condition)
    assert refused.value.message == error
    assert raw(rollups, "events") == 9


def test_truncate_empties_a_datasource_and_with_cascade_what_is_materialized_from_it(rollups):
    assert rollups.truncate("events_by_user") == ["events_by_user"]
    assert (raw(rollups, "events"), raw(rollups, "events_by_user")) == (9, 0)
    emptied = ["events", "events_by_day", "events_by_user", "events_sessions_by_type", "events_users_by_type",
               "plain_ids", "type_counts"]
    assert rollups.truncate("events", cascade=True) == emptied
    assert [raw(rollups, t) for t in emptied] == [0] * len(emptied)


def test_a_datasource_a_pipe_uses_cannot_be_dropped(rollups):
    with pytest.raises(SchemaConflict) as refused:
        rollups.drop_datasource("plain_ids")
    assert refused.value.message == "Datasource 'plain_ids' is used by the pipes plain_ids_mv: delete them first"


def test_evtrack_delete_and_truncate_embedded(tmp_path):
    store = tmp_path / "store"
    source = tmp_path / "events.ndjson"
    source.write_bytes(body())
    assert evtrack("--data", str(store), "deploy").returncode == 0
    assert evtrack("--data", str(store), "send", str(source)).returncode == 0
    deleted = evtrack("--data", str(store), "delete", "events", "--where", "user_id = 'u2'", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.splitlines() == ["deleted 3 rows from events", "deleted 0 rows from events_quarantine",
                                           "deleted 1 rows from events_by_day",
                                           "deleted 0 rows from events_by_day_quarantine",
                                           "deleted 3 rows from events_by_user",
                                           "deleted 0 rows from events_by_user_quarantine",
                                           "deleted 1 rows from events_users_by_type",
                                           "deleted 0 rows from events_users_by_type_quarantine",
                                           deleted.stdout.splitlines()[-2],
                                           f"report kept in {store / 'deletions.jsonl'}"]
    rebuilt = deleted.stdout.splitlines()[-2]  # what the report says, as the CLI prints it
    assert rebuilt.startswith("rebuilt events_sessions_by_type: its columns cannot express the condition (")
    assert rebuilt.endswith("): rebuilt from 'events_by_day' once the rows are deleted")
    [report] = [json.loads(line) for line in (store / "deletions.jsonl").read_text().splitlines()]
    assert (report["condition"], report["removed"]["events"], report["removed"]["events_by_user"]) == (
        "user_id = 'u2'", 3, 3)
    assert report["rebuilt"] == {"events_sessions_by_type": rebuilt.split(": ", 1)[1]}  # it has no user column
    bad = evtrack("--data", str(store), "delete", "events", "--where", "nope = 1", "--yes")
    assert bad.returncode != 0 and "Invalid delete condition 'nope = 1'" in bad.stderr
    truncated = evtrack("--data", str(store), "truncate", "events", "--yes")
    assert (truncated.returncode, truncated.stdout) == (0, "truncated events\n")
    counted = evtrack("--data", str(store), "sql", "SELECT count() AS n FROM events", "--format", "json")
    assert json.loads(counted.stdout)["data"] == [{"n": 0}]


def served_project(tmp_path):
    """The project's datafiles in a folder, deployed to a real `evtrack serve`."""
    project = tmp_path / "project"
    for part in ("datasources", "pipes"):
        shutil.copytree(ROOT / part, project / part)
    server = Served(tmp_path / "store")
    deployed = evtrack("--host", server.url, "--token", server.admin, "deploy", cwd=project)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    return project, server


def test_the_unmodified_tb_deletes_truncates_and_removes_through_evtrack_serve(tmp_path):
    project, server = served_project(tmp_path)
    try:
        tracker = server.token("tracker")
        # Acknowledged (202) and maybe not yet inserted: a deletion right after must still remove them.
        sent = httpx.post(f"{server.url}/v0/events", params={"name": "events", "token": tracker}, content=body())
        assert sent.status_code == 202
        assert tb("auth", "--host", server.url, "--token", server.admin, cwd=project).returncode == 0
        deleted = tb("datasource", "delete", "events", "--sql-condition", "user_id = 'u1'", "--yes", "--wait",
                     cwd=project)
        assert deleted.returncode == 0, deleted.stdout + deleted.stderr

        def count(sql: str) -> int:
            answer = httpx.get(f"{server.url}/v0/sql", params={"q": sql, "token": server.admin})
            return answer.json()["data"][0]["n"]

        assert count("SELECT count() AS n FROM events") == 5
        assert count("SELECT count() AS n FROM events_by_user WHERE user_id = 'u1'") == 0
        (project / "new.ndjson").write_text(EVENT % ("r1", "u3", 1) + "\n" + EVENT % ("r2", "u8", 2) + "\n")
        replaced = tb("datasource", "replace", "events", "new.ndjson", "--sql-condition", "user_id = 'u3'", cwd=project)
        assert replaced.returncode == 0, replaced.stdout + replaced.stderr
        assert count("SELECT count() AS n FROM events WHERE user_id = 'u3'") == 1  # 2 replaced by 1
        assert count("SELECT count() AS n FROM events") == 4  # u2's 3 and u3's 1
        truncated = tb("datasource", "truncate", "events", "--yes", cwd=project)
        assert truncated.returncode == 0, truncated.stdout + truncated.stderr
        assert count("SELECT count() AS n FROM events") == 0
        refused = tb("datasource", "rm", "events_by_user", "--yes", cwd=project)
        assert "used by the pipes" in refused.stdout + refused.stderr
        def names() -> list[str]:
            listed = httpx.get(f"{server.url}/v0/datasources", params={"token": server.admin}).json()["datasources"]
            return [d["name"] for d in listed]

        assert "events_by_user" in names()
        # Without the pipes that use it, it goes, with its data.
        for pipe in ("events_by_user_mv", "user_activity", "get_events"):
            assert tb("pipe", "rm", pipe, "--yes", cwd=project).returncode == 0
        removed = tb("datasource", "rm", "events_by_user", "--yes", cwd=project)
        assert removed.returncode == 0, removed.stdout + removed.stderr
        assert "events_by_user" not in names()
    finally:
        assert server.stop() == 0


def test_replace_swaps_the_whole_datasource_or_the_rows_a_condition_selects(rollups):
    engine = rollups
    new = "\n".join([EVENT % ("n1", "u1", 1), EVENT % ("n2", "u9", 2), '{"event_type": "no timestamp"}']).encode()
    result = engine.replace("events", new, "user_id = 'u1'")
    assert (result.successful_rows, result.quarantined_rows) == (2, 1)  # the lines read: 2 stored, 1 quarantined
    # u1's 4 rows are replaced by the file's one u1 row; the file's u9 row is outside the condition: left out.
    assert (raw(engine, "events", "user_id = 'u1'"), raw(engine, "events", "user_id = 'u9'")) == (1, 0)
    assert raw(engine, "events") == 1 + 3 + 2
    assert raw(engine, "events_by_user") == 6  # refilled from the new content
    assert raw(engine, "events_quarantine") == 1
    whole = engine.replace("events", (EVENT % ("w1", "u5", 1)).encode())
    assert (whole.successful_rows, raw(engine, "events"), raw(engine, "events_by_user")) == (1, 1, 1)
    assert not [t for t in engine.store.run("SHOW TABLES FROM evtrack", "TSV").decode().split() if "__replace_" in t]


def test_what_a_killed_replace_left_aside_is_dropped_when_the_store_opens(tmp_path, project):
    store = tmp_path / "store"
    with Engine.open(store) as engine:
        engine.deploy(project)
        # The tables a replace builds aside (a table, its quarantine, its ingest path), as it builds them.
        engine.default._lifecycle.schema.create(dataclasses.replace(engine.datasource("events"),
                                                                    name="events__replace_0123abcd"))
        assert len([n for n in engine.store.run("SHOW TABLES FROM evtrack", "TSV").decode().split()
                    if "__replace_" in n]) == 7
    with Engine.open(store) as engine:
        left = engine.store.run("SHOW TABLES FROM evtrack", "TSV").decode().split()
    assert [name for name in left if "__replace_" in name] == []


def test_an_erased_user_does_not_come_back_with_a_replayed_log_segment(tmp_path, project):
    """The crash came after the flush's insert and after the deletion, before the segment was dropped:
    the replay's blocks are ones the tables have seen, so nothing of the user is written again."""
    from evtrack.engine.ingest.wal import import_id

    payload = body()
    with Engine.open(tmp_path / "store") as engine:
        engine.deploy(project)
        engine.wal.write("events", payload)
        segment = engine.wal.rotate()
        engine.append_many("events", [payload], [import_id(segment, "events")], once=True)  # as a flush does
        engine.delete("events", "user_id = 'u1'")
        engine.wal.close()  # and the process died here
    with Engine.open(tmp_path / "store") as engine:  # replays the segment
        assert not engine.wal.pending()
        assert (raw(engine, "events", "user_id = 'u1'"), raw(engine, "events_by_user", "user_id = 'u1'")) == (0, 0)
        assert raw(engine, "events") == 5
        assert json.loads(engine.query_pipe("user_activity", {"user_id": "u1"}))["rows"] == 0


def test_an_erasure_holds_across_kill_9_of_the_server(tmp_path):
    project, server = served_project(tmp_path)
    try:
        sent = httpx.post(f"{server.url}/v0/events", params={"name": "events", "token": server.token("tracker")},
                          content=body())
        assert sent.status_code == 202  # acknowledged, maybe not yet inserted
        erased = evtrack("--host", server.url, "--token", server.admin, "delete", "events", "--where",
                         "user_id = 'u1'", "--yes")
        assert erased.returncode == 0, erased.stderr
        assert erased.stdout.splitlines()[0] == f"deleted 4 rows from events on {server.url}"
        server.process.send_signal(9)
        server.process.communicate(timeout=30)
    finally:
        server.stop()
    with Engine.open(tmp_path / "store") as engine:  # replays whatever the log still held
        assert (raw(engine, "events", "user_id = 'u1'"), raw(engine, "events_by_user", "user_id = 'u1'")) == (0, 0)
        assert raw(engine, "events") == 5


TTL_SOURCE = """DESCRIPTION >
    Raw rows kept 30 days after their time.

SCHEMA >
    `ts` DateTime `json:$.ts`,
    `kind` String `json:$.kind`

ENGINE "MergeTree"
ENGINE_SORTING_KEY "ts"
ENGINE_TTL "ts + toIntervalDay(30)"
"""
TTL_ROLLUP = """DESCRIPTION >
    Rows per kind, kept whatever happens to the raw rows.

SCHEMA >
    `kind` String,
    `rows` AggregateFunction(count)

ENGINE "AggregatingMergeTree"
ENGINE_SORTING_KEY "kind"
"""
TTL_PIPE = """DESCRIPTION >
    Counts rows per kind.

NODE counted
SQL >
    SELECT kind, countState() AS rows FROM short GROUP BY kind

TYPE MATERIALIZED
DATASOURCE kinds
"""


def test_engine_ttl_expires_raw_rows_and_the_rollups_keep_what_they_counted(tmp_path):
    folder = tmp_path / "project"
    (folder / "datasources").mkdir(parents=True)
    (folder / "pipes").mkdir()
    (folder / "datasources" / "short.datasource").write_text(TTL_SOURCE)
    (folder / "datasources" / "kinds.datasource").write_text(TTL_ROLLUP)
    (folder / "pipes" / "kinds_mv.pipe").write_text(TTL_PIPE)
    with Engine.open(tmp_path / "store") as engine:
        engine.deploy(load_project(folder))
        engine.append("short", b'{"ts": "2001-01-01 00:00:00", "kind": "old"}\n{"ts": "2105-01-01 00:00:00", "kind": "new"}')
        engine.store.execute("OPTIMIZE TABLE evtrack.short FINAL")  # TTL is applied as parts merge
        assert [raw(engine, "short", "kind = 'old'"), raw(engine, "short", "kind = 'new'")] == [0, 1]
        counted = engine.store.run("SELECT kind, countMerge(rows) FROM evtrack.kinds GROUP BY kind ORDER BY kind", "TSV")
        assert counted.decode().split() == ["new", "1", "old", "1"]  # the rollup keeps the expired row's count
        # A rebuild would lose the expired row's count: a condition the rollup cannot express leaves it as it is.
        done = engine.delete("short", "ts > '2105-01-01 00:00:00'")
        assert (done.removed["short"], done.rebuilt) == (0, {})
        assert done.skipped["kinds"] == (
            "its columns cannot express the condition (no column ts): it keeps those rows ('short' expires rows "
            "with a TTL, which a rebuild would lose); rebuild it with `evtrack deploy --force` after changing its "
            "pipe, or accept it")
        counted = engine.store.run("SELECT kind, countMerge(rows) FROM evtrack.kinds GROUP BY kind ORDER BY kind", "TSV")
        assert counted.decode().split() == ["new", "1", "old", "1"]


def test_export_writes_a_datasource_or_a_pipe_result_to_a_file(tmp_path, store_dir, rows):
    parquet, ndjson = tmp_path / "events.parquet", tmp_path / "user.ndjson"
    written = evtrack("--data", str(store_dir), "export", "events", "-o", str(parquet))
    assert written.stdout == f"{len(rows)} rows written to {parquet}\n"  # every event of the fixture, once
    piped = evtrack("--data", str(store_dir), "export", "user_activity", "--param", "user_id=user_abc",
                    "--format", "ndjson", "-o", str(ndjson))
    assert piped.stdout == f"1 rows written to {ndjson}\n"
    with Engine.open(store_dir) as engine:
        expected = json.loads(engine.query_pipe("user_activity", {"user_id": "user_abc"}))["data"]
        assert int(engine.store.run(f"SELECT count() FROM file('{parquet}', Parquet)", "TSV").strip()) == len(rows)
    assert [json.loads(line) for line in ndjson.read_text().splitlines()] == expected
    missing = evtrack("--data", str(store_dir), "export", "nope", "-o", str(tmp_path / "x"))
    assert (missing.returncode, missing.stderr) == (1, "Error: No datasource or pipe is named 'nope'\n")
