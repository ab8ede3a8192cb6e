"""What exactly-once costs: a server flush's insert as it runs now (idempotent, one reading thread)
against the same insert without deduplication and with the default threads.

    python bench/exactly_once.py                 # 300,000 events a flush (about 64 MB), 5 rounds
    python bench/exactly_once.py -n 20000 --rounds 9

One store, the project deployed; each round inserts the same payload both ways (the order
alternating), under fresh import ids, and the median ratio of times (idempotent / plain) is
reported: absolute times drift on a shared machine, a ratio in one run does not.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "fixtures")]


def main() -> None:
    from generate import generate_events

    from evtrack.engine import Engine
    from evtrack.project import load_project

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300_000, help="events per insert")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import json

    payload = "\n".join(json.dumps(e) for e in generate_events(args.n, seed=3)).encode()
    ratios = []
    with tempfile.TemporaryDirectory() as folder, Engine.open(Path(folder)) as engine:
        engine.deploy(load_project(ROOT))
        for round_ in range(args.rounds):
            times = {}
            for once in ((True, False) if round_ % 2 else (False, True)):
                ident = f"wal-bench-{uuid.uuid4().hex}"
                start = time.perf_counter()
                engine.append_many("events", [payload], [ident], once=once)
                times[once] = time.perf_counter() - start
            ratios.append(times[True] / times[False])
            print(f"round {round_ + 1}: idempotent {times[True]:.3f}s, plain {times[False]:.3f}s, "
                  f"ratio {ratios[-1]:.2f}", flush=True)
    print(f"{args.n:,} events ({len(payload) / 1e6:.1f} MB) a flush: idempotent / plain, median of "
          f"{args.rounds}: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
