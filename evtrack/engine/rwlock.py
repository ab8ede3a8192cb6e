"""A readers-writer lock: reads and ingests run side by side, a deploy runs alone.

Writers are preferred (a deploy waiting stops new readers from starting) so that a stream of
queries cannot starve it. Both sides are reentrant in one thread, and a thread that holds the
write side may also take the read side (a deploy checks its pipes with queries).
"""

from __future__ import annotations

import contextlib
import threading

__all__ = ["RWLock"]


class RWLock:
    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers: dict[int, int] = {}  # thread id -> how many times it holds the read side
        self._writer: int | None = None
        self._writer_depth = 0
        self._writers_waiting = 0

    @contextlib.contextmanager
    def shared(self):
        me = threading.get_ident()
        with self._cond:
            # A thread already inside (as reader or writer) goes on: waiting would deadlock it.
            if self._writer != me and me not in self._readers:
                self._cond.wait_for(lambda: self._writer is None and not self._writers_waiting)
            self._readers[me] = self._readers.get(me, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                self._readers[me] -= 1
                if not self._readers[me]:
                    del self._readers[me]
                    self._cond.notify_all()

    def __enter__(self):
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._writer_depth += 1
                return self
            if me in self._readers:
                raise RuntimeError("a reader cannot become the writer: it would wait for itself")
            self._writers_waiting += 1
            try:
                self._cond.wait_for(lambda: self._writer is None and not self._readers)
            finally:
                self._writers_waiting -= 1
            self._writer, self._writer_depth = me, 1
        return self

    def __exit__(self, *exc):
        with self._cond:
            self._writer_depth -= 1
            if not self._writer_depth:
                self._writer = None
                self._cond.notify_all()
