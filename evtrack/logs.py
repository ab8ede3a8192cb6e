"""``evtrack logs``: the records of Tinybird's service datasources in a terminal, newest last.

The query is the one Tinybird's ``tb logs`` sends (each source's rows as one JSON text, under its
time column), so the same records come from the embedded store, ``evtrack serve`` or Tinybird.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone

from .times import utc_text

__all__ = ["SOURCES", "DEFAULT_SOURCES", "lines", "query", "since_time"]

# Each source, its time column, and the fields shown as (type, resource, result, duration).
SOURCES = {
    "tinybird.datasources_ops_log": ("timestamp", ("event_type", "datasource_name", "result", "elapsed_time")),
    "tinybird.pipe_stats_rt": ("start_datetime", ("method", "pipe_name", "status_code", "duration")),
    "tinybird.jobs_log": ("created_at", ("job_type", None, "status", None)),  # its resource: in job_metadata
}
DEFAULT_SOURCES = tuple(SOURCES)
_RELATIVE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def source_name(text: str) -> str:
    """``jobs_log`` or ``tinybird.jobs_log``: the source's full name; a ValueError naming the known ones."""
    name = text if text.startswith("tinybird.") else f"tinybird.{text}"
    if name not in SOURCES:
        raise ValueError(f"unknown source '{text}': use {', '.join(SOURCES)}")
    return name


def since_time(text: str, now: datetime | None = None) -> str:
    """``30m``, ``1h``, ``2d``, ``1w`` ago, or a date and time (UTC): as ``YYYY-MM-DD HH:MM:SS``.
    A ValueError saying the expected format."""
    now = now or datetime.now(timezone.utc)
    found = _RELATIVE.match(text.strip())
    if found:
        at = now - timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})
    else:
        try:
            at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"'{text}' is neither a duration (30m, 1h, 2d, 1w) nor a date and time "
                             "(YYYY-MM-DD HH:MM:SS, UTC)") from None
        at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
    return utc_text(at)


def query(sources, since: str, limit: int) -> str:
    """The newest ``limit`` records of ``sources`` from ``since`` (UTC), as tb logs asks for them."""
    parts = []
    for name in sources:
        column = SOURCES[name][0]
        parts.append(f"SELECT '{name}' AS source, toDateTime64({column}, 3) AS timestamp, "
                     f"formatRowNoNewline('JSONEachRow', *) AS data FROM {name} "
                     f"WHERE {column} >= parseDateTimeBestEffort('{since}')")
    return (f"SELECT source, toString(timestamp) AS at, data FROM ({' UNION ALL '.join(parts)}) "
            f"ORDER BY timestamp DESC LIMIT {int(limit)} FORMAT JSONEachRow")


def lines(body: bytes) -> list[tuple[str, str, str]]:
    """The records of an answer to ``query``, oldest first: (its time, its line for the terminal, the
    record whole: two records of one second may print alike)."""
    out = []
    for raw in reversed(body.splitlines()):
        if not raw.strip():
            continue
        record = json.loads(raw)
        fields = json.loads(record["data"])
        kind, resource, result, duration = (fields.get(key, "") if key else "" for key in SOURCES[record["source"]][1])
        if "job_metadata" in fields:
            metadata = json.loads(fields["job_metadata"] or "{}")
            resource = metadata.get("pipe_name") or metadata.get("datasource_name", "")
        took = f"{float(duration):.3f}s" if duration not in ("", None) else ""
        error = fields.get("error") if fields.get("error") not in (None, 0, "") else ""
        shown = [record["at"][:19], record["source"].removeprefix("tinybird."), str(kind), str(resource),
                 str(result), took, str(error)]
        out.append((record["at"], "  ".join(value for value in shown if value != ""), record["data"]))
    return out


def follow(run, sources, since: str, limit: int, echo, interval: float = 1.0, stop=None) -> None:
    """Print the records as they come: ``run(sql)`` answers ``query``. Every record once."""
    seen: set[tuple[str, str]] = set()  # the records of the last second printed, read again from ``since``
    while True:
        for at, line, whole in lines(run(query(sources, since, limit))):
            if (at, whole) not in seen:
                seen.add((at, whole))
                echo(line)
                since = max(since, at[:19])
        seen = {(at, whole) for at, whole in seen if at[:19] >= since}
        if stop is not None and stop():
            return
        time.sleep(interval)
