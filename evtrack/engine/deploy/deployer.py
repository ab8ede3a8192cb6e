"""Deploying a project into a workspace: datasources, then pipes and their views; plans; the deployment history.

Each step of a deploy (a datasource, a pipe) changes the draft and publishes it, so what was
deployed before a failure stays deployed, and the history says what changed. A deploy holds the
workspace's deploy lock alone; a materialized pipe's view and its targets are the ``views`` part's.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import BadRequest, EvtrackError, QueryError, SchemaConflict
from ...project import Datasource, Pipe, Project
from ..catalog import Snapshot, table_map
from ..sql.gate import admit_datasource
from ..sql.guard import check_parsable
from ..locks import Locks
from .materialized import check_columns, output_columns
from ..sql.pipes import pipe_reader, pipe_sql, render_node
from ..journal import APPLYING, BUILDING, Changes, now
from .schema import Schema, plan
from ..service import service_tables
from ..tokens import TokenStore, datafile_scope
from .views import Views

__all__ = ["Deployer", "DeployResult", "History"]

HISTORY = "deployments.jsonl"


@dataclass
class DeployResult:
    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    id: str = ""  # the deployment's id in the history


class History:
    """Every deployment: id, start and end time (UTC), status, and what it changed.

    An append-only log, one JSON line a step: a later line with the same id updates that deployment
    (a staged one promoted or discarded), and the live deployment is the last one a line says is
    ``done``. Ids count up from 1, as Tinybird numbers deployments (older stores kept hex ids)."""

    def __init__(self, store_path: Path):
        self.path = Path(store_path) / HISTORY

    def add(self, entry: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(entry, sort_keys=True) + "\n")
            out.flush()
            os.fsync(out.fileno())

    def _lines(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def all(self) -> list[dict]:
        """One entry per deployment, oldest first, each with its later updates applied."""
        entries: dict[str, dict] = {}
        for line in self._lines():
            entries.setdefault(line["id"], {}).update(line)
        return list(entries.values())

    def live_id(self) -> str | None:
        return next((line["id"] for line in reversed(self._lines()) if line.get("status") == "done"), None)

    def next_id(self) -> str:
        return str(max((int(line["id"]) for line in self._lines() if line["id"].isdigit()), default=0) + 1)


_RECOVERED = {APPLYING: "promoted when the store opened again, after the process stopped in its promotion",
              BUILDING: "rolled back when the store opened again: the process stopped while building"}


def _names(pipe: Pipe, datasource: str) -> bool:
    """Whether ``pipe`` reads ``datasource`` (a word of its SQL) or writes into it (materialized, copy)."""
    targets = {node.datasource for node in (pipe.materialized, pipe.copy) if node is not None}
    return datasource in targets or bool(re.search(rf"\b{re.escape(datasource)}\b", "\n".join(n.sql for n in pipe.nodes)))


class Deployer:
    def __init__(self, store, database: str, snapshot: Snapshot, locks: Locks, schema: Schema, views: Views,
                 tokens: TokenStore, history: History, changes: Changes):
        self.store, self.database, self.snapshot, self.locks = store, database, snapshot, locks
        self.schema, self.views, self.tokens, self.history = schema, views, tokens, history
        self.changes = changes
        changes.on("drop", self._drop_forward)

    def deploy(self, project: Project, force: bool = False, allow_destructive: bool = False,
               staged: str | None = None) -> DeployResult:
        """Datasources, then pipes, then the tokens their TOKEN lines name. Redeploying the same files
        changes nothing. Like `tb push`, a deploy deletes nothing the project no longer has, unless
        ``allow_destructive``: then, last, what ``removals`` lists is dropped, with its data.
        ``staged``: the id of the staged deployment this promotes, which becomes the live one."""
        result = DeployResult()
        entry: dict = {}
        try:
            with self.locks.deploy:
                entry = {"id": staged or self.history.next_id(), "started": now(), "status": "failed"}
                result.id = entry["id"]
                for ds in project.datasources.values():  # every expression through the gate, before any table
                    self._check_datasource(ds)
                for ds in project.datasources.values():
                    getattr(result, self._deploy_datasource(ds, force)).append(f"{ds.name}.datasource")
                known = set(self.snapshot.catalog.datasources) | set(project.datasources)
                every = {**self._deployed_pipes(), **project.pipes}
                # Materialized pipes last: their nodes may read the project's other pipes by name.
                for pipe in sorted(project.pipes.values(), key=lambda p: p.materialized is not None):
                    getattr(result, self._deploy_pipe(pipe, known, force, every)).append(f"{pipe.name}.pipe")
                if allow_destructive:
                    self._remove(project, result)
            entry["status"] = "done"
        except EvtrackError as exc:
            entry["error"] = exc.message
            raise
        finally:
            # What was deployed before a failure stays deployed: the history says what changed.
            if entry:
                self.history.add({**entry, "finished": now(), "created": result.created, "changed": result.changed,
                                  **({"deleted": result.deleted} if result.deleted else {})})
        return result

    # -- staged deployments: checked and kept, applied when promoted ------------------------------
    def stage(self, files: dict[str, str], plan: dict[str, list[str]], allow_destructive: bool) -> str:
        """Keep a checked project as a staged deployment; the live one serves until it is promoted."""
        with self.locks.deploy:
            self.check_none_staged()
            staged = self.history.next_id()
            path = self._staged_path(staged)
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"files": files, "allow_destructive": allow_destructive}), encoding="utf-8")
            os.replace(tmp, path)
            self.history.add({"id": staged, "started": now(), "finished": now(), "status": "staged", **plan})
        return staged

    def check_none_staged(self) -> None:
        """A BadRequest while a staged deployment waits: one at a time, as on Tinybird."""
        pending = self.pending()
        if pending is not None:
            raise BadRequest(f"Deployment {pending} is staged: promote it (`tb deployment promote`) or discard "
                             "it (`tb deployment discard`) before creating another")

    def pending(self) -> str | None:
        """The id of the staged deployment waiting to be promoted or discarded, if any."""
        return next((e["id"] for e in self.history.all() if e.get("status") == "staged"), None)

    def staged(self, staged: str) -> tuple[dict[str, str], bool]:
        """A staged deployment's files and whether it may delete datasources."""
        if self.pending() != staged:
            raise BadRequest(f"Deployment {staged} is not staged")
        kept = json.loads(self._staged_path(staged).read_text(encoding="utf-8"))
        return kept["files"], kept["allow_destructive"]

    def discard(self, staged: str) -> None:
        with self.locks.deploy:
            if self.pending() != staged:
                raise BadRequest(f"Deployment {staged} is not staged")
            self.history.add({"id": staged, "status": "discarded", "finished": now()})
        self._staged_path(staged).unlink(missing_ok=True)

    def promoted(self, staged: str) -> None:
        self._staged_path(staged).unlink(missing_ok=True)

    def _staged_path(self, staged: str) -> Path:
        return self.history.path.parent / "staged" / f"{staged}.json"

    def removals(self, project: Project) -> list[str]:
        """What a destructive deploy of ``project`` would drop: deployed pipes, then datasources, it
        does not have. A BadRequest if a pipe that stays still uses a datasource that would go."""
        catalog = self.snapshot.catalog
        pipes = [name for name in catalog.pipe_names() if name not in project.pipes]
        datasources = [name for name in catalog.datasource_names() if name not in project.datasources]
        for name in datasources:
            readers = [pipe.name for pipe in project.pipes.values() if _names(pipe, name)]
            if readers:
                raise BadRequest(f"Datasource '{name}' is not in the project, but the pipes {', '.join(readers)} "
                                 "use it: add it back, or change them first")
        return [f"{name}.pipe" for name in pipes] + [f"{name}.datasource" for name in datasources]

    def drop_datasource(self, name: str, dry_run: bool = False) -> None:
        """Drop one datasource with its data (``tb datasource rm``); refused while a deployed pipe uses it.
        ``dry_run``: only check that it could be."""
        with self.locks.deploy:
            catalog = self.snapshot.catalog
            catalog.datasource(name)
            users = [pipe for pipe in catalog.pipe_names() if _names(catalog.pipe(pipe), name)]
            if users:
                raise SchemaConflict(f"Datasource '{name}' is used by the pipes {', '.join(users)}: "
                                     "delete them first")
            if dry_run:
                return
            self._entered(f"{name}.datasource", lambda: self._drop(datasources=[name]) or "deleted")

    def _remove(self, project: Project, result: DeployResult) -> None:
        items = self.removals(project)
        if items:
            self._drop(pipes=[i.rsplit(".", 1)[0] for i in items if i.endswith(".pipe")],
                       datasources=[i.rsplit(".", 1)[0] for i in items if i.endswith(".datasource")])
            result.deleted.extend(items)

    def _drop(self, pipes: list[str] = (), datasources: list[str] = ()) -> None:
        """Drop pipes (their views), then datasources (their tables), with the snapshot: one journaled change."""
        self.changes.finish(self.changes.begin("drop", pipes=list(pipes), datasources=list(datasources)))

    def _drop_forward(self, record: dict) -> None:
        """A drop's steps, each safe to run again (every statement IF EXISTS, the snapshot's entries popped)."""
        for name in record["pipes"]:
            self.views.drop(name)
            self.snapshot.drop_pipe(name)
        for name in record["datasources"]:
            self.schema.drop(name)
            self.snapshot.drop_datasource(name)
        self.snapshot.publish()

    def deployments(self) -> list[dict]:
        """Every deployment of the store, oldest first: id, started, finished (UTC), status, what changed."""
        return self.history.all()

    def recovered(self, records: list[dict]) -> None:
        """Say in the history what became of the refills a killed process left (``journal``)."""
        for record in records:
            if record["kind"] == "refill":
                self.history.add({"id": record.get("refill", record["id"]), "started": record["started"],
                                  "finished": now(), "status": _RECOVERED[record["phase"]],
                                  "targets": sorted(record["targets"])})

    def deploy_datasource(self, ds: Datasource, force: bool = False) -> str:
        """Create or update one datasource; 'created', 'changed' or 'unchanged'."""
        with self.locks.deploy:
            return self._entered(f"{ds.name}.datasource", lambda: self._deploy_datasource(ds, force))

    def _entered(self, item: str, change) -> str:
        """Run ``change``, a change of one resource (``tb push``, ``tb pipe rm``...), and enter it in the
        deployment history as a deploy is: what it created, changed or deleted, or why it failed."""
        entry = {"id": self.history.next_id(), "started": now(), "status": "failed", "via": "one resource"}
        outcome = "unchanged"
        try:
            outcome = change()
            entry["status"] = "done"
        except EvtrackError as exc:
            entry["error"] = exc.message
            raise
        finally:
            if outcome != "unchanged" or entry["status"] == "failed":
                self.history.add({**entry, "finished": now(), "created": [item] if outcome == "created" else [],
                                  "changed": [item] if outcome == "changed" else [],
                                  **({"deleted": [item]} if outcome == "deleted" else {})})
        return outcome

    def _check_datasource(self, ds: Datasource) -> None:
        try:
            admit_datasource(ds, self.database)
        except QueryError as exc:
            raise BadRequest(exc.message) from None

    def _deploy_datasource(self, ds: Datasource, force: bool) -> str:
        self._check_datasource(ds)
        outcome = self.schema.deploy(self.snapshot.catalog.datasources.get(ds.name), ds, force)
        if outcome != "unchanged":
            self.snapshot.set_datasource(ds)
            self.snapshot.publish(ds)
            self._grant(ds.tokens, "datasource", ds.name)
        return outcome

    def plan_datasource(self, ds: Datasource) -> list[str]:
        """What deploying ``ds`` over the current one would do; a SchemaConflict if it cannot be done in place."""
        return plan(self.snapshot.catalog.datasource(ds.name), ds)

    def deploy_pipe(self, pipe: Pipe, datasources: set[str] | None = None, force: bool = False) -> str:
        """Store one pipe (a snapshot of its file); 'created', 'changed' or 'unchanged'.
        A materialized pipe also creates (or, with ``force``, rebuilds) its view and backfills its target."""
        with self.locks.deploy:
            return self._entered(f"{pipe.name}.pipe", lambda: self._deploy_pipe(pipe, datasources, force))

    def _deploy_pipe(self, pipe: Pipe, datasources: set[str] | None, force: bool = False,
                     every: dict[str, Pipe] | None = None) -> str:
        datasources = datasources if datasources is not None else set(self.snapshot.catalog.datasources)
        every = every if every is not None else {**self._deployed_pipes(), pipe.name: pipe}
        self._check(pipe, datasources, every)
        old = self.snapshot.draft["pipes"].get(pipe.name)
        if pipe.materialized is not None or pipe.name in self.snapshot.views:
            view_changed = self.views.deploy(pipe, datasources, force, every)
            if view_changed and old == pipe.source:
                old = None  # the pipe reads another pipe that changed: its view was rebuilt
        self.snapshot.set_pipe(pipe)
        self.snapshot.publish(pipe)
        self._grant(pipe.tokens, "pipe", pipe.name)
        return "unchanged" if old == pipe.source else "changed" if old else "created"

    def drop_pipe(self, name: str) -> None:
        with self.locks.deploy:
            self.snapshot.catalog.pipe(name)
            self._entered(f"{name}.pipe", lambda: self._drop(pipes=[name]) or "deleted")

    def _deployed_pipes(self) -> dict[str, Pipe]:
        catalog = self.snapshot.catalog
        return {name: catalog.pipe(name) for name in self.snapshot.draft["pipes"]}

    def _grant(self, tokens, kind: str, resource: str) -> None:
        for token_name, permission in tokens:
            self.tokens.grant(token_name, [datafile_scope(kind, permission, resource)])

    # -- checks before a pipe is stored ------------------------------------------------------
    def _check(self, pipe: Pipe, datasources: set[str], every: dict[str, Pipe]) -> None:
        self._check_parsable(pipe)
        self._check_gate(pipe, datasources, every)
        self._check_pipe(pipe, datasources, every)
        if pipe.copy is not None:
            self._check_copy(pipe, datasources, every)

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

    def _check_gate(self, pipe: Pipe, datasources: set[str], every: dict[str, Pipe]) -> None:
        """The pipe's last node, as it would run (its earlier nodes inlined), through the gate before
        anything of it is stored or run, whatever its type: the endpoint, copy and view built from it
        pass it again where they are built."""
        try:
            tables = {**table_map(datasources, self.database), **service_tables(self.database)}
            pipe_sql(pipe, {}, tables, self.database, test_mode=True,
                     node=pipe.nodes[-1], pipes=pipe_reader(pipe, every))
        except QueryError as exc:
            raise BadRequest(f"pipe '{pipe.name}': {exc.message}") from None
        except EvtrackError:
            pass  # a template's own error is reported where the pipe is rendered

    def _check_pipe(self, pipe: Pipe, datasources: set[str], every: dict[str, Pipe]) -> None:
        """An endpoint must render and name only datasources (the service's too), other pipes and its own
        nodes, and their columns."""
        tables = {**table_map(datasources, self.database), **service_tables(self.database)}
        if pipe.endpoint is None:
            return
        try:
            sql = pipe_sql(pipe, {}, tables, self.database, test_mode=True, pipes=pipe_reader(pipe, every))
            self.store.run(f"EXPLAIN {sql}")  # the plan: every name resolved, nothing read
        except QueryError as exc:
            raise BadRequest(f"pipe '{pipe.name}': {exc.message}") from None

    def _check_copy(self, pipe: Pipe, datasources: set[str], every: dict[str, Pipe]) -> None:
        """A copy pipe's target must exist and have every column its copy node returns."""
        node = pipe.copy
        if node.datasource not in datasources:
            raise BadRequest(f"pipe '{pipe.name}': the datasource '{node.datasource}' it copies into does not "
                             f"exist (add datasources/{node.datasource}.datasource)")
        try:
            sql = pipe_sql(pipe, {}, table_map(datasources, self.database), self.database, test_mode=True, node=node,
                           pipes=pipe_reader(pipe, every))
            produced = output_columns(self.store, sql)
        except QueryError as exc:
            raise BadRequest(f"pipe '{pipe.name}': {exc.message}") from None
        check_columns(pipe, produced, [c.name for c in self.snapshot.catalog.datasource(node.datasource).columns], node)
