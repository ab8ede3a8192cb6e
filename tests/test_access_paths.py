"""The access paths (events, sorted by time; events_by_user, fed by a materialized pipe; and the
rollups event_stats reads, events_by_day, events_users_by_type and events_sessions_by_type) answer
exactly what the reference computes, when every event was sent two or three times and nothing is
merged yet, and again after the merges: a resend changes no endpoint answer on any path.

Expected values come from tests/reference.py over the fixture (each event once); the rows each
rollup holds are counted in Python from the same events."""

from __future__ import annotations

import pytest

from evtrack.engine import Engine

from . import reference
from .conftest import FIXTURE, data
from .test_endpoints import GET_EVENTS, RANGES, STATS, USERS, _normalise

PATHS = ("events", "events_by_user")
ROLLUPS = {  # each rollup's rows, from the events: a distinct tuple per row once merged
    "events_by_day": lambda r: (r["timestamp"][:10], r["platform"], r["event_type"], r["user_id"], r["session_id"]),
    "events_users_by_type": lambda r: (r["event_type"], r["user_id"]) if r["user_id"] else None,
    "events_sessions_by_type": lambda r: (r["event_type"], r["session_id"]) if r["session_id"] else None,
}
# Ranges whose first or last day is partial (read from events) around whole days (read from the
# daily rollup), within one day, open on one side; with a platform and a type over all time.
EDGES = [{"start_date": "2023-03-15 10:20:00", "end_date": "2023-04-02 05:59:59"},
         {"start_date": "2023-03-15 00:00:00", "end_date": "2023-03-15 23:59:59"},
         {"start_date": "2023-03-15 00:00:01", "end_date": "2023-03-16 23:59:58"},
         {"start_date": "2023-03-15 06:00:00", "end_date": "2023-03-15 18:00:00"},
         {"start_date": "2023-02-28 23:59:59"}, {"end_date": "2023-06-01 00:00:00"},
         {"start_date": "2023-06-01 00:00:00", "end_date": "2023-06-30 23:59:59", "platform": "web",
          "event_type": "click"},
         {"platform": "web", "event_type": "page_view"}, {"event_type": "page_view"},
         {"start_date": "2023-08-31 23:00:00", "platform": "mobile"}]
# Pages whose newest rows are all resends: the bound of get_events must widen to stay exact.
DEEP_PAGES = [{"limit": "100", "offset": "3000"}, {"limit": "1", "offset": "5999"}, {"limit": "7", "offset": "5995"},
              {"event_type": "click", "limit": "30", "offset": "200"}, {"platform": "web", "limit": "500"}]


@pytest.fixture(scope="module", params=[2, 3], ids=lambda n: f"sent {n} times")
def resent(request, tmp_path_factory, project):
    """A store where the fixture was sent ``copies`` times, in separate inserts, with merges stopped."""
    copies = request.param
    with Engine.open(tmp_path_factory.mktemp("resent")) as engine:
        engine.deploy(project)
        for name in (*PATHS, *ROLLUPS):
            engine.store.execute(f"SYSTEM STOP MERGES evtrack.{name}")
        engine.append("events", FIXTURE)
        for _ in range(copies - 1):
            engine.append_many("events", [FIXTURE.read_bytes()])  # the bytes path, as the server sends
        yield engine, copies


def _rows_stored(engine, table: str) -> int:
    return int(engine.store.run(f"SELECT count() FROM evtrack.{table}").decode())


def _check_every_endpoint(engine, rows) -> None:
    for params in GET_EVENTS + DEEP_PAGES:
        got = data(engine.query_pipe("get_events", params))
        assert _normalise(got) == _normalise(reference.get_events(rows, **params)), params
    for user_id in USERS:
        for dates in RANGES:
            got = data(engine.query_pipe("user_activity", {"user_id": user_id, **dates}))
            assert got == reference.user_activity(rows, user_id, **dates), (user_id, dates)
    for params in STATS + EDGES:
        assert data(engine.query_pipe("event_stats", params)) == reference.event_stats(rows, **params), params


def _rollup_rows(rows, table: str) -> int:
    return len({key for key in map(ROLLUPS[table], rows) if key is not None})


def test_resends_unmerged_change_no_answer(resent, rows):
    engine, copies = resent
    for table in PATHS:  # the copies are really there, on every path, before any merge
        assert _rows_stored(engine, table) == copies * len(rows), table
    for table in ROLLUPS:  # each insert wrote its distinct rows again
        assert _rows_stored(engine, table) == copies * _rollup_rows(rows, table), table
    _check_every_endpoint(engine, rows)


def test_resends_merged_change_no_answer(resent, rows):
    engine, _ = resent
    for table in (*PATHS, *ROLLUPS):
        engine.store.execute(f"SYSTEM START MERGES evtrack.{table}")
        engine.store.execute(f"OPTIMIZE TABLE evtrack.{table} FINAL")
        expected = len(rows) if table in PATHS else _rollup_rows(rows, table)
        assert _rows_stored(engine, table) == expected, table
    _check_every_endpoint(engine, rows)


def test_access_paths_hold_each_event_with_the_same_columns(resent, rows):
    """events_by_user holds every event again, each once, column for column."""
    engine, _ = resent
    columns = ", ".join(reference.COLUMNS)
    events = engine.store.run(f"SELECT {columns} FROM evtrack.events FINAL ORDER BY event_id FORMAT JSONEachRow")
    assert len(events.splitlines()) == len(rows)
    copy = engine.store.run(f"SELECT {columns} FROM evtrack.events_by_user FINAL ORDER BY event_id FORMAT JSONEachRow")
    assert copy == events
