"""A workspace: a Tinybird project deployed in one database of the store, with its own folder.

The folder holds the deployed snapshot (``project.json``: editing a datafile changes nothing
until the next deploy; beside each pipe's text the snapshot keeps it parsed, so calling a pipe
needs no datafile parser), the tokens, the write-ahead log and the deployments. Datasources are
tables in the workspace's database; each has a ``<name>_quarantine`` table with Tinybird's
quarantine columns.

``Workspace`` is a facade over its parts, each in its module: the snapshot and its catalog
(``catalog``), the locks (``locks``), deploys (``deploy``, with ``schema`` for datasource tables
and ``views`` for materialized views), copy runs (``copies``), ingestion (``ingesting``) and
reads (``queries``).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from pathlib import Path

from ..errors import BadRequest, EvtrackError
from ..project import Datasource, Pipe, Project
from .catalog import Catalog, Snapshot, deployed_pipes, read_snapshot
from .change.copies import Copies
from .deploy.deployer import Deployer, DeployResult, History
from .ingest.appends import AppendResult, Ingest
from .ingest.statement import count_lines
from .change.lifecycle import Deletion, Lifecycle
from .locks import Locks
from .sql.queries import FORMATS, Queries
from .journal import Changes
from . import service
from .deploy.schema import Schema
from .store import QueryLimits, Store
from .tokens import TokenStore
from .deploy.views import Views
from .ingest.wal import WriteAheadLog

__all__ = ["Workspace", "AppendResult", "DeployResult", "FORMATS", "deployed_pipes", "read_snapshot"]


log = logging.getLogger("evtrack.engine")
KINDS = ("both", "forward", "classic")


class Workspace:
    """One workspace: its database in the store, its folder (snapshot, tokens, log, deployments)."""

    def __init__(self, store: Store, folder: Path, database: str, name: str, owner=None, kind: str = "both"):
        """``kind``: how Tinybird's CLIs may change it, as a Tinybird workspace of that kind would let
        them (``KINDS``): ``forward`` through deployments, ``classic`` resource by resource (tb push),
        ``both`` (the default workspace, unless ``evtrack serve`` is told otherwise) either way."""
        if kind not in KINDS:
            raise BadRequest(f"Unknown workspace kind '{kind}': use one of {', '.join(KINDS)}")
        self.store, self.folder, self.database, self.name = store, Path(folder), database, name
        self.kind = kind
        self._owner = owner  # the Engine: its read limits apply to every workspace
        self._snapshot = snapshot = Snapshot(self.folder, database)
        locks = Locks(snapshot)
        self.changes = changes = Changes(self.folder)  # the one journal: every change registers its kind
        self.history = History(self.folder)
        schema = Schema(store, database, snapshot, changes)
        # operations and jobs, for tinybird.datasources_ops_log and jobs_log (written once their tables exist)
        self.service = service.ServiceLog(store, database, lambda: self.tokens.workspace_id)
        views = Views(store, database, snapshot, schema, changes, self.service)
        self.tokens = TokenStore(self.folder)
        self._deploys = Deployer(store, database, snapshot, locks, schema, views, self.tokens, self.history, changes)
        self.wal = WriteAheadLog(self.folder)
        self._ingest = Ingest(store, database, snapshot, locks, self.wal, changes)
        self._copies = Copies(store, database, snapshot, locks, views, changes, self._ingest)
        self._queries = Queries(store, database, snapshot, lambda: self.read_limits)
        self._lifecycle = Lifecycle(store, database, snapshot, locks, schema, views, self._ingest, self.changes)
        # What a killed process left half done, finished or undone before anything reads (``journal``,
        # the newest change first: one a change started is settled before it), then what copy runs
        # left aside outside the journal; the write-ahead log's events go in last.
        self._deploys.recovered(changes.recover())
        self._copies.drop_interrupted()
        schema.remember_blocks()
        store.execute(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        for statement in service.ddl(database):  # the service datasources: pipe_stats_rt, the server fills
            store.execute(statement)
        self.replay_log()

    @property
    def id(self) -> str:
        return self.tokens.workspace_id

    @property
    def read_limits(self) -> QueryLimits | None:
        """What each read may use (time, memory, result size); None: no limits, as in the CLI."""
        return self._owner.read_limits if self._owner is not None else None

    def close(self) -> None:
        self.service.close()
        self.wal.close()

    @contextlib.contextmanager
    def _recorded(self, event_type: str, datasource: str, job: str | None = None, pipe: str = "", refused=None):
        """Enter the operation run in the block in ``tinybird.datasources_ops_log`` (and, with ``job``,
        a job of that type in ``tinybird.jobs_log``), done or failed; the block fills in what it
        counted (``rows``, ``quarantined``, ``import_id``). ``refused()``: the rows a failure refused
        (counted only then), entered as its ``rows``."""
        started, counted = time.time(), {}
        job_id = uuid.uuid4().hex if job else None
        error = None
        try:
            yield counted
        except Exception as exc:
            error = exc.message if isinstance(exc, EvtrackError) else f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if error:
                counted = {"rows": refused()} if refused is not None else {}
            self.service.operation(event_type, datasource, started, error=error, job_id=job_id, pipe=pipe, **counted)
            if job:
                self.service.job(job_id, job, started, error=error, pipe=pipe, datasource=datasource)

    def _appended(self, event_type: str, datasource: str, job: str | None, run, payloads=()) -> list[AppendResult]:
        """``payloads``: the NDJSON bodies, whose lines a failure refused."""
        refused = (lambda: sum(map(count_lines, payloads))) if payloads else None
        with self._recorded(event_type, datasource, job, refused=refused) as counted:
            results = run()
            if results:
                counted.update(rows=sum(r.successful_rows for r in results),
                               quarantined=sum(r.quarantined_rows for r in results),
                               import_id=results[0].import_id if len(results) == 1 else None)
        return results

    # -- the deployed project: lookups read the catalog, no lock, no SQL ----------------------
    @property
    def catalog(self) -> Catalog:
        """The deployed project as a value: each deploy step publishes a new one."""
        return self._snapshot.catalog

    @property
    def datasources(self) -> dict[str, Datasource]:
        """The deployed datasources, parsed on first use (a pipe call needs only their names)."""
        return self.catalog.datasources

    def datasource(self, name: str) -> Datasource:
        return self.catalog.datasource(name)

    def tables(self) -> dict[str, tuple[str, str]]:
        """Every name SQL may use (datasources and their quarantines) and its table."""
        return self.catalog.tables()

    def pipe(self, name: str) -> Pipe:
        return self.catalog.pipe(name)

    def pipe_names(self) -> list[str]:
        return self.catalog.pipe_names()

    def pipes(self) -> list[Pipe]:
        return list(self.catalog.pipes.values())

    # -- deploy (``deploy``) -----------------------------------------------------------------
    def deploy(self, project: Project, force: bool = False, allow_destructive: bool = False,
               staged: str | None = None) -> DeployResult:
        started = time.time()
        result = self._deploys.deploy(project, force, allow_destructive, staged)
        for item in result.created:
            if item.endswith(".datasource"):
                self.service.operation("create", item.removesuffix(".datasource"), started)
        return result

    def stage(self, files: dict[str, str], plan: dict[str, list[str]], allow_destructive: bool) -> str:
        return self._deploys.stage(files, plan, allow_destructive)

    def staged(self, staged: str) -> tuple[dict[str, str], bool]:
        return self._deploys.staged(staged)

    def discard(self, staged: str) -> None:
        self._deploys.discard(staged)

    def promoted(self, staged: str) -> None:
        self._deploys.promoted(staged)

    def live_deployment(self) -> str | None:
        return self.history.live_id()

    def check_none_staged(self) -> None:
        self._deploys.check_none_staged()

    def removals(self, project: Project) -> list[str]:
        return self._deploys.removals(project)

    def deploy_datasource(self, ds: Datasource, force: bool = False) -> str:
        started = time.time()
        outcome = self._deploys.deploy_datasource(ds, force)
        if outcome == "created":
            self.service.operation("create", ds.name, started)
        return outcome

    def plan_datasource(self, ds: Datasource) -> list[str]:
        return self._deploys.plan_datasource(ds)

    def deploy_pipe(self, pipe: Pipe, datasources: set[str] | None = None, force: bool = False) -> str:
        return self._deploys.deploy_pipe(pipe, datasources, force)

    def drop_pipe(self, name: str) -> None:
        self._deploys.drop_pipe(name)

    def deployments(self) -> list[dict]:
        return self._deploys.deployments()

    # -- forgetting data (``lifecycle``) ---------------------------------------------------------
    def delete(self, datasource: str, condition: str, cascade: bool = True, dry_run: bool = False) -> Deletion:
        if dry_run:
            return self._lifecycle.delete(datasource, condition, cascade, dry_run)
        with self._recorded("delete", datasource, "delete_data") as counted:
            deletion = self._lifecycle.delete(datasource, condition, cascade, dry_run)
            counted["rows"] = deletion.removed.get(datasource, 0)
        return deletion

    def truncate(self, datasource: str, cascade: bool = False) -> list[str]:
        with self._recorded("truncate", datasource):
            return self._lifecycle.truncate(datasource, cascade)

    def export(self, name: str, params: dict[str, str], fmt: str, path) -> int:
        return self._queries.export(name, params, fmt, path)

    def deletions(self) -> list[dict]:
        return self._lifecycle.deletions()

    def replace(self, datasource: str, payload: bytes, condition: str | None = None) -> AppendResult:
        with self._recorded("replace", datasource, "import") as counted:
            stored, quarantined, import_id = self._lifecycle.replace(datasource, payload, condition)
            counted.update(rows=stored, quarantined=quarantined, import_id=import_id)
        return AppendResult(stored, quarantined, import_id)

    def drop_datasource(self, name: str, dry_run: bool = False) -> None:
        self._deploys.drop_datasource(name, dry_run)

    # -- copy pipes (``copies``) ---------------------------------------------------------------
    def run_copy(self, name: str, params: dict[str, str], mode: str | None = None) -> int:
        node = self.catalog.pipe(name).copy
        with self._recorded("copy", node.datasource if node else "", "copy", pipe=name) as counted:
            counted["rows"] = copied = self._copies.run_copy(name, params, mode)
        return copied

    # -- ingest (``ingesting``) ----------------------------------------------------------------
    def append(self, datasource: str, source: Path | bytes) -> AppendResult:
        return self._appended("append", datasource, "import", lambda: [self._ingest.append(datasource, source)],
                              [bytes(source)] if isinstance(source, (bytes, bytearray, memoryview)) else ())[0]

    def append_rows(self, datasource: str, data: bytes, fmt: str) -> AppendResult:
        return self._appended("append", datasource, "import",
                              lambda: [self._ingest.append_rows(datasource, data, fmt)])[0]

    def append_many(self, datasource: str, payloads: list[bytes], ids: list[str] | None = None,
                    once: bool = False, counted: bool = True, operation: str = "append") -> list[AppendResult]:
        """``operation``: how ``tinybird.datasources_ops_log`` names it (``append-hfi``: the Events API)."""
        return self._appended(operation, datasource, "import" if operation == "append" else None,
                              lambda: self._ingest.append_many(datasource, payloads, ids, once, counted), payloads)

    def replay_log(self) -> int:
        return self._ingest.replay_log()

    # -- reads (``queries``) -------------------------------------------------------------------
    def pipe_query(self, name: str, params: dict[str, str], q: str | None = None,
                   catalog: Catalog | None = None) -> str:
        return self._queries.pipe_query(name, params, q, catalog)

    def query_pipe(self, name: str, params: dict[str, str], fmt: str = "json", q: str | None = None,
                   tag: str | None = None) -> bytes:
        return self._queries.query_pipe(name, params, fmt, q, tag)

    def sql(self, query: str, fmt: str | None = None, pipeline: str | None = None, readable=None,
            tag: str | None = None) -> bytes:
        return self._queries.sql(query, fmt, pipeline, readable, tag)

    def run_read(self, sql: str, fmt: str, tag: str | None = None) -> bytes:
        return self._queries.run_read(sql, fmt, tag)

    def log_requests(self, rows: list[dict]) -> None:
        """Append endpoint calls to this workspace's ``tinybird.pipe_stats_rt``."""
        if rows:
            self.store.execute(service.insert(self.database, rows))

    def datasource_stats(self, name: str) -> dict[str, int]:
        return self._queries.datasource_stats(name)
