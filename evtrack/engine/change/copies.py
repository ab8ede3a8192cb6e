"""Copy pipes (``TYPE COPY``): a node's result written into its ``TARGET_DATASOURCE`` when asked or on a schedule.

``Copies`` runs a workspace's copy pipes and drops what runs of a killed process left;
``CopyScheduler`` runs the scheduled ones.

A run renders the copy node with the run's parameters (template defaults fill in the rest, as
Tinybird does for scheduled runs), writes the whole result into a staging table shaped as the
target (``CREATE TABLE ... AS target``), counts it, and only then touches the target:

- ``COPY_MODE append`` (the default): ``INSERT INTO target SELECT * FROM staging``. The insert goes
  to the target's table, so materialized pipes that read the target fire, as every insert does;
  like every append, it is kept whole or taken back whole (``ingest.atomic``).
- ``COPY_MODE replace``: ``EXCHANGE TABLES staging AND target``. Readers see the old rows until
  the new ones are all written, never an empty target. Materialized pipes that read the target
  are then rebuilt from it (their targets emptied and backfilled), as the swapped-in rows went
  through no view.

A run that fails (a template error, a query error, a ``throwIf``) leaves the target as it was:
only the staging table, dropped at the end, saw anything. A process killed mid-run leaves its
staging table behind; ``Copies.drop_interrupted`` drops those when the store opens.

A run holds its target's ingest lock alone (see ``Locks.ingesting``): an insert reaching
the target while it runs would land in the table the exchange throws away, so it waits instead.

``CopyScheduler`` runs the copies with a ``COPY_SCHEDULE`` cron expression in a background thread
of ``evtrack serve``: one run at a time per pipe, errors logged, its clock injectable.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from typing import Callable

from ...errors import BadRequest, EvtrackError, TemplateError
from ...project import COPY_MODES, ON_DEMAND, Node, Pipe
from ...times import utc_text
from ..catalog import Snapshot
from ..ingest.appends import Ingest
from ..journal import BUILDING, Changes, mark
from ..locks import Locks
from ..deploy.materialized import backfill_sql, output_columns
from ..sql.pipes import pipe_reader, pipe_sql
from ..deploy.views import Views

__all__ = ["Copies", "staging_name", "leftover_staging", "CopyScheduler", "schedule_of"]

log = logging.getLogger("evtrack.copies")


# A copy run's staging table, a --force rebuild's (``schema``), a replace's (``lifecycle``): a killed process leaves them.
_STAGING = re.compile(r".+__(copy|rebuild|replace)_[0-9a-f]{8}(_quarantine|__ingest|__imports|__store|__quarantine|__count)?")


def staging_name(target: str) -> str:
    return f"{target}__copy_{uuid.uuid4().hex[:8]}"


def leftover_staging(tables: list[str], datasources) -> list[str]:
    """The staging tables among ``tables``: named as ``staging_name`` names them, and not a datasource so named."""
    return [table for table in tables if _STAGING.fullmatch(table) and table not in datasources]


class Copies:
    """The copy runs of one workspace: one at a time per pipe, any number side by side."""

    def __init__(self, store, database: str, snapshot: Snapshot, locks: Locks, views: Views, changes: Changes,
                 ingest: Ingest):
        self.store, self.database, self.snapshot, self.locks, self.views = store, database, snapshot, locks, views
        self.changes = changes  # a run in replace mode is a replace (``lifecycle``), journaled as one
        self.atomic = ingest.atomic  # a run in append mode is an append: whole, or not at all
        self._runs: dict[str, threading.Lock] = {}  # pipe -> held while it runs

    def drop_interrupted(self) -> None:
        """Drop the staging tables that copy runs of a killed process left. The engine opens the
        store once per process, before any run: none of them can be one of this process's."""
        names = self.store.run(f"SELECT name FROM system.tables WHERE database = '{self.database}'", "TSV")
        for table in leftover_staging(names.decode().splitlines(), self.snapshot.draft["datasources"]):
            # SYNC: the rows go now, not minutes later in a process that may not live that long.
            self.store.execute(f"DROP TABLE IF EXISTS {self.database}.`{table}` SYNC")

    def run_copy(self, name: str, params: dict[str, str], mode: str | None = None) -> int:
        """Run the copy pipe ``name`` once with ``params`` (its COPY_MODE unless ``mode``); the rows copied.
        ``job_timestamp`` is the time now (UTC) unless given."""
        node, params, mode = self._request(name, params, mode)
        with self.locks.deploy.shared():
            rebuilds = [v["target"] for v in self.snapshot.views.values() if node.datasource in v["reads"]]
            run = self._runs.setdefault(name, threading.Lock())
        # A replace holds its target's ingest lock alone for the whole run, so that no insert lands in
        # the table the exchange throws away; an append is one more ingest.
        locks = self.locks
        writing = (locks.datasource(node.datasource) if mode == "replace"
                   else locks.ingesting(node.datasource, alone=True))
        # Replacing a target that materialized pipes read rebuilds their targets too: alone, as a deploy.
        with run, writing, (locks.deploy if mode == "replace" and rebuilds else locks.deploy.shared()):
            catalog = self.snapshot.catalog  # as deployed now: a deploy may have come in between
            pipe = catalog.pipe(name)
            if pipe.copy is None:
                raise BadRequest(f"The pipe '{name}' is no longer a copy pipe")
            if pipe.copy.datasource != node.datasource:  # the locks taken are the old target's
                raise BadRequest(f"The pipe '{name}' now copies into '{pipe.copy.datasource}': run it again")
            sql = pipe_sql(pipe, params, catalog.tables(), self.database, node=pipe.copy, pipes=pipe_reader(pipe, catalog.pipes))
            return self._write(pipe.copy.datasource, sql, mode, rebuilds)

    def _request(self, name: str, params: dict[str, str], mode: str | None) -> tuple[Node, dict[str, str], str]:
        """The copy node of the pipe ``name``, the run's parameters and its mode, checked."""
        from ...params import InvalidParam, validate_params

        pipe = self.snapshot.catalog.pipe(name)
        node = pipe.copy
        if node is None:
            raise BadRequest(f"The pipe '{name}' is not a copy pipe (it has no TYPE COPY node)")
        # Tinybird's job_timestamp: when the job was received, unless the caller (or a schedule) says.
        params = {"job_timestamp": utc_text(), **params}
        try:
            validate_params(pipe, params)
        except InvalidParam as exc:
            raise TemplateError(f"Invalid value of parameter '{exc.name}': {exc}") from None
        mode = (mode or node.copy_mode or "append").lower()
        if mode not in COPY_MODES:
            raise BadRequest(f"Invalid copy mode '{mode}': use append or replace")
        return node, params, mode

    def _write(self, target: str, sql: str, mode: str, rebuilds: list[str]) -> int:
        """Write the result of ``sql`` into a staging table, then append it to ``target`` or, in
        replace mode, swap it in as a journaled replace (the swap, then the rebuilds)."""
        db, staging = self.database, staging_name(target)
        record = (self.changes.begin("replace", BUILDING, live=target, staging=staging, rebuild=rebuilds)
                  if mode == "replace" else None)
        self.store.execute(f"CREATE TABLE {db}.`{staging}` AS {db}.`{target}`")
        try:
            columns = [column for column, _ in output_columns(self.store, sql)]
            rows = self.store.execute(backfill_sql(staging, sql, columns, db))
            if record is None:
                with self.atomic.writing(self.atomic.tables(target)):
                    self.store.execute(f"INSERT INTO {db}.`{target}` SELECT * FROM {db}.`{staging}`")
            else:
                mark(self.store, db, staging, record["id"])
        except BaseException:
            if record is not None:
                self.changes.abandon(record)
            raise
        finally:
            if record is None:
                self.store.execute(f"DROP TABLE IF EXISTS {db}.`{staging}`")
        if record is not None:
            self.changes.advance(record)
            self.changes.finish(record)
        return rows


