"""Tinybird's service datasources that evtrack keeps, each workspace its own, as Tinybird documents them:

- ``tinybird.pipe_stats_rt``: one row per API endpoint call (its parameters, duration, status,
  error), which the server writes in batches (``server.pipestats``);
- ``tinybird.datasources_ops_log``: one row per operation on a datasource: ``create``, ``append``
  (a file or a Data Sources API body), ``append-hfi`` (the Events API), ``replace``, ``delete``,
  ``truncate``, ``copy``, with its result (``ok`` or ``error``), time, rows, quarantined rows and error;
- ``tinybird.jobs_log``: one row per job (``import``, ``copy``, ``delete_data``) once it is done or failed.

Each is read in SQL and pipes under the service's database and name (``tinybird.<name>``), never by
materialized pipes, and kept 7 days. ``ServiceLog`` writes the operations and jobs: a call adds a
row to a list; the rows go in one insert per table within a second (a timer), and when the
workspace closes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid

from ..times import utc_text

__all__ = ["JOBS_LOG", "OPS_LOG", "PIPE_STATS_RT", "ServiceLog", "ddl", "insert", "resource_id", "service_tables"]

log = logging.getLogger("evtrack.engine")

PIPE_STATS_RT = ("tinybird", "pipe_stats_rt")
OPS_LOG = ("tinybird", "datasources_ops_log")
JOBS_LOG = ("tinybird", "jobs_log")
KEPT_DAYS = 7

_PIPE_STATS_COLUMNS = (
    ("start_datetime", "DateTime"),
    ("pipe_id", "String"),
    ("pipe_name", "String"),
    ("duration", "Float32"),
    ("read_bytes", "UInt64"),
    ("read_rows", "UInt64"),
    ("result_rows", "UInt64"),
    ("url", "Nullable(String)"),
    ("error", "UInt8"),
    ("request_id", "String"),
    ("token", "String"),
    ("token_name", "String"),
    ("status_code", "Int32"),
    ("method", "String"),
    ("parameters", "Map(String, String)"),
    ("release", "String"),
    ("user_agent", "Nullable(String)"),
    ("resource_tags", "Array(String)"),
    ("cpu_time", "Float32"),
)
_OPS_COLUMNS = (
    ("timestamp", "DateTime"),
    ("event_type", "String"),
    ("datasource_id", "String"),
    ("datasource_name", "String"),
    ("result", "String"),
    ("elapsed_time", "Float32"),
    ("error", "Nullable(String)"),
    ("Options.Names", "Array(String)"),
    ("Options.Values", "Array(String)"),
    ("request_id", "String"),
    ("import_id", "Nullable(String)"),
    ("job_id", "Nullable(String)"),
    ("rows", "Nullable(UInt64)"),
    ("rows_quarantine", "Nullable(UInt64)"),
    ("blocks_ids", "Array(String)"),
    ("operation_id", "String"),
    ("read_rows", "UInt64"),
    ("read_bytes", "UInt64"),
    ("cpu_time", "Float32"),
    ("memory_usage", "UInt64"),
    ("written_rows", "UInt64"),
    ("written_bytes", "UInt64"),
    ("written_rows_quarantine", "UInt64"),
    ("written_bytes_quarantine", "UInt64"),
    ("pipe_id", "String"),
    ("pipe_name", "String"),
    ("release", "String"),
    ("resource_tags", "Array(String)"),
)
_JOBS_COLUMNS = (
    ("job_id", "String"),
    ("job_type", "LowCardinality(String)"),
    ("status", "LowCardinality(String)"),
    ("error", "Nullable(String)"),
    ("workspace_id", "String"),
    ("request_id", "Nullable(String)"),
    ("pipe_id", "Nullable(String)"),
    ("datasource_id", "Nullable(String)"),
    ("created_at", "DateTime64(3)"),
    ("started_at", "Nullable(DateTime64(3))"),
    ("updated_at", "DateTime64(3)"),
    ("job_metadata", "String"),
)
# name -> (table in the workspace's database, columns, engine and keys)
_TABLES = {
    PIPE_STATS_RT: ("tinybird_pipe_stats_rt", _PIPE_STATS_COLUMNS,
                    "MergeTree PARTITION BY toDate(start_datetime) ORDER BY (pipe_name, start_datetime) "
                    f"TTL start_datetime + INTERVAL {KEPT_DAYS} DAY"),
    OPS_LOG: ("tinybird_datasources_ops_log", _OPS_COLUMNS,
              "MergeTree PARTITION BY toYYYYMM(timestamp) ORDER BY (datasource_id, timestamp) "
              f"TTL timestamp + INTERVAL {KEPT_DAYS} DAY"),
    JOBS_LOG: ("tinybird_jobs_log", _JOBS_COLUMNS,
               "ReplacingMergeTree(updated_at) PARTITION BY toYYYYMM(created_at) ORDER BY (created_at, job_id) "
               f"TTL toDateTime(created_at) + INTERVAL {KEPT_DAYS} DAY"),
}


def resource_id(*parts: str) -> str:
    """The id of a datasource (``"datasource", name``), a pipe (``"pipe", name``) or a node (``"pipe", pipe, node``)."""
    return "t_" + hashlib.md5("/".join(parts).encode()).hexdigest()


def ddl(database: str) -> list[str]:
    """The statements creating the workspace's service datasources."""
    out = []
    for table, columns, engine in _TABLES.values():
        listed = ", ".join(f"`{name}` {type_}" for name, type_ in columns)
        out.append(f"CREATE TABLE IF NOT EXISTS `{database}`.`{table}` ({listed}) ENGINE = {engine}")
    return out


