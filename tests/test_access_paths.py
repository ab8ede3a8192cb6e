"""The access paths (events, sorted by time, and events_by_user, fed by a materialized pipe) answer
exactly what the reference computes, when every event was sent two or three times and nothing is
merged yet, and again after the merges: a resend changes no endpoint answer on any path.

Expected values come from tests/reference.py over the fixture (each event once)."""

from __future__ import annotations

import pytest

from evtrack.engine import Engine

from . import reference
from .conftest import FIXTURE, data
from .test_endpoints import GET_EVENTS, RANGES, STATS, USERS, _normalise

PATHS = ("events", "events_by_user")
# Pages whose newest rows are all resends: the bound of get_events must widen to stay exact.
DEEP_PAGES = [{"limit": "100", "offset": "3000"}, {"limit": "1", "offset": "5999"}, {"limit": "7", "offset": "5995"},
              {"event_type": "click", "limit": "30", "offset": "200"}, {"platform": "web", "limit": "500"}]


@pytest.fixture(scope="module", params=[2, 3], ids=lambda n: f"sent {n} times")
def resent(request, tmp_path_factory, project):
    """A store where the fixture was sent ``copies`` times, in separate inserts, with merges stopped."""
    copies = request.param
    with Engine.open(tmp_path_factory.mktemp("resent")) as engine:
        engine.deploy(project)
        for name in PATHS:
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
    for params in STATS:
        assert data(engine.query_pipe("event_stats", params)) == reference.event_stats(rows, **params), params


def test_resends_unmerged_change_no_answer(resent, rows):
    engine, copies = resent
    for table in PATHS:  # the copies are really there, on every path, before any merge
        assert _rows_stored(engine, table) == copies * len(rows), table
    _check_every_endpoint(engine, rows)


def test_resends_merged_change_no_answer(resent, rows):
    engine, _ = resent
    for table in PATHS:
        engine.store.execute(f"SYSTEM START MERGES evtrack.{table}")
        engine.store.execute(f"OPTIMIZE TABLE evtrack.{table} FINAL")
        assert _rows_stored(engine, table) == len(rows), table
    _check_every_endpoint(engine, rows)


def test_access_paths_hold_each_event_with_the_same_columns(resent, rows):
    """events_by_user holds every event again, each once, column for column."""
    engine, _ = resent
    columns = ", ".join(reference.COLUMNS)
    events = engine.store.run(f"SELECT {columns} FROM evtrack.events FINAL ORDER BY event_id FORMAT JSONEachRow")
    assert len(events.splitlines()) == len(rows)
    copy = engine.store.run(f"SELECT {columns} FROM evtrack.events_by_user FINAL ORDER BY event_id FORMAT JSONEachRow")
    assert copy == events
