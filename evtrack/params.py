"""Client-side validation of pipe parameters, from the types the pipe itself declares.

Each value is passed through the template function of its type in tinybird-cli's own template
engine (``tinybird.sql_template.type_fns``: ``Int32``, ``DateTime``, ``Array(x, 'Int32')``...), the
function the server renders the pipe with, so a value is refused here exactly when Tinybird would
refuse it, before any query runs, with the parameter's name and the expected format. What that
function accepts but ClickHouse then cannot use (a ``DateTime`` of 30 February compared with a
column, say) is the server's error, as on Tinybird.
"""

from __future__ import annotations

import re

from tinybird.sql_template import SQLTemplateException, type_fns

from .project import Pipe

__all__ = ["InvalidParam", "accepts", "expected_format", "validate_params"]

_EXPECTED = {
    "DateTime": "YYYY-MM-DD HH:MM:SS (UTC), for example 2023-07-01 00:00:00",
    "DateTime64": "YYYY-MM-DD HH:MM:SS[.fff] (UTC), for example 2023-07-01 00:00:00.000",
    "Date": "YYYY-MM-DD, for example 2023-07-01",
    "Boolean": "true or false",
    "Bool": "true or false",
}
_INT_RANGES = {
    f"{sign}Int{bits}": ((0, 2**bits - 1) if sign else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
    for sign in ("", "U")
    for bits in (8, 16, 32, 64, 128, 256)
}
_ARRAY = re.compile(r"Array\((\w+)\)")


class InvalidParam(ValueError):
    def __init__(self, name: str, value: str, type_: str):
        self.name, self.value, self.type = name, value, type_
        super().__init__(f"{value!r} is not a valid {type_}; expected {expected_format(type_)}")


def expected_format(type_: str) -> str:
    if type_ in _INT_RANGES:
        low, high = _INT_RANGES[type_]
        return f"an integer from {low} to {high}"
    if type_.startswith("Float"):
        return "a number, for example 1.5"
    if type_.startswith("Array("):
        return f"comma-separated values of {type_[6:-1]}"
    return _EXPECTED.get(type_, f"a {type_} value")


def accepts(type_: str, value: str) -> bool:
    """Whether Tinybird's template function for ``type_`` takes ``value`` (as the text of a URL
    parameter); a type it has no function for takes anything, as the template engine does."""
    array = _ARRAY.fullmatch(type_)
    try:
        if array:
            type_fns["Array"](value, array[1])
        elif type_ in type_fns:
            type_fns[type_](value)
    except SQLTemplateException:
        return False
    return True


def validate_params(pipe: Pipe, values: dict[str, str]) -> dict[str, str]:
    """The values, checked against the pipe's declared types in the pipe's order; unknown names pass through."""
    for param in pipe.params:
        value = values.get(param.name)
        if value is not None and not accepts(param.type, str(value)):
            raise InvalidParam(param.name, value, param.type)
    return values
