"""What chDB allows in one process, measured: the facts evtrack's store is built on.

    python bench/connections.py

- Opening a connection on a store that is already open, and running a statement on it.
- How many connections can be open at once (64 here) and run side by side.
- A small read beside a heavy query on another connection, against the same read alone.
- Two heavy queries at once against one after the other (the two cores are shared, not queued).
- Settings are per connection (SET on one is not seen by another); data and caches are the
  engine's (a row inserted on one connection is read at once on another; the mark cache is one).
- Cancelling a running query from another connection (KILL QUERY), and how long it takes.
Times vary with the machine: read the ratios.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import chdb  # noqa: E402

HEAVY = "SELECT count() FROM numbers(3000000000) WHERE number % 7 = 3"


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        anchor = chdb.connect(tmp)
        opening = statistics.median(timed(lambda: chdb.connect(tmp).close()) for _ in range(20))
        print(f"open + close a further connection: {opening * 1000:.1f} ms (median of 20)")

        many = [chdb.connect(tmp) for _ in range(64)]
        results: list[bytes] = []
        threads = [threading.Thread(target=lambda c=c: results.append(c.query("SELECT sum(number) FROM numbers(1000000)").bytes()))
                   for c in many]
        wall = timed(lambda: ([t.start() for t in threads], [t.join() for t in threads]))
        print(f"64 connections open at once, one query each in 64 threads: {len(set(results))} distinct answer, {wall:.2f} s")

        a, b = many[0], many[1]
        a.query("SET max_threads = 1")
        print("settings are per connection: max_threads on the one that SET it =",
              a.query("SELECT getSetting('max_threads')").bytes().strip().decode(), "; on another =",
              b.query("SELECT getSetting('max_threads')").bytes().strip().decode())
        a.query("SET max_threads = 0")
        a.query("CREATE TABLE t (x UInt64) ENGINE = MergeTree ORDER BY x")
        a.query("INSERT INTO t SELECT number FROM numbers(1000)")
        print("a row inserted on one connection is read on another at once:", b.query("SELECT count() FROM t").bytes().strip().decode())
        caches = [c.query("SELECT value FROM system.metrics WHERE metric = 'MarkCacheFiles'").bytes().strip() for c in (a, b)]
        print("mark cache as seen from two connections (one engine-wide cache):", caches[0] == caches[1])

        small = statistics.median(timed(lambda: b.query("SELECT count() FROM t WHERE x < 500")) for _ in range(20))
        alone = timed(lambda: a.query(HEAVY))
        beside: list[float] = []
        heavy = threading.Thread(target=lambda: a.query(HEAVY))
        heavy.start()
        time.sleep(0.2)
        while heavy.is_alive() and len(beside) < 200:
            beside.append(timed(lambda: b.query("SELECT count() FROM t WHERE x < 500")))
        heavy.join()
        beside.sort()
        print(f"a small read alone: {small * 1000:.1f} ms; beside a {alone:.1f} s query on another connection: "
              f"p50 {beside[len(beside) // 2] * 1000:.1f} ms, p99 {beside[int(len(beside) * 0.99)] * 1000:.1f} ms")
        both = timed(lambda: [t.join() for t in [threading.Thread(target=lambda c=c: c.query(HEAVY)) for c in (a, b)]
                              if not t.start()])
        print(f"two heavy queries on two connections at once: {both:.1f} s, against {2 * alone:.1f} s one after the other "
              "(they share the two cores)")

        runaway = threading.Thread(target=lambda: _ignore(lambda: a.query("/* tag:x */ SELECT count() FROM numbers(1000000000000)")))
        runaway.start()
        time.sleep(0.5)
        kill = timed(lambda: (b.query("KILL QUERY WHERE startsWith(query, '/* tag:x */') ASYNC"), runaway.join()))
        print(f"KILL QUERY from another connection ends a runaway query in {kill * 1000:.0f} ms")
        for c in many:
            c.close()
        anchor.close()


def _ignore(fn) -> None:
    try:
        fn()
    except Exception:
        pass


if __name__ == "__main__":
    main()
