"""Rows in: every non-blank line stored or quarantined, in ClickHouse SQL over the whole batch.

- ``statement``: the one ingest statement (parse, check, convert each column) and the ingest
  table and views each datasource has;
- ``appends``: appends and batches through that statement, under the datasource's locks, and each
  import's counts;
- ``csvrows``: CSV and Parquet rows turned into NDJSON lines as ClickHouse reads the file;
- ``wal``: the server's write-ahead log of what it acknowledged before inserting it.
"""
