"""Ingestion in ClickHouse SQL over the whole batch: store what fits, quarantine the rest.

Each datasource gets an ingest table (engine Null) and two materialized views: one stores the
rows that fit into the datasource, the other sends the rest to ``<name>_quarantine`` with
Tinybird's columns. A batch is one statement, ``INSERT INTO <ingest> SELECT ... FROM <lines>``:
every line is parsed once (``JSONExtract`` into a tuple of the columns' raw texts), checked
(valid UTF-8 JSON object; each column present or defaulted; each value convertible to its type,
dates by ClickHouse's best-effort parser in UTC) and routed by the views. No Python touches a
row, and a batch streams through in blocks whatever its size.
"""

from __future__ import annotations

import re

from ...errors import BadRequest
from ...project import Column, Datasource

__all__ = ["jsonpath_keys", "DEDUP_WINDOW", "MAX_LINE_BYTES", "SHOWN_BYTES", "exactly_once", "imports_table", "ingest_ddl",
           "ingest_insert", "ingest_table", "quarantine_ddl", "quarantine_name", "sql_string"]

_DATETIME64 = re.compile(r"DateTime64\((\d+)")
MAX_LINE_BYTES = 1024 * 1024  # a longer line is quarantined whole, with its first bytes in the message
SHOWN_BYTES = 1000  # of a line over the limit, in its reason


def quarantine_name(datasource: str) -> str:
    return f"{datasource}_quarantine"


def ingest_table(datasource: str) -> str:
    return f"{datasource}__ingest"


def imports_table(datasource: str) -> str:
    """Per import: lines received and lines quarantined (an audit of every batch, kept by a view)."""
    return f"{datasource}__imports"


def sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


_NON_BLANK_LINE = re.compile(rb"^[ \t\r\f\v]*[^\s]", re.MULTILINE)


def count_lines(payload: bytes) -> int:
    """Non-blank lines of an NDJSON payload, counted by the regex engine rather than a Python loop."""
    return len(_NON_BLANK_LINE.findall(payload))


def quarantine_ddl(ds: Datasource, table: str) -> str:
    originals = ",\n    ".join(f"`{c.name}` Nullable(String)" for c in ds.columns)
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (\n"
        "    `c__error_column` Array(String),\n"
        "    `c__error` Array(String),\n"
        "    `c__import_id` Nullable(String),\n"
        f"    {originals},\n"
        "    `insertion_date` DateTime DEFAULT now()\n"
        ") ENGINE = MergeTree ORDER BY insertion_date PARTITION BY toYYYYMM(insertion_date)"
    )


_PATH_STEP = re.compile(r"""\.([^.\[]+)|\[\s*'([^']*)'\s*\]|\[\s*"([^"]*)"\s*\]|\[\s*(:)\s*\]""")


def jsonpath_keys(column: Column) -> tuple[list[str], list[str] | None]:
    """The keys of a column's jsonpath as Tinybird documents them (``$.a``, ``$.a.b``, ``$['a-b']``,
    ``$.a[:]``, ``$.a[:].b``): the keys to the value, and, after ``[:]``, the keys read in each of the
    array's elements (None without ``[:]``; ``[]`` for ``$.a[:]``, the array itself)."""
    path = (column.jsonpath or f"$.{column.name}").strip().removeprefix("$")
    keys: list[str] = []
    each: list[str] | None = None
    position = 0
    while position < len(path):
        step = _PATH_STEP.match(path, position)
        if step is None:
            raise BadRequest(f"column '{column.name}': the jsonpath '{column.jsonpath}' is not one Tinybird reads "
                             "($.a, $.a.b, $['a-b'], $.a[:], $.a[:].b)")
        position = step.end()
        if step.group(4):
            if each is not None:
                raise BadRequest(f"column '{column.name}': the jsonpath '{column.jsonpath}' has more than one [:]")
            each = []
            continue
        key = next(g for g in step.groups()[:3] if g is not None)
        (keys if each is None else each).append(key)
    return keys, each


def _keys(column: Column) -> list[str]:
    """The keys of a column whose jsonpath reads one value (``[:]`` with nothing after it reads the array)."""
    keys, each = jsonpath_keys(column)
    return keys if not each else []


