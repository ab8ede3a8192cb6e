"""Every endpoint, across a matrix of parameters, against the pure-Python reference."""

from __future__ import annotations

import json

import pytest

from . import reference
from .conftest import data

SEED_SECOND = "2023-07-15 14:30:00"

GET_EVENTS = [
    {},
    {"event_type": "page_view"},
    {"user_id": "user_abc"},
    {"platform": "mobile"},
    {"start_date": "2023-07-01 00:00:00"},
    {"end_date": "2023-02-01 00:00:00"},
    {"start_date": "2023-07-01 00:00:00", "end_date": "2023-07-31 23:59:59"},
    # the seed's own call
    {"event_type": "page_view", "platform": "web", "start_date": "2023-07-01 00:00:00",
     "end_date": "2023-07-31 23:59:59", "limit": "50"},
    {"event_type": "click", "user_id": "user_abc", "platform": "web"},
    {"start_date": SEED_SECOND, "end_date": SEED_SECOND},  # both bounds inclusive
    {"start_date": "2023-07-15 14:30:01", "end_date": SEED_SECOND},  # empty by one second
    {"limit": "10000"},
    {"limit": "20", "offset": "50"},
    {"limit": "0"},
    {"user_id": "nobody"},
    {"platform": "desktop"},
]


def _normalise(rows):
    """properties is JSON text: compare it as JSON (an object's spacing is not part of the contract)."""
    return [{**r, "properties": json.loads(r["properties"])} for r in rows]


@pytest.mark.parametrize("params", GET_EVENTS, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()) or "none")
def test_get_events_matches_reference(engine, rows, params):
    got = data(engine.query_pipe("get_events", params))
    expected = reference.get_events(rows, **params)
    assert _normalise(got) == _normalise(expected)


def test_get_events_seed_call_finds_july_web_page_views(engine):
    got = data(engine.query_pipe("get_events", GET_EVENTS[7]))
    assert 0 < len(got) <= 50
    assert {(r["event_type"], r["platform"], r["timestamp"][:7]) for r in got} == {("page_view", "web", "2023-07")}


def test_get_events_limit_10000_returns_every_event_once(engine, rows):
    got = data(engine.query_pipe("get_events", {"limit": "10000"}))
    assert len(got) == len(rows) == len({r["event_id"] for r in got})


USERS = ["user_abc", "user_0001", "user_0042", "user_0150", "user_0299", ""]
RANGES = [
    {},
    {"start_date": "2023-01-01 00:00:00", "end_date": "2023-12-31 23:59:59"},  # the seed's own call
    {"start_date": "2023-06-01 00:00:00"},
    {"end_date": "2023-05-31 23:59:59"},
    {"start_date": SEED_SECOND, "end_date": SEED_SECOND},
    {"start_date": "2024-01-01 00:00:00"},  # no events
]


@pytest.mark.parametrize("user_id", USERS)
@pytest.mark.parametrize("dates", RANGES, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()) or "all")
def test_user_activity_matches_reference(engine, rows, user_id, dates):
    got = data(engine.query_pipe("user_activity", {"user_id": user_id, **dates}))
    assert got == reference.user_activity(rows, user_id, **dates)


def test_user_activity_of_seed_user(engine):
    [row] = data(engine.query_pipe("user_activity", {"user_id": "user_abc"}))
    # hand-checked against fixtures/events.ndjson: the example event plus one 6-event session
    assert (row["event_count"], row["session_count"]) == (7, 2)
    assert row["last_seen"] == SEED_SECOND
    assert row["recent_event_types"][0] == "page_view"


def test_user_activity_unknown_user_has_no_rows(engine):
    assert data(engine.query_pipe("user_activity", {"user_id": "nobody"})) == []


STATS = [
    {},
    {"platform": "web"},
    # the seed's own call
    {"start_date": "2023-06-01 00:00:00", "end_date": "2023-06-30 23:59:59", "platform": "mobile"},
    {"event_type": "click"},
    {"event_type": "click", "platform": "mobile", "start_date": "2023-03-01 00:00:00"},
    {"start_date": SEED_SECOND, "end_date": SEED_SECOND},
    {"end_date": "2022-12-31 23:59:59"},
    {"platform": "tv"},
]


@pytest.mark.parametrize("params", STATS, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()) or "none")
def test_event_stats_matches_reference(engine, rows, params):
    got = data(engine.query_pipe("event_stats", params))
    assert got == reference.event_stats(rows, **params)


def test_event_stats_counts_every_event_once(engine, rows):
    got = data(engine.query_pipe("event_stats", {}))
    assert sum(r["event_count"] for r in got) == len(rows)


def test_json_shape_is_tinybirds(engine):
    body = json.loads(engine.query_pipe("get_events", {"limit": "1"}))
    assert set(body) == {"meta", "data", "rows", "rows_before_limit_at_least", "statistics"}
    assert [m["name"] for m in body["meta"]] == reference.COLUMNS
    assert set(body["statistics"]) == {"elapsed", "rows_read", "bytes_read"}
    assert body["rows"] == 1


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_other_formats(engine, rows, fmt):
    body = engine.query_pipe("event_stats", {"platform": "web"}, fmt).decode()
    expected = reference.event_stats(rows, platform="web")
    lines = body.strip().splitlines()
    if fmt == "csv":
        assert lines[0] == '"event_type","event_count","unique_users","session_count","first_seen","last_seen"'
        assert len(lines) == len(expected) + 1
    else:
        assert [json.loads(line) for line in lines] == expected


def test_q_runs_sql_over_the_pipe_result(engine, rows):
    body = engine.query_pipe("get_events", {"platform": "web", "limit": "10000"}, q="SELECT count() AS n FROM _")
    assert data(body) == [{"n": sum(1 for r in rows if r["platform"] == "web")}]
