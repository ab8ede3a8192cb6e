"""Coalescing Events API requests into few inserts, as ClickHouse's asynchronous inserts do.

Requests are queued per datasource and flushed together, in one engine statement: at once when
no flush runs, else right after the one under way (and at least ``flush_gap`` after it began),
with everything that came meanwhile. A trickle of events is visible within one insert, and a
thousand single-event requests a second become a few inserts a second, not a thousand parts.

- ``wait=true``: the answer comes after the flush that stored (or quarantined) the request's rows.
- ``wait=false``: the answer comes when the rows are queued and written to the store's write-ahead
  log (``evtrack.engine.ingest.wal``), synced to disk: an acknowledged row survives ``kill -9`` or an
  out-of-memory kill, and is inserted when the store is next opened. Syncs are grouped: the
  requests that arrive while one ``fsync`` runs share the next. The queue is bounded
  (``max_pending_bytes``): past it, requests are refused with ``TooManyRequests`` (429) rather than queued
  without limit, so the server never acknowledges more than it can flush. A failed flush keeps
  acknowledged rows queued for the next one; a clean shutdown flushes before the process ends.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from dataclasses import dataclass, field

from ..engine import AppendResult, Engine
from ..engine.ingest.statement import count_lines
from ..engine.ingest.wal import import_id
from ..errors import StoreFull, TooManyRequests, Unavailable
from .calls import call

__all__ = ["IngestBuffer", "buffer_of", "count_lines"]

log = logging.getLogger("evtrack.server")


@dataclass
class _Queued:
    payload: bytes
    done: asyncio.Future | None  # None: acknowledged already (wait=false)


@dataclass
class _Logged:
    """Acknowledged rows of one log segment and datasource, to insert (again, until it succeeds)."""

    segment: str
    datasource: str
    payload: bytes


class _GroupSync:
    """One fsync at a time per log file; the writes made while it runs wait for the next one."""

    def __init__(self, sync, fd: int):
        self._sync, self._fd = sync, fd
        self._next: asyncio.Future | None = None
        self._runner: asyncio.Task | None = None

    async def wait(self) -> None:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        covering = self._next
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        await asyncio.shield(covering)

    async def _run(self) -> None:
        while self._next is not None:
            covering, self._next = self._next, None
            try:
                await call(self._sync, self._fd)
            except Exception as exc:
                covering.set_exception(exc)
            else:
                covering.set_result(None)

    async def idle(self) -> None:
        """Returns once no sync of this file runs or waits (it may then be closed)."""
        while self._runner is not None and not self._runner.done():
            await asyncio.shield(self._runner)


@dataclass
class IngestBuffer:
    engine: Engine
    # Large enough to gather several bulk requests (up to ~10 MB each) into one insert: each insert
    # pays a fixed cost (query analysis, a new part to merge), so fewer, larger ones go faster.
    flush_bytes: int = 64 * 1024 * 1024
    flush_interval: float = 0.25  # at the latest, for a flush to try again what failed
    # Rows are flushed as soon as they come, but flushes start at least this far apart: a trickle is
    # visible within one insert, and under load each flush takes what came meanwhile. Measured at 2M
    # events and 2,000 events/s (bench/live.py): 50 and 100 ms showed events no sooner and slowed reads.
    flush_gap: float = 0.25
    max_pending_bytes: int = 128 * 1024 * 1024
    flushes: int = 0
    requests: int = 0
    _queues: dict[str, list[_Queued]] = field(default_factory=dict)
    _pending_bytes: int = 0
    _wake: asyncio.Event | None = None
    _task: asyncio.Task | None = None
    _stopping: bool = False
    _syncs: dict[int, _GroupSync] = field(default_factory=dict)
    _logged: list[_Logged] = field(default_factory=list)  # acknowledged, not yet committed
    _segments: set[str] = field(default_factory=set)  # log segments with rows not yet committed
    _last_flush: float = float("-inf")
    _flushes_started: int = 0
    _flushes_ended: int = 0

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Flush everything queued, then stop."""
        if self._task is not None:
            # Not cancelled: a flush under way runs to its end (its insert cannot be taken back).
            self._stopping = True
            self._wake.set()
            await self._task
        while any(self._queues.values()) or self._logged:
            if not await self.flush():
                log.error("could not flush %d queued bytes at shutdown", self._pending_bytes)
                break

    async def drain(self, timeout: float = 60) -> None:
        """Returns once everything acknowledged before the call is inserted (a deletion waits for it,
        so that no row acknowledged before it comes in after it)."""
        loop = asyncio.get_running_loop()
        deadline, after = loop.time() + timeout, self._flushes_started  # a flush started later takes them all
        while self._flushes_ended <= after or self._logged:
            if loop.time() > deadline:
                raise Unavailable()
            if self._wake is not None:
                self._wake.set()
            await asyncio.sleep(0.005)

    async def submit(self, datasource: str, payload: bytes, wait: bool, key: str | None = None) -> AppendResult | None:
        """``key``: the request's ``Idempotency-Key``; with ``wait=false``, a key the log has already is
        acknowledged again once its record is synced, and its rows are not queued twice."""
        if key and not wait:
            seen, fd = self.engine.wal.seen(key)
            if seen:
                if fd is not None:
                    await self._sync(fd)
                return None
        if self._pending_bytes + len(payload) > self.max_pending_bytes:
            raise TooManyRequests(retry_after=max(1, round(self.flush_interval * 4)), limit=self.max_pending_bytes)
        self.requests += 1
        done = asyncio.get_running_loop().create_future() if wait else None
        # The log record and the queue entry are made in one step of the event loop, so that the
        # segment a flush takes (see flush) holds exactly the acknowledged rows of its queue.
        try:
            fd = self.engine.wal.write(datasource, payload, key) if done is None else None
        except OSError as exc:  # not logged, so not acknowledged: refused whole, queued nowhere
            log.error("the write-ahead log refused %d bytes for %s: %s", len(payload), datasource, exc)
            raise Unavailable("the write-ahead log could not be written: "
                              + ("no space left on the store's disk. Free space, then send it again"
                                 if exc.errno == errno.ENOSPC else exc.strerror)) from None
        self._queues.setdefault(datasource, []).append(_Queued(payload, done))
        self._pending_bytes += len(payload)
        if self._wake is not None:
            # Every request starts a flush at once, or, while one runs, the next right after it (and
            # at least flush_gap after the last one began), with every request that arrived meanwhile:
            # a group commit. One request alone waits for one insert (wait=true) or shows after one
            # (wait=false); under load the inserts grow instead of queueing.
            self._wake.set()
        if done is not None:
            return await done
        await self._sync(fd)
        return None

    async def _sync(self, fd: int) -> None:
        group = self._syncs.get(fd)
        if group is None:
            group = self._syncs[fd] = _GroupSync(self.engine.wal.sync, fd)
        await group.wait()

    async def _drop_segment(self, segment: str | None) -> None:
        """The segment's rows are committed: delete it once no sync of it is under way."""
        if segment is None:
            return
        fd = self.engine.wal.fd(segment)
        group = self._syncs.pop(fd, None) if fd is not None else None
        if group is not None:
            await group.idle()
        self.engine.wal.drop(segment)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval)
            except asyncio.TimeoutError:
                pass
            loop = asyncio.get_running_loop()
            early = self._last_flush + self.flush_gap - loop.time()
            if early > 0 and not self._stopping and self._pending_bytes < self.flush_bytes:
                await asyncio.sleep(early)
            self._wake.clear()
            self._last_flush = loop.time()
            await self.flush()

    async def flush(self) -> bool:
        """Write what is queued; False if a write failed.

        Acknowledged rows go in first, one statement per datasource and log segment, under the
        import id a replay of that segment would use and as an idempotent insert: a failed one is
        tried again at the next flush with the same bytes and id, so neither a retry nor a replay
        after a crash in its middle writes a row twice. Its segment is deleted once every insert of
        it is committed. Waiting requests (wait=true) then go in one statement per datasource, each
        a payload of its own for its own answer; if that fails they are told to retry.
        """
        self._flushes_started += 1
        try:
            return await self._flush()
        finally:
            self._flushes_ended += 1

    async def _flush(self) -> bool:
        queues, self._queues = self._queues, {}
        segment = self.engine.wal.rotate()  # the same step as the swap: the segment holds this queue's rows
        for datasource, items in queues.items():
            acknowledged = [item.payload for item in items if item.done is None]
            if acknowledged:  # joined as a replay joins the segment's records (Engine.replay_log)
                self._logged.append(_Logged(segment, datasource, b"\n".join(acknowledged)))
        ok = True
        for entry in list(self._logged):
            ident = import_id(entry.segment, entry.datasource)
            try:
                await call(self.engine.append_many, entry.datasource, [entry.payload], [ident], True, True,
                           operation="append-hfi")
            except StoreFull as exc:  # expected until space comes back: one line each time, no traceback
                log.error("flush of %d acknowledged bytes to %s refused, kept for the next: %s", len(entry.payload),
                          entry.datasource, exc.message)
                ok = False
                continue
            except Exception:
                log.exception("flush of %d acknowledged bytes to %s failed; kept for the next", len(entry.payload),
                              entry.datasource)
                ok = False
                continue
            self._logged.remove(entry)
            self._pending_bytes -= len(entry.payload)
            self.flushes += 1
        for datasource, items in queues.items():
            ok = await self._flush_waiting(datasource, [item for item in items if item.done is not None]) and ok
        unsettled = {entry.segment for entry in self._logged}
        for done in [s for s in self._segments | {segment} if s is not None and s not in unsettled]:
            self._segments.discard(done)
            await self._drop_segment(done)
        self._segments |= unsettled
        return ok

    async def _flush_waiting(self, datasource: str, waiting: list[_Queued]) -> bool:
        if not waiting:
            return True
        try:
            results = await call(self.engine.append_many, datasource, [item.payload for item in waiting],
                                 operation="append-hfi")
        except Exception as exc:
            if isinstance(exc, StoreFull):
                log.error("flush of %d waiting requests to %s refused: %s", len(waiting), datasource, exc.message)
            else:
                log.exception("flush of %d waiting requests to %s failed", len(waiting), datasource)
            reason = exc.message if isinstance(exc, StoreFull) else None
            for item in waiting:
                if not item.done.done():
                    item.done.set_exception(Unavailable(reason))
            return False
        finally:
            self._pending_bytes -= sum(len(item.payload) for item in waiting)
        self.flushes += 1
        for item, result in zip(waiting, results):
            if not item.done.done():
                item.done.set_result(result)
        return True


async def buffer_of(app, workspace) -> IngestBuffer:
    """The ingest buffer of ``workspace``, whose log it writes: the default workspace's is made with
    the app, another's on its first append (and stopped, flushing, with the app)."""
    buffers = app.state.buffers
    buffer = buffers.get(workspace.id)
    if buffer is None:
        buffer = buffers[workspace.id] = IngestBuffer(workspace)
        await buffer.start()
    return buffer
