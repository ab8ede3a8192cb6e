"""The deployed project: the catalog every request reads without a lock, and the draft it is published from.

A ``Catalog`` is made from a snapshot of the deployed datafiles (the content of
``project.json``: datasources, pipes, their parsed records, the materialized views) and never
changes. A deploy works on a draft of its own and publishes each step as a new catalog, swapped
in with one assignment; a request that took the catalog reads one consistent project however long
it runs, and never waits for a deploy.

Parsing a datasource needs tinybird-cli's parser (half a second to import), so datafiles are
parsed on first use and cached; a new catalog keeps the parsed objects of the previous one whose
text did not change. A cache is a function of the snapshot, so two threads filling it agree.

A workspace's ``Snapshot`` holds both: the draft a deploy changes, step by step under the deploy
lock, and the catalog last published from it; ``publish`` writes the draft to ``project.json``
and swaps in a new catalog.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ..errors import NotFound
from ..project import Datasource, Pipe, parse_datasource, pipe_from_record, pipe_record
from .ingest.statement import quarantine_name
from .service import service_tables

__all__ = ["Catalog", "DATABASE", "SNAPSHOT", "Snapshot", "deployed_pipes", "read_snapshot", "table_map"]

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

    def tables(self) -> dict:
        """Every name SQL may use (datasources, their quarantines, the service datasources such as
        ``tinybird.pipe_stats_rt``, by their database and name) and its table."""
        return {**table_map(self._snapshot["datasources"], self.database), **service_tables(self.database)}

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

    @property
    def pipes(self) -> Mapping[str, Pipe]:
        """Every deployed pipe by name, each parsed when first asked for."""
        return _Pipes(self)

    def views(self) -> dict[str, dict]:
        """The materialized pipes' views: SQL, target datasource and the tables the SQL reads."""
        return self._snapshot.get("views", {})


class _Pipes(Mapping):
    def __init__(self, catalog: Catalog):
        self._catalog = catalog

    def __getitem__(self, name: str) -> Pipe:
        if not self._catalog.has_pipe(name):
            raise KeyError(name)
        return self._catalog.pipe(name)

    def __iter__(self):
        return iter(self._catalog.pipe_names())

    def __len__(self) -> int:
        return len(self._catalog.pipe_names())


class Snapshot:
    """A workspace's deployed project: ``draft``, the content of ``project.json`` that a deploy
    changes (under the deploy lock only), and ``catalog``, the value last published from it."""

    def __init__(self, folder: Path, database: str):
        self.folder, self.database = Path(folder), database
        self.draft = read_snapshot(self.folder)
        self.catalog = Catalog(self.draft, database=database)

    @property
    def views(self) -> dict[str, dict]:
        """The draft's materialized views: SQL, target datasource and the tables the SQL reads."""
        return self.draft.setdefault("views", {})

    def set_datasource(self, ds: Datasource) -> None:
        self.draft["datasources"][ds.name] = ds.source

    def set_pipe(self, pipe: Pipe) -> None:
        self.draft["pipes"][pipe.name] = pipe.source
        self.draft.setdefault("parsed_pipes", {})[pipe.name] = pipe_record(pipe)

    def drop_datasource(self, name: str) -> None:
        self.draft["datasources"].pop(name, None)

    def drop_pipe(self, name: str) -> None:
        self.draft["pipes"].pop(name, None)
        self.draft.get("parsed_pipes", {}).pop(name, None)

    def publish(self, *parsed: Datasource | Pipe) -> None:
        """Write the draft to disk and publish it: requests read it from now on. ``parsed``: objects
        of the draft already parsed, kept in the new catalog."""
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".project-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(self.draft, indent=2, sort_keys=True))
        os.replace(tmp, self.folder / SNAPSHOT)
        kinds = {f"{'pipe' if isinstance(obj, Pipe) else 'datasource'}:{obj.name}": obj for obj in parsed}
        self.catalog = Catalog(self.draft, self.catalog, kinds, database=self.database)

    def replace(self, draft: dict) -> None:
        """Make ``draft`` (the snapshot a promotion ends with) the draft, and publish it."""
        self.draft = draft
        self.publish()


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


def deployed_pipes(path: Path) -> dict[str, Pipe]:
    """The deployed pipes of the store at ``path``, read without opening the store."""
    catalog = Catalog(read_snapshot(path))  # (pipes only: the database does not matter)
    return dict(catalog.pipes)