def _base_type(type_: str) -> str:
    if type_.startswith("LowCardinality(") and type_.endswith(")"):
        return type_[len("LowCardinality(") : -1]
    return type_


_COMPOSITE = ("Array(", "Map(", "Tuple(", "Nested(")


def _composite(type_: str) -> bool:
    """A type that cannot be inside Nullable: read from its JSON text, as JSONEachRow reads it."""
    return _base_type(type_).startswith(_COMPOSITE)


def _enum(type_: str) -> str | None:
    """The Enum type of an ``Enum8``/``Enum16`` column (Nullable or not), else None."""
    base = _base_type(type_)
    inner = base[len("Nullable("):-1] if base.startswith("Nullable(") else base
    return inner if inner.startswith("Enum") else None


def _converts(col: Column) -> bool:
    """Whether the column's text needs converting to its type (every JSON value has a String text)."""
    return _base_type(col.type) not in ("String", "Nullable(String)")


def _convert(raw: str, type_: str) -> str:
    """A Nullable expression: the raw text converted to ``type_``, NULL when it does not fit. A
    composite type is read from the value's JSON as a one-type Variant, NULL when it does not fit.
    (A date column's value comes from ``_date_value``.)"""
    if _composite(type_):
        return f"JSONExtract(ifNull({raw}, ''), {sql_string(f'Variant({_base_type(type_)})')})"
    if _enum(type_):  # a cast would throw on a name the enum lacks: read it as JSONEachRow reads it
        return f"JSONExtract(toJSONString(ifNull({raw}, '')), {sql_string(f'Variant({_enum(type_)})')})"
    return f"accurateCastOrNull({raw}, {sql_string(_base_type(type_))})"


# Each date type's range in UTC, as ClickHouse documents it. ClickHouse's parsers clamp what falls
# outside (2300-01-01 is stored as 2106-02-07 06:28:15, 1969-12-31 23:59:59 as 1970-01-01) and read
# year 0 as the current year; evtrack quarantines such a value instead of storing another one.
_RANGES = {
    "DateTime": ("1970-01-01 00:00:00", "2106-02-07 06:28:15"),
    "DateTime64": ("1900-01-01 00:00:00", "2299-12-31 23:59:59"),
    "DateTime64(9)": ("1900-01-01 00:00:00", "2262-04-11 23:47:16"),
    "Date": ("1970-01-01", "2149-06-06"),
    "Date32": ("1900-01-01", "2299-12-31"),
}


def _date_range(type_: str) -> tuple[str, str] | None:
    base = _base_type(type_)
    if match := _DATETIME64.match(base):
        return _RANGES["DateTime64(9)" if match.group(1) == "9" else "DateTime64"]
    if base.startswith("DateTime"):
        return _RANGES["DateTime"]
    return _RANGES.get(base)


def _wide(i: int) -> str:
    """Column i's text parsed over years 1 to 9999 (best effort, UTC), to tell a date out of range
    from one that is no date at all."""
    return f"parseDateTime64BestEffortOrNull(__r{i}, 0, 'UTC') AS __w{i}"


def _out_of_range(i: int, type_: str) -> str:
    """Whether column i's text is a date its type cannot hold: outside the range, or in year 0."""
    low, high = _date_range(type_)
    high = high if " " in high else f"{high} 23:59:59"
    return (f"(__w{i} IS NOT NULL AND (__w{i} < toDateTime64({sql_string(low)}, 0, 'UTC') OR "
            f"__w{i} > toDateTime64({sql_string(high)}, 0, 'UTC') OR match(__r{i}, '^\\s*0000'))) AS __o{i}")


_ZONE = re.compile(r"DateTime(?:64)?\((?:\s*\d+\s*,)?\s*'([^']+)'\s*\)")


def _date_value(i: int, type_: str) -> str:
    """A date column's value: its text read in the column's zone (UTC unless the type names one), as
    ClickHouse reads a text into a zoned DateTime."""
    base = _base_type(type_).removeprefix("Nullable(")
    zone = sql_string(found.group(1)) if (found := _ZONE.search(base)) else "'UTC'"
    if match := _DATETIME64.match(base):
        value = f"parseDateTime64BestEffortOrNull(__r{i}, {match.group(1)}, {zone})"
    elif base.startswith("DateTime"):
        value = (f"toDateTime(__w{i}, 'UTC')" if zone == "'UTC'" else
                 f"toDateTime(parseDateTime64BestEffortOrNull(__r{i}, 0, {zone}), {zone})")
    else:
        value = f"accurateCastOrNull(__w{i}, {sql_string(base)})"
    return f"if(__o{i}, NULL, {value}) AS __v{i}"


