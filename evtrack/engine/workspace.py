"""A workspace: a Tinybird project deployed in one database of the store, with its own folder.

The folder holds the deployed snapshot (``project.json``: editing a datafile changes nothing
until the next deploy; beside each pipe's text the snapshot keeps it parsed, so calling a pipe
needs no datafile parser), the tokens, the write-ahead log and the deployments. Datasources are
tables in the workspace's database; each has a ``<name>_quarantine`` table with Tinybird's
quarantine columns.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadRequest, EvtrackError, QueryError, SchemaConflict, StoreError, TemplateError
from ..project import COPY_MODES, Datasource, Pipe, Project, pipe_record
from .catalog import SNAPSHOT, Catalog, read_snapshot, table_map as _table_map
from .copies import leftover_staging, staging_name
from .deploy import History, Journal, Refill, build, now as deploy_now, promote, roll_back
from .ingest import DEDUP_WINDOW, imports_table, ingest_ddl, ingest_insert, quarantine_ddl, quarantine_name, sql_string
from .materialized import backfill_sql, check_columns, output_columns, view_ddl, view_name
from .pipes import pipe_sql, render_node
from .guard import check_parsable
from .sqlapi import read_only_sql, split_format, used_tables
from .rwlock import RWLock
from .store import QueryLimits, Store
from .tokens import TokenStore, datafile_scope
from .wal import WriteAheadLog, import_id as wal_import_id

__all__ = ["Workspace", "AppendResult", "DeployResult", "FORMATS", "deployed_pipes", "read_snapshot"]

# Tinybird's endpoint extensions and the ClickHouse formats behind them.
FORMATS = {"json": "JSON", "csv": "CSVWithNames", "ndjson": "JSONEachRow", "parquet": "Parquet"}


@dataclass
class AppendResult:
    successful_rows: int
    quarantined_rows: int
    import_id: str
    errors: list[str] = field(default_factory=list)  # the first few quarantine reasons


@dataclass
class DeployResult:
    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


class Workspace:
    """One workspace: its database in the store, its folder (snapshot, tokens, log, deployments)."""

    def __init__(self, store: Store, folder: Path, database: str, name: str, owner=None):
        self.store, self.folder, self.database, self.name = store, Path(folder), database, name
        self._owner = owner  # the Engine: its read limits apply to every workspace
        # Deploys take this lock alone (``with self._lock``); ingests and copies share it and run side
        # by side, so a deploy never runs beside an insert. Reads and lookups take no lock: they read
        # the catalog, a value each deploy step replaces (``_save_snapshot``).
        self._lock = RWLock()
        self._copy_locks: dict[str, threading.Lock] = {}  # one copy run at a time per pipe
        self._ingest_locks: dict[str, RWLock] = {}  # per datasource, see _ingesting
        self._snapshot_path = self.folder / SNAPSHOT
        self._load_snapshot()
        self._drop_interrupted_copies()
        self.journal, self.history = Journal(self.folder), History(self.folder)
        self._recover_deployment()
        self.tokens = TokenStore(self.folder)
        self.wal = WriteAheadLog(self.folder)
        self._remember_blocks()
        self.replay_log()

    @property
    def id(self) -> str:
        return self.tokens.workspace_id

    @property
    def read_limits(self) -> QueryLimits | None:
        """What each read may use (time, memory, result size); None: no limits, as in the CLI."""
        return self._owner.read_limits if self._owner is not None else None

    def close(self) -> None:
        self.wal.close()

    # -- the deployed project -------------------------------------------------------------
    def _load_snapshot(self) -> None:
        # The draft a deploy changes (under self._lock), and the catalog requests read: the draft
        # is published as a new catalog at each step of a deploy (``_save_snapshot``).
        self._sources = read_snapshot(self.folder)
        self.catalog = Catalog(self._sources, database=self.database)

    @property
    def datasources(self) -> dict[str, Datasource]:
        """The deployed datasources, parsed on first use (a pipe call needs only their names)."""
        return self.catalog.datasources

    def _save_snapshot(self, *parsed: Datasource | Pipe) -> None:
        """Write the draft to disk and publish it: requests read it from now on. ``parsed``: objects
        of the draft already parsed, kept in the new catalog."""
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".project-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(self._sources, indent=2, sort_keys=True))
        os.replace(tmp, self._snapshot_path)
        kinds = {f"{'pipe' if isinstance(obj, Pipe) else 'datasource'}:{obj.name}": obj for obj in parsed}
        self.catalog = Catalog(self._sources, self.catalog, kinds, database=self.database)

    # Lookups read the catalog: no lock, no SQL, safe on a server's event loop.
    def pipe(self, name: str) -> Pipe:
        return self.catalog.pipe(name)

    def pipe_names(self) -> list[str]:
        return self.catalog.pipe_names()

    def pipes(self) -> list[Pipe]:
        catalog = self.catalog
        return [catalog.pipe(name) for name in catalog.pipe_names()]

    def datasource(self, name: str) -> Datasource:
        return self.catalog.datasource(name)

    def datasource_stats(self, name: str) -> dict[str, int]:
        """Stored rows and bytes of a datasource, from its active parts (as Tinybird reports them)."""
        self.datasource(name)
        out = self.store.run(
            f"SELECT toUInt64(sum(rows)), toUInt64(sum(bytes_on_disk)) FROM system.parts "
            f"WHERE database = '{self.database}' AND table = {sql_string(name)} AND active",
            "JSONCompactEachRow",
        )
        rows, size = json.loads(out)
        return {"row_count": rows, "bytes": size}

    def tables(self) -> dict[str, tuple[str, str]]:
        """Every name SQL may use (datasources and their quarantines) and its table."""
        return self.catalog.tables()

    # -- deploy ----------------------------------------------------------------------------
    def deploy(self, project: Project, force: bool = False) -> DeployResult:
        """Datasources, then pipes, then the tokens their TOKEN lines name. Redeploying the same files
        changes nothing; like `tb push`, a deploy never deletes what the project no longer has."""
        result = DeployResult()
        entry = {"id": uuid.uuid4().hex[:8], "started": deploy_now(), "status": "failed"}
        try:
            with self._lock:
                for ds in project.datasources.values():
                    getattr(result, self.deploy_datasource(ds, force)).append(f"{ds.name}.datasource")
                known = set(self.datasources) | set(project.datasources)
                every = {**{name: self.pipe(name) for name in self._sources["pipes"]}, **project.pipes}
                # Materialized pipes last: their nodes may read the project's other pipes by name.
                for pipe in sorted(project.pipes.values(), key=lambda p: p.materialized is not None):
                    getattr(result, self._deploy_pipe(pipe, known, force, every)).append(f"{pipe.name}.pipe")
            entry["status"] = "done"
        except EvtrackError as exc:
            entry["error"] = exc.message
            raise
        finally:
            # What was deployed before a failure stays deployed: the history says what changed.
            self.history.add({**entry, "finished": deploy_now(), "created": result.created, "changed": result.changed})
        return result

    def deployments(self) -> list[dict]:
        """Every deployment of the store, oldest first: id, started, finished (UTC), status, what changed."""
        return self.history.all()

    def deploy_datasource(self, ds: Datasource, force: bool = False) -> str:
        """Create or update one datasource; 'created', 'changed' or 'unchanged'."""
        with self._lock:
            return self._deploy_datasource(ds, force)

    def _deploy_datasource(self, ds: Datasource, force: bool) -> str:
        self.store.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
        old = self.datasources.get(ds.name)
        if old is not None and old.source == ds.source and self._table_exists(ds.name):
            if not self._table_exists(imports_table(ds.name)):  # a store made before the imports audit
                self._create_ingest(ds)
            return "unchanged"
        if old is None or not self._table_exists(ds.name):
            self._create_tables(ds)
            outcome = "created"
        else:
            conflict = _incompatibility(old, ds)
            if conflict and not force:
                raise SchemaConflict(f"Datasource '{ds.name}': {conflict}. Use --force to rebuild it, keeping the data of its common columns")
            if conflict:
                self._rebuild(old, ds)
            else:
                self._alter(old, ds, f"{self.database}.`{ds.name}`")
            self._create_ingest(ds)
            outcome = "changed"
        self._sources["datasources"][ds.name] = ds.source
        self._save_snapshot(ds)
        self._grant(ds.tokens, "datasource", ds.name)
        return outcome

    def plan_datasource(self, ds: Datasource) -> list[str]:
        """What deploying ``ds`` over the current one would do; a SchemaConflict if it cannot be done in place."""
        old = self.datasource(ds.name)
        conflict = _incompatibility(old, ds)
        if conflict:
            raise SchemaConflict(f"Datasource '{ds.name}': {conflict}")
        operations = [f"{kind} COLUMN {ddl}" for kind, _, ddl, _ in _column_changes(old, ds)]
        if old.description != ds.description:
            operations.append("CHANGE DESCRIPTION")
        return operations

    def deploy_pipe(self, pipe: Pipe, datasources: set[str] | None = None, force: bool = False) -> str:
        """Store one pipe (a snapshot of its file); 'created', 'changed' or 'unchanged'.
        A materialized pipe also creates (or, with ``force``, rebuilds) its view and backfills its target."""
        with self._lock:
            return self._deploy_pipe(pipe, datasources, force)

    def _deploy_pipe(self, pipe: Pipe, datasources: set[str] | None, force: bool = False,
                     every: dict[str, Pipe] | None = None) -> str:
        datasources = datasources if datasources is not None else set(self.datasources)
        every = every if every is not None else {**{n: self.pipe(n) for n in self._sources["pipes"]}, pipe.name: pipe}
        self._check_parsable(pipe)
        self._check_pipe(pipe, datasources, every)
        if pipe.copy is not None:
            self._check_copy(pipe, datasources, every)
        old = self._sources["pipes"].get(pipe.name)
        if pipe.materialized is not None or pipe.name in self._views:
            view_changed = self._deploy_view(pipe, datasources, force, every)
            if view_changed and old == pipe.source:
                old = None  # the pipe reads another pipe that changed: its view was rebuilt
        self._sources["pipes"][pipe.name] = pipe.source
        self._sources.setdefault("parsed_pipes", {})[pipe.name] = pipe_record(pipe)
        self._save_snapshot(pipe)
        self._grant(pipe.tokens, "pipe", pipe.name)
        return "unchanged" if old == pipe.source else "changed" if old else "created"

    @property
    def _views(self) -> dict[str, dict]:
        """The materialized pipes' views: SQL, target datasource and the tables the SQL reads."""
        return self._sources.setdefault("views", {})

    def _deploy_view(self, pipe: Pipe, datasources: set[str], force: bool, every: dict[str, Pipe]) -> bool:
        """Create, keep or (with ``force``) rebuild a materialized pipe's view; whether it changed."""
        old = self._views.get(pipe.name)
        node = pipe.materialized
        if node is None:  # no longer materialized
            if not force:
                raise SchemaConflict(f"Pipe '{pipe.name}' is materialized into '{old['target']}' and would no longer "
                                     "be. Use --force to stop materializing it (the datasource keeps its rows)")
            self.store.execute(f"DROP VIEW IF EXISTS {self.database}.`{view_name(pipe.name)}`")
            del self._views[pipe.name]
            return True
        if node.datasource not in datasources:
            raise BadRequest(f"pipe '{pipe.name}': the datasource '{node.datasource}' it materializes into "
                             "does not exist (add datasources/{0}.datasource)".format(node.datasource))
        sql = pipe_sql(pipe, {}, _table_map(datasources, self.database), node=node, pipes=every.get)
        if old is not None and old["sql"] == sql and self._table_exists(view_name(pipe.name)):
            return False
        if old is not None and not force:
            raise SchemaConflict(
                f"Materialized pipe '{pipe.name}' changed. Use --force to rebuild '{node.datasource}' "
                "(and the datasources materialized from it) and backfill them from their sources")
        try:
            produced = output_columns(self.store, sql)
        except QueryError as exc:
            raise BadRequest(f"pipe '{pipe.name}': {exc.message}") from None
        check_columns(pipe, produced, [c.name for c in self.datasource(node.datasource).columns])
        reads = sorted({name for db, name, _ in used_tables(sql) if db == self.database})
        view = {"sql": sql, "target": node.datasource, "reads": reads, "columns": [name for name, _ in produced]}
        # A new view adds its backfill to what its target holds; a changed one refills its target
        # (and those fed from it) from their sources. Either way aside, then promoted with the view.
        self._refill({node.datasource}, {**self._views, pipe.name: view}, every, changed=pipe.name,
                     ddl=view_ddl(pipe, sql, self.database), rebuild=old is not None)
        return True

    def _refill(self, targets: set[str], views: dict[str, dict], every, changed: str | None = None,
                ddl: str | None = None, rebuild: bool = True) -> None:
        """Fill ``targets``, and every datasource materialized from them, aside; then promote them
        with the view ``changed`` (its DDL ``ddl``, its record in ``views``). See ``deploy``.

        ``rebuild``: start them empty, and backfill each view that writes into them from outside;
        else keep their rows and backfill only ``changed``."""
        targets = _downstream(targets, views)
        refill = Refill(targets, keep=not rebuild, database=self.database)
        tables = {**_table_map(self.datasources, self.database), **{live: (self.database, staging) for live, staging in refill.targets.items()}}
        cascade, entries = {}, []
        for name, view in sorted(views.items()):
            if view["target"] not in targets:
                continue
            if set(view["reads"]) & targets:
                pipe = every.get(name)
                cascade[view_name(name)] = (view["target"], pipe_sql(pipe, {}, tables, node=pipe.materialized,
                                                                    pipes=every.get))
            elif rebuild or name == changed:
                entries.append((name, view["target"], view["sql"], view["columns"]))
        record = refill.record(list(cascade))
        self.journal.write(record)
        try:
            build(self.store, refill, cascade, entries)
        except BaseException:
            roll_back(self.store, record)
            self.journal.clear()
            raise
        if changed is not None:
            self._views[changed] = views[changed]
        record.update(phase="promoting", views={view_name(changed): ddl} if changed else {},
                      snapshot=self._sources)
        self.journal.write(record)
        self._promote(record)

    def _promote(self, record: dict) -> None:
        promote(self.store, record)
        self._sources = record["snapshot"]
        self._save_snapshot()
        self.journal.clear()

    def _recover_deployment(self) -> None:
        """Finish or undo the refill a killed process left (see ``deploy``), before anything reads."""
        record = self.journal.read()
        if record is None:
            return
        if record["phase"] == "promoting":
            self._promote(record)
            status = "promoted when the store opened again, after the process stopped in its promotion"
        else:
            roll_back(self.store, record)
            self.journal.clear()
            status = "rolled back when the store opened again: the process stopped while building"
        self.history.add({"id": record["id"], "started": record["started"], "finished": deploy_now(),
                          "status": status, "targets": sorted(record["targets"])})

    def _rebuild_targets(self, target: str) -> None:
        """Refill ``target`` and every datasource materialized from it from their sources, aside."""
        catalog = self.catalog
        self._refill({target}, self._views, _Deployed(catalog))

    def drop_pipe(self, name: str) -> None:
        with self._lock:
            self.pipe(name)
            if self._views.pop(name, None) is not None:
                self.store.execute(f"DROP VIEW IF EXISTS {self.database}.`{view_name(name)}`")
            del self._sources["pipes"][name]
            self._sources.get("parsed_pipes", {}).pop(name, None)
            self._save_snapshot()

    def _grant(self, tokens, kind: str, resource: str) -> None:
        for token_name, permission in tokens:
            self.tokens.grant(token_name, [datafile_scope(kind, permission, resource)])

    def _table_exists(self, name: str) -> bool:
        out = self.store.run(f"EXISTS TABLE {self.database}.`{name}`", "CSV")
        return out.strip() == b"1"

    def _create_tables(self, ds: Datasource, name: str | None = None) -> None:
        table = f"{self.database}.`{name or ds.name}`"
        columns = ",\n    ".join(ds.column_ddl)
        self.store.execute(f"CREATE TABLE IF NOT EXISTS {table} (\n    {columns}\n) ENGINE = {ds.engine}")
        self.store.execute(quarantine_ddl(ds, f"{self.database}.`{quarantine_name(ds.name)}`"))
        if name is None:
            self._create_ingest(ds)
        self._remember_blocks()

    def _create_ingest(self, ds: Datasource) -> None:
        for statement in ingest_ddl(ds, self.database):
            self.store.execute(statement)

    def _alter(self, old: Datasource, new: Datasource, table: str) -> None:
        """Compatible changes only: new columns with a default, changed defaults."""
        quarantine = f"{self.database}.`{quarantine_name(new.name)}`"
        for kind, column, ddl, previous in _column_changes(old, new):
            if kind == "ADD":
                self.store.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {ddl}")
                self.store.execute(
                    f"ALTER TABLE {quarantine} ADD COLUMN IF NOT EXISTS `{column.name}` Nullable(String) AFTER `{previous}`")
            else:
                self.store.execute(f"ALTER TABLE {table} MODIFY COLUMN {ddl}")

    def _rebuild(self, old: Datasource, new: Datasource) -> None:
        """Rebuild a datasource on --force, copying the columns both schemas share."""
        suffix = uuid.uuid4().hex[:8]
        table, staging = f"{self.database}.`{new.name}`", f"{self.database}.`{new.name}__rebuild_{suffix}`"
        self._create_tables(new, f"{new.name}__rebuild_{suffix}")
        common = [c.name for c in new.columns if c.name in {o.name for o in old.columns}]
        names = ", ".join(f"`{c}`" for c in common)
        self.store.execute(f"INSERT INTO {staging} ({names}) SELECT {names} FROM {table}")
        self.store.execute(f"EXCHANGE TABLES {staging} AND {table}")
        self.store.execute(f"DROP TABLE {staging}")

    def _check_parsable(self, pipe: Pipe) -> None:
        """Each node within ClickHouse's parser limits, before the toolset parses it (see ``guard``)."""
        for node in pipe.nodes:
            try:
                sql = render_node(node, {}, test_mode=True)
            except EvtrackError:
                continue  # the template's own error is reported where the pipe is rendered
            try:
                check_parsable(self.store, sql)
            except QueryError as exc:
                raise BadRequest(f"pipe '{pipe.name}', node '{node.name}': {exc.message}") from None

    def _check_pipe(self, pipe: Pipe, datasources: set[str], every: dict[str, Pipe]) -> None:
        """An endpoint must render and name only datasources, other pipes and its own nodes."""
        tables = _table_map(datasources, self.database)
        if pipe.endpoint is None:
            return
        try:
            sql = pipe_sql(pipe, {}, tables, test_mode=True, pipes=_reader(pipe, every))
            self.store.run(f"EXPLAIN SYNTAX {sql}")
        except QueryError as exc:
            raise BadRequest(f"pipe '{pipe.name}': {exc.message}") from None

    def _check_copy(self, pipe: Pipe, datasources: set[str], every: dict[str, Pipe]) -> None:
        """A copy pipe's target must exist and have every column its copy node returns."""
        node = pipe.copy
        if node.datasource not in datasources:
            raise BadRequest(f"pipe '{pipe.name}': the datasource '{node.datasource}' it copies into does not "
                             f"exist (add datasources/{node.datasource}.datasource)")
        try:
            sql = pipe_sql(pipe, {}, _table_map(datasources, self.database), test_mode=True, node=node, pipes=_reader(pipe, every))
            produced = output_columns(self.store, sql)
        except QueryError as exc:
            raise BadRequest(f"pipe '{pipe.name}': {exc.message}") from None
        check_columns(pipe, produced, [c.name for c in self.datasource(node.datasource).columns], node)

    # -- copy pipes ------------------------------------------------------------------------
    def _drop_interrupted_copies(self) -> None:
        """Drop the staging tables that copy runs of a killed process left. The engine opens the
        store once per process, before any run: none of them can be one of this process's."""
        names = self.store.run(f"SELECT name FROM system.tables WHERE database = '{self.database}'", "TSV")
        for table in leftover_staging(names.decode().splitlines(), self._sources["datasources"]):
            # SYNC: the rows go now, not minutes later in a process that may not live that long.
            self.store.execute(f"DROP TABLE IF EXISTS {self.database}.`{table}` SYNC")

    def _ingest_lock(self, datasource: str) -> RWLock:
        return self._ingest_locks.setdefault(datasource, RWLock())

    def _reached(self, datasource: str) -> set[str]:
        """``datasource`` and every datasource its rows reach through materialized views."""
        return _downstream({datasource}, self._views)

    @contextlib.contextmanager
    def _ingesting(self, datasource: str):
        """Hold, shared, the engine's lock and the ingest lock of every datasource an insert into
        ``datasource`` writes: a replace copy into one of them holds its lock alone, so the insert
        waits for the exchange rather than landing in the table it throws away. Ingests of other
        datasources, and reads, go on beside the copy."""
        with self._lock.shared():
            wanted = self._reached(datasource)
        while True:
            held = contextlib.ExitStack()
            for name in sorted(wanted):  # one order for every ingest, so no two wait on each other
                held.enter_context(self._ingest_lock(name).shared())
            held.enter_context(self._lock.shared())  # no deploy adds a view until the insert is done
            reached = self._reached(datasource)
            if reached <= wanted:
                break
            held.close()  # a deploy added a view meanwhile: take its target's lock too, in order
            wanted = reached
        with held:
            yield

    def run_copy(self, name: str, params: dict[str, str], mode: str | None = None) -> int:
        """Run the copy pipe ``name`` once with ``params`` (its COPY_MODE unless ``mode``); the rows copied.
        ``job_timestamp`` is the time now (UTC) unless given. See ``evtrack.engine.copies`` for how
        append and replace write."""
        from ..params import InvalidParam, validate_params

        node = self.pipe(name).copy
        if node is None:
            raise BadRequest(f"The pipe '{name}' is not a copy pipe (it has no TYPE COPY node)")
        # Tinybird's job_timestamp: when the job was received, unless the caller (or a schedule) says.
        params = {"job_timestamp": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), **params}
        try:
            validate_params(self.pipe(name), params)
        except InvalidParam as exc:
            raise TemplateError(f"Invalid value of parameter '{exc.name}': {exc}") from None
        mode = (mode or node.copy_mode or "append").lower()
        if mode not in COPY_MODES:
            raise BadRequest(f"Invalid copy mode '{mode}': use append or replace")
        with self._lock.shared():
            rebuilds = [v["target"] for v in self._views.values() if node.datasource in v["reads"]]
            lock = self._copy_locks.setdefault(name, threading.Lock())
        # A replace holds its target's ingest lock alone for the whole run, so that no insert lands in
        # the table the exchange throws away; an append is one more ingest.
        writing = self._ingest_lock(node.datasource) if mode == "replace" else self._ingesting(node.datasource)
        # Replacing a target that materialized pipes read rebuilds their targets too: alone, as a deploy.
        with lock, writing, (self._lock if mode == "replace" and rebuilds else self._lock.shared()):
            pipe = self.pipe(name)  # as deployed now: a deploy may have come in between
            if pipe.copy is None:
                raise BadRequest(f"The pipe '{name}' is no longer a copy pipe")
            if pipe.copy.datasource != node.datasource:  # the locks taken are the old target's
                raise BadRequest(f"The pipe '{name}' now copies into '{pipe.copy.datasource}': run it again")
            sql = pipe_sql(pipe, params, self.tables(), node=pipe.copy, pipes=_reader(pipe, _Deployed(self.catalog)))
            target, staging = pipe.copy.datasource, staging_name(pipe.copy.datasource)
            self.store.execute(f"CREATE TABLE {self.database}.`{staging}` AS {self.database}.`{target}`")
            try:
                columns = [column for column, _ in output_columns(self.store, sql)]
                rows = self.store.execute(backfill_sql(staging, sql, columns, self.database))
                if mode == "append":
                    self.store.execute(f"INSERT INTO {self.database}.`{target}` SELECT * FROM {self.database}.`{staging}`")
                else:
                    self.store.execute(f"EXCHANGE TABLES {self.database}.`{staging}` AND {self.database}.`{target}`")
                    for downstream in rebuilds:
                        self._rebuild_targets(downstream)
            finally:
                self.store.execute(f"DROP TABLE IF EXISTS {self.database}.`{staging}`")
            return rows

    # -- ingest ----------------------------------------------------------------------------
    def append(self, datasource: str, source: Path | bytes) -> AppendResult:
        """Ingest NDJSON (a file, gzip by its name, or bytes): every non-blank line is stored or quarantined."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            return self.append_many(datasource, [bytes(source)])[0]
        ds = self.datasource(datasource)
        path, import_id = Path(source).resolve(), uuid.uuid4().hex
        compression = "'gzip'" if path.name.endswith(".gz") else "'none'"
        with self._ingesting(datasource), _glob_safe(path) as readable:
            self._ingest(ds, f"file({sql_string(str(readable))}, 'LineAsString', 'line String', {compression})",
                         sql_string(import_id))
            return self._results(ds, [import_id])[0]

    def append_many(self, datasource: str, payloads: list[bytes], ids: list[str] | None = None,
                    once: bool = False) -> list[AppendResult]:
        """Ingest several NDJSON payloads in one statement, with a result (and an import id, given or new) for each.

        ``once``: the one payload's import id makes the insert idempotent, in the datasource and in
        every table fed from it (``ingest.exactly_once``): the write-ahead log's payloads go in this
        way, so a replay or a retry of one never adds a row twice."""
        ds = self.datasource(datasource)
        if once and (len(payloads) != 1 or not ids or not ids[0]):
            raise ValueError("an idempotent insert takes one payload and its import id")
        ids = [i or uuid.uuid4().hex for i in ids] if ids else [uuid.uuid4().hex for _ in payloads]
        home = None if _GLOB_CHARS.search(str(self.store.path)) else self.store.path
        with self._ingesting(datasource), tempfile.TemporaryDirectory(dir=home, prefix="evtrack-batch-") as folder:
            for import_id, payload in zip(ids, payloads):
                (Path(folder) / f"{import_id}.ndjson").write_bytes(payload)
            glob = sql_string(f"{folder}/*.ndjson")
            self._ingest(ds, f"file({glob}, 'LineAsString', 'line String')", "splitByChar('.', _file)[1]",
                         ids[0] if once else None)
            return self._results(ds, ids)

    def replay_log(self) -> int:
        """Write what a server acknowledged and did not get to insert before it died (see ``wal``);
        the lines replayed."""
        replayed = 0
        for segment in self.wal.pending():
            for datasource, payloads in self.wal.read(segment).items():
                if datasource not in self.datasources:
                    raise StoreError(f"the write-ahead log {self.wal.folder / segment}.wal holds events for "
                                     f"'{datasource}', which is not deployed: deploy it, then open the store again")
                # The bytes, and so the blocks, its first insert had (see IngestBuffer.flush): the
                # blocks that insert wrote before the crash are skipped, the others written.
                ident = wal_import_id(segment, datasource)
                [result] = self.append_many(datasource, [b"\n".join(payloads)], [ident], once=True)
                replayed += result.successful_rows + result.quarantined_rows
            self.wal.drop(segment)
        return replayed

    def _remember_blocks(self) -> None:
        """Every MergeTree table of the store remembers its last blocks, which idempotent inserts
        need (``ingest.exactly_once``); a table made before that, or by a deploy, is given it here."""
        names = self.store.run(
            f"SELECT name FROM system.tables WHERE database = '{self.database}' AND engine LIKE '%MergeTree' "
            "AND NOT match(engine_full, 'non_replicated_deduplication_window')", "TSV")
        for name in names.decode().splitlines():
            self.store.execute(f"ALTER TABLE {self.database}.`{name}` MODIFY SETTING "
                               f"non_replicated_deduplication_window = {DEDUP_WINDOW}")

    def _ingest(self, ds: Datasource, source: str, import_id: str, once: str | None = None) -> None:
        self.store.execute(ingest_insert(ds, self.database, source, import_id, once))

    def _results(self, ds: Datasource, ids: list[str]) -> list[AppendResult]:
        """Each import's counts, from the imports audit table, and its first quarantine reasons."""
        wanted = ", ".join(sql_string(i) for i in ids)
        counts = self.store.run(
            f"SELECT import_id, sum(lines), sum(quarantined) FROM {self.database}.`{imports_table(ds.name)}` "
            f"WHERE import_id IN ({wanted}) GROUP BY import_id", "JSONCompactEachRow")
        found = {row[0]: (row[1], row[2]) for row in map(json.loads, counts.splitlines()) if row}
        reasons: dict[str, list[str]] = {}
        if any(q for _, q in found.values()):
            out = self.store.run(
                f"SELECT c__import_id, groupArray(5)(arrayStringConcat(c__error, '; ')) "
                f"FROM {self.database}.`{quarantine_name(ds.name)}` WHERE c__import_id IN ({wanted}) GROUP BY c__import_id",
                "JSONCompactEachRow")
            reasons = {row[0]: row[1] for row in map(json.loads, out.splitlines()) if row}
        results = []
        for import_id in ids:
            lines, quarantined = found.get(import_id, (0, 0))
            results.append(AppendResult(lines - quarantined, quarantined, import_id, reasons.get(import_id, [])))
        return results

    # -- queries ---------------------------------------------------------------------------
    def pipe_query(self, name: str, params: dict[str, str], q: str | None = None,
                   catalog: Catalog | None = None) -> str:
        """The SQL a pipe call runs, over one catalog (the current one unless given)."""
        catalog = catalog or self.catalog
        pipe = catalog.pipe(name)
        sql = pipe_sql(pipe, params, catalog.tables(), pipes=_reader(pipe, _Deployed(catalog)))
        if not q:
            return sql
        if q.lstrip().startswith("%"):
            raise BadRequest("'q' parameter doesn't support templates")
        check_parsable(self.store, split_format(q)[0])
        # `q` reads `_`, the pipe's result, and nothing else: no way around the token's scope.
        return read_only_sql(q, {"_": f"({sql})"})[0]

    def query_pipe(self, name: str, params: dict[str, str], fmt: str = "json", q: str | None = None,
                   tag: str | None = None) -> bytes:
        return self.run_read(self.pipe_query(name, params, q), fmt, tag)

    def sql(self, query: str, fmt: str | None = None, pipeline: str | None = None, readable=None,
            tag: str | None = None) -> bytes:
        """Read-only SQL over the datasources (and endpoints, as tables), as Tinybird's SQL API runs it.

        ``pipeline`` makes ``_`` that pipe's result; ``readable(name)`` limits what may be read.
        """
        check_parsable(self.store, split_format(query)[0])
        catalog = self.catalog
        tables: dict = dict(catalog.tables())
        for _, name, _ in used_tables(query):  # endpoints read as tables: render only those used
            if name not in tables and catalog.has_pipe(name) and catalog.pipe(name).endpoint is not None:
                tables[name] = f"({self.pipe_query(name, {}, catalog=catalog)})"
        if pipeline:
            tables["_"] = f"({self.pipe_query(pipeline, {}, catalog=catalog)})"
        sql, found = read_only_sql(query, tables, readable)
        return self.run_read(sql, found or fmt or "json", tag)

    def run_read(self, sql: str, fmt: str, tag: str | None = None) -> bytes:
        """A read, under ``read_limits``; ``tag`` lets another thread cancel it (``store.cancel``).
        No lock: a deploy that rebuilds a table builds it aside and swaps it in, so a read sees the
        old table or the new one, whole."""
        return self.store.run(sql, FORMATS.get(fmt, fmt), limits=self.read_limits, tag=tag)


