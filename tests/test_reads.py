"""`evtrack.Client` against the embedded store and a real `evtrack serve` on the same store (deployed and
sent to with the CLI): typed rows, parameters converted and checked before the call, models reused.

Expected values come from the Python reference over the same 300 fixture lines, or are written by hand.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta, timezone

import pytest

from evtrack import Client
from evtrack.errors import EvtrackError
from evtrack.params import InvalidParam
from evtrack.reads import param_text
from evtrack.targets import Embedded

from . import reference
from .conftest import FIXTURE
from .served import Served, evtrack

UTC = timezone.utc
PLUS_TWO = timezone(timedelta(hours=2))


def _utc(text: str) -> datetime:
    return datetime.strptime(text, reference.FMT).replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A deployed store holding the fixture's first 300 lines, and the reference's reading of them."""
    folder = tmp_path_factory.mktemp("reads")
    lines = folder / "events.ndjson"
    with FIXTURE.open(encoding="utf-8") as fixture:
        lines.write_text("".join(next(fixture) for _ in range(300)), encoding="utf-8")
    store = folder / "store"
    for args in (("deploy",), ("send", str(lines))):
        done = evtrack("--data", str(store), *args)
        assert done.returncode == 0, done.stderr
    return store, reference.load(lines)


@pytest.fixture(scope="module")
def rows(small):
    return small[1]


@pytest.fixture(scope="module", params=["embedded", "served"])
def reader(request, small):
    """A Client on the store's folder: the store itself, then the `evtrack serve` running on it."""
    store = small[0]
    with pytest.MonkeyPatch.context() as env:  # the hermetic_env fixture comes after module fixtures
        for name in [n for n in os.environ if n.startswith(("TB_", "EVTRACK_"))]:
            env.delenv(name)
        served = Served(store) if request.param == "served" else None
        try:
            with Client(data=store) as client:
                yield client, served
        finally:
            if served is not None:
                served.stop()


@pytest.fixture
def client(reader):
    return reader[0]


def test_the_client_finds_its_target_as_the_tracker_does(reader):
    client, served = reader
    if served is None:
        assert isinstance(client.target, Embedded)
    else:
        assert client.target.label == served.url
        with Client(host=served.url, token=served.admin) as named:
            assert named.target.label == served.url
            assert len(named.pipe("user_activity", user_id="user_abc")) == 1


def test_a_pipe_answers_typed_models(client, rows):
    result = client.pipe("user_activity", user_id="user_abc")
    expected = reference.user_activity(rows, "user_abc")[0]
    assert len(result) == 1
    row = next(iter(result))
    assert type(row.event_count) is int and type(row.first_seen) is datetime
    assert row.model_dump() == {**expected, "first_seen": _utc(expected["first_seen"]),
                                "last_seen": _utc(expected["last_seen"])}
    assert [column["name"] for column in result.meta] == list(expected)
    assert "elapsed" in result.statistics


def test_datetime_parameters_are_sent_in_utc(client, rows):
    """19:30 at UTC+2 is 17:30 UTC: user_abc's last four events; as wall-clock time it would be one."""
    after = reference.user_activity(rows, "user_abc", start_date="2023-05-29 17:30:00")[0]
    wall_clock = reference.user_activity(rows, "user_abc", start_date="2023-05-29 19:30:00")[0]
    assert (after["event_count"], wall_clock["event_count"]) == (4, 1)
    aware = client.pipe("user_activity", user_id="user_abc", start_date=datetime(2023, 5, 29, 19, 30, tzinfo=PLUS_TWO))
    naive = client.pipe("user_activity", user_id="user_abc", start_date=datetime(2023, 5, 29, 17, 30))
    assert aware.rows[0].event_count == naive.rows[0].event_count == 4
    assert aware.rows[0].first_seen == _utc(after["first_seen"])


def test_python_values_become_the_text_of_url_parameters():
    assert param_text(datetime(2023, 7, 1, 2, 0, 5, 999, tzinfo=PLUS_TWO)) == "2023-07-01 00:00:05"
    assert param_text(datetime(2023, 7, 1, 2, 0, 5)) == "2023-07-01 02:00:05"
    assert param_text(date(2023, 7, 1)) == "2023-07-01"
    assert (param_text(True), param_text(False)) == ("true", "false")
    assert param_text(["web", "mobile"]) == "web,mobile" and param_text((1, 2.5)) == "1,2.5"
    assert (param_text(10), param_text("user_abc")) == ("10", "user_abc")


class Counting:
    """The client's own target, counting the pipe calls that reach it (and with no close of its own)."""

    def __init__(self, target):
        self.target, self.calls = target, 0

    def pipe(self, name):
        return self.target.pipe(name)

    def query_pipe(self, name, params, fmt):
        self.calls += 1
        return self.target.query_pipe(name, params, fmt)


