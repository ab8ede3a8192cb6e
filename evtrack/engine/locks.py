"""The locks of a workspace: a deploy runs alone; ingests and copies run side by side.

``deploy`` is taken alone by a deploy (``with locks.deploy``) and shared by every ingest and copy
(``locks.deploy.shared()``), so a deploy never runs beside an insert. Reads and lookups take no
lock: they read the catalog, a value each deploy step replaces (``Snapshot.publish``).

Each datasource has a lock of its own (``datasource``). An insert shares the lock of every
datasource it writes (``ingesting``); a replace copy holds its target's alone for the whole run,
so that no insert lands in the table its exchange throws away (see ``copies``).
"""

from __future__ import annotations

import contextlib

from .catalog import Snapshot
from .deploy.materialized import downstream
from .rwlock import RWLock

__all__ = ["Locks"]


class Locks:
    def __init__(self, snapshot: Snapshot):
        self.deploy = RWLock()
        self._snapshot = snapshot  # its views say which datasources an insert reaches
        self._datasources: dict[str, RWLock] = {}

    def datasource(self, name: str) -> RWLock:
        return self._datasources.setdefault(name, RWLock())

    def reached(self, datasource: str) -> set[str]:
        """``datasource`` and every datasource its rows reach through materialized views."""
        return downstream({datasource}, self._snapshot.views)

    @contextlib.contextmanager
    def ingesting(self, datasource: str, alone: bool = False):
        """Hold, shared, the deploy lock and the lock of every datasource an insert into
        ``datasource`` writes: a replace copy into one of them holds its lock alone, so the insert
        waits for the exchange rather than landing in the table it throws away. Ingests of other
        datasources, and reads, go on beside the copy. ``alone``: hold the datasources' locks alone,
        as an insert does, so that what it wrote is known by block numbers (``ingest.atomic``)."""
        with self.deploy.shared():
            wanted = self.reached(datasource)
        while True:
            held = contextlib.ExitStack()
            for name in sorted(wanted):  # one order for every ingest, so no two wait on each other
                lock = self.datasource(name)
                held.enter_context(lock if alone else lock.shared())
            held.enter_context(self.deploy.shared())  # no deploy adds a view until the insert is done
            reached = self.reached(datasource)
            if reached <= wanted:
                break
            held.close()  # a deploy added a view meanwhile: take its target's lock too, in order
            wanted = reached
        with held:
            yield