def schedule_of(pipe: Pipe) -> str | None:
    """The pipe's cron expression, or None for a pipe that runs only when asked."""
    node = pipe.copy
    if node is None or not node.copy_schedule or node.copy_schedule == ON_DEMAND:
        return None
    return node.copy_schedule


class CopyScheduler:
    """Fires each scheduled copy pipe of ``engine`` when its cron expression comes due.

    ``clock()`` is the time now (seconds since the epoch, UTC); ``tick(now)`` starts the runs due at
    ``now``. ``start()`` ticks in a thread at least every ``interval`` seconds until ``stop()``.
    A run still going when its next time comes is not started twice: that time is skipped. A run's
    ``job_timestamp`` parameter is the time it was due (UTC), as Tinybird's is the time the job was received.
    """

    def __init__(self, engine, clock: Callable[[], float] = time.time, interval: float = 0.5):
        self.engine, self.clock, self.interval = engine, clock, interval
        self._next: dict[str, tuple[str, float]] = {}  # pipe -> (its cron expression, next time due)
        self._running: dict[str, threading.Thread] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs: dict[str, int] = {}  # pipe -> runs finished (done or failed), for `evtrack serve`'s log

    def tick(self, now: float) -> list[str]:
        """Start the runs due at ``now``; the pipes started."""
        from croniter import croniter

        started = []
        scheduled = {}
        for name in self.engine.pipe_names():
            try:
                cron = schedule_of(self.engine.pipe(name))
            except EvtrackError:  # dropped meanwhile
                continue
            if cron:
                scheduled[name] = cron
        for name in list(self._next):
            if name not in scheduled:
                del self._next[name]
        for name, cron in scheduled.items():
            known = self._next.get(name)
            if known is None or known[0] != cron:  # new, or its schedule changed: first time from now
                self._next[name] = (cron, croniter(cron, now).get_next(float))
                continue
            if now < known[1]:
                continue
            self._next[name] = (cron, croniter(cron, now).get_next(float))
            running = self._running.get(name)
            if running is not None and running.is_alive():
                log.warning("copy pipe %s: the run of the previous schedule is still going; this one is skipped", name)
                continue
            slot = utc_text(known[1])
            worker = threading.Thread(target=self._run, args=(name, slot), name=f"evtrack-copy-{name}", daemon=True)
            self._running[name] = worker
            worker.start()
            started.append(name)
        return started

    def _run(self, name: str, slot: str) -> None:
        try:
            rows = self.engine.run_copy(name, {"job_timestamp": slot})
            log.info("copy pipe %s: %d rows copied", name, rows)
        except EvtrackError as exc:
            log.error("copy pipe %s failed: %s", name, exc.message)
        except Exception:  # never let a run take the server down
            log.exception("copy pipe %s failed", name)
        finally:
            self.runs[name] = self.runs.get(name, 0) + 1

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="evtrack-copy-scheduler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick(self.clock())
            except Exception:
                log.exception("copy scheduler tick failed")
            self._stop.wait(self.interval)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop ticking; wait up to ``timeout`` seconds for the runs under way."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        for worker in list(self._running.values()):
            worker.join(max(0.0, deadline - time.monotonic()))
