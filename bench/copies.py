"""What a copy run pays for its staging table: ``Engine.run_copy`` against the plain ``INSERT ... SELECT``.

    .venv/bin/python bench/copies.py [--rows 3000000] [--users 1000000] [--runs 3]

Builds the small project of ``tests/test_copies.py`` in a temporary store, fills ``sales`` with
ROWS generated rows (USERS distinct users), then times, best of RUNS each: the plain insert of the
copy node's result into the target, a copy run in append mode (staging table, then insert) and
one in replace mode (staging table, then exchange). All three write USERS rows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evtrack.engine import Engine  # noqa: E402
from evtrack.project import load_project  # noqa: E402
from tests.test_copies import write_project  # noqa: E402


def best(run, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="evtrack-copies-") as folder, Engine.open(Path(folder) / "store") as engine:
        engine.deploy(load_project(write_project(Path(folder) / "project")))
        engine.store.execute(
            "INSERT INTO evtrack.sales SELECT toDateTime('2024-01-01 00:00:00') + number, "
            f"concat('u', toString(number % {args.users})), number % 100 FROM numbers({args.rows})")
        node = "SELECT user, toUInt64(sum(amount)) AS total FROM evtrack.sales WHERE amount >= 0 GROUP BY user"
        plain = best(lambda: engine.store.execute(f"INSERT INTO evtrack.user_totals (user, total) {node}"), args.runs)
        append = best(lambda: engine.run_copy("copy_totals", {}), args.runs)
        replace = best(lambda: engine.run_copy("snapshot_totals", {}), args.runs)
    print(f"{args.rows:,} source rows, {args.users:,} rows written per run, best of {args.runs}")
    print(f"plain INSERT ... SELECT   {plain:.3f} s")
    print(f"copy run, append          {append:.3f} s  ({append / plain:.2f}x)")
    print(f"copy run, replace         {replace:.3f} s  ({replace / plain:.2f}x)")


if __name__ == "__main__":
    main()
