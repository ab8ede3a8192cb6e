"""What `evtrack.Tracker` costs the app, and what one process sustains into `evtrack serve`.

Beside it, the loops a user would otherwise write, and posthog-python's client.

    .venv/bin/python bench/tracker.py [--events 200000] [--posthog-python /tmp/bench-posthog/bin/python]

Starts `evtrack serve` on a temporary store (loopback), deploys the project, then sends the same
number of events of one shape (event type "tap", a user id of 1,000, a session id per 20 events,
a small properties dict), each way in turn, in this one invocation:
- Tracker, with its defaults (a queue of 10,000, then drop_new), lossless (on_overflow=block) and
  with a spool (every event written to disk in `track()`):
  times each `track()` call on the app's thread (p50, p99), the events going to the server
  meanwhile; events/s delivered from the first `track()` to `close()` returning with every event
  delivered (202: in the server's write-ahead log); the stored count read back (each event once).
- plain batch loop, the strongest a user writes without a library: each event built as a JSON
  line and appended to a list (the per-call cost), every `--batch` events one POST of the NDJSON
  through one `httpx.Client` (Bearer token, `wait=false`), on the app's thread (the per-batch cost).
- plain loop, one POST per event (the weakest, and the issue's comparison): `--plain` events.
- posthog-python (optional, `--posthog-python`: the python of a venv with it installed, e.g.
  `python3 -m venv /tmp/bench-posthog && /tmp/bench-posthog/bin/pip install -r
  bench/requirements-tracker.txt`), in a subprocess of that python: `capture()` timed on the app's
  thread, `shutdown()` ending the run; with its defaults, with the Tracker's batching, and lossless
  (a queue as long as the run). PostHog's API is not the Events API: it posts to a sink on loopback
  (in this process, one thread per connection) that parses each `POST /batch/` body, counts its
  events and answers 200. The sink stores nothing, so posthog's events/s is an upper bound of its
  delivery.
- memory: an app process tracking `--events` while its host is down, its RSS at each quarter of
  the run, with the queue in memory and with a spool.
Events dropped on a full queue are counted, and events/s counts delivered events only. The app's
loop does nothing but send, so where the sender keeps up, events/s is about 1 / the mean per-call
cost. The server (or sink) takes its share of the two cores meanwhile. Each run waits until the
server has stored the previous one's events before it starts. Times vary with the machine: read
the ratios (events/s against the Tracker's defaults).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from evtrack import Tracker  # noqa: E402
from tests.served import Served, evtrack  # noqa: E402

# Run by the posthog venv's python: argv = sink url, events, settings (JSON); prints one JSON line.
POSTHOG_RUN = r"""
import json, sys, time
from posthog import Posthog
from posthog.version import VERSION

url, events, settings = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
client = Posthog("phc_bench", host=url, **settings)
costs, dropped = [], 0
started = time.perf_counter()
for i in range(events):
    t = time.perf_counter_ns()
    sent = client.capture("tap", distinct_id=f"h{i % 1000}", properties={"$session_id": f"s{i // 20}", "i": i})
    costs.append(time.perf_counter_ns() - t)
    dropped += sent is None
captured = time.perf_counter() - started
client.shutdown()
elapsed = time.perf_counter() - started
print(json.dumps({"version": VERSION, "costs": costs, "dropped": dropped, "captured": captured, "elapsed": elapsed}))
"""


def shape(i: int, prefix: str) -> tuple[str, str, str, dict]:
    """One event, the same for every way: type, user id, session id, properties."""
    return "tap", f"{prefix}{i % 1000}", f"s{i // 20}", {"i": i}


def us(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(int(len(sorted_ns) * q), len(sorted_ns) - 1)] / 1000


def spread(ns: list[int]) -> str:
    s = sorted(ns)
    return (f"p50 {us(s, 0.5):.1f} us, p99 {us(s, 0.99):.1f} us, p99.9 {us(s, 0.999):.1f} us, "
            f"max {s[-1] / 1000:,.0f} us, mean {statistics.fmean(s) / 1000:.1f} us")


def stored(server: Served, prefix: str, expect: int, timeout: float = 120) -> int:
    """The events of this run as read (FINAL: each once), once the server has inserted them all
    (a 202 is an acknowledgement, the insert follows), or what is there after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        n = int(httpx.get(f"{server.url}/v0/sql", params={
            "q": f"SELECT count() AS n FROM events FINAL WHERE startsWith(user_id, '{prefix}') FORMAT JSON",
            "token": server.admin}).json()["data"][0]["n"])
        if n >= expect or time.monotonic() > deadline:
            return n
        time.sleep(0.25)


