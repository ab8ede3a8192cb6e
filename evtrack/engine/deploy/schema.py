"""The tables of a workspace's datasources: created, changed in place or rebuilt, and planned.

Each datasource is a table of the workspace's database, with ``<name>_quarantine`` beside it and
its ingest table and views (``ingest``). A compatible change (a new column with a default, a
changed default) is made in place with ALTERs; any other needs ``force``, which rebuilds the table
keeping the data of the columns both schemas share. A change of ``ENGINE_SETTINGS`` alone is made
in place (``MODIFY SETTING``, ``RESET SETTING``), as the settings change how parts are kept, not
what they hold.
"""

from __future__ import annotations

import uuid

from ...errors import SchemaConflict
from ..journal import BUILDING, Changes, mark, swap_in
from ...project import Datasource, split_columns
from ..ingest.statement import DEDUP_WINDOW, imports_table, ingest_ddl, ingest_table, quarantine_ddl, quarantine_name

__all__ = ["Schema", "plan"]


class Schema:
    def __init__(self, store, database: str, snapshot, changes: Changes):
        self.store, self.database, self.snapshot, self.changes = store, database, snapshot, changes
        changes.on("rebuild", self._rebuild_forward, lambda record: self._drop_staging(record["staging"]))

    def deploy(self, old: Datasource | None, ds: Datasource, force: bool) -> str:
        """Create or update the tables of ``ds`` (``old``: as deployed); 'created', 'changed' or 'unchanged'."""
        self.store.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
        if old is not None and old.source == ds.source and self.exists(ds.name):
            if not self.exists(imports_table(ds.name)):  # a store made before the imports audit
                self._create_ingest(ds)
            return "unchanged"
        if old is None or not self.exists(ds.name):
            self._create(ds)
            return "created"
        conflict = _incompatibility(old, ds)
        if conflict and not force:
            raise SchemaConflict(f"Datasource '{ds.name}': {conflict}. Use --force to rebuild it, keeping the data of its common columns")
        if conflict:
            self._rebuild(old, ds)
        else:
            self._alter(old, ds)
        self._create_ingest(ds)
        return "changed"

    def drop(self, name: str) -> None:
        """Drop a datasource's tables and views, with their data: the ingest path first, so nothing
        writes into a table being dropped."""
        for view in (f"{name}__store", f"{name}__quarantine", f"{name}__count"):
            self.store.execute(f"DROP VIEW IF EXISTS {self.database}.`{view}`")
        for table in (ingest_table(name), name, quarantine_name(name), imports_table(name)):
            self.store.execute(f"DROP TABLE IF EXISTS {self.database}.`{table}` SYNC")

    def exists(self, name: str) -> bool:
        out = self.store.run(f"EXISTS TABLE {self.database}.`{name}`", "CSV")
        return out.strip() == b"1"

    def remember_blocks(self) -> None:
        """Every MergeTree table of the workspace remembers its last blocks, which idempotent inserts
        need (``ingest.exactly_once``); a table made before that, or by a deploy, is given it here."""
        names = self.store.run(
            f"SELECT name FROM system.tables WHERE database = '{self.database}' AND engine LIKE '%MergeTree' "
            "AND NOT match(engine_full, 'non_replicated_deduplication_window')", "TSV")
        for name in names.decode().splitlines():
            self.store.execute(f"ALTER TABLE {self.database}.`{name}` MODIFY SETTING "
                               f"non_replicated_deduplication_window = {DEDUP_WINDOW}")

    def create(self, ds: Datasource) -> None:
        """Create the tables of ``ds`` (the datasource, its quarantine, its ingest path)."""
        self.store.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
        self._create(ds)

    def _create(self, ds: Datasource, name: str | None = None) -> None:
        table = f"{self.database}.`{name or ds.name}`"
        columns = ",\n    ".join(ds.column_ddl)
        self.store.execute(f"CREATE TABLE IF NOT EXISTS {table} (\n    {columns}\n) ENGINE = {ds.engine}")
        self.store.execute(quarantine_ddl(ds, f"{self.database}.`{quarantine_name(ds.name)}`"))
        if name is None:
            self._create_ingest(ds)
        self.remember_blocks()

    def _create_ingest(self, ds: Datasource) -> None:
        for statement in ingest_ddl(ds, self.database):
            self.store.execute(statement)

    def _alter(self, old: Datasource, new: Datasource) -> None:
        """Compatible changes only: new columns with a default, changed defaults."""
        table = f"{self.database}.`{new.name}`"
        quarantine = f"{self.database}.`{quarantine_name(new.name)}`"
        for kind, column, ddl, previous in _column_changes(old, new):
            if kind == "ADD":
                self.store.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {ddl}")
                self.store.execute(
                    f"ALTER TABLE {quarantine} ADD COLUMN IF NOT EXISTS `{column.name}` Nullable(String) AFTER `{previous}`")
            else:
                self.store.execute(f"ALTER TABLE {table} MODIFY COLUMN {ddl}")
        for statement in _setting_changes(old, new):
            self.store.execute(f"ALTER TABLE {table} {statement}")

    def _rebuild(self, old: Datasource, new: Datasource) -> None:
        """Rebuild a datasource on --force, copying the columns both schemas share: aside, then
        swapped in with its ingest path and its datafile, as one journaled change."""
        name = f"{new.name}__rebuild_{uuid.uuid4().hex[:8]}"
        table, staging = f"{self.database}.`{new.name}`", f"{self.database}.`{name}`"
        record = self.changes.begin("rebuild", BUILDING, live=new.name, staging=name, source=new.source,
                                    ingest=ingest_ddl(new, self.database))
        try:
            self._create(new, name)
            common = [c.name for c in new.columns if c.name in {o.name for o in old.columns}]
            names = ", ".join(f"`{c}`" for c in common)
            self.store.execute(f"INSERT INTO {staging} ({names}) SELECT {names} FROM {table}")
            mark(self.store, self.database, name, record["id"])
        except BaseException:
            self.changes.abandon(record)
            raise
        self.changes.advance(record)
        self.changes.finish(record)

    def _rebuild_forward(self, record: dict) -> None:
        """A rebuild's steps once its table is complete aside, each safe to run again: the exchange
        (once: the live table then carries the change's mark), the old rows dropped, the ingest path
        made for the new columns, the new datafile in the snapshot."""
        swap_in(self.store, self.database, record["staging"], record["live"], record["id"])
        self._drop_staging(record["staging"])
        for statement in record["ingest"]:
            self.store.execute(statement)
        self.snapshot.draft["datasources"][record["live"]] = record["source"]
        self.snapshot.publish()

    def _drop_staging(self, name: str) -> None:
        self.store.execute(f"DROP TABLE IF EXISTS {self.database}.`{name}` SYNC")


