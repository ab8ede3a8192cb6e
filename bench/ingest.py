"""Ingest throughput: `evtrack send` into the embedded store against chDB's own plain insert.

    python bench/ingest.py            # 1,000,000 generated events, 3 rounds
    python bench/ingest.py -n 200000 --rounds 1

Both are timed as whole processes (start, import, open the store, insert, exit), over the same
generated file, each into a fresh store:
- plain: a process that opens chDB, creates a table with the same columns, engine and keys as
  ``events.datasource``, and runs ``INSERT INTO t SELECT * FROM file(path, 'JSONEachRow',
  'event_id String, event_type LowCardinality(String), ...')``: the column types are named, so
  nothing is inferred from the file; dates go through ClickHouse's best-effort parser. No
  validation, no quarantine, no defaults derived from content, no materialized views: the
  engine's own limit on this machine.
- evtrack: `evtrack --data STORE send FILE` on a store where `evtrack deploy` ran before (not
  timed): every line validated in SQL, bad ones quarantined, the rest stored, and every
  materialized pipe the project deploys fed.
The ratio of throughputs (evtrack / plain) is what to read: absolute times vary with the machine,
which drifts by tens of percent from minute to minute, so the rounds alternate the two and the
median ratio is reported. Peak memory is each process's own (VmHWM, see timed_process).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "fixtures")]

ENV = {**os.environ, "TB_VERSION_WARNING": "0", "TB_CLI_TELEMETRY_OPTOUT": "1"}
PLAIN_SETTINGS = (
    "SETTINGS date_time_input_format = 'best_effort', input_format_json_read_objects_as_strings = 1, "
    "input_format_json_read_numbers_as_strings = 1, input_format_skip_unknown_fields = 1"
)


@dataclass
class Run:
    seconds: float
    peak_mb: float
    output: str = ""


def write_events(path: Path, count: int) -> None:
    from generate import generate_events

    with open(path, "w", encoding="utf-8") as out:
        for event in generate_events(count, seed=7):
            out.write(json.dumps(event, separators=(",", ":")) + "\n")


def timed_process(args: list[str]) -> Run:
    """Wall time and peak resident memory of one whole process.

    The peak is the process's own (VmHWM of the program it runs, read every 20 ms), not
    ``ru_maxrss``: Linux carries into ``ru_maxrss`` the peak of the memory a child shares with its
    parent between fork and exec, so a child of a large parent (the bench's generated columns,
    5 GB at 100M) reported the parent's size: 7.9 GB for a 100M bench's 10M send that peaks at
    about 1.1 GB.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=out, stderr=err)
        peak, status = 0, None
        while status is None:
            peak = max(peak, _high_water_kb(process.pid))
            pid, raw, _ = os.wait4(process.pid, os.WNOHANG)
            status = raw if pid else None
            if status is None:
                time.sleep(0.02)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if process.returncode:
            raise SystemExit(f"{' '.join(args)} failed: {err.read().decode()[-2000:]}")
        return Run(seconds, peak / 1024, out.read().decode())


def _high_water_kb(pid: int) -> int:
    """VmHWM of a running process, in kB (0 once it has ended or before it has a program)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def plain_table() -> tuple[str, str, str]:
    """The events datasource's columns (DDL), engine, and the typed structure for file()."""
    from evtrack.project import load_project

    ds = load_project(ROOT).datasources["events"]
    structure = ", ".join(f"{c.name} {c.sql_type}" for c in ds.columns)
    return ", ".join(ds.column_ddl), ds.engine, structure


def plain_insert(events: Path, store: Path) -> Run:
    """The plain insert as its own process (this script with --plain)."""
    return timed_process([sys.executable, __file__, "--plain", str(store), str(events)])


def _plain_child(store: str, events: str, fmt: str = "JSONEachRow", settings: str = PLAIN_SETTINGS) -> None:
    """The plain insert of ``events`` (in ClickHouse's format ``fmt``), the column types named."""
    from chdb import session

    columns, engine, structure = plain_table()
    db = session.Session(store)
    db.query("SET session_timezone = 'UTC'")
    db.query(f"CREATE TABLE default.events ({columns}) ENGINE = {engine}")
    db.query(f"INSERT INTO default.events SELECT * FROM file('{events}', '{fmt}', '{structure}') {settings}")
    print(db.query("SELECT count() FROM default.events", "CSV").bytes().decode().strip())
    db.close()


