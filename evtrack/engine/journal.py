"""One journal for every change that touches more than one table, or one table in more than one step.

A change writes what it is about to do, synced, before its first step, and clears it after its
last; a kill in between leaves the record, and the next open of the store (embedded, or under
``evtrack serve``) finishes or undoes the change before anything reads. The rules are the same for
every change, and so is the mechanism; each kind of change only describes its steps:

- ``building``: nothing live has changed yet, only tables built aside under staging names, or
  parts an append wrote and may take back. The change is rolled back: what it built aside is
  dropped (the append's parts, by their block numbers), and the store is as it was.
- ``applying``: live tables may have changed, in part. The change is rolled forward: every step
  runs again, each safe to run twice. A ``DELETE`` finds nothing the second time, a ``TRUNCATE``
  empties an empty table, an ``EXCHANGE`` is recognised as done by the comment the staging table
  carried into the live name, a rollup is rebuilt again from its source.

The kinds: ``refill`` (``deploy.views``: materialized targets filled aside, then promoted),
``rebuild`` and ``drop`` (``deploy.schema``, ``deploy.deployer``), ``delete``, ``truncate`` and
``replace`` (``change.lifecycle``; a copy in replace mode is a replace), ``append``
(``ingest.atomic``). Each change is one file in the workspace's ``changes/`` folder, so changes of
different datasources run side by side; one may start another (a deletion rebuilds a rollup: a
refill; a replace appends its rows aside: an append). The next open takes the newest first, so an
inner change is settled before the change that started it goes forward or back.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from .ingest.statement import sql_string
from ..times import utc_text

__all__ = ["APPLYING", "BUILDING", "Changes", "mark", "now", "swap_in", "sync_folder", "write_synced"]

log = logging.getLogger("evtrack.engine")

BUILDING, APPLYING = "building", "applying"
FOLDER = "changes"
# Where a store made before the one journal kept its one refill and its one data change.
_EARLIER = {"deployment.json": "refill", "change.json": None}


def now() -> str:
    return utc_text()


def write_synced(path: Path, text: str) -> None:
    """``text`` in ``path``, whole or not at all, on disk before this returns."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """Make the names in ``folder`` (a file made, replaced or removed) durable."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


class Changes:
    """The changes under way in a workspace, one synced record each in ``changes/``.

    Each kind registers how it goes forward (``forward(record)``: every step, each safe to run
    twice) and, if it builds aside first, how it goes back (``back(record)``). ``begin`` writes the
    record before the first step; ``advance`` moves it to ``applying`` once what was built aside is
    complete; ``finish`` runs the steps forward and clears it; ``abandon`` runs them back and clears
    it; ``done`` clears a change whose steps all ran. ``recover`` takes the same paths, at the next
    open, for the changes a kill interrupted.
    """

    def __init__(self, folder: Path):
        self.home = Path(folder)
        self.folder = self.home / FOLDER
        self._forward: dict[str, Callable[[dict], None]] = {}
        self._back: dict[str, Callable[[dict], None]] = {}

    def on(self, kind: str, forward: Callable[[dict], None] | None = None,
           back: Callable[[dict], None] | None = None) -> None:
        if forward is not None:
            self._forward[kind] = forward
        if back is not None:
            self._back[kind] = back

    def begin(self, kind: str, phase: str = APPLYING, **fields) -> dict:
        ident = uuid.uuid4().hex[:8]
        record = {"id": ident, "kind": kind, "phase": phase, "started": now(), **fields,
                  "file": f"{FOLDER}/{time.time_ns():020d}-{kind}-{ident}.json"}
        self.folder.mkdir(exist_ok=True)
        self._write(record)
        return record

    def advance(self, record: dict, **fields) -> None:
        """What was built aside is complete: from here on, the change goes forward."""
        record.update(fields, phase=APPLYING)
        self._write(record)

    def finish(self, record: dict) -> None:
        self._forward[record["kind"]](record)
        self.done(record)

    def abandon(self, record: dict) -> None:
        """Undo a change that failed while building (an error, not a kill): as the next open would."""
        self._back[record["kind"]](record)
        self.done(record)

    def done(self, record: dict) -> None:
        path = self._path(record)
        if path.exists():
            path.unlink()
            sync_folder(path.parent)

    def under_way(self) -> list[dict]:
        """The records a killed process left, newest first."""
        records = []
        if self.folder.exists():
            for path in sorted(self.folder.glob("*.json"), reverse=True):
                records.append(json.loads(path.read_text(encoding="utf-8")))
        for name, kind in _EARLIER.items():  # at most one of each, older than any record above
            path = self.home / name
            if path.exists():
                record = json.loads(path.read_text(encoding="utf-8"))
                record.setdefault("kind", kind)
                record["phase"] = APPLYING if record["phase"] in (APPLYING, "promoting") else BUILDING
                records.append({**record, "file": name})
        return records

    def recover(self) -> list[dict]:
        """Finish or undo every change a killed process left; the records, with what became of each."""
        settled = []
        for record in self.under_way():
            record["resumed"] = True
            if record["phase"] == BUILDING:
                self.abandon(record)
                record["outcome"] = "rolled back: it was still building aside"
            else:
                self.finish(record)
                record["outcome"] = "rolled forward: its steps ran again"
            log.warning("%s: the %s started %s was interrupted and %s", self.home.name, record["kind"],
                        record["started"], record["outcome"])
            settled.append(record)
        return settled

    def _write(self, record: dict) -> None:
        write_synced(self._path(record), json.dumps(record))

    def _path(self, record: dict) -> Path:
        return self.home / record["file"]


def mark(store, database: str, staging: str, ident: str) -> None:
    """Mark a complete staging table with the change it belongs to: EXCHANGE carries the mark into
    the live name, so an exchange already done is recognised (``swap_in``)."""
    store.execute(f"ALTER TABLE `{database}`.`{staging}` MODIFY COMMENT {sql_string(f'evtrack change {ident}')}")


def swap_in(store, database: str, staging: str, live: str, ident: str) -> None:
    """Exchange ``staging`` with ``live`` unless ``live`` carries the change's mark already."""
    comment = store.run(f"SELECT comment FROM system.tables WHERE database = {sql_string(database)} "
                        f"AND name = {sql_string(live)}", "TSVRaw").decode().strip()
    # "evtrack deploy": the mark of refills journaled before the one journal
    if comment not in (f"evtrack change {ident}", f"evtrack deploy {ident}"):
        store.execute(f"EXCHANGE TABLES `{database}`.`{staging}` AND `{database}`.`{live}`")
