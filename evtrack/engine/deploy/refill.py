"""Refilling materialized targets aside, then promoting them in one recorded step.

A deploy that adds or changes a materialized pipe must fill its target, and every target fed
from that one, from their sources. Done in place, a kill in the middle left an empty or half-full
target that the next deploy of the same files called unchanged. So the targets are built under
staging names (``<target>__deploy_<id>``), with the views between them recreated on the staging
tables (``<view>__deploy_<id>``), and only then promoted: the staging tables are exchanged with
the live ones (views follow a table's name, so the live views write into the new tables), the
changed view is replaced, and the snapshot is written. The journal (``evtrack.engine.journal``, whose
rules every multi-step change follows; the kind ``refill``) says which phase a refill is in:

- ``building``: nothing live has changed. A crash here is rolled back when the store next opens:
  the staging tables and views are dropped, and the old deployment stands.
- ``applying`` (the promotion): the journal holds all the promotion needs (the view's DDL, the snapshot after),
  and each step can run again. A crash here is rolled forward when the store next opens. Each
  staging table carries the refill's id as its comment, and EXCHANGE moves a comment with its
  table, so an exchange already done is recognised and not undone by doing it twice.

Every refill, and what became of it, is appended to the deployment history (``deploy.History``).
"""

from __future__ import annotations

import uuid

from ...errors import BadRequest, QueryError
from ..catalog import DATABASE
from ..journal import mark, swap_in
from .materialized import backfill_sql

__all__ = ["Refill", "build", "promote", "roll_back"]

class Refill:
    """What one refill builds: ``targets`` (live name -> staging name), the staging views of the
    cascade between them, and the rows to start from."""

    def __init__(self, targets: set[str], keep: bool, database: str):
        self.id, self.database = uuid.uuid4().hex[:8], database
        self.targets = {name: f"{name}__deploy_{self.id}" for name in sorted(targets)}
        self.keep = keep  # start from the live rows (a new view adds to them) or from none (a rebuild)

    def staging_view(self, view: str) -> str:
        return f"{view}__deploy_{self.id}"

    def fields(self, cascade: list[str]) -> dict:
        """What the journal's record of this refill holds (``Changes.begin``)."""
        return {"refill": self.id, "database": self.database, "targets": self.targets,
                "cascade": [self.staging_view(name) for name in cascade]}


def _table(database: str, name: str) -> str:
    return f"`{database}`.`{name}`"


def build(store, refill: Refill, cascade: dict[str, tuple[str, str]],
          entries: list[tuple[str, str, str, list[str]]]) -> None:
    """Fill the staging tables. ``cascade``: view -> (target, its SQL over the staging tables);
    ``entries``: (pipe, target, SQL over live sources, columns) for each view that writes into
    the targets from outside them."""
    db = refill.database
    for live, staging in refill.targets.items():
        store.execute(f"CREATE TABLE {_table(db, staging)} AS {_table(db, live)}")
        mark(store, db, staging, refill.id)
        if refill.keep:  # before the cascade exists: each staging table gets its own rows once
            store.execute(f"INSERT INTO {_table(db, staging)} SELECT * FROM {_table(db, live)}")
    for view, (target, sql) in cascade.items():
        store.execute(f"CREATE MATERIALIZED VIEW {_table(db, refill.staging_view(view))} "
                      f"TO {_table(db, refill.targets[target])} AS {sql}")
    for pipe, target, sql, columns in entries:
        try:
            store.execute(backfill_sql(refill.targets[target], sql, columns, db))
        except QueryError as exc:
            raise BadRequest(f"pipe '{pipe}': populating '{target}' failed: {exc.message}") from None


def promote(store, record: dict) -> None:
    """Swap the staging tables in and replace the changed view; safe to run again after a crash."""
    db = record.get("database", DATABASE)
    for view in record["cascade"]:
        store.execute(f"DROP VIEW IF EXISTS {_table(db, view)}")
    for live, staging in record["targets"].items():
        swap_in(store, db, staging, live, record.get("refill", record["id"]))
    for view, ddl in record.get("views", {}).items():
        store.execute(f"DROP VIEW IF EXISTS {_table(db, view)}")
        store.execute(ddl)
    _drop_staging(store, record)


def roll_back(store, record: dict) -> None:
    """Undo a refill that was still building: nothing live had changed."""
    db = record.get("database", DATABASE)
    for view in record["cascade"]:
        store.execute(f"DROP VIEW IF EXISTS {_table(db, view)}")
    _drop_staging(store, record)


def _drop_staging(store, record: dict) -> None:
    db = record.get("database", DATABASE)
    for staging in record["targets"].values():
        store.execute(f"DROP TABLE IF EXISTS {_table(db, staging)}")