def evtrack_send(events: Path, store: Path) -> Run:
    """`evtrack deploy` (not timed), then `evtrack send` of ``events``, timed."""
    deploy(store)
    return send(events, store)


def deploy(store: Path) -> None:
    subprocess.run([sys.executable, "-m", "evtrack", "--data", str(store), "deploy"], cwd=ROOT, env=ENV,
                   check=True, capture_output=True)


def send(events: Path, store: Path) -> Run:
    """`evtrack send FILE --json` into a deployed store, as a whole process: its time and peak memory."""
    return timed_process([sys.executable, "-m", "evtrack", "--data", str(store), "send", str(events), "--json"])


SETTLE = """
import sys, time
from pathlib import Path
from evtrack.engine import Engine
# Merges still to come: those running, and each partition of more than one part in a table whose
# ENGINE_SETTINGS merge it into one (min_age_to_force_merge_seconds) once its parts are that old.
PENDING = ("SELECT (SELECT count() FROM system.merges) + (SELECT count() FROM ("
           " SELECT table FROM system.parts WHERE database = 'evtrack' AND active"
           " AND table IN (SELECT name FROM system.tables WHERE database = 'evtrack'"
           "               AND engine_full LIKE '%min_age_to_force_merge_seconds%')"
           " GROUP BY table, partition HAVING count() > 1))")
started, quiet = time.monotonic(), 0
with Engine.open(Path(sys.argv[1])) as engine:
    while quiet < 6 and time.monotonic() - started < float(sys.argv[2]):
        pending = int(engine.store.run(PENDING).decode())
        quiet = 0 if pending else quiet + 1
        time.sleep(0.5)
    parts = engine.store.run("SELECT count() FROM system.parts WHERE database = 'evtrack' AND active").decode().strip()
print(f"{time.monotonic() - started:.0f} s, {parts} active parts")
"""


def settle(store: Path, limit: float = 900) -> str:
    """Open the store until no merge has run or been due for 3 s (at most ``limit`` seconds): the
    merges the bulk insert sets off, then those of the datasources' ENGINE_SETTINGS, which merge a
    partition into one part once its parts are old enough; how long, and the parts left."""
    return timed_process([sys.executable, "-c", SETTLE, str(store), str(limit)]).output.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description="evtrack ingest throughput against a plain chDB insert")
    parser.add_argument("-n", "--count", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plain", nargs=2, metavar=("STORE", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        _plain_child(*args.plain)
        return
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "events.ndjson"
        write_events(events, args.count)
        print(f"events: {args.count:,} ({events.stat().st_size / 1e6:,.0f} MB NDJSON), {args.rounds} rounds, "
              "each a whole process into a fresh store")
        ratios = []
        for round_ in range(1, args.rounds + 1):
            plain = plain_insert(events, Path(tmp) / f"plain-{round_}")
            ours = evtrack_send(events, Path(tmp) / f"evtrack-{round_}")
            receipt = json.loads(ours.output)
            ratios.append(plain.seconds / ours.seconds)
            print(f"  round {round_}: plain insert (typed file(), no inference) {plain.seconds:6.2f} s "
                  f"({args.count / plain.seconds:,.0f} events/s, {plain.peak_mb:,.0f} MB peak, {int(plain.output):,} rows after the engine's deduplication); "
                  f"evtrack send (embedded) {ours.seconds:6.2f} s ({args.count / ours.seconds:,.0f} events/s, "
                  f"{ours.peak_mb:,.0f} MB peak, stored {receipt['stored']:,}, quarantined {receipt['quarantined']:,}); "
                  f"ratio {plain.seconds / ours.seconds:.2f}")
            for store in (f"plain-{round_}", f"evtrack-{round_}"):
                shutil.rmtree(Path(tmp) / store)
    print(f"ratio evtrack / plain, median of {args.rounds}: {statistics.median(ratios):.2f} "
          f"(lowest {min(ratios):.2f}, highest {max(ratios):.2f})")


if __name__ == "__main__":
    main()
