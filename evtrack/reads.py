"""Typed reads from any Python app: ``Client``, a pipe's or a query's answer as pydantic models.

    from evtrack import Client

    with Client() as client:                  # the target the CLI would use: embedded, evtrack serve, Tinybird
        result = client.pipe("user_activity", user_id="user_abc", start_date=datetime(2023, 1, 1))
        result.rows[0].last_seen              # a datetime (aware, UTC)

Not to be confused with ``evtrack.client.Client``, the HTTP client remote targets talk through: this
one reads through any target. Parameters are checked before the call as ``evtrack query`` checks
them (``evtrack.params``); each row is a model made from the answer's ``meta`` (column names and
ClickHouse types), one class per distinct ``meta``. Errors of the target propagate as they are.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import keyword
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, create_model

from .times import jsonable

__all__ = ["Client", "Rows", "param_text", "python_type"]

_UTC = dt.timezone.utc
_STRINGS = {"String", "FixedString", "UUID", "Enum", "Enum8", "Enum16", "IPv4", "IPv6"}
_DECIMALS = {"Decimal", "Decimal32", "Decimal64", "Decimal128", "Decimal256"}
_INTEGER = re.compile(r"U?Int(8|16|32|64|128|256)")
_NAMED_ELEMENT = re.compile(r"(`[^`]*`|[A-Za-z_]\w*)\s+\S")
_TAKEN = frozenset(dir(BaseModel))  # a column of one of these names would hide or break the model's own


class Client:
    def __init__(self, host: str | None = None, token: str | None = None, data: str | Path | None = None, *,
                 target=None):
        """The target is found as ``Tracker`` finds it; ``target``: an open ``evtrack.targets`` target to
        read from instead (left open by ``close``)."""
        self._owns_target = target is None
        if target is None:
            from .targets import open_for_app

            target = open_for_app(host, token, data)
        self.target = target
        self._pipes: dict = {}  # name -> its Pipe (parameters), looked up once per Client

    def pipe(self, name: str, params: Mapping[str, object] | None = None, /, **values: object) -> Rows:
        """Call the endpoint ``name``; a keyword the pipe does not declare is a TypeError.

        The declared parameters are those tinybird-cli finds in the templates, which misses some (a
        bare ``{{ name }}``, say): ``params`` passes any name, as ``evtrack query --param`` does.
        A value of None is a parameter not given. A pipe the target does not know is not checked
        here: the target answers for it (NotFound on the store, the host's 404)."""
        from .params import InvalidParam, validate_params

        # Looked up once: the target reads the deployed datafiles (or asks the host) to answer.
        if name not in self._pipes:
            self._pipes[name] = self.target.pipe(name)
        pipe = self._pipes[name]
        if pipe is not None:
            declared = [p.name for p in pipe.params]
            for key in values:
                if key not in declared:
                    raise TypeError(f"{name}() got an unexpected keyword argument {key!r} "
                                    f"(its parameters: {', '.join(declared) or 'none'})")
        texts = {k: param_text(v) for k, v in {**(params or {}), **values}.items() if v is not None}
        if pipe is not None:
            try:
                validate_params(pipe, texts)
            except InvalidParam as exc:
                exc.add_note(f"parameter {exc.name!r} of the pipe {name!r}")
                raise
        return _rows(self.target.query_pipe(name, texts, "json"))

    def sql(self, text: str) -> Rows:
        """Run read-only SQL; a FORMAT clause, if any, must be JSON (the answer is read as JSON)."""
        from .engine.sql.sqlapi import split_format

        named = split_format(text)[1]
        if named and named.upper() != "JSON":
            raise ValueError(f"sql() reads JSON answers: drop 'FORMAT {named}'")
        return _rows(self.target.sql(text, "json"))

    def close(self) -> None:
        if self._owns_target:
            self.target.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class Rows:
    """An answer: its rows as instances of ``model``, and what came with them."""

    rows: list[BaseModel]
    model: type[BaseModel]
    meta: list[dict[str, str]]
    statistics: dict[str, Any]
    rows_before_limit_at_least: int | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[BaseModel]:
        return iter(self.rows)


def _rows(body: bytes) -> Rows:
    answer = json.loads(body)
    meta = answer["meta"]
    model, rows = _typed(tuple((column["name"], column["type"]) for column in meta))
    return Rows(rows=rows.validate_python(answer.get("data", [])), model=model, meta=meta,
                statistics=answer.get("statistics", {}),
                rows_before_limit_at_least=answer.get("rows_before_limit_at_least"))


def param_text(value: object) -> str:
    """A Python value as the text of a URL parameter: a datetime in UTC (a naive one taken as UTC) as
    ``YYYY-MM-DD HH:MM:SS``, a date in ISO, ``true``/``false``, a list or tuple comma-separated."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date):
        return jsonable(value)
    if isinstance(value, (list, tuple)):
        return ",".join(param_text(item) for item in value)
    return str(value)


@functools.lru_cache(maxsize=512)
def _typed(columns: tuple[tuple[str, str], ...]) -> tuple[type[BaseModel], TypeAdapter]:
    """The model of a row with these (name, type) columns, made once, and a reader of a list of rows.
    A column named other than as a free Python identifier gets one (``my col`` → ``my_col``,
    ``schema`` → ``schema_``) and keeps its own as the field's alias."""
    names = _field_names([name for name, _ in columns])
    fields: dict[str, Any] = {
        field: (python_type(type_), Field(alias=column) if field != column else ...)
        for field, (column, type_) in zip(names, columns)
    }
    config = ConfigDict(frozen=True, populate_by_name=True, protected_namespaces=())
    model = create_model("Row", __config__=config, **fields)
    return model, TypeAdapter(list[model])


def _field_names(columns: list[str]) -> list[str]:
    """Columns already free identifiers keep their names; the others get the nearest free one."""
    def free(name: str) -> bool:
        return name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("_") and name not in _TAKEN

    used = {column for column in columns if free(column)}
    names = []
    for column in columns:
        if free(column) and column not in names:
            names.append(column)
            continue
        name = re.sub(r"\W", "_", column).lstrip("_")
        name = name if name and not name[0].isdigit() else f"c_{name}"
        while not free(name) or name in used:
            name += "_"
        used.add(name)
        names.append(name)
    return names


def python_type(type_: str) -> Any:
    """The Python type of a ClickHouse ``type_`` as its JSON answer holds it; Any for one not known.

    Floats may be None: JSON has no nan or inf, and ClickHouse writes them as null. A named Tuple is
    a JSON object, so a dict. A DateTime is aware: in its column's time zone, else UTC (the
    session's, on evtrack and Tinybird alike)."""
    name, args = _parts(type_)
    if name == "Nullable":
        return Optional[python_type(args[0])]
    if name in ("LowCardinality", "SimpleAggregateFunction"):
        return python_type(args[-1])
    if name == "Array":
        return list[python_type(args[0])]
    if name == "Map":
        return dict[python_type(args[0]), python_type(args[1])]
    if name == "Tuple":
        if any(_NAMED_ELEMENT.match(arg) for arg in args):
            return dict[str, Any]
        return tuple[tuple(python_type(arg) for arg in args)]
    if name in ("DateTime", "DateTime64"):
        return _datetime(next((arg.strip("'") for arg in args if arg.startswith("'")), None))
    if name in _STRINGS:
        return str
    if _INTEGER.fullmatch(name):
        return int
    if name in ("Float32", "Float64", "BFloat16"):
        return Optional[float]
    if name in _DECIMALS:
        return float
    if name in ("Bool", "Boolean"):
        return bool
    if name in ("Date", "Date32"):
        return dt.date
    return Any


def _datetime(zone: str | None) -> Any:
    try:
        tz = ZoneInfo(zone) if zone else _UTC
    except (ZoneInfoNotFoundError, ValueError):
        return dt.datetime  # a zone this machine does not know: the time as written
    return Annotated[dt.datetime, AfterValidator(lambda value: value if value.tzinfo else value.replace(tzinfo=tz))]


def _parts(type_: str) -> tuple[str, list[str]]:
    """``Map(String, Array(UInt8))`` → ``("Map", ["String", "Array(UInt8)"])``: the top-level arguments,
    split on commas outside parentheses and quotes."""
    type_ = type_.strip()
    opening = type_.find("(")
    if opening < 0 or not type_.endswith(")"):
        return type_, []
    args, depth, quoted, start = [], 0, False, opening + 1
    for at in range(start, len(type_) - 1):
        char = type_[at]
        if quoted:
            quoted = not (char == "'" and type_[at - 1] != "\\")
        elif char == "'":
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            args.append(type_[start:at].strip())
            start = at + 1
    args.append(type_[start:-1].strip())
    return type_[:opening], args
