"""SQL that comes from outside the process, made safe and run as reads.

- ``guard``: what ClickHouse's parser would refuse for size or depth, refused before the toolset parses it;
- ``gate``: the one check every outside text passes before it runs or is stored (tables, clauses, functions);
- ``pipes``: pipes rendered with tinybird-cli's template engine into one query over the workspace's tables;
- ``sqlapi``: Tinybird's SQL API, a query rewritten onto the tables the token may read;
- ``queries``: the reads of a workspace (pipe calls, SQL, exports, stats) under the read limits.

Used by the reads and by ``deploy``, which renders a pipe through the same gate before storing it.
"""
