"""Ingest throughput: `evtrack send` into the embedded store against chDB's own plain insert.

    python bench/ingest.py            # 1,000,000 generated events
    python bench/ingest.py -n 200000

Both run in one process, on one chDB store, over the same generated file:
- plain: ``INSERT INTO t SELECT * FROM file(path, JSONEachRow)`` into a table with the same
  columns and engine, with ClickHouse's best-effort DateTime parsing. No validation, no
  quarantine, no defaults derived from content: the engine's own limit on this machine.
- evtrack: ``Engine.append`` (what ``evtrack send FILE`` calls), which validates every line in
  SQL, quarantines what does not fit and stores the rest.
The ratio of throughputs (evtrack / plain) is what to read: absolute times vary with the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "fixtures")]

from generate import generate_events  # noqa: E402

from evtrack.engine import Engine  # noqa: E402
from evtrack.project import load_project  # noqa: E402

PLAIN_SETTINGS = (
    "SETTINGS date_time_input_format = 'best_effort', input_format_json_read_objects_as_strings = 1, "
    "input_format_json_read_numbers_as_strings = 1, input_format_skip_unknown_fields = 1"
)


def write_events(path: Path, count: int) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for event in generate_events(count, seed=7):
            out.write(json.dumps(event, separators=(",", ":")) + "\n")


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description="evtrack ingest throughput against a plain chDB insert")
    parser.add_argument("-n", "--count", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "events.ndjson"
        write_events(events, args.count)
        size_mb = events.stat().st_size / 1e6
        with Engine.open(Path(tmp) / "store") as engine:
            engine.deploy(load_project(ROOT))
            ds = engine.datasource("events")
            columns = ",\n".join(ds.column_ddl)
            engine.store.execute("CREATE DATABASE bench")
            engine.store.execute(f"CREATE TABLE bench.events ({columns}) ENGINE = {ds.engine}")
            plain = timed(lambda: engine.store.execute(
                f"INSERT INTO bench.events SELECT * FROM file('{events}', 'JSONEachRow') {PLAIN_SETTINGS}"))
            results = []
            ours = timed(lambda: results.append(engine.append("events", events)))
            stored, quarantined = results[0].successful_rows, results[0].quarantined_rows
    print(f"events: {args.count:,} ({size_mb:,.0f} MB NDJSON)")
    print(f"plain chDB INSERT ... FORMAT JSONEachRow: {plain:6.2f} s  {args.count / plain:>12,.0f} events/s")
    print(f"evtrack send (embedded):                  {ours:6.2f} s  {args.count / ours:>12,.0f} events/s"
          f"  (stored {stored:,}, quarantined {quarantined:,})")
    print(f"ratio evtrack / plain: {plain / ours:.2f}")


if __name__ == "__main__":
    main()