def _raw_texts(ds: Datasource) -> tuple[list[str], list[str]]:
    """Per column, its value's text (strings decoded, objects as compact JSON), NULL if absent or null.

    Top-level paths are read in one parse of the line, as one tuple (``__j``, computed a level
    below); nested paths one by one. Returns (the level below, the texts).
    """
    flat = [i for i, c in enumerate(ds.columns) if len(_keys(c)) == 1]
    top = list(dict.fromkeys(_keys(ds.columns[i])[0] for i in flat))  # two columns may read one key
    fields = ", ".join(f"{sql_string(key)[1:-1].join('``')} Nullable(String)" for key in top)
    texts = []
    for i, column in enumerate(ds.columns):
        keys, each = jsonpath_keys(column)
        at = ", ".join(sql_string(k) for k in keys)
        if i in flat:
            texts.append(f"tupleElement(__j, {top.index(keys[0]) + 1})")
        elif each:  # $.a[:].b: the array of each element's b, as JSON text
            inner = ", ".join(sql_string(k) for k in each)
            texts.append(f"if(JSONType(line, {at}) = 'Array', concat('[', arrayStringConcat(arrayMap("
                         f"x -> JSONExtractRaw(x, {inner}), JSONExtractArrayRaw(line, {at})), ','), ']'), NULL)")
        else:
            texts.append(f"JSONExtract(line, {at}, 'Nullable(String)')")
    return ([f"JSONExtract(line, 'Tuple({fields})') AS __j"] if flat else []), texts


def _error(i: int, col: Column) -> str | None:
    """The message for column i, or '' when its value is fine; None when it cannot be wrong
    (an optional String column takes any JSON value).

    Each expression here is analysed again on every insert, so the statement holds no more of them than it needs.
    """
    suffix = sql_string(f"' on column '{col.name}' is not {col.type}")
    bad_value = f"concat('value ', char(39), __r{i}, {suffix})"
    missing = sql_string(f"missing value on column '{col.name}' (required: {col.type} with no DEFAULT)")
    if (bounds := _date_range(col.type)) is not None:
        outside = sql_string(f"' on column '{col.name}' is out of the range of {col.type}: "
                             f"{bounds[0]} to {bounds[1]} UTC")
        # A value out of range is never NULL-tested first: its converted value is NULL too.
        bad_value = f"if(__o{i}, concat('value ', char(39), __r{i}, {outside}), {bad_value})"
    if col.required and _converts(col):
        return f"multiIf(__r{i} IS NULL, {missing}, __v{i} IS NULL, {bad_value}, '')"
    if col.required:
        return f"if(__r{i} IS NULL, {missing}, '')"
    if _converts(col):
        return f"if(__r{i} IS NOT NULL AND __v{i} IS NULL, {bad_value}, '')"
    return None


def _value(i: int, col: Column) -> str:
    """The stored value: the converted text, else the default. A row whose text did not convert
    (or whose required column is missing) is quarantined, so its value here is never stored."""
    value = f"__v{i}" if _converts(col) else f"__r{i}"
    if _composite(col.type):
        present = f"variantElement(__v{i}, {sql_string(_base_type(col.type))})"
    elif _enum(col.type):
        element = f"variantElement(__v{i}, {sql_string(_enum(col.type))})"
        present = element if col.accepts_null else f"assumeNotNull({element})"
    else:
        present = value if col.accepts_null else f"assumeNotNull({value})"
    if not col.default:
        return present
    # if() evaluates the default only for the rows that need it; ifNull() would for every row.
    return f"if({value} IS NOT NULL, {present}, {col.default})"


