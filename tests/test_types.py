"""Every column type Tinybird documents for datasources ingests as ClickHouse's own JSONEachRow insert
stores it, on the embedded path and through `evtrack serve`'s Events API.

The reference is ClickHouse's: the same values, each under its column's name, inserted with
``INSERT ... FORMAT JSONEachRow`` into a plain table of the same column types. evtrack reads each
value at its jsonpath (``$.a``, ``$.a.b``, ``$['a-b']``, ``$.a[:]``, ``$.a[:].b``); the stored rows
must be equal, column by column.
"""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from evtrack.project import parse_datasource
from evtrack.server.app import create_app

# (column type, a valid JSON value)
VALID = [
    ("Int8", -5), ("UInt8", 200), ("Int16", -30000), ("UInt16", 65000), ("Int32", -2_000_000_000),
    ("UInt32", 4_000_000_000), ("Int64", 9_007_199_254_740_993), ("UInt64", 18_446_744_073_709_551_615),
    ("Int128", -170_141_183_460_469_231_731_687_303_715_884_105_728), ("UInt128", 2**127),
    ("Int256", -(2**200)), ("UInt256", 2**255), ("Float32", 1.5), ("Float64", 3.25), ("Decimal(18, 4)", 12.3456),
    ("String", "text"), ("FixedString(2)", "ab"), ("UUID", "61f0c404-5cb3-11e7-907b-a6006ad3dba0"),
    ("Bool", True), ("Boolean", False), ("IPv4", "10.0.0.1"), ("IPv6", "2001:db8::1"),
    ("Enum8('a' = 1, 'b' = 2)", "b"), ("Enum16('x' = 1000, 'y' = 2000)", "y"),
    ("Date", "2023-07-01"), ("Date32", "1950-01-01"), ("DateTime", "2023-07-01 12:00:00"),
    ("DateTime('Europe/Madrid')", "2025-03-01 10:00:00"), ("DateTime64(3)", "2023-07-01 12:00:00.123"),
    ("DateTime64(3, 'Asia/Tokyo')", "2023-07-01 12:00:00.123"),
    ("LowCardinality(String)", "web"), ("LowCardinality(Nullable(String))", "ES"),
    ("Nullable(Int32)", 7), ("Nullable(String)", "n"), ("Nullable(DateTime)", "2023-07-01 00:00:00"),
    ("Array(String)", ["a", "b"]), ("Array(Int32)", [1, 2, 3]), ("Array(Array(Int32))", [[1], [2, 3]]),
    ("Array(Nullable(String))", ["a", None]), ("Array(LowCardinality(String))", ["x"]),
    ("Array(Map(String, String))", [{"role": "user", "content": "hi"}]), ("Map(String, String)", {"k": "v"}),
    ("Map(String, Int32)", {"k": 1}), ("Tuple(a String, b Int32)", {"a": "s", "b": 2}),
    ("Array(Date)", ["2023-01-01"]),
]
# The same types, null or missing: NULL where the type takes it.
NULLABLE = ["Nullable(Int32)", "Nullable(String)", "Nullable(DateTime)", "LowCardinality(Nullable(String))",
            "Nullable(Float64)", "Nullable(UUID)"]
# (type, a value it cannot hold)
WRONG = [("Int32", "abc"), ("UInt8", 300), ("Date", "junk"), ("UUID", "nope"), ("IPv4", "1.2.3"),
         ("Enum8('a' = 1, 'b' = 2)", "c"), ("Array(Int32)", ["x"]), ("Array(String)", "notarray"),
         ("Map(String, String)", [1, 2]), ("DateTime", "yesterday"), ("Array(Date)", ["junk"])]


def _name(i: int) -> str:
    return f"c{i}"


def _datafile(columns: list[tuple[str, str, str]], key: str = "id") -> str:
    lines = ["`id` UInt32 `json:$.id`"] + [f"`{name}` {type_} `json:{path}`" for name, type_, path in columns]
    return "SCHEMA >\n    " + ",\n    ".join(lines) + f"\n\nENGINE MergeTree\nENGINE_SORTING_KEY {key}\n"


