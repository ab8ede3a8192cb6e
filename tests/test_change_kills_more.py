"""More changes that finish: an append, a copy in replace mode, a `--force` datasource rebuild and a
destructive deploy's drops, each killed with kill -9 at random moments over a store of 1,000,000
events and its rollups, leave every table consistent when the store next opens, with no command
run (``evtrack.engine.journal``). The checks are those of ``test_change_kills``, on raw rows (no
FINAL), plus what each change must leave whole:

- an append: all of its 1,200,000 events (more than one insert block) or none, in every table;
- a copy replacing `events` with the events of the users it keeps: the old rows or the new ones;
- a rebuild changing a column's type: every row, in a table of the type the deployed datafile
  says, which the next append fills;
- a drop of a rollup and its pipe: both there (table, view, catalog) or both gone.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys

import pytest

from evtrack.engine import Engine
from evtrack.project import load_project

from .conftest import ROOT
from .served import clean_env
from .test_change_kills import CONDITION, ROLLUPS, _count, _generate, _inconsistent

EVENTS, APPENDED = 1_000_000, 1_200_000
KILLS = 2
LASTS = {"append": 12.0, "copy": 10.0, "rebuild": 5.0, "drop": 3.0}  # seconds, uninterrupted, measured here
COPY = f"""NODE kept
SQL >
    SELECT * FROM events WHERE NOT ({CONDITION})

TYPE COPY
TARGET_DATASOURCE events
COPY_MODE replace
"""
BY_COUNTRY = """SCHEMA >
    `country` String,
    `events` AggregateFunction(count)

ENGINE "AggregatingMergeTree"
ENGINE_SORTING_KEY "country"
"""
BY_COUNTRY_MV = """NODE by_country
SQL >
    SELECT country, countState() AS events FROM events GROUP BY country

TYPE MATERIALIZED
DATASOURCE events_by_country
"""


def _project(folder, rebuild: bool = False, drop: bool = False):
    """The repository's project, with a copy pipe and one more rollup (``drop``: without it;
    ``rebuild``: with `country` a String, which only a rebuild can make it)."""
    for sub in ("datasources", "pipes"):
        shutil.copytree(ROOT / sub, folder / sub)
    (folder / "pipes" / "keep_users.pipe").write_text(COPY)
    if not drop:
        (folder / "datasources" / "events_by_country.datasource").write_text(BY_COUNTRY)
        (folder / "pipes" / "events_by_country_mv.pipe").write_text(BY_COUNTRY_MV)
    if rebuild:
        path = folder / "datasources" / "events.datasource"
        path.write_text(path.read_text().replace("`country` LowCardinality(String)", "`country` String"))
    return folder


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A store with the project and 1M events; the 1.2M events to append, and the projects deployed over it."""
    folder = tmp_path_factory.mktemp("kills_more")
    store = folder / "base"
    projects = {"rebuild": _project(folder / "rebuild", rebuild=True), "drop": _project(folder / "drop", drop=True)}
    with Engine.open(store) as engine:
        engine.deploy(load_project(_project(folder / "project")))
        _generate(engine, folder / "events.ndjson", EVENTS, "e")
        _generate(engine, folder / "appended.ndjson", APPENDED, "a")
        assert engine.append("events", folder / "events.ndjson").successful_rows == EVENTS
    return store, folder / "appended.ndjson", projects


def _command(kind: str, store, base) -> list[str]:
    evtrack = [sys.executable, "-m", "evtrack", "--data", str(store)]
    if kind == "append":
        return [sys.executable, "-c", "from pathlib import Path\nfrom evtrack.engine import Engine\n"
                f"with Engine.open(Path({str(store)!r})) as engine:\n"
                f"    engine.append('events', Path({str(base[1])!r}))\n"]
    if kind == "copy":
        return [*evtrack, "copy", "run", "keep_users"]
    if kind == "rebuild":
        return [*evtrack, "deploy", "--force", "--project", str(base[2]["rebuild"])]
    return [*evtrack, "deploy", "--allow-destructive", "--project", str(base[2]["drop"])]


def _run(kind: str, base, tmp_path, name: str, kill_after: float) -> tuple:
    """The change run on a copy of the base store, killed after ``kill_after`` s unless done: (store, exit code)."""
    store = tmp_path / name
    shutil.copytree(base[0], store, symlinks=True)
    process = subprocess.Popen(_command(kind, store, base), cwd=ROOT, env=clean_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        process.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    assert process.returncode in (0, -signal.SIGKILL), err
    return store, process.returncode


def _exists(engine, kind: str, name: str) -> bool:
    return _count(engine, f"SELECT count() FROM system.tables WHERE database = 'evtrack' AND name = '{name}'"
                  + (" AND engine = 'MaterializedView'" if kind == "view" else "")) == 1


def _column_type(engine, column: str) -> str:
    return engine.store.run(f"SELECT type FROM system.columns WHERE database = 'evtrack' AND table = 'events' "
                            f"AND name = '{column}'", "TSVRaw").decode().strip()


@pytest.mark.parametrize("kind, seed", [("append", 4), ("copy", 5), ("rebuild", 6), ("drop", 7)])
def test_more_changes_killed_at_random_moments_are_finished_or_undone_when_the_store_opens(base, tmp_path, kind,
                                                                                            seed):
    with Engine.open(base[0]) as engine:
        before = _count(engine, "SELECT count() FROM evtrack.events")
        matching = _count(engine, f"SELECT count() FROM evtrack.events WHERE {CONDITION}")
    whole, rng = LASTS[kind], random.Random(seed)
    for attempt in range(KILLS):
        moment = rng.uniform(0.5, whole)
        store, code = _run(kind, base, tmp_path, f"killed{attempt}", moment)
        with Engine.open(store) as engine:  # the next open: recovery runs here, nothing else
            context = f"{kind} killed after {moment:.2f} s of {whole:.2f} (exit {code})"
            rollups = {name: pair for name, pair in ROLLUPS.items() if _exists(engine, "table", name)}
            assert _inconsistent(engine, rollups) == {}, context
            events = _count(engine, "SELECT count() FROM evtrack.events")
            if kind == "append":
                assert events in (before, before + APPENDED), context
                imported = _count(engine, "SELECT sum(lines) FROM evtrack.events__imports")
                assert imported == events, context  # the audit of imports took back its line too
            elif kind == "copy":
                assert events in (before, before - matching), context
            elif kind == "rebuild":
                assert events == before, context
                declared = engine.datasource("events").columns
                assert _column_type(engine, "country") == next(c.sql_type for c in declared if c.name == "country")
                result = engine.append("events", b'{"event_id": "after", "event_type": "view", '
                                                 b'"timestamp": "2024-01-01 00:00:00", "country": "ES"}')
                assert result.successful_rows == 1, (context, result.errors)
            else:
                there = {"datasource": "events_by_country" in engine.catalog.datasource_names(),
                         "table": _exists(engine, "table", "events_by_country"),
                         "pipe": engine.catalog.has_pipe("events_by_country_mv"),
                         "view": _exists(engine, "view", "events_by_country_mv__mv")}
                assert len(set(there.values())) == 1, (context, there)
                if there["table"]:
                    by_country = _count(engine, "SELECT countMerge(events) FROM evtrack.events_by_country")
                    assert by_country == events, context
        assert not list((store / "changes").glob("*.json")), context
