"""The deployed project as a value: what every request reads, without a lock.

A ``Catalog`` is made from a snapshot of the deployed datafiles (the content of
``project.json``: datasources, pipes, their parsed records, the materialized views) and never
changes. A deploy works on a draft of its own and publishes each step as a new catalog, swapped
in with one assignment; a request that took the catalog reads one consistent project however long
it runs, and never waits for a deploy.

Parsing a datasource needs tinybird-cli's parser (half a second to import), so datafiles are
parsed on first use and cached; a new catalog keeps the parsed objects of the previous one whose
text did not change. A cache is a function of the snapshot, so two threads filling it agree.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from ..errors import NotFound
from ..project import Datasource, Pipe, parse_datasource, pipe_from_record
from .ingest import quarantine_name

__all__ = ["Catalog", "DATABASE", "SNAPSHOT", "read_snapshot", "table_map"]

DATABASE = "evtrack"  # the default workspace's: the database of every store made before workspaces
SNAPSHOT = "project.json"


class Catalog:
    def __init__(self, snapshot: dict, previous: "Catalog | None" = None,
                 parsed: dict[str, Datasource | Pipe] | None = None, database: str = DATABASE):
        """``snapshot`` is copied: the caller may go on changing its own. ``database``: the
        workspace's, where its datasources are tables."""
        self.database = database
        self._snapshot = copy.deepcopy(snapshot)
        self._snapshot.setdefault("datasources", {})
        self._snapshot.setdefault("pipes", {})
        self._datasources: dict[str, Datasource] = {}
        self._pipes: dict[str, Pipe] = {}
        for name, text in self._snapshot["datasources"].items():
            known = (parsed or {}).get(f"datasource:{name}") or (previous._datasources.get(name) if previous else None)
            if known is not None and known.source == text:
                self._datasources[name] = known
        for name, text in self._snapshot["pipes"].items():
            known = (parsed or {}).get(f"pipe:{name}") or (previous._pipes.get(name) if previous else None)
            if known is not None and known.source == text:
                self._pipes[name] = known

    # -- datasources ------------------------------------------------------------------------
    def datasource_names(self) -> list[str]:
        return sorted(self._snapshot["datasources"])

    def datasource(self, name: str) -> Datasource:
        text = self._snapshot["datasources"].get(name)
        if text is None:
            raise NotFound(f"Data Source '{name}' not found")
        if name not in self._datasources:
            self._datasources[name] = parse_datasource(name, text)
        return self._datasources[name]

    @property
    def datasources(self) -> dict[str, Datasource]:
        """Every deployed datasource, parsed (a pipe call needs only their names: ``tables``)."""
        return {name: self.datasource(name) for name in self.datasource_names()}

    def tables(self) -> dict[str, tuple[str, str]]:
        """Every name SQL may use (datasources and their quarantines) and its table."""
        return table_map(self._snapshot["datasources"], self.database)

    # -- pipes ------------------------------------------------------------------------------
    def pipe_names(self) -> list[str]:
        return sorted(self._snapshot["pipes"])

    def has_pipe(self, name: str) -> bool:
        return name in self._snapshot["pipes"]

    def pipe(self, name: str) -> Pipe:
        text = self._snapshot["pipes"].get(name)
        if text is None:
            raise NotFound(f"The pipe '{name}' does not exist")
        if name not in self._pipes:
            # From the parsed record kept beside the text (parsed again only for an old snapshot).
            self._pipes[name] = pipe_from_record(name, text, self._snapshot.get("parsed_pipes", {}).get(name))
        return self._pipes[name]

    def views(self) -> dict[str, dict]:
        """The materialized pipes' views: SQL, target datasource and the tables the SQL reads."""
        return self._snapshot.get("views", {})


def table_map(datasources, database: str = DATABASE) -> dict[str, tuple[str, str]]:
    """Every name SQL may use for these datasources (and their quarantines), and its table."""
    tables = {}
    for name in datasources:
        tables[name] = (database, name)
        tables[quarantine_name(name)] = (database, quarantine_name(name))
    return tables


def read_snapshot(path: Path) -> dict:
    """The deployed datafiles of the store at ``path``, read without opening the store."""
    snapshot = Path(path) / SNAPSHOT
    if not snapshot.exists():
        return {"datasources": {}, "pipes": {}}
    return json.loads(snapshot.read_text(encoding="utf-8"))
