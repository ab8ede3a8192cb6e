"""CSV and Parquet appends: their rows turned into NDJSON lines by ClickHouse as it reads the file,
so that they go through the one ingest path (``ingest``: parse, check, store or quarantine) that
NDJSON takes.

Tinybird maps a CSV's columns to the datasource's by the header when the first row names them,
else by position; a datasource's jsonpaths do not apply to CSV. Each row becomes a JSON object
shaped so that the column's jsonpath finds its value (``$.a.b`` as ``{"a": {"b": ...}}``), every
value as text, which the ingest converts to the column's type as it does a JSON string. The work
is one ClickHouse statement over the file; Python reads only the first line, for the header.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

from ...errors import BadRequest
from ...project import Datasource
from .statement import jsonpath_keys, sql_string

__all__ = ["file_format", "rows_source"]

_SETTINGS = ("input_format_csv_allow_variable_number_of_columns = 1, input_format_skip_unknown_fields = 1, "
             "input_format_csv_empty_as_default = 1, output_format_json_named_tuples_as_objects = 1, "
             "output_format_json_quote_64bit_integers = 0")


def _ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _header(ds: Datasource, data: bytes) -> bool:
    """Whether the first row names columns of the datasource (then it is a header, not data)."""
    first = data.split(b"\n", 1)[0].decode("utf-8", "replace")
    names = next(csv.reader(io.StringIO(first)), [])
    known = {c.name for c in ds.columns}
    return bool(names) and all(name.strip() in known for name in names)


def _tree(ds: Datasource) -> dict:
    """The JSON object's shape: key → column name (a leaf) or a nested shape."""
    tree: dict = {}
    for column in ds.columns:
        keys, each = jsonpath_keys(column)
        if each is not None:
            raise BadRequest(f"Datasource '{ds.name}': column '{column.name}' reads {column.jsonpath}, which a CSV "
                             "row cannot hold: append NDJSON to it")
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise BadRequest(f"Datasource '{ds.name}': the jsonpaths of its columns overlap")
        node[keys[-1]] = column.name
    return tree


def _expression(tree: dict) -> list[str]:
    """The SELECT list whose JSONEachRow row is the object ``tree`` describes."""
    out = []
    for key, value in tree.items():
        if isinstance(value, str):
            out.append(f"{_ident(value)} AS {_ident(key)}")
        else:
            inner = [expr.rsplit(" AS ", 1) for expr in _expression(value)]
            types = ", ".join(f"{alias} {_nested_type(value[alias.strip('`')])}" for _, alias in inner)
            out.append(f"CAST(tuple({', '.join(expr for expr, _ in inner)}), {sql_string(f'Tuple({types})')}) "
                       f"AS {_ident(key)}")
    return out


def _nested_type(value) -> str:
    if isinstance(value, str):
        return "Nullable(String)"
    return f"Tuple({', '.join(f'{_ident(k)} {_nested_type(v)}' for k, v in value.items())})"


def file_format(path: Path) -> str:
    """``csv``, ``parquet`` or ``ndjson``, by the file's name (``.gz`` aside)."""
    name = path.name.lower().removesuffix(".gz")
    return "csv" if name.endswith(".csv") else "parquet" if name.endswith(".parquet") else "ndjson"


def rows_source(ds: Datasource, path: Path, fmt: str) -> str:
    """A table expression with one String column ``line``: each row of the CSV or Parquet file at
    ``path`` as an NDJSON line for ``ds``'s ingest, read by ClickHouse as it streams the file (one
    pass, memory bounded). Every column is read as text, so a value that does not fit its type is
    quarantined by the ingest as it is for NDJSON; a Parquet file's own types are read as their text."""
    structure = ", ".join(f"{_ident(c.name)} Nullable(String)" for c in ds.columns)
    if fmt == "csv":
        compression = "gzip" if path.name.endswith(".gz") else "none"
        opener = gzip.open if compression == "gzip" else open
        with opener(path, "rb") as head:
            first = head.readline()
        name = "CSVWithNames" if _header(ds, first) else "CSV"
        source = f"file({sql_string(str(path))}, '{name}', {sql_string(structure)}, '{compression}')"
    else:
        source = f"file({sql_string(str(path))}, 'Parquet', {sql_string(structure)})"
    select = ", ".join(_expression(_tree(ds)))
    return f"(SELECT formatRowNoNewline('JSONEachRow', {select}) AS line FROM {source} SETTINGS {_SETTINGS})"
