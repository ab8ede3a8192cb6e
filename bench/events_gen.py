"""Generated event sets for bench/scale.py, as numpy columns, and their NDJSON.

Realistic: sessions of 5 to 50 events by one user within 30 minutes; users drawn with power-law
activity (weight of the user of rank r proportional to 1 / (r + 20)); 20 event types with Zipf
weights; one platform, OS and device per session, a country per user; session starts uniform over
2024. Uniform: every field of every event drawn independently and uniformly (user, type, time,
session), the worst case for rollups. Either way about 1% of lines are exact resends of an
earlier line, placed later in the file.

The columns of the original events (without the resends) are what the bench checks answers
against: each event once, by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["EVENT_TYPES", "Events", "generate", "write_ndjson"]

EVENT_TYPES = np.array(sorted([
    "page_view", "click", "scroll", "search", "add_to_cart", "remove_from_cart", "checkout_start",
    "purchase", "signup", "login", "logout", "share", "video_play", "video_pause", "form_submit",
    "error", "app_open", "app_close", "push_open", "rate_app"]))
PLATFORMS = np.array(["mobile", "web"])
OSES = np.array(["Android", "iOS", "Linux", "Windows", "macOS"])
DEVICES = np.array(["desktop", "mobile", "tablet"])
COUNTRIES = np.array(["BR", "DE", "ES", "FR", "GB", "IN", "JP", "MX", "US"])
VERSIONS = np.array(["1.0.0", "1.1.0", "1.2.0", "1.2.3", "2.0.0"])
YEAR_START = 1704067200  # 2024-01-01 00:00:00 UTC
YEAR = 366 * 86400
SESSION_SECONDS = 1800


@dataclass
class Events:
    """One row per original event; ``order`` lists the file's lines as indices (resends repeat one)."""

    event_id: np.ndarray  # int64: the id is f"e{id:010d}", so its text sorts as the number
    event_type: np.ndarray  # int16 index into EVENT_TYPES
    user: np.ndarray  # int32: user_id is f"u{user:07d}"
    session: np.ndarray  # int64: session_id is f"s{session:09d}"
    timestamp: np.ndarray  # int64 epoch seconds, UTC
    platform: np.ndarray  # int8 index into PLATFORMS
    os: np.ndarray
    device: np.ndarray
    country: np.ndarray
    version: np.ndarray
    order: np.ndarray

    def __len__(self) -> int:
        return len(self.event_id)


def generate(lines: int, shape: str = "realistic", seed: int = 11, start: int = YEAR_START, span: int = YEAR) -> Events:
    """``lines`` lines (about 1% resends) with times in [start, start + span), epoch seconds."""
    rng = np.random.default_rng(seed)
    originals = int(round(lines / 1.01))
    users = max(1000, originals // 50)
    if shape == "realistic":
        events = _sessions(rng, originals, users, start, span)
    elif shape == "uniform":
        events = _uniform(rng, originals, users, start, span)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    resends = lines - originals
    again = rng.integers(0, originals, resends)
    # A resend arrives after its original, up to 100,000 lines later.
    position = np.concatenate([np.arange(originals), again + rng.integers(1, 100_000, resends)])
    events.order = np.concatenate([np.arange(originals), again])[np.argsort(position, kind="stable")]
    return events


def _type_weights() -> np.ndarray:
    weights = 1.0 / np.arange(1, len(EVENT_TYPES) + 1)
    return weights / weights.sum()


def _sessions(rng, count: int, users: int, begin: int, span: int) -> Events:
    lengths = rng.integers(5, 51, count // 5 + 1)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), count) + 1]
    lengths[-1] -= lengths.sum() - count
    sessions = len(lengths)
    weights = 1.0 / (np.arange(users) + 20.0)
    session_user = rng.choice(users, sessions, p=weights / weights.sum()).astype(np.int32)
    start = rng.integers(begin, begin + span - SESSION_SECONDS, sessions)
    session = np.repeat(np.arange(sessions), lengths)
    offset = rng.integers(0, SESSION_SECONDS, count)
    user_country = rng.integers(0, len(COUNTRIES), users)
    platform = rng.integers(0, 2, sessions)
    events = Events(
        event_id=np.arange(count, dtype=np.int64),
        event_type=rng.choice(len(EVENT_TYPES), count, p=_type_weights()).astype(np.int16),
        user=session_user[session],
        session=session.astype(np.int64),
        timestamp=start[session] + offset,
        platform=platform[session].astype(np.int8),
        os=rng.integers(0, len(OSES), sessions)[session].astype(np.int8),
        device=rng.integers(0, len(DEVICES), sessions)[session].astype(np.int8),
        country=user_country[session_user[session]].astype(np.int8),
        version=rng.integers(0, len(VERSIONS), sessions)[session].astype(np.int8),
        order=np.empty(0, dtype=np.int64),
    )
    return events


def _uniform(rng, count: int, users: int, begin: int, span: int) -> Events:
    def pick(n):
        return rng.integers(0, n, count)

    return Events(
        event_id=np.arange(count, dtype=np.int64),
        event_type=pick(len(EVENT_TYPES)).astype(np.int16),
        user=pick(users).astype(np.int32),
        session=pick(max(1, count // 27)).astype(np.int64),
        timestamp=rng.integers(begin, begin + span, count),
        platform=pick(2).astype(np.int8),
        os=pick(len(OSES)).astype(np.int8),
        device=pick(len(DEVICES)).astype(np.int8),
        country=pick(len(COUNTRIES)).astype(np.int8),
        version=pick(len(VERSIONS)).astype(np.int8),
        order=np.empty(0, dtype=np.int64),
    )


def write_ndjson(events: Events, path: Path, session, lines: slice = slice(None)) -> None:
    """The file's lines, in ``events.order`` (``lines`` of them: a chunk of a larger set), written
    by chDB from the columns (numbers in, JSON text out)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    o = events.order[lines]
    table = pa.table({
        "id": events.event_id[o], "type": events.event_type[o], "user": events.user[o],
        "session": events.session[o], "ts": events.timestamp[o], "platform": events.platform[o],
        "os": events.os[o], "device": events.device[o], "country": events.country[o], "version": events.version[o],
        "n": np.arange(len(o), dtype=np.int64),
    })
    columns = path.with_suffix(".parquet")
    pq.write_table(table, columns)

    def lookup(names, column):
        return "[" + ", ".join(f"'{v}'" for v in names) + f"][{column} + 1]"

    session.query(f"""
        SELECT
            concat('e', leftPad(toString(id), 10, '0')) AS event_id,
            {lookup(EVENT_TYPES, 'type')} AS event_type,
            concat('u', leftPad(toString(user), 7, '0')) AS user_id,
            concat('s', leftPad(toString(session), 9, '0')) AS session_id,
            formatDateTime(toDateTime(ts, 'UTC'), '%Y-%m-%d %H:%i:%S', 'UTC') AS timestamp,
            {lookup(PLATFORMS, 'platform')} AS platform,
            {lookup(VERSIONS, 'version')} AS app_version,
            {lookup(DEVICES, 'device')} AS device_type,
            {lookup(OSES, 'os')} AS os,
            {lookup(COUNTRIES, 'country')} AS country,
            concat('{{"screen":"s', toString(id % 37), '","value":', toString(id % 1000), '}}') AS properties
        FROM file('{columns}', 'Parquet')
        ORDER BY n
        INTO OUTFILE '{path}' TRUNCATE
        FORMAT JSONEachRow
        SETTINGS output_format_parallel_formatting = 1""")
    columns.unlink()
