"""What `evtrack.Tracker` costs the app, and what one process sustains into `evtrack serve`.

    .venv/bin/python bench/tracker.py [--events 200000]

Starts `evtrack serve` on a temporary store (loopback), deploys the project, then:
- times each `track()` call on the app's thread (p50, p99), the events going to the server meanwhile;
- measures events/s from the first `track()` to `close()` returning with every event delivered;
- reads the stored count back (each event once, as read).
Beside it, the plain loop a user would otherwise write: one `httpx.post` per event to the Events API.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from evtrack import Tracker  # noqa: E402
from tests.served import Served, evtrack  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--plain", type=int, default=2_000, help="events for the one-request-per-event loop")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server = Served(Path(folder) / "store")
        try:
            assert evtrack("--host", server.url, "--token", server.admin, "deploy").returncode == 0
            tracker = Tracker(host=server.url, token=server.admin)
            costs = []
            started = time.perf_counter()
            for i in range(args.events):
                t = time.perf_counter_ns()
                tracker.track("tap", user_id=f"u{i % 1000}", session_id=f"s{i // 20}", properties={"i": i})
                costs.append(time.perf_counter_ns() - t)
            result = tracker.close(timeout=600)
            elapsed = time.perf_counter() - started
            stats = dict(tracker.stats)
            costs.sort()
            q = httpx.get(f"{server.url}/v0/sql", params={
                "q": "SELECT count() AS n FROM events FINAL WHERE startsWith(user_id, 'u') FORMAT JSON",
                "token": server.admin}).json()["data"][0]["n"]
            print(f"track() on the app's thread, {args.events} calls: p50 {costs[len(costs) // 2] / 1000:.1f} us, "
                  f"p99 {costs[int(len(costs) * 0.99)] / 1000:.1f} us")
            print(f"Tracker into evtrack serve: {args.events / elapsed:,.0f} events/s (first track() to close()), "
                  f"left {result['left']}, stats {stats}, stored as read {q}")
            with httpx.Client(base_url=server.url) as http:
                t = time.perf_counter()
                for i in range(args.plain):
                    http.post(f"/v0/events?name=events&token={server.admin}",
                              content=f'{{"event_id":"p{i}","event_type":"tap","user_id":"p{i % 1000}",'
                                      f'"timestamp":"2024-01-01 00:00:00"}}')
                plain = args.plain / (time.perf_counter() - t)
            print(f"plain loop, one POST per event (202, not waiting for the insert), {args.plain} events: "
                  f"{plain:,.0f} events/s")
            print(f"median track() cost: {statistics.median(costs) / 1000:.1f} us")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
