"""How long one `evtrack` call takes, as a user's shell sees it: wall time of whole processes.

    .venv/bin/python bench/cli.py [--runs 10]

Deploys the project and sends the fixture into a fresh embedded store, then times `evtrack --help`
and `evtrack query ...` (median of --runs processes each), and lists the slowest imports of one
query call from `python -X importtime`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVTRACK = [sys.executable, "-m", "evtrack"]


def wall(args: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        times.append(time.perf_counter() - started)
    return times


def slowest_imports(args: list[str], top: int) -> tuple[float, list[tuple[float, str]]]:
    """Total import time of top-level imports, and the slowest of them (cumulative, in seconds)."""
    done = subprocess.run([sys.executable, "-X", "importtime", *args[1:]], check=True, cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if not name.startswith("  "):  # a top-level import: its cumulative time is not counted twice
            rows.append((int(cumulative) / 1e6, name.strip()))
    return sum(t for t, _ in rows), sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="evtrack-cli-bench-") as folder:
        data = ["--data", folder]
        subprocess.run([*EVTRACK, *data, "deploy"], check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        subprocess.run([*EVTRACK, *data, "send", "fixtures/events.ndjson"], check=True,
                       stdout=subprocess.DEVNULL, cwd=ROOT)
        calls = {
            "evtrack --help": [*EVTRACK, "--help"],
            "evtrack query user_activity --user-id user_abc": [*EVTRACK, *data, "query", "user_activity",
                                                               "--user-id", "user_abc", "--format", "json"],
            "evtrack query event_stats --platform web": [*EVTRACK, *data, "query", "event_stats",
                                                         "--platform", "web", "--format", "json"],
        }
        print(f"wall time of whole processes, {args.runs} runs each (6,000-event store)")
        for label, call in calls.items():
            times = wall(call, args.runs)
            print(f"  {label:<50} median {statistics.median(times):.3f} s  (min {min(times):.3f}, max {max(times):.3f})")
        total, top = slowest_imports(calls["evtrack query user_activity --user-id user_abc"], 8)
        print(f"imports of one query call (python -X importtime): {total:.3f} s; the slowest:")
        for seconds, name in top:
            print(f"  {seconds:.3f} s  {name}")


if __name__ == "__main__":
    main()
