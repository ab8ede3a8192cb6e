"""event_timeseries: buckets of the range with zeros where nothing happened, against the reference."""

from __future__ import annotations

import pytest

from evtrack.errors import TemplateError

from . import reference
from .conftest import FIXTURE, data

CALLS = [
    {"start_date": "2023-07-15 00:00:00", "end_date": "2023-07-15 23:59:59"},
    {"start_date": "2023-07-15 14:00:00", "end_date": "2023-07-15 15:59:59", "granularity": "minute"},
    {"granularity": "day"},
    {"granularity": "day", "platform": "mobile", "start_date": "2023-03-01 00:00:00", "end_date": "2023-03-31 23:59:59"},
    {"granularity": "hour", "event_type": "purchase", "start_date": "2023-06-01 00:00:00", "end_date": "2023-06-03 12:30:00"},
    {"granularity": "day", "event_type": "purchase", "start_date": "2022-12-30 00:00:00", "end_date": "2023-01-02 23:59:59"},
    {"start_date": "2023-09-01 00:00:00"},
    {"end_date": "2023-01-05 23:59:59", "platform": "web"},
    {"granularity": "minute"},  # the whole fixture: more than 10000 minutes, the latest 10000 answered
    {"start_date": "2024-01-01 00:00:00", "end_date": "2024-01-01 05:00:00"},  # no events: no series
    {"event_type": "nothing_like_it", "start_date": "2023-07-15 00:00:00", "end_date": "2023-07-15 02:59:59"},
]


@pytest.mark.parametrize("params", CALLS, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()) or "none")
def test_event_timeseries_matches_reference(engine, rows, params):
    assert data(engine.query_pipe("event_timeseries", params)) == reference.event_timeseries(rows, **params)


def test_event_timeseries_fills_empty_buckets_with_zeros(engine):
    # hand-read from fixtures/events.ndjson: purchases on 2023-07-01 (9 events, 5 users), none on
    # the 2nd, one on the 3rd
    got = data(engine.query_pipe("event_timeseries", {
        "granularity": "day", "event_type": "purchase", "start_date": "2023-07-01 00:00:00",
        "end_date": "2023-07-03 23:59:59"}))
    assert [(r["bucket"], r["event_count"], r["unique_users"]) for r in got] == [
        ("2023-07-01 00:00:00", 9, 5), ("2023-07-02 00:00:00", 0, 0), ("2023-07-03 00:00:00", 1, 1)]


def test_event_timeseries_answers_at_most_10000_buckets(engine):
    got = data(engine.query_pipe("event_timeseries", {"granularity": "minute", "event_type": "click"}))
    assert len(got) == 10000
    assert got[-1]["bucket"] == max(r["timestamp"] for r in reference.load(FIXTURE) if r["event_type"] == "click")[:16] + ":00"


@pytest.mark.parametrize("value", ["week", "Hour", ""])
def test_event_timeseries_refuses_an_unknown_granularity(engine, value):
    with pytest.raises(TemplateError) as raised:
        engine.query_pipe("event_timeseries", {"granularity": value})
    assert raised.value.status == 400
    assert raised.value.message == "granularity must be minute, hour or day"


def test_event_timeseries_validates_dates_like_the_other_pipes(engine):
    with pytest.raises(TemplateError) as raised:
        engine.query_pipe("event_timeseries", {"start_date": "2023-07-01"})
    assert raised.value.message == "Template Syntax Error: Error validating '2023-07-01' to type DateTime"


def test_resending_the_fixture_changes_no_timeseries(fresh_engine, rows):
    params = {"granularity": "day", "start_date": "2023-05-01 00:00:00", "end_date": "2023-05-31 23:59:59"}
    fresh_engine.append("events", FIXTURE)
    fresh_engine.append("events", FIXTURE)
    assert data(fresh_engine.query_pipe("event_timeseries", params)) == reference.event_timeseries(rows, **params)
