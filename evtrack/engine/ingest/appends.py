"""Ingesting into a workspace's datasources: appends and batches, the write-ahead log's replay, each import's counts.

Every insert is one statement built by ``statement`` (ClickHouse parses, checks and routes the lines),
taken under the locks of the datasources it writes, held alone (``Locks.ingesting``), and kept whole
or taken back whole (``atomic``). Each import's counts
come back from the datasource's imports audit table, with its first quarantine reasons.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import re
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import EvtrackError, QueryError, StoreError, StoreFull
from ...project import Datasource
from ..catalog import Snapshot
from .csvrows import file_format, rows_source
from .statement import imports_table, ingest_insert, quarantine_name, sql_string
from ..journal import Changes
from ..locks import Locks
from ..store import MIN_FREE_DISK
from .atomic import AllOrNothing
from .wal import WriteAheadLog, import_id as wal_import_id

log = logging.getLogger("evtrack.ingest")

__all__ = ["AppendResult", "Ingest"]


@dataclass
class AppendResult:
    successful_rows: int
    quarantined_rows: int
    import_id: str
    errors: list[str] = field(default_factory=list)  # the first few quarantine reasons


class Ingest:
    def __init__(self, store, database: str, snapshot: Snapshot, locks: Locks, wal: WriteAheadLog, changes: Changes):
        self.store, self.database, self.snapshot, self.locks, self.wal = store, database, snapshot, locks, wal
        self.atomic = AllOrNothing(store, database, locks, changes)  # each statement whole, or not at all

    def append(self, datasource: str, source: Path | bytes) -> AppendResult:
        """Ingest NDJSON (a file, gzip by its name, or bytes): every non-blank line is stored or quarantined."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            return self.append_many(datasource, [bytes(source)])[0]
        ds = self.snapshot.catalog.datasource(datasource)
        path, import_id = Path(source).resolve(), uuid.uuid4().hex
        compression = "'gzip'" if path.name.endswith(".gz") else "'none'"
        fmt = file_format(Path(source))  # by the name given (a link's, not its target's): CSV and Parquet
        # rows become NDJSON lines in ClickHouse, then take the one path
        with self.locks.ingesting(datasource, alone=True), _glob_safe(path) as readable:
            lines = (rows_source(ds, readable, fmt) if fmt != "ndjson" else
                     f"file({sql_string(str(readable))}, 'LineAsString', 'line String', {compression})")
            self._ingest(ds, lines, sql_string(import_id))
            return self._results(ds, [import_id])[0]

    def append_rows(self, datasource: str, data: bytes, fmt: str) -> AppendResult:
        """Ingest a CSV or Parquet body (``fmt``), as a file of that format is (``append``)."""
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"not a file format of rows: {fmt}")
        home = None if _GLOB_CHARS.search(str(self.store.path)) else self.store.path
        with tempfile.TemporaryDirectory(dir=home, prefix="evtrack-rows-") as folder:
            path = Path(folder) / f"rows.{fmt}"
            path.write_bytes(data)
            return self.append(datasource, path)

    def append_many(self, datasource: str, payloads: list[bytes], ids: list[str] | None = None,
                    once: bool = False, counted: bool = True) -> list[AppendResult]:
        """Ingest several NDJSON payloads in one statement, with a result (and an import id, given or new) for each.

        ``once``: the one payload's import id makes the insert idempotent, in the datasource and in
        every table fed from it (``ingest.exactly_once``): the write-ahead log's payloads go in this
        way, so a replay or a retry of one never adds a row twice."""
        ds = self.snapshot.catalog.datasource(datasource)
        if once and (len(payloads) != 1 or not ids or not ids[0]):
            raise ValueError("an idempotent insert takes one payload and its import id")
        ids = [i or uuid.uuid4().hex for i in ids] if ids else [uuid.uuid4().hex for _ in payloads]
        with self.locks.ingesting(datasource, alone=True):
            return self.write(ds, payloads, ids, ids[0] if once else None, counted)

    def write(self, ds: Datasource, payloads: list[bytes], ids: list[str], once: str | None = None,
              counted: bool = True) -> list[AppendResult]:
        """The one statement that ingests ``payloads`` (under ``ids``) into ``ds``, deployed or a staging
        copy; the caller holds the locks. ``counted=False``: nobody reads the counts (rows a server
        acknowledged already), so the query that gathers them is not run."""
        home = None if _GLOB_CHARS.search(str(self.store.path)) else self.store.path
        with _space(ds.name), tempfile.TemporaryDirectory(dir=home, prefix="evtrack-batch-") as folder:
            for import_id, payload in zip(ids, payloads):
                (Path(folder) / f"{import_id}.ndjson").write_bytes(payload)
            glob = sql_string(f"{folder}/*.ndjson")
            self._ingest(ds, f"file({glob}, 'LineAsString', 'line String')", "splitByChar('.', _file)[1]", once)
        return self._results(ds, ids) if counted else []

    def replay_log(self) -> int:
        """Write what a server acknowledged and did not get to insert before it died (see ``wal``);
        the lines replayed."""
        replayed = 0
        for segment in self.wal.pending():
            for datasource, payloads in self.wal.read(segment).items():
                if datasource not in self.snapshot.catalog.datasources:
                    raise StoreError(f"the write-ahead log {self.wal.folder / segment}.wal holds events for "
                                     f"'{datasource}', which is not deployed: deploy it, then open the store again")
                # The bytes, and so the blocks, its first insert had (see IngestBuffer.flush): the
                # blocks that insert wrote before the crash are skipped, the others written.
                ident = wal_import_id(segment, datasource)
                [result] = self.append_many(datasource, [b"\n".join(payloads)], [ident], once=True)
                replayed += result.successful_rows + result.quarantined_rows
            self.wal.drop(segment)
        return replayed

    def _ingest(self, ds: Datasource, source: str, import_id: str, once: str | None = None) -> None:
        """The ingest statement. The engine refuses it for data it cannot read (a body that is not the
        Parquet it says), a materialized view of the user's that fails, or its limits (memory, disk):
        a QueryError in its words, without the statement. One it cannot analyse or run as written is
        the ingest's own fault (a bad line is quarantined, never refused): a 500 with a short id, the
        details in the log under that id."""
        try:
            # A failure takes back what it wrote; the journal's record, written first, may find the disk full.
            with _space(ds.name), self.atomic.writing(self.atomic.tables(ds.name)):
                self.store.execute(ingest_insert(ds, self.database, source, import_id, once))
        except QueryError as exc:
            if _NO_SPACE.search(exc.message):
                reason = (f"less than {MIN_FREE_DISK // 2**20} MB free on the store's disk, the room merges need "
                          "(EVTRACK_MIN_FREE_DISK)" if "configured threshold" in exc.message
                          else "no space left on the store's disk")
                raise StoreFull(_FULL.format(ds.name, reason)) from None
            codes = _CODES.findall(exc.message)
            views = [v for v in _VIEWS.findall(exc.message) if not v.endswith(_OWN_VIEWS)]
            if views or not any(code in _STATEMENT_BROKEN for code in codes):
                raise  # the data, a view of the user's, or the engine's limits: the engine's words
            ident = uuid.uuid4().hex[:8]
            log.error("append %s to %s.%s failed: %s", ident, self.database, ds.name, exc.message)
            raise EvtrackError(f"Internal error {ident}: the append to '{ds.name}' failed: "
                               f"{exc.message.removeprefix('[Error] ')}", status=500) from None

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


