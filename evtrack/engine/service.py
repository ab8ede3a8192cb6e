"""Tinybird's service datasources that evtrack keeps: ``tinybird.pipe_stats_rt``, one row per API
endpoint call, as Tinybird documents it (every call, its parameters, duration, status and error;
kept 7 days).

Each workspace has its own table, read in SQL and pipes as ``tinybird.pipe_stats_rt`` (the
service's database and name), never by materialized pipes. The server writes the rows in batches
(``Requests``), so a call costs an append to a list, not an insert.
"""

from __future__ import annotations

import json

__all__ = ["PIPE_STATS_RT", "ddl", "insert", "service_tables"]

PIPE_STATS_RT = ("tinybird", "pipe_stats_rt")
_TABLE = "tinybird_pipe_stats_rt"

_COLUMNS = (
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


def ddl(database: str) -> str:
    columns = ", ".join(f"`{name}` {type_}" for name, type_ in _COLUMNS)
    return (f"CREATE TABLE IF NOT EXISTS `{database}`.`{_TABLE}` ({columns}) ENGINE = MergeTree "
            "PARTITION BY toDate(start_datetime) ORDER BY (pipe_name, start_datetime) "
            "TTL start_datetime + INTERVAL 7 DAY")


def service_tables(database: str) -> dict[tuple[str, str], tuple[str, str]]:
    """The service datasources' names in SQL, and their tables in ``database``."""
    return {PIPE_STATS_RT: (database, _TABLE)}


def insert(database: str, rows: list[dict]) -> str:
    """One statement writing ``rows`` (dicts of the columns) into the workspace's pipe_stats_rt."""
    lines = "\n".join(json.dumps(row, separators=(",", ":")) for row in rows)
    return f"INSERT INTO `{database}`.`{_TABLE}` SETTINGS input_format_skip_unknown_fields = 1 FORMAT JSONEachRow\n{lines}"
