"""Forgetting data: delete rows by condition (everywhere they were materialized), truncate.

A condition is an expression over the datasource's own columns, as Tinybird takes it: no other
table (a subquery into one, a table function) and nothing but the expression (no comment, no
statement or clause after it). It runs on the datasource, and, by default, on every datasource
materialized from it whose columns hold it, so an erased user is gone from the raw events and from
every rollup derived from them in one call. A datasource whose columns cannot express it (an
aggregate without the user's column, a daily rollup and a condition on the time) would keep what it
derived from the deleted rows: it is rebuilt from its sources once they are deleted, unless a
datasource it is fed from expires rows with a TTL (a rebuild would lose what they counted); then it
is named, with what to do. Each table's deletion is a synchronous mutation; what it removed is
counted first, in raw rows.

Rows acknowledged but not yet inserted cannot come back after a deletion: a store replays its
write-ahead log when it opens, before anything else, and the server drains its queue before it
deletes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import uuid
from dataclasses import dataclass, field

from ...errors import BadRequest, QueryError
from ...times import utc_text
from ..catalog import Snapshot
from ..journal import BUILDING, Changes, mark, swap_in
from ..sql.gate import admit
from ..sql.guard import check_parsable
from ..ingest.statement import quarantine_name, sql_string
from ..ingest.appends import Ingest
from ..locks import Locks
from ..deploy.materialized import downstream
from ..deploy.schema import Schema
from ..sql.sqlapi import used_tables
from ..deploy.views import Views

__all__ = ["DELETIONS", "Lifecycle", "Deletion"]

DELETIONS = "deletions.jsonl"  # in the workspace's folder: every deletion, as a report to keep

# What may not be in a condition: a second statement, a comment hiding the rest, a clause after it.
_NOT_AN_EXPRESSION = re.compile(r";|--|/\*|#|\b(SETTINGS|FORMAT|INTO\s+OUTFILE)\b", re.IGNORECASE)


@dataclass
class Deletion:
    """Rows removed (or, on a dry run, that would be) per table, and the datasources left alone."""

    datasource: str
    condition: str
    removed: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # datasource -> why, and what to do
    rebuilt: dict[str, str] = field(default_factory=dict)  # datasource -> why (on a dry run: would be)
    dry_run: bool = False


class Lifecycle:
    def __init__(self, store, database: str, snapshot: Snapshot, locks: Locks, schema: Schema, views: Views,
                 ingest: Ingest, changes: Changes):
        self.store, self.database, self.snapshot, self.locks = store, database, snapshot, locks
        self.schema, self.views, self.ingest, self.changes = schema, views, ingest, changes
        # Each change says its steps to the one journal (``evtrack.engine.journal``), which runs them
        # forward (or back, while building aside), now or when the store next opens after a kill.
        changes.on("delete", self._delete_forward)
        changes.on("truncate", self._truncate_forward)
        changes.on("replace", self._replace_forward, self._replace_back)

    def check_condition(self, datasource: str, condition: str) -> str:
        """The condition as it will run; a BadRequest saying why it cannot."""
        self.snapshot.catalog.datasource(datasource)
        text = (condition or "").strip()
        if not text:
            raise BadRequest("The delete condition is empty: give an SQL expression over the datasource's columns, "
                             "such as user_id = 'u1'")
        if _NOT_AN_EXPRESSION.search(text):
            raise BadRequest(f"Invalid delete condition '{text}': only an expression over the columns of "
                             f"'{datasource}' (no ';', comments, SETTINGS or FORMAT)")
        probe = f"SELECT 1 FROM {datasource} WHERE ({text})"
        check_parsable(self.store, probe)
        others = [f"{db + '.' if db else ''}{name or function}" for db, name, function in used_tables(probe)
                  if db or function or name != datasource]
        if others:
            raise BadRequest(f"Invalid delete condition '{text}': it may use only the columns of '{datasource}', "
                             f"not {', '.join(sorted(set(others)))}")
        try:
            admit(f"SELECT 1 FROM `{self.database}`.`{datasource}` WHERE ({text})", self.database)
        except QueryError as exc:
            raise BadRequest(f"Invalid delete condition '{text}': {exc.message}") from None
        return text

    def delete(self, datasource: str, condition: str, cascade: bool = True, dry_run: bool = False) -> Deletion:
        """Delete the rows of ``datasource`` (and its quarantine) where ``condition`` holds, and, with
        ``cascade``, of every datasource materialized from it that can express the condition."""
        text = self.check_condition(datasource, condition)
        result = Deletion(datasource, text, dry_run=dry_run)
        reached = downstream({datasource}, self.snapshot.views) if cascade else {datasource}
        names = [datasource, *sorted(reached - {datasource})]
        # A rebuild swaps tables and the catalog, as a deploy does: then the deletion runs alone.
        alone = not dry_run and any(self._inexpressible(name, text) for name in names[1:])
        with _exclusive(self.locks, names), (self.locks.deploy if alone else self.locks.deploy.shared()):
            targets, inexpressible = [], {}
            for name in names:
                for table in (name, quarantine_name(name)):
                    try:
                        rows = int(self.store.run(f"SELECT count() FROM `{self.database}`.`{table}` "
                                                  f"WHERE ({text})", "TSV").strip())
                    except QueryError as exc:
                        if table == name:
                            if name == datasource:
                                raise BadRequest(f"Invalid delete condition '{text}': {exc.message}") from None
                            inexpressible[name] = _reason(exc.message)
                        continue  # a quarantine whose text columns cannot take the condition
                    result.removed[table] = rows
                    if rows:
                        targets.append(table)
            rebuild = self._plan_rebuilds(result, inexpressible, reached, can=alone or dry_run)
            if not dry_run:
                record = self.changes.begin("delete", datasource=datasource, condition=text, targets=targets,
                                            rebuild=rebuild, removed=result.removed, skipped=result.skipped,
                                            rebuilt=result.rebuilt)
                self.changes.finish(record)
        return result

    def _delete_forward(self, record: dict) -> None:
        """A deletion's steps, each safe to run again: the rows go from every table, the rollups that
        cannot express the condition are rebuilt from sources the rows are gone from, the report is kept."""
        for table in record["targets"]:
            self.store.execute(f"ALTER TABLE `{self.database}`.`{table}` DELETE WHERE ({record['condition']}) "
                               "SETTINGS mutations_sync = 2")
        for name in record["rebuild"]:  # each refills what it feeds
            self.views.rebuild(name)
        self._record(record)

    def _inexpressible(self, name: str, condition: str) -> bool:
        """Whether the columns of ``name`` cannot express ``condition`` (as the deletion will find)."""
        try:
            self.store.run(f"SELECT 1 FROM `{self.database}`.`{name}` WHERE ({condition}) LIMIT 0", "TSV")
        except QueryError:
            return True
        return False

    def _plan_rebuilds(self, result: Deletion, inexpressible: dict[str, str], reached: set[str], can: bool) -> list[str]:
        """Sort the datasources that cannot express the condition into ``result.rebuilt`` and
        ``result.skipped``; the ones to rebuild, none of which is fed from another of them (a rebuild
        refills what is fed from it)."""
        views = self.snapshot.views
        rebuild = []
        for name in sorted(inexpressible):
            upstream = {source for source in reached if name in downstream({source}, views)} - {name}
            sources = sorted({s for v in views.values() if v["target"] == name for s in v["reads"]})
            expiring = sorted(s for s in upstream if dict(self.snapshot.catalog.datasource(s).engine_settings)
                              .get("engine_ttl"))
            why = f"its columns cannot express the condition ({inexpressible[name]})"
            if expiring or not can:
                reason = (f"'{expiring[0]}' expires rows with a TTL, which a rebuild would lose" if expiring
                          else "the deletion could not run alone to rebuild it")
                result.skipped[name] = (f"{why}: it keeps those rows ({reason}); rebuild it with `evtrack deploy "
                                        "--force` after changing its pipe, or accept it")
                continue
            done = "would be rebuilt" if result.dry_run else "rebuilt"
            result.rebuilt[name] = f"{why}: {done} from {', '.join(repr(s) for s in sources)} once the rows are deleted"
            rebuild.append(name)
        return [name for name in rebuild if not any(name in downstream({other}, views) - {other}
                                                    for other in rebuild if other != name)]

    def deletions(self) -> list[dict]:
        """Every deletion of the workspace, oldest first: when, what, and what each table lost."""
        path = self.snapshot.folder / DELETIONS
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def _record(self, record: dict) -> None:
        """A report to keep (an erasure request's answer): appended, synced, never rewritten; once per
        deletion, with ``resumed`` when a kill interrupted it and the next open finished it."""
        if any(entry.get("id") == record["id"] for entry in self.deletions()[-3:]):
            return  # written before the kill that left the journal
        entry = {"at": utc_text(), "id": record["id"],
                 **{key: record[key] for key in ("datasource", "condition", "removed", "skipped", "rebuilt")},
                 **({"resumed": True} if record.get("resumed") else {})}
        with open(self.snapshot.folder / DELETIONS, "a", encoding="utf-8") as out:
            out.write(json.dumps(entry, sort_keys=True) + "\n")
            out.flush()
            os.fsync(out.fileno())

    def replace(self, datasource: str, payload: bytes, condition: str | None = None) -> tuple[int, int, str]:
        """Replace the rows of ``datasource`` with the lines of ``payload`` (NDJSON), all of them or,
        with ``condition``, those where it holds: rows where it does not are kept, and lines where
        it does not are left out. (stored, quarantined, import id).

        The new content is ingested aside, through the same checks and quarantine as an append,
        into a staging copy of the datasource, then swapped in with one EXCHANGE: a reader sees the
        old rows or the new ones. The datasources materialized from it are then refilled from it,
        aside too. A replace runs alone in its workspace, as a deploy.
        """
        ds = self.snapshot.catalog.datasource(datasource)
        text = self.check_condition(datasource, condition) if condition else None
        staging = dataclasses.replace(ds, name=f"{datasource}__replace_{uuid.uuid4().hex[:8]}")
        import_id = uuid.uuid4().hex
        table, aside = f"`{self.database}`.`{datasource}`", f"`{self.database}`.`{staging.name}`"
        rebuild = sorted({v["target"] for v in self.snapshot.views.values() if datasource in v["reads"]})
        with self.locks.deploy:
            record = self.changes.begin("replace", BUILDING, live=datasource, staging=staging.name,
                                        import_id=import_id, rebuild=rebuild, quarantine=True)
            try:
                self.schema.create(staging)
                [result] = self.ingest.write(staging, [payload], [import_id])  # the append's one statement
                if text is not None:
                    self.store.execute(f"ALTER TABLE {aside} DELETE WHERE NOT ({text}) SETTINGS mutations_sync = 2")
                    self.store.execute(f"INSERT INTO {aside} SELECT * FROM {table} WHERE NOT ({text})")
                mark(self.store, self.database, staging.name, record["id"])
            except BaseException:
                self.changes.abandon(record)
                raise
            self.changes.advance(record)
            self.changes.finish(record)
        return result.successful_rows, result.quarantined_rows, import_id

    def _replace_forward(self, record: dict) -> None:
        """A replace's steps once its new rows are complete aside, each safe to run again: the
        quarantined lines join the live quarantine (once: by their import id), the tables are
        exchanged (once: the live one then carries the change's mark), the old rows are dropped, and
        the datasources materialized from it are rebuilt."""
        db, live, staging = self.database, record["live"], record["staging"]
        if record.get("quarantine"):
            quarantine, aside = f"`{db}`.`{quarantine_name(live)}`", f"`{db}`.`{quarantine_name(staging)}`"
            if self.schema.exists(quarantine_name(staging)):
                self.store.execute(f"INSERT INTO {quarantine} SELECT * FROM {aside} WHERE (SELECT count() FROM "
                                   f"{quarantine} WHERE c__import_id = {sql_string(record['import_id'])}) = 0")
        swap_in(self.store, db, staging, live, record["id"])
        self._replace_back(record)
        for target in record["rebuild"]:
            self.views.rebuild(target)

    def _replace_back(self, record: dict) -> None:
        """What a replace built aside (a copy's staging table, or a datasource's with its quarantine
        and ingest path), dropped: after the exchange, the old rows."""
        self.schema.drop(record["staging"])

    def truncate(self, datasource: str, cascade: bool = False) -> list[str]:
        """Empty ``datasource`` and its quarantine (and, with ``cascade``, every datasource
        materialized from it); the datasources emptied."""
        self.snapshot.catalog.datasource(datasource)
        reached = downstream({datasource}, self.snapshot.views) if cascade else {datasource}
        names = [datasource, *sorted(reached - {datasource})]
        with _exclusive(self.locks, names), self.locks.deploy.shared():
            record = self.changes.begin("truncate", tables=[t for name in names for t in (name, quarantine_name(name))])
            self.changes.finish(record)
        return names

    def _truncate_forward(self, record: dict) -> None:
        for table in record["tables"]:
            self.store.execute(f"TRUNCATE TABLE IF EXISTS `{self.database}`.`{table}`")


@contextlib.contextmanager
def _exclusive(locks: Locks, names: list[str]):
    """The ingest locks of ``names``, alone, taken as every ingest takes them: in name order, before
    the deploy lock (so no two wait on each other)."""
    with contextlib.ExitStack() as held:
        for name in sorted(names):
            held.enter_context(locks.datasource(name))
        yield


def _reason(message: str) -> str:
    found = re.search(r"Unknown expression (?:or function )?identifier `?([^`' ]+)`?|Missing columns: '([^']+)'", message)
    return f"no column {found.group(1) or found.group(2)}" if found else message.split(". ")[0]