def service_tables(database: str) -> dict[tuple[str, str], tuple[str, str]]:
    """The service datasources' names in SQL, and their tables in ``database``."""
    return {name: (database, table) for name, (table, _, _) in _TABLES.items()}


def insert(database: str, rows: list[dict], name: tuple[str, str] = PIPE_STATS_RT) -> str:
    """One statement writing ``rows`` (dicts of the columns) into the workspace's service datasource ``name``."""
    lines = "\n".join(json.dumps(row, separators=(",", ":")) for row in rows)
    return (f"INSERT INTO `{database}`.`{_TABLES[name][0]}` SETTINGS input_format_skip_unknown_fields = 1, "
            f"input_format_import_nested_json = 1 FORMAT JSONEachRow\n{lines}")


def _stamp(at: float, millis: bool = False) -> str:
    return utc_text(at, millis)


class ServiceLog:
    """The operations and jobs of one workspace, written to its service datasources in batches."""

    def __init__(self, store, database: str, workspace_id, interval: float = 1.0):
        """``workspace_id()``: the workspace's id, for jobs_log."""
        self.store, self.database, self.workspace_id, self.interval = store, database, workspace_id, interval
        self._rows: dict[tuple[str, str], list[dict]] = {OPS_LOG: [], JOBS_LOG: []}
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def operation(self, event_type: str, datasource: str, started: float, *, error: str | None = None,
                  rows: int | None = None, quarantined: int | None = None, import_id: str | None = None,
                  job_id: str | None = None, pipe: str = "") -> None:
        """One operation on ``datasource``, from ``started`` (``time.time()``) to now."""
        self._add(OPS_LOG, {
            "timestamp": _stamp(started), "event_type": event_type,
            "datasource_id": resource_id("datasource", datasource), "datasource_name": datasource,
            "result": "error" if error else "ok", "elapsed_time": round(time.time() - started, 6), "error": error,
            "request_id": uuid.uuid4().hex, "operation_id": uuid.uuid4().hex, "import_id": import_id,
            "job_id": job_id, "rows": rows, "rows_quarantine": quarantined,
            "written_rows": rows or 0, "written_rows_quarantine": quarantined or 0,
            "pipe_id": resource_id("pipe", pipe) if pipe else "", "pipe_name": pipe,
        })

    def job(self, job_id: str, job_type: str, started: float, *, error: str | None = None, pipe: str = "",
            datasource: str = "", **metadata) -> None:
        """One job, from ``started`` to now, done or (with ``error``) failed."""
        at = _stamp(started, millis=True)
        self._add(JOBS_LOG, {
            "job_id": job_id, "job_type": job_type, "status": "error" if error else "done", "error": error,
            "workspace_id": self.workspace_id(), "pipe_id": resource_id("pipe", pipe) if pipe else None,
            "datasource_id": resource_id("datasource", datasource) if datasource else None,
            "created_at": at, "started_at": at, "updated_at": _stamp(time.time(), millis=True),
            "job_metadata": json.dumps({**({"pipe_name": pipe} if pipe else {}),
                                        **({"datasource_name": datasource} if datasource else {}), **metadata}),
        })

    def _add(self, name: tuple[str, str], row: dict) -> None:
        with self._lock:
            self._rows[name].append(row)
            if self._timer is None:
                self._timer = threading.Timer(self.interval, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Write the rows kept so far: one insert per service datasource."""
        with self._lock:
            taken = {name: rows for name, rows in self._rows.items() if rows}
            self._rows = {name: [] for name in self._rows}
            self._timer = None
        for name, rows in taken.items():
            try:
                self.store.execute(insert(self.database, rows, name))
            except Exception:  # a full disk, a store closing: the record of use is dropped, never the operation
                log.warning("could not write %d rows of %s.%s", len(rows), *name, exc_info=True)

    def close(self) -> None:
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self.flush()