def _placed(path: str, value) -> dict:
    """A JSON object holding ``value`` where ``path`` reads it."""
    if path.endswith("[:].v"):  # each element's v: the array's values, one per element
        return {path[2:-5]: [{"v": item} for item in value]}
    if path.startswith("$['"):
        return {path[3:-2]: value}
    keys = path.removeprefix("$.").removesuffix("[:]").split(".")
    out = value
    for key in reversed(keys):
        out = {key: out}
    return out


def _merge(a: dict, b: dict) -> dict:
    for key, value in b.items():
        a[key] = _merge(a[key], value) if isinstance(value, dict) and isinstance(a.get(key), dict) else value
    return a


PATHS = ["$.{n}", "$.o.{n}", "$['x-{n}']"]


def _columns() -> list[tuple[str, str, str]]:
    """Each valid type at a plain path, then at a nested and a quoted one; arrays also at [:] and [:].v."""
    columns = []
    for i, (type_, _) in enumerate(VALID):
        columns.append((_name(i), type_, PATHS[i % len(PATHS)].format(n=_name(i))))
    for i, (type_, _) in enumerate(VALID):
        if type_.startswith("Array(") and not type_.startswith("Array(Array"):
            columns.append((f"e{i}", type_, f"$.e{i}[:]"))
            columns.append((f"m{i}", type_, f"$.m{i}[:].v"))
    return columns


def _values() -> dict[str, object]:
    values = {_name(i): value for i, (_, value) in enumerate(VALID)}
    for i, (type_, value) in enumerate(VALID):
        if type_.startswith("Array(") and not type_.startswith("Array(Array"):
            values[f"e{i}"] = values[f"m{i}"] = value
    return values


def _line(columns, values, row_id: int) -> str:
    obj: dict = {"id": row_id}
    for name, _, path in columns:
        if name in values:
            _merge(obj, _placed(path, values[name]))
    return json.dumps(obj)


def _reference(engine, columns, values, row_id: int) -> list[dict]:
    """ClickHouse's own JSONEachRow insert of the same values, each under its column's name."""
    db = engine.default.database
    types = ", ".join(f"`{name}` {type_}" for name, type_, _ in columns)
    engine.store.execute(f"DROP TABLE IF EXISTS `{db}`.`types_reference`")
    engine.store.execute(f"CREATE TABLE `{db}`.`types_reference` (`id` UInt32, {types}) ENGINE = Memory")
    engine.store.execute(f"INSERT INTO `{db}`.`types_reference` FORMAT JSONEachRow "
                         + json.dumps({"id": row_id, **values}))
    return _rows(engine, "types_reference")


def _rows(engine, table: str) -> list[dict]:
    out = engine.store.run(f"SELECT * FROM `{engine.default.database}`.`{table}` ORDER BY id", "JSONEachRow")
    return [json.loads(line) for line in out.decode().splitlines()]


def _deploy(engine, name: str, text: str) -> None:
    engine.default.deploy_datasource(parse_datasource(name, text))


def test_every_type_and_path_is_stored_as_clickhouses_own_insert_stores_it(fresh_engine):
    columns, values = _columns(), _values()
    _deploy(fresh_engine, "typed", _datafile(columns))
    result = fresh_engine.append("typed", _line(columns, values, 1).encode())
    assert (result.successful_rows, result.quarantined_rows) == (1, 0), result
    stored, reference = _rows(fresh_engine, "typed"), _reference(fresh_engine, columns, values, 1)
    assert len(stored) == 1
    for name, type_, path in columns:
        assert stored[0][name] == reference[0][name], (name, type_, path)


