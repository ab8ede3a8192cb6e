"""What the gate costs an endpoint call: the project's endpoints called on the fixture with the gate
as it is, and with its check replaced by a pass-through, interleaved in one run (ratios, not times).

    .venv/bin/python bench/gate.py [--calls 300]

Each round calls each endpoint once with its usual parameters, so the toolset's caches see the
texts a real server sees (a new text for each new parameter value: the user, the dates).
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

import evtrack.engine.sql.pipes as pipes  # noqa: E402
import evtrack.engine.sql.sqlapi as sqlapi  # noqa: E402
from evtrack.engine import Engine  # noqa: E402
from evtrack.project import load_project  # noqa: E402

CALLS = [
    ("get_events", lambda i: {"event_type": "page_view", "limit": str(10 + i % 50)}),
    ("user_activity", lambda i: {"user_id": f"user_{i % 200:04d}"}),
    ("event_stats", lambda i: {"start_date": f"2023-{1 + i % 12:02d}-01 00:00:00", "platform": "web"}),
]


def round_of(engine, i: int) -> tuple[float, float]:
    """Seconds to build the SQL of each call, and to run each call whole."""
    built = ran = 0.0
    for name, params in CALLS:
        started = time.perf_counter()
        engine.default._queries.pipe_query(name, params(i))
        built += time.perf_counter() - started
        started = time.perf_counter()
        engine.query_pipe(name, params(i))
        ran += time.perf_counter() - started
    return built, ran


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    admit = pipes.admit
    with tempfile.TemporaryDirectory() as folder, Engine.open(Path(folder) / "store") as engine:
        engine.deploy(load_project(ROOT))
        engine.append("events", ROOT / "fixtures" / "events.ndjson")
        results: dict[str, list[tuple[float, float]]] = {"gate": [], "none": []}
        for i in range(args.calls):
            for mode in ("gate", "none") if i % 2 else ("none", "gate"):
                pipes.admit = admit if mode == "gate" else (lambda sql, *a, **k: sql)
                sqlapi.admit = pipes.admit
                results[mode].append(round_of(engine, i))
        pipes.admit = sqlapi.admit = admit
    for part, index in (("building the SQL", 0), ("the whole call", 1)):
        gated = statistics.median(r[index] for r in results["gate"])
        bare = statistics.median(r[index] for r in results["none"])
        print(f"{part:<18} median of {args.calls} rounds of {len(CALLS)} calls: with the gate {gated * 1e3:.2f} ms, "
              f"without {bare * 1e3:.2f} ms, ratio {gated / bare:.2f}")


if __name__ == "__main__":
    main()
