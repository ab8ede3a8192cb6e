"""Data changes that finish: a delete, a truncate with --cascade and a replace, each killed with
kill -9 at random moments over a store of 1,000,000 events and its four rollups, leave every table
consistent when the store next opens, with no command run (``evtrack.engine.journal``).

After each reopen:
- each rollup holds exactly the distinct rows its source defines, read raw (no FINAL, no key that
  deduplicates) and compared by count and hash sum, by definitions written here from the rollups'
  datafiles; `events_by_user`, one row per event, holds as many raw rows as `events`;
- a deletion reported is gone from every table that holds the user, and reported once; one not
  reported never started, and every matching row is still there;
- a replaced datasource holds its old rows or its new ones, whole.

The moments are drawn from a seeded generator (the seed is in the test's name), between half a
second after the command's start and about the time it takes uninterrupted here (``LASTS``,
measured on this machine: a slower one only moves the kills earlier in the change).
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys

import pytest

from evtrack.engine import Engine

from .conftest import ROOT
from .served import clean_env

EVENTS = 1_000_000
CONDITION = "user_id LIKE '%1'"
KILLS = 2
LASTS = {"delete": 9.0, "truncate": 2.5, "replace": 7.0}  # seconds, uninterrupted, measured here
# The rollups of the project, as their pipes define them over `events` (distinct rows).
ROLLUPS = {
    "events_by_day": ("day, platform, event_type, user_id, session_id",
                      "toDate(timestamp), platform, event_type, user_id, session_id"),
    "events_by_user": ("user_id, event_id, timestamp", "user_id, event_id, timestamp"),
    "events_sessions_by_type": ("event_type, session_id", "event_type, session_id"),
    "events_users_by_type": ("event_type, user_id", "event_type, user_id"),
}
HOLDING_USERS = ("events", "events_by_day", "events_by_user", "events_users_by_type")


def _generate(engine, path, count: int, prefix: str) -> None:
    """``count`` events as NDJSON, written by the engine's own SQL (no Python loop over rows)."""
    engine.store.execute(
        f"SELECT '{prefix}' || toString(number) AS event_id, ['click', 'view', 'buy'][number % 3 + 1] AS event_type, "
        f"'u' || toString(number % 50000) AS user_id, 's' || toString(intDiv(number, 20)) AS session_id, "
        f"toString(toDateTime('2024-01-01 00:00:00', 'UTC') + number * 30) AS timestamp, "
        f"if(number % 2, 'web', 'mobile') AS platform FROM numbers({count}) "
        f"INTO OUTFILE '{path}' TRUNCATE FORMAT JSONEachRow")


@pytest.fixture(scope="module")
def base(tmp_path_factory, project):
    """A store with the project and 1M events; the replace's 30,000 new events beside it."""
    folder = tmp_path_factory.mktemp("kills")
    store, replacement = folder / "base", folder / "replacement.ndjson"
    with Engine.open(store) as engine:
        engine.deploy(project)
        _generate(engine, folder / "events.ndjson", EVENTS, "e")
        _generate(engine, replacement, 30_000, "r")
        assert engine.append("events", folder / "events.ndjson").successful_rows == EVENTS
    return store, replacement


def _command(kind: str, store, replacement) -> list[str]:
    evtrack = [sys.executable, "-m", "evtrack", "--data", str(store)]
    if kind == "delete":
        return [*evtrack, "delete", "events", "--where", CONDITION, "--yes"]
    if kind == "truncate":
        return [*evtrack, "truncate", "events", "--cascade", "--yes"]
    return [sys.executable, "-c", "import sys\nfrom pathlib import Path\nfrom evtrack.engine import Engine\n"
            f"with Engine.open(Path({str(store)!r})) as engine:\n"
            f"    engine.replace('events', Path({str(replacement)!r}).read_bytes())\n"]


def _count(engine, sql: str) -> int:
    return int(engine.store.run(sql, "TSV").strip())