def run_tracker(server: Served, events: int, prefix: str, **settings) -> dict:
    tracker = Tracker(host=server.url, token=server.admin, **settings)
    costs = []
    started = time.perf_counter()
    for i in range(events):
        event_type, user, session, properties = shape(i, prefix)
        t = time.perf_counter_ns()
        tracker.track(event_type, user_id=user, session_id=session, properties=properties)
        costs.append(time.perf_counter_ns() - t)
    result = tracker.close(timeout=600)
    elapsed = time.perf_counter() - started
    stats = dict(tracker.stats)
    return {"costs": costs, "elapsed": elapsed, "left": result["left"], "stats": stats,
            "delivered": stats["sent"], "stored": stored(server, prefix, stats["sent"])}


def line(i: int, prefix: str) -> str:
    """The JSON line a user writes without a library, with the Tracker's fields and formats."""
    event_type, user, session, properties = shape(i, prefix)
    return json.dumps({"event_id": str(uuid.uuid4()), "event_type": event_type,
                       "timestamp": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
                       "user_id": user, "session_id": session, "properties": json.dumps(properties)},
                      separators=(",", ":"))


def run_batches(server: Served, events: int, batch: int) -> dict:
    """Append each event's line to a list; every ``batch`` lines, one POST, on the app's thread."""
    appends, calls, posts = [], [], []
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin}"}) as http:

        def post(lines: list[str]) -> None:
            t = time.perf_counter_ns()
            http.post("/v0/events?name=events&wait=false", content="\n".join(lines).encode(),
                      headers={"Content-Type": "application/x-ndjson"}).raise_for_status()
            posts.append(time.perf_counter_ns() - t)

        lines: list[str] = []
        started = time.perf_counter()
        for i in range(events):
            t = time.perf_counter_ns()
            lines.append(line(i, "b"))
            appends.append(time.perf_counter_ns() - t)
            calls.append(appends[-1])
            if len(lines) >= batch:
                post(lines)
                lines = []
                calls[-1] += posts[-1]  # the call that fills the batch sends it
        if lines:
            post(lines)
            calls[-1] += posts[-1]
        elapsed = time.perf_counter() - started
    return {"appends": appends, "calls": calls, "posts": posts, "elapsed": elapsed, "delivered": events,
            "stored": stored(server, "b", events)}


def run_per_event(server: Served, events: int) -> dict:
    costs = []
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin}"}) as http:
        started = time.perf_counter()
        for i in range(events):
            t = time.perf_counter_ns()
            http.post("/v0/events?name=events&wait=false", content=line(i, "p").encode(),
                      headers={"Content-Type": "application/x-ndjson"}).raise_for_status()
            costs.append(time.perf_counter_ns() - t)
        elapsed = time.perf_counter() - started
    return {"costs": costs, "elapsed": elapsed, "delivered": events, "stored": stored(server, "p", events)}