_NO_SPACE = re.compile(r"No space left on device|NOT_ENOUGH_SPACE|Cannot reserve .* not enough space", re.IGNORECASE)
_FULL = "The append to '{}' was refused whole, nothing of it stored: {}. Free space, then send it again"
_CODES = re.compile(r"\(([A-Z][A-Z_]+)\)")
_VIEWS = re.compile(r"while pushing to view ([^\s:]+)")
_OWN_VIEWS = ("__store", "__quarantine", "__count")  # the ingest's own views (ingest.ingest_ddl)
# ClickHouse's codes for a statement it cannot analyse or run as written: the ingest's own fault.
_STATEMENT_BROKEN = frozenset({
    "ILLEGAL_TYPE_OF_ARGUMENT", "UNKNOWN_IDENTIFIER", "NO_COMMON_TYPE", "TYPE_MISMATCH", "SYNTAX_ERROR",
    "UNKNOWN_TYPE", "UNKNOWN_FUNCTION", "DUPLICATE_COLUMN", "NUMBER_OF_ARGUMENTS_DOESNT_MATCH_FUNCTION",
    "ILLEGAL_COLUMN", "LOGICAL_ERROR", "NOT_IMPLEMENTED", "BAD_ARGUMENTS", "UNKNOWN_ELEMENT_OF_ENUM",
    "CANNOT_CONVERT_TYPE", "THERE_IS_NO_COLUMN", "NOT_FOUND_COLUMN_IN_BLOCK",
})

_GLOB_CHARS = re.compile(r"[*?{}\[\]]")


@contextlib.contextmanager
def _space(datasource: str):
    """A full disk met while writing an append's files (its batch, the journal's record) said so."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StoreFull(_FULL.format(datasource, "no space left on the store's disk")) from None
        raise


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
