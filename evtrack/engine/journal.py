"""One journal for every change that touches more than one table, or one table in more than one step.

A change writes what it is about to do, synced, before its first step, and clears it after its
last; a kill in between leaves the record, and the next open of the store (embedded, or under
``evtrack serve``) finishes or undoes the change before anything reads. The rules are the same for
every change, and so is the mechanism; each kind of change only describes its steps:

- ``building``: nothing live has changed yet, only tables built aside under staging names. The
  change is rolled back: what it built aside is dropped, and the store is as it was.
- ``applying`` (for a refill, ``promoting``): live tables may have changed, in part. The change is
  rolled forward: every step runs again, each safe to run twice. A ``DELETE`` finds nothing the
  second time, a ``TRUNCATE`` empties an empty table, an ``EXCHANGE`` is recognised as done by the
  comment the staging table carried into the live name, a rollup is rebuilt again from its source.

Two records can be under way at once, each a ``Journal`` of its own file: a data change
(``change.json``: delete, truncate, replace, copy in replace mode) may rebuild a rollup, which is a
refill (``deployment.json``, ``deploy.refill``). The refill is recovered first, then the change.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["CHANGE", "Changes", "Journal", "REFILL", "now", "write_synced"]

REFILL, CHANGE = "deployment.json", "change.json"
BUILDING, APPLYING = "building", "applying"


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())


def write_synced(path: Path, text: str) -> None:
    """``text`` in ``path``, whole or not at all, on disk before this returns."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


class Journal:
    """The change of one kind under way, if any: one JSON document, replaced whole and synced at each phase."""

    def __init__(self, folder: Path, name: str = REFILL):
        self.path = Path(folder) / name

    def write(self, record: dict) -> None:
        write_synced(self.path, json.dumps(record))

    def read(self) -> dict | None:
        return json.loads(self.path.read_text(encoding="utf-8")) if self.path.exists() else None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class Changes:
    """The data changes of a workspace, journaled in ``change.json``.

    Each kind registers how it goes forward (``forward(record)``: every step, each safe to run
    twice) and, if it builds aside first, how it goes back (``back(record)``). ``begin`` writes the
    record before the first step; ``advance`` moves it to ``applying`` once what was built aside is
    complete; ``finish`` runs the steps forward and clears it. ``recover`` is the same path, taken
    by the next open for a change a kill interrupted.
    """

    def __init__(self, folder: Path):
        self.journal = Journal(folder, CHANGE)
        self._forward: dict[str, Callable[[dict], None]] = {}
        self._back: dict[str, Callable[[dict], None]] = {}

    def on(self, kind: str, forward: Callable[[dict], None], back: Callable[[dict], None] | None = None) -> None:
        self._forward[kind] = forward
        if back is not None:
            self._back[kind] = back

    def begin(self, kind: str, phase: str = APPLYING, **fields) -> dict:
        record = {"id": uuid.uuid4().hex[:8], "kind": kind, "phase": phase, "started": now(), **fields}
        self.journal.write(record)
        return record

    def advance(self, record: dict) -> None:
        record["phase"] = APPLYING
        self.journal.write(record)

    def finish(self, record: dict) -> None:
        self._forward[record["kind"]](record)
        self.journal.clear()

    def abandon(self, record: dict) -> None:
        """Undo a change that failed while building (an error, not a kill): as the next open would."""
        self._back[record["kind"]](record)
        self.journal.clear()

    def recover(self) -> dict | None:
        """Finish or undo the change a killed process left; the record, with what became of it."""
        record = self.journal.read()
        if record is None:
            return None
        record["resumed"] = True
        if record["phase"] == BUILDING:
            self.abandon(record)
            record["outcome"] = "rolled back: it was still building aside"
        else:
            self.finish(record)
            record["outcome"] = "rolled forward: its steps ran again"
        return record
