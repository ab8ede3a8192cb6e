"""Ingestion as two SQL statements over the whole batch: store what fits, quarantine the rest.

A batch is read by ClickHouse as ``LineAsString`` and every line is checked in SQL (valid
UTF-8 and JSON, each column present or defaulted, each value convertible to its type, dates
by ClickHouse's best-effort parser in UTC), the way Tinybird's Events API checks them. Good
rows go to the datasource; the others go to ``<name>_quarantine`` with Tinybird's columns and
one message per offending column. No Python touches a row.
"""

from __future__ import annotations

import re

from ..project import Column, Datasource

__all__ = ["quarantine_ddl", "ingest_statements", "quarantine_name", "sql_string"]

_DATETIME64 = re.compile(r"DateTime64\((\d+)")


def quarantine_name(datasource: str) -> str:
    return f"{datasource}_quarantine"


def sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quarantine_ddl(ds: Datasource, table: str) -> str:
    originals = ",\n    ".join(f"`{c.name}` Nullable(String)" for c in ds.columns)
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (\n"
        "    `c__error_column` Array(String),\n"
        "    `c__error` Array(String),\n"
        "    `c__import_id` Nullable(String),\n"
        f"    {originals},\n"
        "    `insertion_date` DateTime DEFAULT now()\n"
        ") ENGINE = MergeTree ORDER BY tuple() PARTITION BY toYYYYMM(insertion_date)"
    )


def _json_keys(column: Column) -> str:
    path = column.jsonpath or f"$.{column.name}"
    keys = path.removeprefix("$.").removeprefix("$").split(".")
    return ", ".join(sql_string(k) for k in keys if k)


def _base_type(type_: str) -> str:
    if type_.startswith("LowCardinality(") and type_.endswith(")"):
        return type_[len("LowCardinality(") : -1]
    return type_


def _convert(raw: str, type_: str) -> str:
    """A Nullable expression: the raw text converted to ``type_``, NULL when it does not fit."""
    base = _base_type(type_)
    if base in ("String", "UUID") or base.startswith("FixedString") or base.startswith("Enum"):
        return raw if base == "String" else f"accurateCastOrNull({raw}, {sql_string(base)})"
    if match := _DATETIME64.match(base):
        return f"parseDateTime64BestEffortOrNull({raw}, {match.group(1)}, 'UTC')"
    if base.startswith("DateTime"):
        return f"parseDateTimeBestEffortOrNull({raw}, 'UTC')"
    if base in ("Date", "Date32"):
        return f"accurateCastOrNull(parseDateTimeBestEffortOrNull({raw}, 'UTC'), {sql_string(base)})"
    return f"accurateCastOrNull({raw}, {sql_string(base)})"


def _parsed_lines(ds: Datasource, source: str) -> str:
    """One row per non-blank line: validity, and for each column i: present, raw text, value."""
    fields = ["line", "isValidUTF8(line) AND isValidJSON(line) AND JSONType(line) = 'Object' AS is_json"]
    for i, col in enumerate(ds.columns):
        keys = _json_keys(col)
        fields.append(f"JSONType(line, {keys}) AS t{i}")
        fields.append(f"if(t{i} = 'String', JSONExtractString(line, {keys}), JSONExtractRaw(line, {keys})) AS r{i}")
        fields.append(f"is_json AND t{i} != 'Null' AS p{i}")
        fields.append(f"{_convert(f'r{i}', col.type)} AS v{i}")
    return f"SELECT {', '.join(fields)} FROM {source} WHERE notEmpty(trimBoth(line))"


def _error(i: int, col: Column) -> str:
    """The message for column i, or '' when its value is fine."""
    suffix = sql_string(f"' on column '{col.name}' is not {col.type}")
    bad_value = f"concat('value ', char(39), r{i}, {suffix})"
    if col.required:
        missing = sql_string(f"missing value on column {col.name!r} (required: {col.type} with no DEFAULT)")
        return f"multiIf(NOT p{i}, {missing}, v{i} IS NULL, {bad_value}, '')"
    return f"if(p{i} AND v{i} IS NULL, {bad_value}, '')"


def _value(i: int, col: Column) -> str:
    if col.nullable:
        fallback = col.default or "NULL"
        return f"if(p{i}, v{i}, {fallback}) AS `{col.name}`"
    fallback = col.default or f"defaultValueOfTypeName({sql_string(col.type)})"
    return f"if(p{i}, assumeNotNull(v{i}), {fallback}) AS `{col.name}`"


def ingest_statements(ds: Datasource, table: str, quarantine: str, source: str, import_id: str) -> tuple[str, str]:
    """The INSERT of good rows into ``table`` and of bad rows into ``quarantine``.

    ``source`` is a table expression yielding one String column ``line`` (for example
    ``file('batch.ndjson', 'LineAsString')``). Defaults may name other columns, as in
    ClickHouse: each output column is an alias the others can use.
    """
    parsed = _parsed_lines(ds, source)
    errors = ", ".join(_error(i, c) for i, c in enumerate(ds.columns))
    names = ", ".join(sql_string(c.name) for c in ds.columns)
    checks = (
        f"arrayFilter(e -> e != '', [{errors}]) AS errs, "
        f"arrayFilter((n, e) -> e != '', [{names}], [{errors}]) AS err_cols"
    )
    columns = ", ".join(f"`{c.name}`" for c in ds.columns)
    values = ", ".join(_value(i, c) for i, c in enumerate(ds.columns))
    good = (
        f"INSERT INTO {table} ({columns}) SELECT {columns} FROM "
        f"(SELECT {values}, {checks}, is_json FROM ({parsed})) WHERE is_json AND empty(errs)"
    )
    raw = ", ".join(f"if(p{i}, r{i}, NULL) AS `{c.name}`" for i, c in enumerate(ds.columns))
    not_json = "concat('Line is not a valid JSON: ', char(39), toValidUTF8(line), char(39))"
    bad = (
        f"INSERT INTO {quarantine} (c__error_column, c__error, c__import_id, {columns}) "
        f"SELECT if(is_json, err_cols, ['']), if(is_json, errs, [{not_json}]), {sql_string(import_id)}, {columns} "
        f"FROM (SELECT line, is_json, {checks}, {raw} FROM ({parsed})) WHERE NOT is_json OR notEmpty(errs)"
    )
    return good, bad