class Sink(BaseHTTPRequestHandler):
    """PostHog's `POST /batch/` (its default capture path): parsed, its events counted, 200."""

    protocol_version = "HTTP/1.1"  # keep-alive, as requests' session and evtrack serve do
    disable_nagle_algorithm = True  # TCP_NODELAY, as uvicorn: else the answer's head and body, two
    # writes, wait out the client's delayed ACK (40 ms a request)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path.rstrip("/") == "/batch":
            n = len(json.loads(body)["batch"])
            with self.server.lock:
                self.server.events += n
                self.server.requests += 1
            self.answer(200, b'{"status": 1}')
        else:
            with self.server.lock:
                self.server.other.append(f"{self.command} {self.path}")
            self.answer(404, b'{"detail": "not found"}')

    do_GET = do_POST

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def posthog_version(python: str) -> str | None:
    try:
        found = subprocess.run([python, "-c", "from posthog.version import VERSION; print(VERSION)"],
                               capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return found.stdout.strip() if found.returncode == 0 else None


def run_posthog(python: str, events: int, settings: dict) -> dict:
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    sink.daemon_threads = True
    sink.lock, sink.events, sink.requests, sink.other = threading.Lock(), 0, 0, []
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{sink.server_address[1]}"
        with tempfile.TemporaryFile("w+") as err:  # posthog logs each event it drops: a file, not a pipe
            ran = subprocess.run([python, "-c", POSTHOG_RUN, url, str(events), json.dumps(settings)],
                                 stdout=subprocess.PIPE, stderr=err, text=True, timeout=1800)
            err.seek(0)
            warnings = err.read().splitlines()
        if ran.returncode:
            raise SystemExit(f"posthog run failed: {chr(10).join(warnings[-20:])}")
        result = json.loads(ran.stdout.strip().splitlines()[-1])
        with sink.lock:
            result.update(delivered=sink.events, requests=sink.requests, other=sorted(set(sink.other)))
        result["warnings"] = len(warnings)
        return result
    finally:
        sink.shutdown()
        sink.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500, help="events per POST in the plain batch loop")
    parser.add_argument("--plain", type=int, default=2_000, help="events for the one-request-per-event loop")
    parser.add_argument("--posthog-python", help="a python with posthog installed (see bench/requirements-tracker.txt)")
    args = parser.parse_args()
    rows = []  # (way, events sent, delivered, elapsed, per-call costs on the app's thread in ns)

    with tempfile.TemporaryDirectory() as folder:
        server = Served(Path(folder) / "store")
        try:
            assert evtrack("--host", server.url, "--token", server.admin, "deploy").returncode == 0
            for label, prefix, settings in (("defaults: max_queue_size=10000, on_overflow=drop_new", "u", {}),
                                            ("lossless: on_overflow=block", "k", {"on_overflow": "block"}),
                                            ("spool: spool_dir, on_overflow=block", "s",
                                             {"on_overflow": "block", "spool_dir": Path(folder) / "spool"})):
                t = run_tracker(server, args.events, prefix, **settings)
                print(f"track() on the app's thread, {label}, {args.events} calls: {spread(t['costs'])}")
                print(f"  Tracker into evtrack serve: {t['delivered'] / t['elapsed']:,.0f} events/s delivered (first "
                      f"track() to close()), left {t['left']}, stats {t['stats']}, stored as read {t['stored']}")
                rows.append((f"Tracker, {label.split(':')[0]}", args.events, t["delivered"], t["elapsed"], t["costs"]))
                if prefix == "u":
                    first = t

            b = run_batches(server, args.events, args.batch)
            print(f"plain batch loop, {args.batch} events per POST on the app's thread, {args.events} events: "
                  f"{b['delivered'] / b['elapsed']:,.0f} events/s, stored as read {b['stored']}")
            print(f"  per event, build the line and append it: {spread(b['appends'])}")
            print(f"  per POST of {args.batch} events ({len(b['posts'])} POSTs): {spread(b['posts'])}")
            print(f"  per call, the POST on the call that fills a batch: {spread(b['calls'])}")
            rows.append((f"plain batch loop, {args.batch}/POST", args.events, b["delivered"], b["elapsed"], b["calls"]))

            p = run_per_event(server, args.plain)
            print(f"plain loop, one POST per event (202, not waiting for the insert; the weakest), {args.plain} "
                  f"events: {p['delivered'] / p['elapsed']:,.0f} events/s, stored as read {p['stored']}")
            print(f"  per event (one POST each): {spread(p['costs'])}")
            rows.append(("plain loop, 1 POST/event (weakest)", args.plain, p["delivered"], p["elapsed"], p["costs"]))
        finally:
            server.stop()

    version = posthog_version(args.posthog_python) if args.posthog_python else None
    if version is None:
        print("posthog-python: skipped ("
              + (f"no posthog importable by {args.posthog_python}" if args.posthog_python else "no --posthog-python")
              + "; python3 -m venv /tmp/bench-posthog && /tmp/bench-posthog/bin/pip install -r "
                "bench/requirements-tracker.txt, then --posthog-python /tmp/bench-posthog/bin/python)")
    else:
        batching = {"flush_at": 500, "flush_interval": 1.0}
        for label, settings in (("defaults: flush_at=100, flush_interval=5.0, max_queue_size=10000", {}),
                                ("Tracker's batching: flush_at=500, flush_interval=1.0, max_queue_size=10000",
                                 {**batching, "max_queue_size": 10_000}),
                                (f"lossless: flush_at=500, flush_interval=1.0, max_queue_size={args.events}",
                                 {**batching, "max_queue_size": args.events})):
            h = run_posthog(args.posthog_python, args.events, settings)
            print(f"posthog {h['version']} capture() on the app's thread, {label}, {args.events} calls: "
                  f"{spread(h['costs'])}")
            print(f"  into a counting sink (POST /batch/ -> 200; stores nothing: an upper bound): "
                  f"{h['delivered'] / h['elapsed']:,.0f} events/s delivered (first capture() to shutdown()), "
                  f"{h['delivered']} delivered in {h['requests']} POSTs, {h['dropped']} dropped by capture() "
                  f"(queue full), capture loop {h['captured']:.2f} s of {h['elapsed']:.2f} s, "
                  f"{h['warnings']} log lines" + (f", other requests {h['other']}" if h["other"] else ""))
            rows.append((f"posthog {h['version']}, {label.split(':')[0]} (sink)", args.events, h["delivered"],
                         h["elapsed"], h["costs"]))

    for mode, rss in memory_while_down(args.events).items():
        print(f"memory, {args.events} events tracked while the host is down, {mode}: {rss}")

    reference = first["delivered"] / first["elapsed"]
    print()
    print("delivered/s: from the first call to close()/shutdown() returning; x Tracker: against the Tracker's defaults")
    print(f"{'way':<44} {'events':>7} {'delivered':>9} {'events/s':>9} {'x Tracker':>9} "
          f"{'call p50 us':>11} {'p99 us':>9} {'p99.9 us':>9}")
    for way, sent, delivered, elapsed, costs in rows:
        rate, costs = delivered / elapsed, sorted(costs)
        print(f"{way:<44} {sent:>7} {delivered:>9} {rate:>9,.0f} {rate / reference:>9.2f} "
              f"{us(costs, 0.5):>11.1f} {us(costs, 0.99):>9.1f} {us(costs, 0.999):>9.1f}")
    print(f"median track() cost: {statistics.median(first['costs']) / 1000:.1f} us")

