"""Ingestion: quarantine with reasons, nothing lost, resends harmless, Tinybird's parsing."""

from __future__ import annotations

import json

import pytest

from .conftest import BAD_FIXTURE, FIXTURE, data


def quarantine(engine, import_id=None):
    where = f" WHERE c__import_id = '{import_id}'" if import_id else ""
    return data(engine.sql(f"SELECT c__error_column, c__error, event_id, event_type, timestamp FROM events_quarantine{where}"))


def non_blank_lines(payload: bytes) -> int:
    return sum(1 for line in payload.split(b"\n") if line.strip())


def test_bad_fixture_stores_plus_quarantines_every_non_blank_line(fresh_engine):
    payload = BAD_FIXTURE.read_bytes()
    result = fresh_engine.append("events", BAD_FIXTURE)
    # hand-counted: 4 good lines (one an exact duplicate), 9 bad, 2 blank
    assert (result.successful_rows, result.quarantined_rows) == (4, 9)
    assert result.successful_rows + result.quarantined_rows == non_blank_lines(payload) == 13
    assert len(quarantine(fresh_engine, result.import_id)) == 9


@pytest.mark.parametrize(
    "line, columns, message",
    [
        (b"this is not json", [""], "Line is not a valid JSON: 'this is not json'"),
        (b"[1, 2, 3]", [""], "Line is not a valid JSON: '[1, 2, 3]'"),
        (b'{"event_type": "click", "timestamp": "2023-07-15 10:00:00"',
         [""], 'Line is not a valid JSON: \'{"event_type": "click", "timestamp": "2023-07-15 10:00:00"\''),
        (b'{"event_type": "click", "user_id": "u\xff", "timestamp": "2023-07-15 10:00:00"}',
         [""], 'Line is not valid UTF-8: \'{"event_type": "click", "user_id": "u\ufffd", "timestamp": "2023-07-15 10:00:00"}\''),
        (b'{"event_type": "click", "user_id": "u\x00", "timestamp": "2023-07-15 10:00:00"}',
         [""], 'Line contains a NUL byte: \'{"event_type": "click", "user_id": "u\x00", "timestamp": "2023-07-15 10:00:00"}\''),
        (b'{"event_type": "click", "timestamp": "2023-13-45 10:00:00"}',
         ["timestamp"], "value '2023-13-45 10:00:00' on column 'timestamp' is not DateTime"),
        (b'{"event_type": "click", "timestamp": "yesterday"}',
         ["timestamp"], "value 'yesterday' on column 'timestamp' is not DateTime"),
        (b'{"event_type": "click", "timestamp": true}',
         ["timestamp"], "value 'true' on column 'timestamp' is not DateTime"),
        (b'{"event_type": "click"}',
         ["timestamp"], "missing value on column 'timestamp' (required: DateTime with no DEFAULT)"),
        (b'{"timestamp": "2023-07-15 10:00:00"}',
         ["event_type"], "missing value on column 'event_type' (required: LowCardinality(String) with no DEFAULT)"),
        (b'{"event_type": null, "timestamp": "2023-07-15 10:00:00"}',
         ["event_type"], "missing value on column 'event_type' (required: LowCardinality(String) with no DEFAULT)"),
    ],
    ids=["not-json", "json-array", "truncated", "non-utf8", "nul", "impossible-date", "word-date", "bool-date",
         "no-timestamp", "no-event-type", "null-event-type"],
)
def test_bad_line_is_quarantined_with_reason(fresh_engine, line, columns, message):
    result = fresh_engine.append("events", line + b"\n")
    assert (result.successful_rows, result.quarantined_rows) == (0, 1)
    [row] = quarantine(fresh_engine, result.import_id)
    assert (row["c__error_column"], row["c__error"]) == (columns, [message])
    assert result.errors == [message]


def test_quarantine_keeps_the_original_values(fresh_engine):
    result = fresh_engine.append("events", b'{"event_id": "q1", "event_type": "click", "timestamp": "soon", "os": "iOS"}\n')
    [row] = data(fresh_engine.sql(f"SELECT * FROM events_quarantine WHERE c__import_id = '{result.import_id}'"))
    assert row["event_id"] == "q1" and row["timestamp"] == "soon" and row["os"] == "iOS"
    assert row["user_id"] is None  # absent, not empty
    assert row["insertion_date"]


def test_quarantine_has_tinybirds_columns(fresh_engine):
    meta = json.loads(fresh_engine.sql("SELECT * FROM events_quarantine LIMIT 0"))["meta"]
    types = {m["name"]: m["type"] for m in meta}
    assert [m["name"] for m in meta][:3] == ["c__error_column", "c__error", "c__import_id"]
    assert types["c__error"] == "Array(String)" and types["c__import_id"] == "Nullable(String)"
    assert types["timestamp"] == types["properties"] == "Nullable(String)"
    assert types["insertion_date"] == "DateTime"


def test_blank_lines_are_skipped(fresh_engine):
    result = fresh_engine.append("events", b'\n  \n{"event_type": "a", "timestamp": "2023-01-01 00:00:00"}\n\n')
    assert (result.successful_rows, result.quarantined_rows) == (1, 0)


def test_optional_fields_default_to_empty_and_unknown_fields_are_ignored(fresh_engine):
    fresh_engine.append("events", b'{"event_id": "o1", "event_type": "a", "timestamp": "2023-01-01 00:00:00", "extra": [1]}\n')
    [row] = data(fresh_engine.sql("SELECT * FROM events WHERE event_id = 'o1'"))
    assert row == {"event_id": "o1", "event_type": "a", "user_id": "", "session_id": "", "timestamp": "2023-01-01 00:00:00",
                   "platform": "", "app_version": "", "device_type": "", "os": "", "country": "", "properties": "{}"}