def plan(old: Datasource, new: Datasource) -> list[str]:
    """What deploying ``new`` over ``old`` would do; a SchemaConflict if it cannot be done in place."""
    conflict = _incompatibility(old, new)
    if conflict:
        raise SchemaConflict(f"Datasource '{new.name}': {conflict}")
    operations = [f"{kind} COLUMN {ddl}" for kind, _, ddl, _ in _column_changes(old, new)]
    operations += _setting_changes(old, new)
    if old.description != new.description:
        operations.append("CHANGE DESCRIPTION")
    return operations


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
    if _engine_without_settings(old) != _engine_without_settings(new):
        return f"the engine would change from {old.engine} to {new.engine}"
    return None


def _settings(ds: Datasource) -> dict[str, str]:
    """The datasource's ENGINE_SETTINGS, by name."""
    text = dict(ds.engine_settings).get("engine_settings", "")
    pairs = (item.partition("=") for item in split_columns(text) if item.strip())
    return {name.strip(): value.strip() for name, _, value in pairs}


def _engine_without_settings(ds: Datasource) -> str:
    text = dict(ds.engine_settings).get("engine_settings")
    return ds.engine.removesuffix(f" SETTINGS {text}") if text else ds.engine


def _setting_changes(old: Datasource, new: Datasource) -> list[str]:
    """The ALTERs that take the table from ``old``'s ENGINE_SETTINGS to ``new``'s."""
    before, after = _settings(old), _settings(new)
    changed = [f"{name} = {value}" for name, value in after.items() if before.get(name) != value]
    removed = [name for name in before if name not in after]
    return ([f"MODIFY SETTING {', '.join(changed)}"] if changed else []) + \
        ([f"RESET SETTING {', '.join(removed)}"] if removed else [])
