"""A moment as ClickHouse's ``DateTime`` text in UTC (``YYYY-MM-DD HH:MM:SS``): one writing for the
journal, the service logs, the tracker's events and a read's parameters."""

from __future__ import annotations

import datetime as dt
import time

__all__ = ["jsonable", "utc_text"]


def utc_text(at: float | dt.datetime | None = None, millis: bool = False) -> str:
    """Now, seconds since the epoch, or a datetime (a naive one taken as UTC); ``millis`` adds ``.fff``."""
    if isinstance(at, dt.datetime):
        if at.tzinfo is not None:
            at = at.astimezone(dt.timezone.utc).replace(tzinfo=None)
        text = at.strftime("%Y-%m-%d %H:%M:%S")
        return f"{text}.{at.microsecond // 1000:03d}" if millis else text
    at = time.time() if at is None else at
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))
    return f"{text}.{int(at * 1000) % 1000:03d}" if millis else text


def jsonable(value):
    """A datetime as ``utc_text``, a date in ISO: for ``json.dumps(default=...)``."""
    if isinstance(value, dt.datetime):
        return utc_text(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"a {type(value).__name__} is not JSON")
