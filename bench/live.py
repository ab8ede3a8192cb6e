"""Real time, measured: reads while events stream in, and how long an event takes to show.

    python bench/live.py                         # 2M events preloaded, 2,000 events/s for 60 s
    python bench/live.py -n 200000 --rate 2000 --seconds 20

One `evtrack serve` on loopback over a store preloaded with N generated events (embedded send,
not timed) and, unless --no-settle, left to merge as a running store is (its merges done, those of
the datasources' ENGINE_SETTINGS too, about 5 minutes), then two phases of S seconds each:

1. idle: readers call four endpoints in turn (get_events first page, get_events for a type and a
   month, user_activity for a user, event_stats for a month): p50/p99 per call;
2. streaming: the same readers while senders (in a process of their own, as trackers are) post R
   events/s in batches of 20 with wait=false, as a tracker sends them (or, with --senders tracker,
   one `evtrack.Tracker` paced at R events/s, batching as it does), and one marker event a
   second (a unique event_type, stamped with the current time) whose time from its 202 to its
   first appearance in get_events (asked for its type since its time, as a live view asks) is its
   freshness: p50/p99/max, and of it, the time until the read that found it began (by then it
   was stored) and that read's own time.

Then acknowledged against stored (raw rows), and the server's CPU seconds and peak RSS (VmHWM).
A plot of freshness and read latency over time goes to --plot (bench/out/live.png) when matplotlib is
installed (`pip install -e '.[bench]'`). Absolute times drift on a shared machine: read the
ratios (streaming against idle) of one run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "fixtures"), str(ROOT / "bench")]

READS = {
    "get_events first page": ("get_events", {}),
    "get_events type+month": ("get_events", {"event_type": "page_view", "start_date": "2023-06-01 00:00:00",
                                             "end_date": "2023-06-30 23:59:59"}),
    "user_activity": ("user_activity", {"user_id": "user_0042"}),
    "event_stats month": ("event_stats", {"start_date": "2023-06-01 00:00:00", "end_date": "2023-06-30 23:59:59"}),
}


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 2 else (values[0] if values else float("nan"))


def preload(data: Path, count: int, settled: bool) -> str:
    """Deploy and send ``count`` generated events; with ``settled``, then open the store until its
    merges are done (bench/ingest.py settle), as a store that has been running a while is."""
    from ingest import settle, write_events

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.ndjson"
        write_events(path, count)
        for args in (["deploy"], ["send", str(path)]):
            subprocess.run([sys.executable, "-m", "evtrack", "--data", str(data), *args], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL)
    return settle(data) if settled else "no"


def readers(url: str, token: str, stop: threading.Event, out: list, clients: int = 2) -> list[threading.Thread]:
    def read() -> None:
        with httpx.Client(base_url=url, timeout=60, params={"token": token}) as http:
            while not stop.is_set():
                for label, (pipe, params) in READS.items():
                    started = time.perf_counter()
                    answer = http.get(f"/v0/pipes/{pipe}.json", params=params)
                    out.append((time.monotonic(), label, (time.perf_counter() - started) * 1000, answer.status_code))

    return [threading.Thread(target=read, daemon=True) for _ in range(clients)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2_000_000, help="events preloaded")
    parser.add_argument("--rate", type=int, default=2000, help="events/s while streaming")
    parser.add_argument("--seconds", type=int, default=60, help="length of each phase")
    parser.add_argument("--plot", type=Path, default=ROOT / "bench" / "out" / "live.png", help="where the plot goes")
    parser.add_argument("--senders", choices=("http", "tracker"), default="http",
                        help="http: four threads posting batches of 20; tracker: one evtrack.Tracker "
                             "(flush_interval 0.1 s), both in a process of their own")
    parser.add_argument("--no-settle", action="store_true",
                        help="serve the store right after the preload, while its merges run")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="evtrack-live-"))
    settled = preload(data, args.n, not args.no_settle)
    server = subprocess.Popen([sys.executable, "-m", "evtrack", "--data", str(data), "serve", "--port", "0"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (data / "server.json").exists() or json.loads((data / "server.json").read_text() or "{}").get("pid") != server.pid:
            time.sleep(0.05)
        url = json.loads((data / "server.json").read_text())["url"]
        tokens = {t["name"]: t["token"] for t in json.loads((data / "tokens.json").read_text())["tokens"]}
        report = run(url, tokens, args)
        report.update(server_resources(server.pid))
        with httpx.Client(base_url=url, timeout=120) as http:
            stored = http.get("/v0/sql", params={"token": tokens["admin token"],
                                                 "q": "SELECT count() AS n FROM events WHERE event_id LIKE 'live-%'"})
        report["stored"] = stored.json()["data"][0]["n"]
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(f"preloaded store settled: {settled}")
    print_report(report, args)


def run(url: str, tokens: dict, args) -> dict:
    reads: list = []
    stop = threading.Event()
    threads = readers(url, tokens["dashboard"], stop, reads)
    # The trackers run in a process of their own, as they run on other machines: their threads
    # would otherwise hold this process's interpreter lock while a reader's answer waits for it.
    context = multiprocessing.get_context("spawn")
    go, halt, results = context.Event(), context.Event(), context.Queue()
    trackers = context.Process(target=stream, args=(url, tokens, args.rate, go, halt, results, args.senders),
                               daemon=True)
    trackers.start()
    for thread in threads:
        thread.start()
    time.sleep(args.seconds)  # the idle phase: only reads
    go.set()
    idle_end = time.monotonic()
    time.sleep(args.seconds)
    halt.set()
    acked, freshness = results.get(timeout=120)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    trackers.join(timeout=60)
    time.sleep(1)  # let the last flush land (250 ms interval) before counting
    return {"reads": reads, "idle_end": idle_end, "freshness": freshness, "acked": acked}


def stream(url: str, tokens: dict, rate: int, go, halt, results, senders_kind: str = "http") -> None:
    """From ``go`` to ``halt``: senders posting ``rate`` events/s in batches of 20 with wait=false,
    and one marker a second; then (acknowledged events, freshness records) into ``results``.
    time.monotonic() is the system's monotonic clock, so its times compare with the readers'."""
    dashboard, tracker = tokens["dashboard"], tokens["tracker"]
    acked, freshness, lock = [0], [], threading.Lock()
    go.wait()

    def send(n: int, senders: int) -> None:
        batch, interval = 20, 20 * senders / rate
        with httpx.Client(base_url=url, timeout=30, params={"name": "events", "token": tracker}) as http:
            i, next_at = 0, time.monotonic()
            while not halt.is_set():
                body = "\n".join(json.dumps({"event_id": f"live-{n}-{i}-{j}", "event_type": "tap", "user_id": f"u{j}",
                                             "timestamp": "2023-06-15 12:00:00"}) for j in range(batch))
                if http.post("/v0/events", content=body).status_code == 202:
                    with lock:
                        acked[0] += batch
                i += 1
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))

    def markers() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            i = 0
            while not halt.is_set():
                kind = f"marker_{i}"
                # Stamped now, as a live event is, and looked up as a live view asks: since its time.
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
                event = {"event_id": f"live-marker-{i}", "event_type": kind, "user_id": "m", "timestamp": stamp}
                lookup = {"token": dashboard, "event_type": kind, "start_date": stamp}
                sent = http.post("/v0/events", params={"name": "events", "token": tracker}, content=json.dumps(event))
                acknowledged = time.perf_counter()
                if sent.status_code == 202:
                    with lock:
                        acked[0] += 1
                    while not halt.is_set():
                        asked = time.perf_counter()
                        found = http.get("/v0/pipes/get_events.json", params=lookup)
                        if found.status_code == 200 and found.json()["rows"]:
                            seen = time.perf_counter()
                            # (when, freshness, by when it was stored: the finding read's start, that read's time)
                            freshness.append((time.monotonic(), (seen - acknowledged) * 1000,
                                              (asked - acknowledged) * 1000, (seen - asked) * 1000))
                            break
                i += 1
                time.sleep(max(0.0, 1 - (time.perf_counter() - acknowledged)))

    def track() -> None:
        """One Tracker, paced at ``rate`` in steps of 10 ms; acknowledged: what it delivered by close()."""
        from evtrack import Tracker

        tracker = Tracker(host=url, token=tracker_token, flush_interval=0.1, on_overflow="block")
        step, i, next_at = max(1, rate // 100), 0, time.monotonic()
        while not halt.is_set():
            for j in range(step):
                tracker.track("tap", user_id=f"u{j}", event_id=f"live-t-{i}-{j}", timestamp="2023-06-15 12:00:00")
            i += 1
            next_at += 0.01
            time.sleep(max(0.0, next_at - time.monotonic()))
        tracker.close(timeout=60)
        with lock:
            acked[0] += tracker.stats["sent"]

    tracker_token = tracker
    senders = 4
    if senders_kind == "tracker":
        threads = [threading.Thread(target=track, daemon=True)]
    else:
        threads = [threading.Thread(target=send, args=(n, senders), daemon=True) for n in range(senders)]
    threads.append(threading.Thread(target=markers, daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    results.put((acked[0], freshness))


def server_resources(pid: int) -> dict:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = __import__("os").sysconf("SC_CLK_TCK")
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"cpu_s": (int(stat[11]) + int(stat[12])) / ticks, "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024}


def print_report(report: dict, args) -> None:
    idle = [ms for at, _, ms, _ in report["reads"] if at <= report["idle_end"]]
    busy = [ms for at, _, ms, _ in report["reads"] if at > report["idle_end"]]
    fresh = [ms for _, ms, _, _ in report["freshness"]]
    stored_by = [ms for _, _, ms, _ in report["freshness"]]
    found_in = [ms for _, _, _, ms in report["freshness"]]
    how = "by one evtrack.Tracker" if args.senders == "tracker" else "in batches of 20"
    print(f"{args.n:,} events preloaded; streaming {args.rate:,} events/s {how} for {args.seconds} s: "
          f"acknowledged {report['acked'] / args.seconds:,.0f} events/s")
    print(f"reads (4 endpoints), ms   idle p50 {pct(idle, 50):.0f} p99 {pct(idle, 99):.0f}   "
          f"streaming p50 {pct(busy, 50):.0f} p99 {pct(busy, 99):.0f}   "
          f"ratios p50 {pct(busy, 50) / pct(idle, 50):.2f} p99 {pct(busy, 99) / pct(idle, 99):.2f}")
    for label in READS:
        i = [ms for at, lab, ms, _ in report["reads"] if lab == label and at <= report["idle_end"]]
        b = [ms for at, lab, ms, _ in report["reads"] if lab == label and at > report["idle_end"]]
        print(f"  {label:<24} idle p50 {pct(i, 50):6.0f}  streaming p50 {pct(b, 50):6.0f} p99 {pct(b, 99):6.0f}")
    if fresh:
        print(f"freshness, 202 to visible in get_events ({len(fresh)} markers), ms: p50 {pct(fresh, 50):.0f} "
              f"p99 {pct(fresh, 99):.0f} max {max(fresh):.0f}")
        print(f"  of which stored by (the start of the read that found it), ms: p50 {pct(stored_by, 50):.0f} "
              f"p99 {pct(stored_by, 99):.0f} max {max(stored_by):.0f}; that read, ms: p50 {pct(found_in, 50):.0f} "
              f"p99 {pct(found_in, 99):.0f}")
    print(f"acknowledged {report['acked']:,}, stored {report['stored']:,}; server CPU {report['cpu_s']:.1f} s, "
          f"peak RSS {report['peak_rss_mb']:.0f} MB")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    start = min(at for at, *_ in report["reads"])
    figure, axis = plt.subplots(figsize=(9, 4))
    axis.scatter([at - start for at, *_ in report["reads"]], [ms for _, _, ms, _ in report["reads"]], s=2,
                 label="read latency (ms)")
    axis.plot([at - start for at, *_ in report["freshness"]], fresh, "r.-", label="freshness (ms)")
    axis.axvline(report["idle_end"] - start, color="gray", linestyle="--")
    axis.set_xlabel("seconds (idle, then streaming)")
    axis.set_yscale("log")
    axis.legend()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.plot, dpi=100, bbox_inches="tight")
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
