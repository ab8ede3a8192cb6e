"""The materialized views of a workspace: each one's view, and its targets refilled when it comes or changes.

A new view adds its backfill to what its target holds; a changed one refills its target (and
those fed from it) from their sources; a replace copy into a datasource that views read refills
their targets too. Every refill is built aside and promoted in one journaled step (``refill``),
and one that a killed process left is finished or undone before anything reads (``recover``).
"""

from __future__ import annotations

import time
import uuid

from ...errors import BadRequest, EvtrackError, QueryError, SchemaConflict
from ...project import Pipe
from ..catalog import Snapshot, table_map
from .materialized import downstream, output_columns, view_ddl, view_name, written_columns
from ..sql.pipes import pipe_sql
from ..journal import BUILDING, Changes
from .refill import Refill, build, promote, roll_back
from .schema import Schema
from ..sql.sqlapi import used_tables

__all__ = ["Views"]


class Views:
    def __init__(self, store, database: str, snapshot: Snapshot, schema: Schema, changes: Changes, service=None):
        self.store, self.database, self.snapshot, self.schema, self.changes = store, database, snapshot, schema, changes
        self.service = service  # each refill is a populate in tinybird.datasources_ops_log and jobs_log
        changes.on("refill", self._promote, lambda record: roll_back(self.store, record))

    def deploy(self, pipe: Pipe, datasources: set[str], force: bool, every: dict[str, Pipe]) -> bool:
        """Create, keep or (with ``force``) rebuild a materialized pipe's view; whether it changed."""
        views = self.snapshot.views
        old = views.get(pipe.name)
        node = pipe.materialized
        if node is None:  # no longer materialized
            if not force:
                raise SchemaConflict(f"Pipe '{pipe.name}' is materialized into '{old['target']}' and would no longer "
                                     "be. Use --force to stop materializing it (the datasource keeps its rows)")
            self.store.execute(f"DROP VIEW IF EXISTS {self.database}.`{view_name(pipe.name)}`")
            del views[pipe.name]
            return True
        if node.datasource not in datasources:
            raise BadRequest(f"pipe '{pipe.name}': the datasource '{node.datasource}' it materializes into "
                             "does not exist (add datasources/{0}.datasource)".format(node.datasource))
        sql = pipe_sql(pipe, {}, table_map(datasources, self.database), self.database, node=node, pipes=every.get)
        if old is not None and old["sql"] == sql and self.schema.exists(view_name(pipe.name)):
            return False
        if old is not None and not force:
            raise SchemaConflict(
                f"Materialized pipe '{pipe.name}' changed. Use --force to rebuild '{node.datasource}' "
                "(and the datasources materialized from it) and backfill them from their sources")
        view = self._record(pipe, sql)
        self._refill({node.datasource}, {**views, pipe.name: view}, every, changed=pipe.name,
                     ddl=view_ddl(pipe, sql, self.database), rebuild=old is not None)
        return True

    def _record(self, pipe: Pipe, sql: str) -> dict:
        """The view's record: its SQL, its target, the tables it reads and the columns it writes."""
        try:
            produced = output_columns(self.store, sql)
        except QueryError as exc:
            raise BadRequest(f"pipe '{pipe.name}': {exc.message}") from None
        target = pipe.materialized.datasource
        columns = written_columns(self.store, pipe, produced, self.snapshot.catalog.datasource(target).columns)
        reads = sorted({name for db, name, _ in used_tables(sql) if db == self.database})
        return {"sql": sql, "target": target, "reads": reads, "columns": columns}

    def drop(self, pipe: str) -> None:
        """Drop the pipe's view, if it has one (again, if it was dropped already)."""
        self.snapshot.views.pop(pipe, None)
        self.store.execute(f"DROP VIEW IF EXISTS {self.database}.`{view_name(pipe)}`")

    def rebuild(self, target: str) -> None:
        """Refill ``target`` and every datasource materialized from it from their sources, aside."""
        self._refill({target}, self.snapshot.views, self.snapshot.catalog.pipes)

    def _refill(self, targets: set[str], views: dict[str, dict], every, changed: str | None = None,
                ddl: str | None = None, rebuild: bool = True) -> None:
        """Fill ``targets``, and every datasource materialized from them, aside; then promote them
        with the view ``changed`` (its DDL ``ddl``, its record in ``views``).

        ``rebuild``: start them empty, and backfill each view that writes into them from outside;
        else keep their rows and backfill only ``changed``."""
        targets = downstream(targets, views)
        started = time.time()
        try:
            self._refill_aside(targets, views, every, changed, ddl, rebuild)
        except Exception as exc:
            self._populated(targets, changed, started, exc.message if isinstance(exc, EvtrackError) else str(exc))
            raise
        self._populated(targets, changed, started, None)

    def _populated(self, targets: set[str], changed: str | None, started: float, error: str | None) -> None:
        if self.service is None:
            return
        job = uuid.uuid4().hex
        for target in sorted(targets):
            self.service.operation("populateview", target, started, error=error, job_id=job, pipe=changed or "")
        self.service.job(job, "populateview", started, error=error, pipe=changed or "",
                         datasource=min(targets) if targets else "")

    def _refill_aside(self, targets: set[str], views: dict[str, dict], every, changed: str | None,
                      ddl: str | None, rebuild: bool) -> None:
        refill = Refill(targets, keep=not rebuild, database=self.database)
        cascade, entries = self._plan(refill, views, every, changed, rebuild)
        record = self.changes.begin("refill", BUILDING, **refill.fields(list(cascade)))
        try:
            build(self.store, refill, cascade, entries)
        except BaseException:
            self.changes.abandon(record)
            raise
        if changed is not None:
            self.snapshot.views[changed] = views[changed]
        self.changes.advance(record, views={view_name(changed): ddl} if changed else {}, snapshot=self.snapshot.draft)
        self.changes.finish(record)

    def _plan(self, refill: Refill, views: dict[str, dict], every, changed: str | None, rebuild: bool):
        """The cascade (the views between the targets, recreated over the staging tables) and the
        backfills (the views that write into the targets from outside them)."""
        tables = {**table_map(self.snapshot.catalog.datasources, self.database),
                  **{live: (self.database, staging) for live, staging in refill.targets.items()}}
        cascade, entries = {}, []
        for name, view in sorted(views.items()):
            if view["target"] not in refill.targets:
                continue
            if set(view["reads"]) & set(refill.targets):
                pipe = every.get(name)
                cascade[view_name(name)] = (view["target"], pipe_sql(pipe, {}, tables, self.database, node=pipe.materialized,
                                                                    pipes=every.get))
            elif rebuild or name == changed:
                entries.append((name, view["target"], view["sql"], view["columns"]))
        return cascade, entries

    def _promote(self, record: dict) -> None:
        promote(self.store, record)
        self.snapshot.replace(record["snapshot"])
