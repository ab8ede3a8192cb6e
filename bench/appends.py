"""What an append pays for being all or nothing (``ingest.atomic``) and for entering the service
log (``tinybird.datasources_ops_log``, ``jobs_log``): the same Events API-sized batches appended
with each part as it is and with it replaced by a pass-through, interleaved in one run, on one
store (ratios, not times: the machine is shared).

    .venv/bin/python bench/appends.py [--batches 60] [--events 2000]

Each batch is ``--events`` events through ``append_many``, the call the server's flush makes. The
four ways are taken in turn, batch after batch, so that the store's growth and the machine's noise
fall on each alike; the median of each way is reported, and its ratio to the plain insert.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evtrack.engine import Engine  # noqa: E402
from evtrack.project import load_project  # noqa: E402


class _Pass:
    """A stand-in that does nothing, for the part measured."""

    def tables(self, datasource):
        return []

    @contextlib.contextmanager
    def writing(self, tables):
        yield

    def operation(self, *args, **kwargs):
        pass

    def job(self, *args, **kwargs):
        pass


def _batch(number: int, events: int) -> bytes:
    return "\n".join(json.dumps({"event_id": f"b{number}-{i}", "event_type": ["click", "view"][i % 2],
                                 "user_id": f"u{i % 97}", "session_id": f"s{number}", "platform": "web",
                                 "timestamp": f"2024-03-{1 + i % 28:02d} 10:00:00"}) for i in range(events)).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, Engine.open(Path(folder) / "store") as engine:
        engine.deploy(load_project(ROOT))
        workspace = engine.default
        atomic, service = workspace._ingest.atomic, workspace.service
        ways = {"plain insert": (_Pass(), _Pass()), "all or nothing": (atomic, _Pass()),
                "service log": (_Pass(), service), "both (as shipped)": (atomic, service)}
        times: dict[str, list[float]] = {way: [] for way in ways}
        for number in range(args.batches * len(ways) + len(ways)):
            way = list(ways)[number % len(ways)]
            workspace._ingest.atomic, workspace.service = ways[way]
            payload = _batch(number, args.events)
            started = time.perf_counter()
            workspace.append_many("events", [payload], operation="append-hfi")
            if number >= len(ways):  # the first round warms up
                times[way].append(time.perf_counter() - started)
        workspace._ingest.atomic, workspace.service = atomic, service
        # The parts themselves, which the noise of whole appends can hide: the service log's call on
        # the ingest path, and its one insert a second (the rows of a second of flushes).
        service.flush()
        calls = []
        for _ in range(2000):
            started = time.perf_counter()
            service.operation("append-hfi", "events", time.time(), rows=args.events, quarantined=0, import_id="x")
            calls.append(time.perf_counter() - started)
        with service._lock:
            service._rows = {name: rows[:8] for name, rows in service._rows.items()}  # a second at 8 flushes/s
        flushes = []
        for _ in range(20):
            with service._lock:
                kept = {name: list(rows) for name, rows in service._rows.items()}
            started = time.perf_counter()
            service.flush()
            flushes.append(time.perf_counter() - started)
            with service._lock:
                service._rows = kept
        service._rows = {name: [] for name in service._rows}
        calls.sort()
        print(f"service log: a call {calls[len(calls) // 2] * 1e6:.1f} us p50, {calls[int(len(calls) * 0.99)] * 1e6:.1f} us "
              f"p99; its insert of a second's rows {statistics.median(flushes) * 1000:.1f} ms (median of 20), "
              f"{statistics.median(flushes) * 100:.1f}% of a core")
        plain = statistics.median(times["plain insert"])
        print(f"{args.batches} batches of {args.events} events each way, interleaved; median per batch:")
        for way, seconds in times.items():
            median = statistics.median(seconds)
            print(f"  {way:<18} {median * 1000:8.1f} ms  {median / plain:5.2f}x")


if __name__ == "__main__":
    main()