_GLOB_CHARS = re.compile(r"[*?{}\[\]]")


@contextlib.contextmanager
def _glob_safe(path: Path):
    """A name for ``path`` that ClickHouse's file() reads literally: its own, or a link without glob characters."""
    if not _GLOB_CHARS.search(str(path)):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="evtrack-input-") as folder:
        link = Path(folder) / ("input.ndjson.gz" if path.name.endswith(".gz") else "input.ndjson")
        link.symlink_to(path)
        yield link


class _Deployed:
    """The deployed pipes of a catalog by name, parsed when first asked for."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def __iter__(self):
        return iter(self.catalog.pipe_names())

    def get(self, name: str) -> Pipe | None:
        return self.catalog.pipe(name) if self.catalog.has_pipe(name) else None


def _reader(pipe: Pipe, pipes) -> object:
    """How ``pipe`` finds the pipes it reads by name; None when it names none (most endpoints: no parse needed)."""
    if any(name != pipe.name and name in pipe.source for name in pipes):
        return pipes.get
    return None


def _column_changes(old: Datasource, new: Datasource):
    """("ADD" | "MODIFY", column, its DDL, the column before it) for each compatible change."""
    before = {c.name: c for c in old.columns}
    previous = "c__import_id"  # in the quarantine table, the originals follow Tinybird's three columns
    for column, ddl in zip(new.columns, new.column_ddl):
        if column.name not in before:
            yield "ADD", column, ddl, previous
        elif before[column.name].default != column.default:
            yield "MODIFY", column, ddl, previous
        previous = column.name


def deployed_pipes(path: Path) -> dict[str, Pipe]:
    """The deployed pipes of the store at ``path``, read without opening the store."""
    catalog = Catalog(read_snapshot(path))  # (pipes only: the database does not matter)
    return {name: catalog.pipe(name) for name in catalog.pipe_names()}


def _incompatibility(old: Datasource, new: Datasource) -> str | None:
    """Why ``new`` cannot replace ``old`` in place, or None when ALTERs suffice."""
    before = {c.name: c for c in old.columns}
    after = {c.name: c for c in new.columns}
    for name, column in before.items():
        if name not in after:
            return f"column '{name}' would be removed"
        if after[name].sql_type != column.sql_type:
            return f"column '{name}' would change type from {column.sql_type} to {after[name].sql_type}"
    for name, column in after.items():
        if name not in before and column.required:
            return f"new column '{name}' has no DEFAULT and is not Nullable"
    if old.engine != new.engine:
        return f"the engine would change from {old.engine} to {new.engine}"
    return None


def _downstream(targets: set[str], views: dict[str, dict]) -> set[str]:
    """``targets`` and every datasource materialized from them, through any number of views."""
    reached, grown = set(targets), True
    while grown:
        more = {v["target"] for v in views.values() if set(v["reads"]) & reached}
        grown = not more <= reached
        reached |= more
    return reached
