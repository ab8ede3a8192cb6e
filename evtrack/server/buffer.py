"""Coalescing Events API requests into few inserts, as ClickHouse's asynchronous inserts do.

Requests are queued per datasource and flushed together, in one engine statement, when the
queue holds ``flush_bytes`` or when ``flush_interval`` has passed: a thousand single-event
requests a second become a few inserts a second, not a thousand parts.

- ``wait=true``: the answer comes after the flush that stored (or quarantined) the request's rows.
- ``wait=false``: the answer comes when the rows are queued. The queue is bounded
  (``max_pending_bytes``): past it, requests are refused with ``TooManyRequests`` (429) rather than queued
  without limit, so the server never acknowledges more than it can flush. A failed flush keeps
  acknowledged rows queued for the next one; a clean shutdown flushes before the process ends.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from ..engine import AppendResult, Engine
from ..errors import TooManyRequests, Unavailable

__all__ = ["IngestBuffer", "count_lines"]

log = logging.getLogger("evtrack.server")
_NON_BLANK_LINE = re.compile(rb"^[ \t\r\f\v]*[^\s]", re.MULTILINE)


def count_lines(payload: bytes) -> int:
    """Non-blank lines, counted by the regex engine rather than a Python loop."""
    return len(_NON_BLANK_LINE.findall(payload))


@dataclass
class _Queued:
    payload: bytes
    done: asyncio.Future | None  # None: acknowledged already (wait=false)


@dataclass
class IngestBuffer:
    engine: Engine
    # Large enough to gather several bulk requests (up to ~10 MB each) into one insert: each insert
    # pays a fixed cost (query analysis, a new part to merge), so fewer, larger ones go faster.
    flush_bytes: int = 64 * 1024 * 1024
    flush_interval: float = 0.25
    wait_interval: float = 0.05  # how soon a flush follows a request that waits for it (wait=true)
    max_pending_bytes: int = 128 * 1024 * 1024
    flushes: int = 0
    requests: int = 0
    _queues: dict[str, list[_Queued]] = field(default_factory=dict)
    _pending_bytes: int = 0
    _wake: asyncio.Event | None = None
    _task: asyncio.Task | None = None
    _stopping: bool = False

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
        while any(self._queues.values()):
            if not await self.flush():
                log.error("could not flush %d queued bytes at shutdown", self._pending_bytes)
                break

    async def submit(self, datasource: str, payload: bytes, wait: bool) -> AppendResult | None:
        if self._pending_bytes + len(payload) > self.max_pending_bytes:
            raise TooManyRequests(retry_after=max(1, round(self.flush_interval * 4)), limit=self.max_pending_bytes)
        self.requests += 1
        done = asyncio.get_running_loop().create_future() if wait else None
        self._queues.setdefault(datasource, []).append(_Queued(payload, done))
        self._pending_bytes += len(payload)
        if self._wake is not None:
            if self._pending_bytes >= self.flush_bytes:
                self._wake.set()
            elif done is not None:
                asyncio.get_running_loop().call_later(self.wait_interval, self._wake.set)
        return await done if done is not None else None

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Write what is queued, one statement per datasource; False if a write failed."""
        queues, self._queues = self._queues, {}
        ok = True
        for datasource, items in queues.items():
            size = sum(len(item.payload) for item in items)
            waiting = [item for item in items if item.done is not None]
            # Acknowledged requests need no counts of their own: they go as one payload. Each
            # waiting request is a payload of its own, for its own answer.
            queued = b"\n".join(item.payload for item in items if item.done is None)
            payloads = ([queued] if queued else []) + [item.payload for item in waiting]
            try:
                results = await run_in_threadpool(self.engine.append_many, datasource, payloads)
            except Exception:
                log.exception("flush of %d requests to %s failed", len(items), datasource)
                ok = False
                self._requeue(datasource, items)
                continue
            finally:
                self._pending_bytes -= size
            self.flushes += 1
            for item, result in zip(waiting, results[1:] if queued else results):
                if not item.done.done():
                    item.done.set_result(result)
        return ok

    def _requeue(self, datasource: str, items: list[_Queued]) -> None:
        """Acknowledged rows wait for the next flush; waiting callers are told to retry."""
        kept = [item for item in items if item.done is None]
        for item in items:
            if item.done is not None and not item.done.done():
                item.done.set_exception(Unavailable())
        self._queues.setdefault(datasource, [])[:0] = kept
        self._pending_bytes += sum(len(item.payload) for item in kept)