def _staging_columns(ds: Datasource) -> list[str]:
    return [
        "`__import_id` String",
        "`__is_json` UInt8",
        "`__too_long` UInt8",
        "`__line` String",
        "`__errors` Array(String)",
        "`__error_columns` Array(String)",
        *(f"`{c.name}` {c.sql_type}" for c in ds.columns),
        *(f"`__raw_{c.name}` Nullable(String)" for c in ds.columns),
    ]


def ingest_ddl(ds: Datasource, database: str) -> list[str]:
    """Statements (re)creating the ingest table and its two views for ``ds``."""
    db = f"`{database}`"
    ingest = f"{db}.`{ingest_table(ds.name)}`"
    store_view, quarantine_view = f"{db}.`{ds.name}__store`", f"{db}.`{ds.name}__quarantine`"
    imports, imports_view = f"{db}.`{imports_table(ds.name)}`", f"{db}.`{ds.name}__count`"
    columns = ", ".join(f"`{c.name}`" for c in ds.columns)
    raw = ", ".join(f"`__raw_{c.name}` AS `{c.name}`" for c in ds.columns)
    not_json = "[if(__too_long, __line, concat('Line is not a valid JSON: ', char(39), __line, char(39)))]"
    return [
        f"DROP VIEW IF EXISTS {store_view}",
        f"DROP VIEW IF EXISTS {quarantine_view}",
        f"DROP VIEW IF EXISTS {imports_view}",
        f"DROP TABLE IF EXISTS {ingest}",
        f"CREATE TABLE IF NOT EXISTS {imports} (import_id String, lines UInt64, quarantined UInt64, "
        f"inserted_at DateTime DEFAULT now()) ENGINE = SummingMergeTree ORDER BY import_id "
        f"TTL inserted_at + INTERVAL 7 DAY",
        f"CREATE TABLE {ingest} ({', '.join(_staging_columns(ds))}) ENGINE = Null",
        f"CREATE MATERIALIZED VIEW {store_view} TO {db}.`{ds.name}` AS "
        f"SELECT {columns} FROM {ingest} WHERE __is_json AND empty(__errors)",
        f"CREATE MATERIALIZED VIEW {quarantine_view} TO {db}.`{quarantine_name(ds.name)}` AS "
        f"SELECT if(__is_json, __error_columns, ['']) AS c__error_column, "
        f"if(__is_json, __errors, {not_json}) AS c__error, __import_id AS c__import_id, {raw} "
        f"FROM {ingest} WHERE NOT __is_json OR notEmpty(__errors)",
        f"CREATE MATERIALIZED VIEW {imports_view} TO {imports} AS SELECT __import_id AS import_id, count() AS lines, "
        f"countIf(NOT __is_json OR notEmpty(__errors)) AS quarantined FROM {ingest} GROUP BY __import_id",
    ]