def test_through_serve_the_events_api_stores_the_same(fresh_engine):
    columns, values = _columns(), _values()
    _deploy(fresh_engine, "typed", _datafile(columns))
    with TestClient(create_app(fresh_engine), base_url="http://127.0.0.1:7181") as http:
        answer = http.post("/v0/events", params={"name": "typed", "wait": "true",
                                                 "token": fresh_engine.tokens.admin.token},
                           content=_line(columns, values, 2))
        assert answer.json() == {"successful_rows": 1, "quarantined_rows": 0}, answer.text
    stored, reference = _rows(fresh_engine, "typed"), _reference(fresh_engine, columns, values, 2)
    for name, type_, path in columns:
        assert stored[0][name] == reference[0][name], (name, type_, path)


def test_null_or_missing_is_null_where_the_type_takes_it(fresh_engine):
    columns = [(_name(i), type_, f"$.geo.{_name(i)}") for i, type_ in enumerate(NULLABLE)]
    _deploy(fresh_engine, "nulls", _datafile(columns))
    nulls = json.dumps({"id": 1, "geo": {_name(i): None for i in range(len(NULLABLE))}})
    result = fresh_engine.append("nulls", (nulls + '\n{"id": 2}\n').encode())
    assert (result.successful_rows, result.quarantined_rows) == (2, 0), result
    for row in _rows(fresh_engine, "nulls"):
        assert [row[_name(i)] for i in range(len(NULLABLE))] == [None] * len(NULLABLE)


def test_missing_without_default_is_quarantined_and_with_one_takes_it(fresh_engine):
    _deploy(fresh_engine, "defaults", "SCHEMA >\n    `id` UInt32 `json:$.id`,\n"
                                      "    `tags` Array(String) `json:$.tags[:]`,\n"
                                      "    `n` Int32 `json:$.n` DEFAULT 42,\n"
                                      "    `m` Map(String, String) `json:$.m` DEFAULT map('k', 'd')\n\n"
                                      "ENGINE MergeTree\nENGINE_SORTING_KEY id\n")
    result = fresh_engine.append("defaults", b'{"id": 1, "tags": ["a"]}\n{"id": 2}\n')
    assert (result.successful_rows, result.quarantined_rows) == (1, 1)
    assert _rows(fresh_engine, "defaults") == [{"id": 1, "tags": ["a"], "n": 42, "m": {"k": "d"}}]
    assert result.errors == ["missing value on column 'tags' (required: Array(String) with no DEFAULT)"]


def test_a_wrong_value_is_quarantined_naming_the_column_the_value_and_the_type(fresh_engine):
    """One line per wrong value, every other column valid: each line quarantined with one reason."""
    valid = dict(VALID)
    columns = [(f"w{i}", type_, f"$.w{i}") for i, (type_, _) in enumerate(WRONG)]
    _deploy(fresh_engine, "wrong", _datafile(columns))
    lines = [json.dumps({"id": row, **{name: (wrong if i == row else valid[type_])
                                       for i, (name, type_, _) in enumerate(columns)}})
             for row, (_, wrong) in enumerate(WRONG)]
    result = fresh_engine.append("wrong", "\n".join(lines).encode())
    assert (result.successful_rows, result.quarantined_rows) == (0, len(WRONG))
    got = json.loads(fresh_engine.sql("SELECT c__error FROM wrong_quarantine ORDER BY toUInt32(id) FORMAT JSON"))
    expected = [[f"value '{wrong if isinstance(wrong, str) else json.dumps(wrong, separators=(',', ':'))}' "
                 f"on column 'w{i}' is not {type_}"] for i, (type_, wrong) in enumerate(WRONG)]
    assert [row["c__error"] for row in got["data"]] == expected


def test_no_engine_insides_in_an_error(fresh_engine):
    """A pipe's error names the user's tables, never the workspace's database or the statement it ran."""
    from evtrack.errors import QueryError

    with pytest.raises(QueryError) as refused:
        fresh_engine.sql("SELECT no_such_column FROM events")
    message = refused.value.message
    assert "no_such_column" in message
    for inside in ("evtrack.", "__import_id", "w_", "/tmp/", "In scope"):
        assert inside not in message, message
