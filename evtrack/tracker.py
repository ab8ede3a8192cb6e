"""Track events from any Python app: ``Tracker``, a background sender that never blocks the app.

    from evtrack import Tracker

    tracker = Tracker()                       # the target the CLI would use: embedded, evtrack serve, Tinybird
    tracker.track("page_view", user_id="user_abc", properties={"page": "home"})
    tracker.flush()                           # before a serverless function returns
    tracker.close()                           # also at exit, and on leaving `with Tracker() as t:`

``track`` checks its fields against the datasource's columns (each field's column looked up once),
builds the event's JSON line, puts it on a bounded queue and returns: the network is never on the
app's thread, and never raises there. One thread batches the queue (by count, bytes and time, always
under Tinybird's 10 MB request) and sends each batch the way ``evtrack send`` does: through the
Events API with retries on 429, 5xx and lost connections (``Retry``), or, embedded, through the
engine's one ingest statement. A batch the target refuses for good (another 4xx) goes to
``on_error(lines, reason)``. A batch that cannot be delivered now stays at the head of the queue and
is tried again later: while the target is down the queue fills, and then ``on_overflow`` decides
(``drop_new``, ``drop_oldest`` or ``block``), each drop counted and warned about once.

Every event has an ``event_id``, time-ordered (UUID version 7) unless given, so a batch sent again
after an unanswered attempt counts once in the datasource. After ``os.fork()`` the child starts with
an empty queue and a sender of its own; the parent keeps and sends what it had queued.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import datetime as dt
import itertools
import json
import logging
import os
import random
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from .errors import EvtrackError
from .spool import Batch, Spool
from .times import jsonable, utc_text

__all__ = ["AsyncTracker", "Tracker", "uuid7"]

log = logging.getLogger("evtrack.tracker")
OVERFLOW = ("drop_new", "drop_oldest", "block")
MAX_REQUEST = 9_500_000  # under Tinybird's 10 MB per Events API request
# A batch goes once flush_at events wait (or flush_bytes, or flush_interval); when more wait, it takes
# up to this many times flush_at, within flush_bytes: under load, fewer and larger requests.
BACKLOG_BATCH = 10
_LIVE: "weakref.WeakSet[Tracker]" = weakref.WeakSet()


def uuid7() -> str:
    """A UUID version 7 (RFC 9562): the milliseconds since the epoch, then random bits; sorts by time.

    Within a millisecond, the random bits are drawn once and the last 48 count up from a random start
    (the RFC's monotonic method), so ids made in one millisecond by this process are distinct and in
    order, and one costs a counter and a short format rather than a random draw. A forked child
    draws its own."""
    global _id_prefix
    ms = time.time_ns() // 1_000_000
    prefix = _id_prefix
    if prefix[0] != ms:
        bits = random.getrandbits(26)  # not a system call each millisecond; reseeded in a forked child
        prefix = _id_prefix = (ms, f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-{0x7000 | bits >> 14:04x}-"
                                   f"{0x8000 | (bits & 0x3FFF):04x}-")
    return f"{prefix[1]}{next(_id_counter) & 0xFFFFFFFFFFFF:012x}"


def _new_ids() -> None:
    global _id_prefix, _id_counter
    _id_prefix, _id_counter = (0, ""), itertools.count(secrets.randbits(47))


_new_ids()
_encode = json.JSONEncoder(separators=(",", ":"), default=jsonable).encode  # made once, not per event


class Tracker:
    def __init__(self, host: str | None = None, token: str | None = None, data: str | Path | None = None, *,
                 datasource: str = "events", flush_at: int = 500, flush_bytes: int = 1_000_000,
                 flush_interval: float = 1.0, max_queue_size: int = 10_000, on_overflow: str = "drop_new",
                 on_error: Callable[[list[bytes], str], None] | None = None, close_timeout: float = 10.0,
                 spool_dir: str | Path | None = None, max_spool_bytes: int = 1024**3, target=None):
        """``spool_dir``: keep events on disk until acknowledged (see ``evtrack.spool``), and send first
        what an ended process left there. ``target``: an open ``evtrack.targets`` target to send to,
        instead of the one the settings name."""
        if on_overflow not in OVERFLOW:
            raise ValueError(f"on_overflow must be one of {', '.join(OVERFLOW)}, not {on_overflow!r}")
        if spool_dir is not None and on_overflow == "drop_oldest":
            raise ValueError("with a spool_dir, on_overflow is drop_new or block (the oldest events are on disk, "
                             "waiting to be sent)")
        self._owns_target = target is None  # closed with the tracker
        if target is None:
            from .targets import open_for_app

            target = open_for_app(host, token, data)
        self.target, self.datasource = target, datasource
        self.flush_at, self.flush_bytes = flush_at, min(flush_bytes, MAX_REQUEST)
        self.flush_interval, self.max_queue_size = flush_interval, max_queue_size
        self.on_overflow, self.on_error, self.close_timeout = on_overflow, on_error, close_timeout
        self._columns = _columns(target, datasource)
        # Made now, not on the first send: a first send at the interpreter's exit could not import
        # what it needs (no atexit registration is allowed then).
        self._delivery = target.delivery(datasource, _options())
        self._kinds: dict[str, Callable[[object], bool]] = {}  # field -> its value check, made once
        self.spool, self.max_spool_bytes = spool_dir, max_spool_bytes
        self._backlog: _Memory | Spool = Spool(spool_dir) if spool_dir is not None else _Memory()
        self.stats = {"queued": 0, "sent": 0, "retried": 0, "dropped": 0, "quarantined": 0, "failed": 0,
                      "spilled": 0, "recovered": self._backlog.recovered}
        self._start()
        _LIVE.add(self)

    # -- the app's thread ------------------------------------------------------------------------
    def track(self, event_type: str, *, user_id: str | None = None, session_id: str | None = None,
              timestamp: dt.datetime | str | None = None, properties: dict | str | None = None,
              event_id: str | None = None, **fields) -> str:
        """Queue one event; its ``event_id``. Raises only for a field the datasource lacks or a value
        its column cannot hold, naming the field."""
        event = {"event_id": event_id or uuid7(), "event_type": event_type,
                 "timestamp": _timestamp(timestamp)}
        if user_id is not None:
            event["user_id"] = user_id
        if session_id is not None:
            event["session_id"] = session_id
        if properties is not None:
            # Written as the JSON text the column holds: now, or by the sender if a copy of it keeps
            # every value (no value of it can change once this returns).
            if type(properties) is dict and all(type(v) in _IMMUTABLE for v in properties.values()):
                properties = _Properties(properties)
            elif not isinstance(properties, str):
                properties = json.dumps(properties, default=jsonable)
            event["properties"] = properties
        event.update(fields)
        settled = True  # every value immutable: the line may be written later, on the sender's thread
        for name, value in event.items():
            check = self._kinds.get(name) or self._kind(name)
            if not check("{}" if type(value) is _Properties else value):
                raise TypeError(f"field '{name}': a {type(value).__name__} cannot go into the column "
                                f"'{name}' {self._columns[name]}")
            settled = settled and type(value) in _SETTLED
        # The spool needs the line now; the queue in memory takes the event as it is, when no value of
        # it can change after this call returns.
        self._enqueue(event if settled and self.spool is None else _line(event))
        return event["event_id"]

    def flush(self, timeout: float | None = None) -> dict[str, int]:
        """Send what is queued now, without waiting out the batching window; what was delivered of it
        and what is left, when it is all sent or ``timeout`` seconds have passed."""
        with self._lock:
            target = self._enqueued
            self._flush_asked = True
            self._wake.notify_all()
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._done < target and self._thread.is_alive():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._idle.wait(left if left is not None else 0.5)
            return {"delivered": self.stats["sent"], "left": self._backlog.lines}

    def close(self, timeout: float | None = None) -> dict[str, int]:
        """Flush, then stop the sender (``timeout``: at most this long; the Tracker's ``close_timeout`` by default)."""
        result = self.flush(self.close_timeout if timeout is None else timeout)
        with self._lock:
            self._closing = True
            self._wake.notify_all()
        self._thread.join(timeout=5.0)
        _LIVE.discard(self)
        if not self._thread.is_alive():
            self._backlog.close()
            if self._owns_target:
                self.target.close()
        if result["left"]:
            kept = f", kept in {self.spool}" if self.spool is not None else ""
            log.warning("evtrack Tracker closed with %d events not delivered%s", result["left"], kept)
        return result

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- checks, made once per field -------------------------------------------------------------
    def _kind(self, name: str) -> Callable[[object], bool]:
        if self._columns is None:
            return _anything
        if name not in self._columns:
            raise TypeError(f"field '{name}': the datasource '{self.datasource}' has no such column "
                            f"(it has {', '.join(sorted(self._columns))})")
        self._kinds[name] = check = _accepts(self._columns[name])
        return check

    # -- the queue ---------------------------------------------------------------------------------
    def _start(self) -> None:
        self._lock = threading.Lock()
        self._wake, self._idle, self._room = (threading.Condition(self._lock) for _ in range(3))
        self._enqueued, self._done = self._backlog.recovered, 0  # what an ended process left is sent first
        self._flush_asked = self._closing = self._warned = False
        self._thread = threading.Thread(target=self._run, name="evtrack-tracker", daemon=True)
        self._thread.start()

    def _full(self) -> bool:
        if self.spool is not None:
            return self._backlog.bytes >= self.max_spool_bytes
        return self._backlog.lines >= self.max_queue_size

    def _enqueue(self, line: bytes | dict) -> None:
        with self._lock:
            if self._full():
                if self.on_overflow == "block":
                    while self._full() and self._thread.is_alive():
                        self._room.wait(0.5)
                elif self.on_overflow == "drop_oldest" and self._backlog.drop_oldest():
                    self._dropped(queued=True)
                else:
                    self._dropped(queued=False)
                    return
            self._backlog.put(line)
            self._enqueued += 1
            self.stats["queued"] += 1
            self.stats["spilled"] += self.spool is not None
            if self._backlog.lines >= self.flush_at or self._backlog.bytes >= self.flush_bytes:
                self._wake.notify()

    def _dropped(self, queued: bool) -> None:
        """Counted and warned about once; one that was queued is done with, for ``flush``."""
        self.stats["dropped"] += 1
        self._done += queued
        if not self._warned:
            self._warned = True
            limit = (f"spool full ({self.max_spool_bytes} bytes)" if self.spool is not None
                     else f"queue full ({self.max_queue_size} events)")
            log.warning("evtrack Tracker %s: dropping events (%s); see tracker.stats", limit, self.on_overflow)

    # -- the sender's thread -----------------------------------------------------------------------
    def _run(self) -> None:
        """Take a batch, deliver it, and only then take the next: a batch that fails is sent again as
        it was (the same lines and idempotency key) after a backoff."""
        batch, backoff = None, 0.0
        while True:
            with self._lock:
                if batch is None:
                    ready = lambda: (self._closing or self._flush_asked  # noqa: E731
                                     or self._backlog.lines >= self.flush_at or self._backlog.bytes >= self.flush_bytes)
                    if not ready():
                        self._wake.wait_for(ready, timeout=self.flush_interval)
                    batch = self._backlog.take(self.flush_at * BACKLOG_BATCH, self.flush_bytes)
                    if batch is None:
                        self._flush_asked = False
                        self._idle.notify_all()
                        if self._closing:
                            return
                        continue
                elif self._closing:  # closed while the target refused: what is left stays (in the spool, if any)
                    self._idle.notify_all()
                    return
            if batch.payload is None:  # events of the queue in memory, written here, off the app's thread
                rest = batch.seal(self.flush_bytes, _line)
                if rest:
                    with self._lock:
                        self._backlog.put_back(rest)
            if backoff:
                time.sleep(backoff)
            try:
                receipt = self._delivery.deliver(batch.payload, batch.key)
            except EvtrackError as exc:
                if exc.status < 500 and exc.status != 429:  # refused for good: the app hears it
                    self._acked(batch, failed=True)
                    self._report(batch, exc.message)
                    batch = None
                    continue
                backoff = min(max(backoff * 2, 0.2), 5.0)
                continue
            except Exception as exc:  # anything else: kept, and tried again
                log.warning("evtrack Tracker could not send %d events: %s", batch.count, exc)
                backoff = min(max(backoff * 2, 0.2), 5.0)
                continue
            backoff = 0.0
            self.stats["retried"] += receipt.retries
            self.stats["quarantined"] += receipt.quarantined
            self._acked(batch)
            if receipt.quarantined:
                self._report(batch, "; ".join(receipt.reasons) or f"{receipt.quarantined} lines quarantined")
            batch = None

    def _acked(self, batch: Batch, failed: bool = False) -> None:
        with self._lock:
            self._backlog.ack(batch)
            self._done += batch.count
            self.stats["failed" if failed else "sent"] += batch.count
            self._idle.notify_all()
            self._room.notify_all()

    def _report(self, batch: Batch, reason: str) -> None:
        if self.on_error is None:
            log.warning("evtrack Tracker: %d events: %s", batch.count, reason)
            return
        try:
            self.on_error(batch.payload.split(b"\n"), reason)
        except Exception:
            log.exception("evtrack Tracker: on_error raised")

    def _after_fork(self) -> None:
        """In a forked child: a queue (or spool writer), a sender and connections of its own (the
        parent sends what it had queued)."""
        client = getattr(self.target, "client", None)
        if client is not None:
            client.reopen()
        if self.spool is not None:
            self._backlog.after_fork()
        else:
            self._backlog = _Memory()
        self._start()
        for name in self.stats:
            self.stats[name] = 0


class AsyncTracker:
    """``Tracker`` for asyncio apps: ``await tracker.track(...)`` returns without waiting for the network,
    and ``flush``/``close`` wait without holding up the event loop.

    The sender is the ``Tracker``'s own thread (one implementation of batching, retries, the spool and
    idempotency keys), which never runs on the loop. With ``on_overflow="block"``, a full queue is
    waited for off the loop. Made once, at start-up (it reads the datasource's columns).
    """

    def __init__(self, host: str | None = None, token: str | None = None, data: str | Path | None = None,
                 **options):
        self.tracker = Tracker(host, token, data, **options)

    @property
    def stats(self) -> dict[str, int]:
        return self.tracker.stats

    async def track(self, event_type: str, **fields) -> str:
        tracker = self.tracker
        if tracker.on_overflow == "block" and tracker._full():
            return await asyncio.to_thread(tracker.track, event_type, **fields)
        return tracker.track(event_type, **fields)

    async def flush(self, timeout: float | None = None) -> dict[str, int]:
        return await asyncio.to_thread(self.tracker.flush, timeout)

    async def close(self, timeout: float | None = None) -> dict[str, int]:
        return await asyncio.to_thread(self.tracker.close, timeout)

    async def __aenter__(self) -> "AsyncTracker":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


class _Memory:
    """The queue without a spool: events in memory, each counted until its batch is acknowledged. An
    event is kept as its line, or as its dict when none of its values can change, to be written by
    the sender (``Batch.seal``)."""

    recovered = 0

    def __init__(self):
        self._queue: collections.deque[bytes | dict] = collections.deque()
        self.lines = 0  # queued or in flight, not yet acknowledged
        self.bytes = 0  # of the lines written already (an event kept as a dict counts when written)

    def put(self, item: bytes | dict) -> None:
        self._queue.append(item)
        self.lines += 1
        if type(item) is bytes:
            self.bytes += len(item)

    def take(self, max_lines: int, max_bytes: int) -> Batch | None:
        """Up to ``max_lines`` events; ``max_bytes`` is applied when the batch is written (``Batch.seal``)."""
        queue = self._queue
        items = [queue.popleft() for _ in range(min(max_lines, len(queue)))]
        if not items:
            return None
        self.bytes -= sum(len(item) for item in items if type(item) is bytes)
        return Batch(None, len(items), uuid7(), items=items)

    def put_back(self, items: list[bytes]) -> None:
        """Lines a batch could not hold, first in line again."""
        self._queue.extendleft(reversed(items))
        self.bytes += sum(map(len, items))

    def ack(self, batch: Batch) -> None:
        self.lines -= batch.count

    def drop_oldest(self) -> bool:
        if not self._queue:
            return False
        item = self._queue.popleft()
        self.lines -= 1
        if type(item) is bytes:
            self.bytes -= len(item)
        return True

    def close(self) -> None:
        self._queue.clear()


def _options():
    """As ``evtrack send`` sends, but acknowledged once accepted (202: in Tinybird's queue, or in
    ``evtrack serve``'s write-ahead log) rather than once inserted: a batch does not wait for the
    server's next flush, so one thread keeps up with an app."""
    from .sender import SendOptions

    return SendOptions(wait=False)


def _columns(target, datasource: str) -> dict[str, str] | None:
    """The datasource's columns and their types: from the target (the store, or the host's API); when
    the host cannot be reached, or the token may only append (it cannot read the datasource's
    schema), from the datafile in the working directory's project; else None (the fields go
    unchecked, with a warning: an app starts while its analytics host is down)."""
    engine = getattr(target, "engine", None)
    if engine is not None:
        return {c.name: c.sql_type for c in engine.datasource(datasource).columns}
    try:
        described = target.client.datasource(datasource)
    except EvtrackError as exc:
        if exc.status < 500 and exc.status not in (401, 403):  # 403: an append-only token, as apps carry
            raise
        from .project import load_project

        try:
            return {c.name: c.sql_type for c in load_project(Path.cwd()).datasources[datasource].columns}
        except Exception:
            log.warning("evtrack Tracker: %s, and no datafile of '%s' here: fields are not checked", exc.message,
                        datasource)
            return None
    return {c["name"]: (f"Nullable({c['type']})" if c.get("nullable") and not c["type"].startswith("Nullable(")
                        else c["type"]) for c in described.get("columns", [])}


def _accepts(type_: str) -> Callable[[object], bool]:
    """A check of a Python value against a column type, made once per field."""
    nullable = type_.startswith("Nullable(") or type_.replace(" ", "").startswith("LowCardinality(Nullable(")
    base = type_
    for wrapper in ("LowCardinality(", "Nullable("):
        if base.startswith(wrapper):
            base = base[len(wrapper):-1]
    if base.startswith(("Int", "UInt")):
        kinds: tuple = (int,)
    elif base.startswith(("Float", "Decimal")):
        kinds = (int, float)
    elif base in ("Bool", "Boolean"):
        kinds = (bool,)
    elif base.startswith(("Array(", "Tuple(")):
        kinds = (list, tuple)
    elif base.startswith("Map("):
        kinds = (dict,)
    elif base.startswith(("Date", "DateTime")):
        kinds = (str, dt.datetime, dt.date)
    elif base.startswith("JSON"):
        kinds = (dict, str)
    else:  # String, FixedString, UUID, Enum, IPv4, IPv6
        kinds = (str,)
    rejects_bool = bool not in kinds

    def check(value) -> bool:
        if value is None:
            return nullable
        return isinstance(value, kinds) and not (rejects_bool and isinstance(value, bool))

    return check


def _anything(value) -> bool:
    return True


def _timestamp(value) -> str:
    """The event's time as text: now (written once a second), a datetime in UTC, or the text given."""
    global _now
    if value is None:
        second = int(time.time())
        if _now[0] != second:
            _now = (second, utc_text(second))
        return _now[1]
    return value if isinstance(value, str) else utc_text(value)


_now = (0, "")


class _Properties(dict):
    """A copy of an event's properties, written as JSON text with the event (and checked as such)."""


_IMMUTABLE = frozenset((str, int, float, bool, type(None), dt.datetime, dt.date))
_SETTLED = _IMMUTABLE | {_Properties}


def _line(event: dict) -> bytes:
    properties = event.get("properties")
    if type(properties) is _Properties:
        event["properties"] = json.dumps(properties, default=jsonable)
    return _encode(event).encode() + b"\n"


def _close_all() -> None:
    for tracker in list(_LIVE):
        try:
            tracker.close()
        except Exception:
            log.exception("evtrack Tracker: closing at exit failed")


def _reset_after_fork() -> None:
    _new_ids()
    for tracker in list(_LIVE):
        tracker._after_fork()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
