"""Client-side validation of pipe parameters, from the types the pipe itself declares.

Each parameter the pipe declares in its templates is checked with Tinybird's own type testers (``tinybird.datatypes.testers``, the rule the template engine
applies on the server), and DateTime and Date values must also name a real calendar time, so a
bad value is refused before any query runs, with the parameter's name and the expected format.
"""

from __future__ import annotations

from datetime import datetime

from tinybird.datatypes import testers

from .project import Pipe

__all__ = ["InvalidParam", "expected_format", "validate_params"]

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


def _calendar_check(type_: str):
    def check(value: str) -> str:
        text = value[:19].replace("T", " ")
        try:
            datetime.strptime(text, "%Y-%m-%d" if type_ == "Date" else "%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise ValueError(type_) from None
        return value

    return check


def _checker(type_: str):
    tester = testers.get(type_)
    calendar = _calendar_check(type_) if type_ in ("Date", "DateTime", "DateTime64") else None

    def check(value: str | None) -> str | None:
        if value is None:
            return None
        if tester is not None and not tester(str(value)):
            raise ValueError(type_)
        return calendar(value) if calendar else value

    return check


def validate_params(pipe: Pipe, values: dict[str, str]) -> dict[str, str]:
    """The values, checked against the pipe's declared types in the pipe's order; unknown names pass through.

    A few values per call: a loop, not a validation model, whose import alone (pydantic, about
    0.1 s) would be a sixth of a CLI call.
    """
    for param in pipe.params:
        if param.name in values:
            try:
                _checker(param.type)(values[param.name])
            except ValueError:
                raise InvalidParam(param.name, values[param.name], param.type) from None
    return values