def ingest_insert(ds: Datasource, database: str, source: str, import_id: str, once: str | None = None) -> str:
    """The one statement that ingests the lines of ``source`` (a table expression with a String column ``line``).

    ``import_id`` is an SQL expression naming each line's import (a constant, or one per file of a glob).
    ``once``, when given, makes the insert idempotent (see ``exactly_once``).

    Each step reads the one below as a subquery, so a name used many times (the parsed line, a
    column's text) is a column there rather than an alias expanded wherever it is used: the
    statement stays small for the query analyser, which runs on every insert.
    Defaults may name other columns, as in ClickHouse: each output column is an alias the others can use.
    """
    parse, texts = _raw_texts(ds)
    parsed = [
        "line",
        f"{import_id} AS __import_id",
        # A line refused unparsed, its whole reason in __line: too long, not UTF-8, or with a NUL byte (for
        # any other line that is not a JSON object, __line is the line, which the quarantine view quotes as
        # not valid JSON). The name is its first reason's: the views of stores deployed earlier read it so.
        f"length(line) > {MAX_LINE_BYTES} OR NOT isValidUTF8(line) OR position(line, '\\0') > 0 AS __too_long",
        "NOT __too_long AND JSONType(line) = 'Object' AS __is_json",
        *parse,
    ]
    carried = ["line", "__import_id", "__too_long", "__is_json"]
    raw = [
        *carried,
        *(f"if(__is_json, {text}, NULL) AS __r{i}" for i, text in enumerate(texts)),
    ]
    dates = [i for i, c in enumerate(ds.columns) if _date_range(c.type) is not None]
    raw += [_wide(i) for i in dates]
    converted = [*(_out_of_range(i, ds.columns[i].type) for i in dates),
                 *(_date_value(i, c.type) if i in dates else f"{_convert(f'__r{i}', c.type)} AS __v{i}"
                   for i, c in enumerate(ds.columns) if _converts(c))]
    checks = [(c.name, f"__e{i}", e) for i, c in enumerate(ds.columns) if (e := _error(i, c)) is not None]
    checked = [
        *carried[1:],
        f"multiIf(__is_json, '', length(line) > {MAX_LINE_BYTES}, concat('Line is too long: ', "
        f"toString(length(line)), ' bytes, at most {MAX_LINE_BYTES}: ', char(39), "
        f"toValidUTF8(substring(line, 1, {SHOWN_BYTES})), '...', char(39)), "
        "NOT isValidUTF8(line), concat('Line is not valid UTF-8: ', char(39), toValidUTF8(line), char(39)), "
        "position(line, '\\0') > 0, concat('Line contains a NUL byte: ', char(39), line, char(39)), line) AS __line",
        *converted,
        *(f"{error} AS {name}" for _, name, error in checks),
        *(f"{_value(i, c)} AS `{c.name}`" for i, c in enumerate(ds.columns)),
        *(f"__r{i} AS __t{i}" for i in range(len(ds.columns))),
    ]
    if checks:
        errors = ", ".join(name for _, name, _ in checks)
        names = ", ".join(sql_string(column) for column, _, _ in checks)
        lists = {
            "`__errors`": f"arrayFilter(e -> e != '', [{errors}]) AS `__errors`",
            "`__error_columns`": f"arrayFilter((n, e) -> e != '', [{names}], [{errors}]) AS `__error_columns`",
        }
    else:
        lists = {name: f"CAST([], 'Array(String)') AS {name}" for name in ("`__errors`", "`__error_columns`")}
    # The texts as sent are kept for the quarantine only: NULL on a stored row, so that the insert
    # does not carry a second copy of every stored value.
    fine = " AND ".join(["__is_json", *(f"{name} = ''" for _, name, _ in checks)])
    lists.update({f"`__raw_{c.name}`": f"if({fine}, NULL, __t{i}) AS `__raw_{c.name}`" for i, c in enumerate(ds.columns)})
    staging = [f"`{c.split('`')[1]}`" for c in _staging_columns(ds)]
    outer = [lists.get(name, name) for name in staging]
    query = f"SELECT {', '.join(parsed)} FROM {source} WHERE notEmpty(trimBoth(line, ' \\t\\r\\x0b\\x0c'))"
    for step in (raw, checked, outer):
        query = f"SELECT {', '.join(step)} FROM ({query})"
    # The three views (stored, quarantined, counted) take each block in parallel rather than in turn.
    # Memory stays flat whatever the input's size: the file is read with pread, not mapped (a mapped
    # file counts in the process's memory, all of it by the end), and rows are gathered into blocks
    # of 256k rather than 1M before they are sorted and written (as fast, a third less memory).
    return (f"INSERT INTO `{database}`.`{ingest_table(ds.name)}` ({', '.join(staging)}) {query} "
            "SETTINGS parallel_view_processing = 1, storage_file_read_method = 'pread', "
            "min_insert_block_size_rows = 262144, min_insert_block_size_bytes = 67108864"
            + (f", {exactly_once(once)}" if once else ""))


DEDUP_WINDOW = 1000  # blocks each table remembers: more than any replay or retry comes after


def exactly_once(token: str) -> str:
    """Settings that make an insert idempotent in every table it reaches, materialized targets included.

    Each block the insert writes gets an id from ``token`` and its rank, in the datasource and in
    each table a view writes from it; a table that has a block of that id already (each remembers
    its last ``DEDUP_WINDOW``) skips it. So running the same insert again, whole or after a crash
    in its middle, writes exactly the blocks that are missing. The blocks must come out the same
    each time: one thread reads the input, in order.
    """
    return (f"insert_deduplicate = 1, insert_deduplication_token = {sql_string(token)}, "
            "deduplicate_blocks_in_dependent_materialized_views = 1, max_threads = 1, max_insert_threads = 1")