def test_a_bad_parameter_raises_invalid_param_before_any_call(client):
    counting = Counting(client.target)
    with Client(target=counting) as watched:  # a target given is left open
        with pytest.raises(InvalidParam) as raised:
            watched.pipe("user_activity", user_id="user_abc", start_date="yesterday")
        assert str(raised.value) == ("'yesterday' is not a valid DateTime; "
                                     "expected YYYY-MM-DD HH:MM:SS (UTC), for example 2023-07-01 00:00:00")
        assert raised.value.name == "start_date"
        assert raised.value.__notes__ == ["parameter 'start_date' of the pipe 'user_activity'"]
        with pytest.raises(InvalidParam, match="an integer from -2147483648 to 2147483647"):
            watched.pipe("get_events", limit=2.5)
        assert counting.calls == 0
        assert len(watched.pipe("get_events", limit=2)) == 2 and counting.calls == 1


def test_an_undeclared_keyword_is_a_type_error_and_params_passes_any_name(client, rows):
    with pytest.raises(TypeError) as raised:
        client.pipe("user_activity", user_id="user_abc", colour="red")
    assert str(raised.value) == ("user_activity() got an unexpected keyword argument 'colour' "
                                 "(its parameters: user_id, start_date, end_date)")
    passed = client.pipe("user_activity", {"colour": "red"}, user_id="user_0012", end_date=None)
    assert passed.rows[0].event_count == reference.user_activity(rows, "user_0012")[0]["event_count"]


def test_a_pipe_that_does_not_exist_is_the_targets_404(client):
    with pytest.raises(EvtrackError, match="The pipe 'nope' does not exist") as raised:
        client.pipe("nope", user_id="x")
    assert raised.value.status == 404


def test_sql_answers_typed_rows(client, rows):
    result = client.sql("SELECT event_type, count() AS events, max(timestamp) AS last FROM events FINAL "
                        "GROUP BY event_type ORDER BY event_type")
    types = sorted({r["event_type"] for r in rows})
    assert [row.model_dump() for row in result] == [
        {"event_type": name, "events": sum(r["event_type"] == name for r in rows),
         "last": _utc(max(r["timestamp"] for r in rows if r["event_type"] == name))}
        for name in types
    ]
    clicks = sorted((r for r in rows if r["event_type"] == "click"), key=lambda r: (r["timestamp"], r["event_id"]))
    page = client.sql("SELECT event_id FROM events FINAL WHERE event_type = 'click' "
                      "ORDER BY timestamp, event_id LIMIT 3")
    assert [row.event_id for row in page] == [r["event_id"] for r in clicks[:3]]
    assert 3 <= page.rows_before_limit_at_least <= len(clicks)  # "at least": a read in key order stops early


def test_each_clickhouse_type_becomes_its_python_type(client):
    result = client.sql(
        "SELECT toUInt64(18446744073709551615) AS big, toInt8(-8) AS small, 1.5 AS ratio, 0/0 AS undefined, "
        "toDecimal32(2.25, 2) AS price, true AS flag, toDate('2023-07-01') AS day, "
        "toDateTime('2023-07-01 12:00:00') AS at, toDateTime64('2023-07-01 12:00:00.250', 3) AS precise, "
        "toDateTime('2023-07-01 12:00:00', 'Asia/Tokyo') AS tokyo, "
        "toUUID('00000000-0000-0000-0000-000000000001') AS id, [1, 2] AS numbers, map('a', [1]) AS lists, "
        "(1, 'x') AS pair, CAST((1, 'x'), 'Tuple(n UInt8, s String)') AS named, "
        "CAST(NULL, 'Nullable(Int32)') AS missing, toLowCardinality('web') AS platform, "
        "'k' AS `my col`, 'v' AS schema, 'w' AS `class`")
    row = result.rows[0]
    assert row.model_dump(by_alias=True) == {
        "big": 18446744073709551615, "small": -8, "ratio": 1.5, "undefined": None, "price": 2.25, "flag": True,
        "day": date(2023, 7, 1), "at": datetime(2023, 7, 1, 12, tzinfo=UTC),
        "precise": datetime(2023, 7, 1, 12, 0, 0, 250000, tzinfo=UTC),
        "tokyo": datetime(2023, 7, 1, 3, tzinfo=UTC),
        "id": "00000000-0000-0000-0000-000000000001", "numbers": [1, 2], "lists": {"a": [1]},
        "pair": (1, "x"), "named": {"n": 1, "s": "x"}, "missing": None, "platform": "web",
        "my col": "k", "schema": "v", "class": "w",
    }
    assert (row.my_col, row.schema_, row.class_) == ("k", "v", "w")
    assert str(row.tokyo.tzinfo) == "Asia/Tokyo"
    with pytest.raises(ValueError, match="sql\\(\\) reads JSON answers: drop 'FORMAT CSV'"):
        client.sql("SELECT 1 FORMAT CSV")


def test_one_model_class_per_distinct_meta(client):
    first = client.pipe("user_activity", user_id="user_abc")
    second = client.pipe("user_activity", user_id="user_0012", start_date=datetime(2023, 1, 1))
    assert type(first.rows[0]) is type(second.rows[0]) is first.model is second.model
    other = client.sql("SELECT 1 AS event_count")
    assert other.model is not first.model and client.sql("SELECT 2 AS event_count").model is other.model
