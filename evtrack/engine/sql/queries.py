"""Reads of a workspace: pipe calls, Tinybird's SQL API and datasource stats, under the read limits.

A read takes the catalog current when it starts and no lock: a deploy that rebuilds a table builds
it aside and swaps it in, so a read sees the old table or the new one, whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Callable

from ...errors import BadRequest, NotFound, QueryError
from ..catalog import Catalog, Snapshot
from .guard import check_parsable
from ..ingest.statement import sql_string
from .pipes import pipe_reader, pipe_sql
from .sqlapi import read_only_sql, split_format, used_tables
from ..store import QueryLimits

__all__ = ["FORMATS", "Queries"]

# Tinybird's endpoint extensions and the ClickHouse formats behind them.
FORMATS = {"json": "JSON", "csv": "CSVWithNames", "ndjson": "JSONEachRow", "parquet": "Parquet",
           "prometheus": "Prometheus"}


class Queries:
    def __init__(self, store, database: str, snapshot: Snapshot, limits: Callable[[], QueryLimits | None]):
        """``limits()``: what each read may use now (the engine's setting, which may change)."""
        self.store, self.database, self.snapshot, self.limits = store, database, snapshot, limits

    def pipe_query(self, name: str, params: dict[str, str], q: str | None = None,
                   catalog: Catalog | None = None) -> str:
        """The SQL a pipe call runs, over one catalog (the current one unless given)."""
        catalog = catalog or self.snapshot.catalog
        pipe = catalog.pipe(name)
        sql = pipe_sql(pipe, params, catalog.tables(), self.database, pipes=pipe_reader(pipe, catalog.pipes))
        if not q:
            return sql
        if q.lstrip().startswith("%"):
            raise BadRequest("'q' parameter doesn't support templates")
        check_parsable(self.store, split_format(q)[0])
        # `q` reads `_`, the pipe's result, and nothing else: no way around the token's scope.
        return read_only_sql(q, {"_": f"({sql})"}, self.database)[0]

    def query_pipe(self, name: str, params: dict[str, str], fmt: str = "json", q: str | None = None,
                   tag: str | None = None) -> bytes:
        return self.run_read(self.pipe_query(name, params, q), fmt, tag)

    def sql(self, query: str, fmt: str | None = None, pipeline: str | None = None, readable=None,
            tag: str | None = None) -> bytes:
        """Read-only SQL over the datasources (and endpoints, as tables), as Tinybird's SQL API runs it.

        ``pipeline`` makes ``_`` that pipe's result; ``readable(name)`` limits what may be read.
        """
        check_parsable(self.store, split_format(query)[0])
        catalog = self.snapshot.catalog
        tables: dict = dict(catalog.tables())
        for _, name, _ in used_tables(query):  # endpoints read as tables: render only those used
            if name not in tables and catalog.has_pipe(name) and catalog.pipe(name).endpoint is not None:
                tables[name] = f"({self.pipe_query(name, {}, catalog=catalog)})"
        if pipeline:
            tables["_"] = f"({self.pipe_query(pipeline, {}, catalog=catalog)})"
        sql, found = read_only_sql(query, tables, self.database, readable, describe=True)
        return self.run_read(sql, found or fmt or "json", tag)

    def run_read(self, sql: str, fmt: str, tag: str | None = None) -> bytes:
        """A read, under the read limits; ``tag`` lets another thread cancel it (``store.cancel``)."""
        try:
            return self.store.run(sql, FORMATS.get(fmt, fmt), limits=self.limits(), tag=tag)
        except QueryError as exc:  # a result without the columns the format needs: Tinybird's words
            if FORMATS.get(fmt, fmt) == "Prometheus" and "BAD_ARGUMENTS" in exc.message:
                raise QueryError("Prometheus requires the query output to conform to a specific structure: "
                                 + exc.message.removeprefix("[Error] ")) from None
            raise

    def export(self, name: str, params: dict[str, str], fmt: str, path: Path) -> int:
        """Write a datasource's rows, or a pipe's result, to ``path`` in ``fmt`` (parquet, ndjson or
        csv): ClickHouse streams them into the file, so memory stays bounded whatever their number.
        The rows written."""
        if fmt not in ("parquet", "ndjson", "csv"):
            raise BadRequest(f"Unknown export format '{fmt}': use parquet, ndjson or csv")
        catalog = self.snapshot.catalog
        if name in catalog.datasource_names():
            sql = f"SELECT * FROM `{self.database}`.`{name}`"
        elif catalog.has_pipe(name):
            sql = self.pipe_query(name, params)
        else:
            raise NotFound(f"No datasource or pipe is named '{name}'")
        target = sql_string(str(Path(path).resolve()))
        self.store.execute(f"SELECT * FROM ({sql}) INTO OUTFILE {target} TRUNCATE FORMAT {FORMATS[fmt]}")
        return int(self.store.run(f"SELECT count() FROM file({target}, {FORMATS[fmt]})", "TSV").strip())

    def datasource_stats(self, name: str) -> dict[str, int]:
        """Stored rows and bytes of a datasource, from its active parts (as Tinybird reports them)."""
        self.snapshot.catalog.datasource(name)
        out = self.store.run(
            f"SELECT toUInt64(sum(rows)), toUInt64(sum(bytes_on_disk)) FROM system.parts "
            f"WHERE database = '{self.database}' AND table = {sql_string(name)} AND active",
            "JSONCompactEachRow",
        )
        rows, size = json.loads(out)
        return {"row_count": rows, "bytes": size}
