"""No date is stored as another one: a value outside its column type's range is quarantined.

ClickHouse's best-effort parsers clamp (2300-01-01 becomes 2106-02-07 06:28:15, 1969-12-31
23:59:59 becomes 1970-01-01 00:00:00) and read year 0 as the current year; evtrack quarantines
such values, naming the column, the value and the range. The ranges are ClickHouse's documented
ones for each type, in UTC; the expected outcomes below are written by hand from them.
"""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from evtrack.engine import Engine
from evtrack.project import parse_datasource
from evtrack.server.app import create_app

DATES = """DESCRIPTION >
    One column of each date type, each optional: a line sets one of them.

SCHEMA >
    `id` String `json:$.id`,
    `dt` Nullable(DateTime) `json:$.dt`,
    `dt3` Nullable(DateTime64(3)) `json:$.dt3`,
    `dt9` Nullable(DateTime64(9)) `json:$.dt9`,
    `d` Nullable(Date) `json:$.d`,
    `d32` Nullable(Date32) `json:$.d32`

ENGINE "MergeTree"
ENGINE_SORTING_KEY "id"
"""
DATETIME = "DateTime: 1970-01-01 00:00:00 to 2106-02-07 06:28:15 UTC"
DATETIME64 = "DateTime64(3): 1900-01-01 00:00:00 to 2299-12-31 23:59:59 UTC"
DATETIME64_9 = "DateTime64(9): 1900-01-01 00:00:00 to 2262-04-11 23:47:16 UTC"
DATE = "Date: 1970-01-01 to 2149-06-06 UTC"
DATE32 = "Date32: 1900-01-01 to 2299-12-31 UTC"

# (column, value sent, stored as | the quarantine reason's range)
CASES = [
    ("dt", "2023-07-15 14:30:00", "2023-07-15 14:30:00"),
    ("dt", "1970-01-01 00:00:00", "1970-01-01 00:00:00"),
    ("dt", "2106-02-07 06:28:15", "2106-02-07 06:28:15"),
    ("dt", "2023-07-15T14:30:00+02:00", "2023-07-15 12:30:00"),
    ("dt", 1689431400, "2023-07-15 14:30:00"),
    ("dt", "0000-00-00 00:00:00", DATETIME),
    ("dt", "2300-01-01 00:00:00", DATETIME),
    ("dt", "1969-12-31 23:59:59", DATETIME),
    ("dt", "2106-02-07 06:28:16", DATETIME),
    ("dt3", "1900-01-01 00:00:00", "1900-01-01 00:00:00.000"),
    ("dt3", "2299-12-31 23:59:59.5", "2299-12-31 23:59:59.500"),
    ("dt3", "1899-12-31 23:59:59", DATETIME64),
    ("dt3", "2300-01-01 00:00:00", DATETIME64),
    ("dt3", "0000-00-00 00:00:00", DATETIME64),
    ("dt9", "2262-04-11 23:47:16", "2262-04-11 23:47:16.000000000"),
    ("dt9", "2263-01-01 00:00:00", DATETIME64_9),
    ("d", "2149-06-06", "2149-06-06"),
    ("d", "2149-06-07", DATE),
    ("d", "1969-12-31", DATE),
    ("d32", "1900-01-01", "1900-01-01"),
    ("d32", "1899-12-31", DATE32),
]


@pytest.fixture
def dates_engine(tmp_path):
    with Engine.open(tmp_path / "store") as engine:
        engine.deploy_datasource(parse_datasource("dates", DATES))
        yield engine


def body() -> bytes:
    return "\n".join(json.dumps({"id": f"c{n:02d}", column: value}) for n, (column, value, _) in enumerate(CASES)).encode()


def check(engine, successful: int, quarantined: int) -> None:
    expected_stored = {f"c{n:02d}": (column, out) for n, (column, _, out) in enumerate(CASES) if "UTC" not in out}
    expected_quarantined = {f"c{n:02d}": (column, value, out) for n, (column, value, out) in enumerate(CASES)
                            if "UTC" in out}
    assert (successful, quarantined) == (len(expected_stored), len(expected_quarantined))
    stored = json.loads(engine.sql("SELECT * FROM dates FORMAT JSON"))["data"]
    assert {row["id"]: (column, row[column]) for row in stored for column in ("dt", "dt3", "dt9", "d", "d32")
            if row[column] is not None} == expected_stored
    refused = json.loads(engine.sql("SELECT id, c__error_column, c__error FROM dates_quarantine FORMAT JSON"))["data"]
    assert {row["id"]: (row["c__error_column"], row["c__error"]) for row in refused} == {
        ident: ([column], [f"value '{value}' on column '{column}' is out of the range of {out}"])
        for ident, (column, value, out) in expected_quarantined.items()}


def test_embedded_append_quarantines_dates_out_of_range(dates_engine):
    result = dates_engine.append("dates", body())
    check(dates_engine, result.successful_rows, result.quarantined_rows)


def test_the_events_api_quarantines_dates_out_of_range(dates_engine):
    with TestClient(create_app(dates_engine), base_url="http://127.0.0.1:7181") as http:
        answer = http.post("/v0/events?name=dates&wait=true", content=body(),
                           headers={"Authorization": f"Bearer {dates_engine.tokens.admin.token}"})
    assert answer.status_code == 200, answer.text
    check(dates_engine, answer.json()["successful_rows"], answer.json()["quarantined_rows"])


def test_a_datasource_append_quarantines_dates_out_of_range(dates_engine):
    with TestClient(create_app(dates_engine), base_url="http://127.0.0.1:7181") as http:
        answer = http.post("/v0/datasources?name=dates&mode=append&format=ndjson",
                           files={"ndjson": ("dates.ndjson", body())},
                           headers={"Authorization": f"Bearer {dates_engine.tokens.admin.token}"})
    assert answer.status_code == 200, answer.text
    check(dates_engine, answer.json()["successful_rows"], answer.json()["quarantine_rows"])