MEMORY = """
import json, sys, time
from evtrack import Tracker
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024
events, spool = int(sys.argv[1]), sys.argv[2] or None
tracker = Tracker(host="http://127.0.0.1:9", token="t", spool_dir=spool, flush_interval=0.05)
before = rss()
marks = []
for i in range(events):
    tracker.track("tap", user_id=f"u{i % 1000}", session_id=f"s{i // 20}", properties={"i": i})
    if (i + 1) % (events // 4) == 0:
        marks.append(rss())
print(json.dumps({"before": before, "marks": marks, "stats": tracker.stats}))
"""


def memory_while_down(events: int) -> dict[str, str]:
    """Resident memory of an app process tracking ``events`` into a host that is down (a closed
    loopback port): the queue in memory holds its 10,000 and drops the rest; a spool holds them all
    on disk. RSS at each quarter of the run, in MB, after the Tracker is made."""
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        for mode, spool in (("queue in memory (max_queue_size=10000, drop_new)", ""),
                            ("spool", str(Path(folder) / "spool"))):
            done = subprocess.run([sys.executable, "-c", MEMORY, str(events), spool], cwd=ROOT, capture_output=True,
                                  text=True, timeout=600)
            m = json.loads(done.stdout.strip().splitlines()[-1])
            out[mode] = (f"RSS {m['before']} MB after Tracker(), then {', '.join(map(str, m['marks']))} MB at each "
                         f"quarter; queued {m['stats']['queued']}, dropped {m['stats']['dropped']}, "
                         f"spilled {m['stats']['spilled']}")
    return out


if __name__ == "__main__":
    main()
