"""A pure-Python reading of the endpoints' contracts over an NDJSON file.

Independent of the SQL under test: it parses the file with ``json`` and ``datetime`` and
computes each endpoint's answer as docs/datafiles.md and the API description define it.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

COLUMNS = ["event_id", "event_type", "user_id", "session_id", "timestamp", "platform",
           "app_version", "device_type", "os", "country", "properties"]
FMT = "%Y-%m-%d %H:%M:%S"


def utc_text(value) -> str:
    """The UTC second a timestamp value names, as YYYY-MM-DD HH:MM:SS."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(int(value), timezone.utc)
    else:
        moment = datetime.fromisoformat(str(value))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime(FMT)


def _text(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)


def stored_row(event: dict) -> dict:
    row = {c: _text(event.get(c)) for c in COLUMNS if c not in ("timestamp", "event_id")}
    row["timestamp"] = utc_text(event["timestamp"])
    if "properties" not in event:
        row["properties"] = "{}"
    if "event_id" in event:
        row["event_id"] = event["event_id"]
    else:  # the datasource's DEFAULT: MD5 of the content, NUL-separated
        parts = [row[c] for c in COLUMNS if c != "event_id"]
        row["event_id"] = hashlib.md5("\0".join(parts).encode()).hexdigest()
    return row


def load(path: Path) -> list[dict]:
    """Every event of the file once (by event_id), as stored."""
    events: dict[str, dict] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = stored_row(json.loads(line))
            events.setdefault(row["event_id"], row)
    return list(events.values())


def _in_range(row, start_date=None, end_date=None) -> bool:
    return (start_date is None or row["timestamp"] >= start_date) and (end_date is None or row["timestamp"] <= end_date)


def get_events(rows, event_type=None, user_id=None, platform=None, start_date=None, end_date=None, limit=100, offset=0):
    hits = [
        r for r in rows
        if (event_type is None or r["event_type"] == event_type)
        and (user_id is None or r["user_id"] == user_id)
        and (platform is None or r["platform"] == platform)
        and _in_range(r, start_date, end_date)
    ]
    hits.sort(key=lambda r: r["event_id"])
    hits.sort(key=lambda r: r["timestamp"], reverse=True)
    return hits[int(offset): int(offset) + int(limit)]


def user_activity(rows, user_id, start_date=None, end_date=None):
    mine = [r for r in rows if r["user_id"] == user_id and _in_range(r, start_date, end_date)]
    if not mine:
        return []
    latest: dict[str, str] = {}
    for r in mine:
        latest[r["event_type"]] = max(latest.get(r["event_type"], ""), r["timestamp"])
    by_recency = sorted(latest, key=lambda t: t)  # ties by name ...
    by_recency.sort(key=lambda t: latest[t], reverse=True)  # ... newest first (stable)
    return [{
        "user_id": user_id,
        "event_count": len(mine),
        "session_count": len({r["session_id"] for r in mine if r["session_id"]}),
        "first_seen": min(r["timestamp"] for r in mine),
        "last_seen": max(r["timestamp"] for r in mine),
        "recent_event_types": by_recency[:10],
    }]


def event_stats(rows, start_date=None, end_date=None, platform=None, event_type=None):
    groups = defaultdict(list)
    for r in rows:
        if ((platform is None or r["platform"] == platform) and (event_type is None or r["event_type"] == event_type)
                and _in_range(r, start_date, end_date)):
            groups[r["event_type"]].append(r)
    out = [{
        "event_type": name,
        "event_count": len(group),
        "unique_users": len({r["user_id"] for r in group if r["user_id"]}),
        "session_count": len({r["session_id"] for r in group if r["session_id"]}),
        "first_seen": min(r["timestamp"] for r in group),
        "last_seen": max(r["timestamp"] for r in group),
    } for name, group in groups.items()]
    out.sort(key=lambda r: r["event_type"])
    out.sort(key=lambda r: r["event_count"], reverse=True)
    return out


STEPS = {"minute": 60, "hour": 3600, "day": 86400}
MAX_BUCKETS = 10000


def _epoch(text: str) -> int:
    return int(datetime.strptime(text, FMT).replace(tzinfo=timezone.utc).timestamp())


def event_timeseries(rows, start_date=None, end_date=None, granularity="hour", platform=None, event_type=None):
    """Every bucket of the range (the latest MAX_BUCKETS of it) times every series, zero where empty."""
    step = STEPS[granularity]
    hits = [r for r in rows
            if (platform is None or r["platform"] == platform) and (event_type is None or r["event_type"] == event_type)
            and _in_range(r, start_date, end_date)]
    groups = defaultdict(list)
    for r in hits:
        groups[(_epoch(r["timestamp"]) // step * step, r["event_type"])].append(r)
    seen = sorted(b for b, _ in groups)
    last = _epoch(end_date) // step * step if end_date else (seen[-1] if seen else 0)
    first = _epoch(start_date) // step * step if start_date else (seen[0] if seen else 0)
    first = max(first, last - (MAX_BUCKETS - 1) * step)
    types = [event_type] if event_type is not None else sorted({r["event_type"] for r in hits})
    out = []
    for bucket in range(first, last + 1, step):
        for name in types:
            group = groups.get((bucket, name), [])
            out.append({
                "bucket": datetime.fromtimestamp(bucket, timezone.utc).strftime(FMT),
                "event_type": name,
                "event_count": len(group),
                "unique_users": len({r["user_id"] for r in group if r["user_id"]}),
            })
    return out
