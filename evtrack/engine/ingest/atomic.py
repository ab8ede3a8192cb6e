"""An append is all or nothing: rows refused leave no row in any table.

One insert writes many tables: the datasource, its quarantine and imports audit, and every
datasource materialized from it. ClickHouse commits each table's parts as they are written, so an
insert that fails part way (a view that throws, the disk full, the memory limit) or a process
killed in its middle leaves some tables with rows the others lack.

So each insert is a change of the one journal (``evtrack.engine.journal``, kind ``append``), in
its ``building`` phase from start to end: before it runs, the journal records, for every table it
writes, the highest block number there (each part carries the range of the blocks it holds, and a
table's block numbers only grow). If the insert fails, or the process is killed and the store
opens again, every part above those marks is dropped, in every table: the store is as it was.
``DROP PART`` also forgets the blocks of an idempotent insert (the write-ahead log's), so its
replay writes them again.

Two things make the marks exact: the insert holds the locks of the datasources it writes alone
(``Locks.ingesting(..., alone=True)``), so no other insert adds parts there meanwhile; and merges
of those tables are stopped while it runs, so none of its parts is merged with older ones before
it is known to have succeeded. Merges run again as soon as it ends (and in a new process, always).
"""

from __future__ import annotations

import contextlib
import logging

from ...errors import QueryError, StoreError
from ..journal import BUILDING, Changes
from .statement import imports_table, quarantine_name, sql_string

__all__ = ["AllOrNothing"]

log = logging.getLogger("evtrack.ingest")


class AllOrNothing:
    def __init__(self, store, database: str, locks, changes: Changes):
        self.store, self.database, self.locks, self.changes = store, database, locks, changes
        changes.on("append", back=self._undo)

    def tables(self, datasource: str) -> list[str]:
        """The tables an insert into ``datasource`` writes: it, its quarantine and imports audit, and
        every datasource materialized from it."""
        return sorted({*self.locks.reached(datasource), quarantine_name(datasource), imports_table(datasource)})

    @contextlib.contextmanager
    def writing(self, tables: list[str]):
        """Run an insert into ``tables`` (their locks held alone by the caller): kept whole if it
        succeeds, taken back whole if it fails here or the process dies in it."""
        record = self.changes.begin("append", BUILDING, database=self.database, marks=self._marks(tables))
        self._merges("STOP", tables)
        try:
            yield
        except BaseException:
            try:
                self.changes.abandon(record)
            except Exception:  # the next open takes it back: the record stays
                log.exception("taking back a failed insert into %s.%s failed", self.database, ", ".join(tables))
            raise
        finally:
            self._merges("START", tables)
        self.changes.done(record)

    def _marks(self, tables: list[str]) -> dict[str, int]:
        out = self.store.run(
            f"SELECT table, max(max_block_number) FROM system.parts WHERE database = {sql_string(self.database)} "
            f"AND table IN ({', '.join(map(sql_string, tables))}) GROUP BY table", "TSV")
        found = dict(line.split("\t") for line in out.decode().splitlines() if line)
        return {table: int(found.get(table, 0)) for table in tables}

    def _merges(self, verb: str, tables: list[str], database: str | None = None) -> None:
        for table in tables:
            self.store.execute(f"SYSTEM {verb} MERGES `{database or self.database}`.`{table}`")

    def _undo(self, record: dict) -> None:
        """Drop every part written above the marks: the append's, and only its. Merges of those tables
        are stopped meanwhile (in a new process they start as soon as the store opens): a part merged
        away between listing and dropping is listed again, under its new name."""
        database, marks = record["database"], record["marks"]
        if not marks:
            return
        tables = list(marks)
        self._merges("STOP", tables, database)
        try:
            for _ in range(10):
                if not self._drop_above(database, marks):
                    return
            raise StoreError(f"could not take back an interrupted insert into {database}: its parts kept "
                             "changing while they were dropped")
        finally:
            self._merges("START", tables, database)

    def _drop_above(self, database: str, marks: dict[str, int]) -> bool:
        """Drop the parts above the marks; True if one was gone before it could be (list again)."""
        above = " OR ".join(f"(table = {sql_string(t)} AND max_block_number > {mark})" for t, mark in marks.items())
        out = self.store.run(f"SELECT table, name, min_block_number FROM system.parts WHERE active AND "
                             f"database = {sql_string(database)} AND ({above})", "TSV")
        for line in out.decode().splitlines():
            table, part, first = line.split("\t")
            if int(first) <= marks[table]:  # merged with older rows in the instant before this ran
                log.error("%s.%s: part %s holds rows of an interrupted insert merged with older ones; "
                          "they stay", database, table, part)
                continue
            try:
                self.store.execute(f"ALTER TABLE `{database}`.`{table}` DROP PART {sql_string(part)}")
            except QueryError as exc:
                if "NO_SUCH_DATA_PART" not in exc.message:
                    raise
                return True
        return False