def _fingerprint(engine, select: str) -> tuple[int, int]:
    """(rows, sum of their 64-bit hashes): equal for two queries exactly when they return the same
    rows, in any order, but for a hash collision. Cheaper than EXCEPT both ways, which at 2M rows
    cost 4 times as much."""
    out = engine.store.run(f"SELECT count(), sum(cityHash64(*)) FROM ({select})", "TSV").decode().split()
    return int(out[0]), int(out[1])


def _inconsistent(engine, rollups: dict = ROLLUPS) -> dict[str, tuple]:
    """The rollups that do not hold exactly the distinct rows their source defines (read raw: no
    FINAL, no key that deduplicates), with both fingerprints; and ``raw rows`` if `events_by_user`,
    one row per event, does not hold as many raw rows as `events` (the generated events are unique)."""
    out = {}
    for rollup, (columns, source) in rollups.items():
        held = _fingerprint(engine, f"SELECT DISTINCT {columns} FROM evtrack.{rollup}")
        defined = _fingerprint(engine, f"SELECT DISTINCT {source} FROM evtrack.events")
        if held != defined:
            out[rollup] = (held, defined)
    raw = (_count(engine, "SELECT count() FROM evtrack.events_by_user"), _count(engine, "SELECT count() FROM evtrack.events"))
    if raw[0] != raw[1]:
        out["raw rows"] = raw
    return out


def _run(kind: str, base, tmp_path, name: str, kill_after: float) -> tuple:
    """The change run on a copy of the base store, killed after ``kill_after`` s unless done: (store, exit code)."""
    store = tmp_path / name
    shutil.copytree(base[0], store, symlinks=True)  # the engine links its folders relatively
    process = subprocess.Popen(_command(kind, store, base[1]), cwd=ROOT, env=clean_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        process.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    return store, process.returncode


@pytest.mark.parametrize("kind, seed", [("delete", 1), ("truncate", 2), ("replace", 3)])
def test_a_change_killed_at_random_moments_is_finished_or_undone_when_the_store_opens(base, tmp_path, kind, seed):
    with Engine.open(base[0]) as engine:
        matching = {table: _count(engine, f"SELECT count() FROM evtrack.{table} WHERE {CONDITION}")
                    for table in HOLDING_USERS}
        before = _count(engine, "SELECT count() FROM evtrack.events")
    whole = LASTS[kind]
    rng = random.Random(seed)
    for attempt in range(KILLS):
        moment = rng.uniform(0.5, whole)
        store, code = _run(kind, base, tmp_path, f"killed{attempt}", moment)
        with Engine.open(store) as engine:  # the next open: recovery runs here, nothing else
            context = f"{kind} killed after {moment:.2f} s of {whole:.2f} (exit {code})"
            assert _inconsistent(engine) == {}, context
            events = _count(engine, "SELECT count() FROM evtrack.events")
            # The events are unique, so the raw count is the FINAL count: what a deletion removes
            # raw, it removes as read (a store holding each event twice, unmerged, loses two raw
            # rows for each one FINAL counts).
            assert _count(engine, "SELECT count() FROM evtrack.events FINAL") == events, context
            if kind == "delete":
                reports = [r for r in engine.deletions() if r["condition"] == CONDITION]
                left = {table: _count(engine, f"SELECT count() FROM evtrack.{table} WHERE {CONDITION}")
                        for table in HOLDING_USERS}
                if reports:
                    assert len(reports) == 1 and left == dict.fromkeys(HOLDING_USERS, 0), (context, reports, left)
                    assert reports[0]["removed"]["events"] == matching["events"], context
                    if reports[0].get("resumed"):  # finished by this open: only a killed deletion is
                        assert code == -signal.SIGKILL, context
                else:
                    assert left == matching, context
            elif kind == "truncate":
                assert events in (0, before), context
            else:
                assert events in (before, 30_000), context
        assert not list((store / "changes").glob("*.json")), context