@pytest.mark.parametrize(
    "value, stored",
    [
        ('"2023-07-15 14:30:00"', "2023-07-15 14:30:00"),
        ('"2023-07-15T14:30:00Z"', "2023-07-15 14:30:00"),
        ('"2023-07-15T16:30:00+02:00"', "2023-07-15 14:30:00"),
        ('"2023-07-15T09:30:00-05:00"', "2023-07-15 14:30:00"),
        ('"2023-07-15T14:30:00.987Z"', "2023-07-15 14:30:00"),
        ("1689431400", "2023-07-15 14:30:00"),
    ],
)
def test_timestamps_are_parsed_best_effort_into_utc(fresh_engine, value, stored):
    line = f'{{"event_id": "t", "event_type": "a", "timestamp": {value}}}\n'.encode()
    assert fresh_engine.append("events", line).successful_rows == 1
    assert data(fresh_engine.sql("SELECT toString(timestamp) AS t FROM events")) == [{"t": stored}]


def test_properties_object_and_string_are_both_stored_as_json_text(fresh_engine):
    fresh_engine.append("events", b'{"event_id": "p1", "event_type": "a", "timestamp": "2023-01-01 00:00:00", "properties": {"page": "home", "n": [1, 2]}}\n'
                                  b'{"event_id": "p2", "event_type": "a", "timestamp": "2023-01-01 00:00:00", "properties": "{\\"page\\":\\"home\\"}"}\n')
    got = {r["event_id"]: r["properties"] for r in data(fresh_engine.sql("SELECT event_id, properties FROM events"))}
    assert json.loads(got["p1"]) == {"page": "home", "n": [1, 2]}
    assert got["p2"] == '{"page":"home"}'


def test_missing_event_id_is_derived_from_content_so_resends_deduplicate(fresh_engine):
    line = b'{"event_type": "a", "user_id": "u", "timestamp": "2023-01-01 00:00:00"}\n'
    other = b'{"event_type": "a", "user_id": "v", "timestamp": "2023-01-01 00:00:00"}\n'
    fresh_engine.append("events", line + other)
    fresh_engine.append("events", line)
    [stats] = data(fresh_engine.query_pipe("event_stats", {}))
    assert stats["event_count"] == 2 and stats["unique_users"] == 2


def test_resending_the_fixture_changes_no_endpoint_result(fresh_engine):
    calls = [("get_events", {"limit": "10000"}), ("event_stats", {}), ("user_activity", {"user_id": "user_abc"}),
             ("event_stats", {"platform": "mobile", "start_date": "2023-06-01 00:00:00", "end_date": "2023-06-30 23:59:59"})]
    fresh_engine.append("events", FIXTURE)
    before = [data(fresh_engine.query_pipe(name, params)) for name, params in calls]
    fresh_engine.append("events", FIXTURE)
    fresh_engine.append("events", FIXTURE.read_bytes())
    assert [data(fresh_engine.query_pipe(name, params)) for name, params in calls] == before


def test_gzip_file_is_read_as_gzip(fresh_engine, tmp_path):
    import gzip

    path = tmp_path / "events.ndjson.gz"
    path.write_bytes(gzip.compress(FIXTURE.read_bytes()))
    assert fresh_engine.append("events", path).successful_rows == 6000


def test_unknown_datasource_is_not_found(fresh_engine):
    from evtrack.errors import NotFound

    with pytest.raises(NotFound, match="Data Source 'nope' not found"):
        fresh_engine.append("nope", b"{}\n")


def test_a_line_over_the_size_limit_is_quarantined_not_crashed_on(fresh_engine):
    from evtrack.engine.ingest.statement import MAX_LINE_BYTES

    huge = b'{"event_type": "a", "timestamp": "2023-01-01 00:00:00", "properties": "' + b"x" * MAX_LINE_BYTES + b'"}'
    result = fresh_engine.append("events", huge + b"\n" + b'{"event_type": "b", "timestamp": "2023-01-01 00:00:00"}\n')
    assert (result.successful_rows, result.quarantined_rows) == (1, 1)
    [reason] = result.errors
    assert reason.startswith(f"Line is too long: {len(huge)} bytes, at most {MAX_LINE_BYTES}: '{{\"event_type\": \"a\"")
    assert len(reason) < 1200


def test_several_payloads_in_one_statement_each_get_their_own_counts(fresh_engine):
    payloads = [b'{"event_type": "a", "timestamp": "2023-01-01 00:00:00"}\nnot json\n',
                b'\n', b'{"event_type": "b", "timestamp": "2023-01-01 00:00:01"}\n' * 3]
    results = fresh_engine.append_many("events", payloads)
    assert [(r.successful_rows, r.quarantined_rows) for r in results] == [(1, 1), (0, 0), (3, 0)]
    assert results[0].errors == ["Line is not a valid JSON: 'not json'"]
    assert len({r.import_id for r in results}) == 3


@pytest.mark.parametrize("name", ["day_{1}.ndjson", "day_?.ndjson", "day_*.ndjson", "day_[1].ndjson"])
def test_file_names_with_glob_characters_are_read_literally(fresh_engine, tmp_path, name):
    (tmp_path / "day_1.ndjson").write_bytes(FIXTURE.read_bytes())  # a neighbour a glob would also match
    path = tmp_path / name
    path.write_bytes(b'{"event_type": "a", "timestamp": "2023-01-01 00:00:00"}\n' * 3)
    result = fresh_engine.append("events", path)
    assert (result.successful_rows, result.quarantined_rows) == (3, 0)
