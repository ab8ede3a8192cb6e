"""Real time, measured: reads while events stream in, and how long an event takes to show.

    python bench/live.py                         # 2M events preloaded, 2,000 events/s for 60 s
    python bench/live.py -n 200000 --rate 2000 --seconds 20

One `evtrack serve` on loopback over a store preloaded with N generated events (bench/events_gen.py:
sessions, power-law users, 1% resends, stamped over the last --days days up to now, so the month
being written holds its share of them, as a running store's does; an embedded send, not timed)
and, unless --no-settle, left to merge as a running store is (its merges done, those of the
datasources' ENGINE_SETTINGS too, about 5 minutes), then two phases of S seconds each:

1. idle: readers call four endpoints in turn (get_events first page, get_events for a type and
   this month, user_activity for a user, event_stats for this month): p50/p99 per call;
2. streaming: the same readers while senders (in a process of their own, as trackers are) post R
   events/s stamped now, in batches of 20 with wait=false, as a tracker sends them (or, with
   --senders tracker, one `evtrack.Tracker` paced at R events/s, batching as it does), and one marker event a
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
import calendar
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
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "fixtures"), str(ROOT / "bench")]

def month_reads(now: float) -> dict:
    """The four reads of the bench, over the month being written (this one), as a dashboard asks."""
    start = time.strftime("%Y-%m-01 00:00:00", time.gmtime(now))
    end = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now + 3600))
    return {
        "get_events first page": ("get_events", {}),
        "get_events type+month": ("get_events", {"event_type": "page_view", "start_date": start, "end_date": end}),
        "user_activity": ("user_activity", {"user_id": USER}),
        "event_stats month": ("event_stats", {"start_date": start, "end_date": end}),
    }


USER = "u0000500"  # about 500 of 2M events: an active user
READS = month_reads(time.time())


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 2 else (values[0] if values else float("nan"))


def preload(data: Path, count: int, settled: bool, days: int) -> str:
    """Deploy and send ``count`` generated events (bench/events_gen.py: sessions, power-law users,
    1% resends) stamped over the last ``days`` days up to now, so the month being written holds
    its share of them, as a running store's does; with ``settled``, then open the store until its
    merges are done (bench/ingest.py settle), as a store that has been running a while is."""
    from chdb import session

    from events_gen import generate, write_ndjson
    from ingest import settle

    now = int(time.time())
    events = generate(count, "realistic", start=now - days * 86400, span=days * 86400 - 3600)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.ndjson"
        db = session.Session(str(Path(folder) / "chdb"))
        write_ndjson(events, path, db)
        db.close()
        for args in (["deploy"], ["send", str(path)]):
            subprocess.run([sys.executable, "-m", "evtrack", "--data", str(data), *args], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL)
    month_start = calendar.timegm(time.strptime(time.strftime("%Y-%m-01", time.gmtime(now)), "%Y-%m-%d"))
    in_month = int(np.count_nonzero(events.timestamp[events.order] >= month_start))
    return (settle(data) if settled else "no") + f"; {in_month:,} of the preloaded events are in this month"


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
    parser.add_argument("--days", type=int, default=30,
                        help="the preloaded events span the last DAYS days up to now (default 30)")
    parser.add_argument("--sweep", type=lambda text: [int(r) for r in text.split(",")], default=[],
                        help="after the main phases, one streaming phase per rate of this list (e.g. "
                             "500,1000,2000,5000,10000): freshness against rate, plotted to --sweep-plot")
    parser.add_argument("--sweep-plot", type=Path, default=ROOT / "bench" / "out" / "freshness.png")
    parser.add_argument("--no-settle", action="store_true",
                        help="serve the store right after the preload, while its merges run")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="evtrack-live-"))
    settled = preload(data, args.n, not args.no_settle, args.days)
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
    """The idle phase, then the streaming one at --rate; then, with --sweep, one streaming phase per
    rate of it (the readers reading throughout)."""
    reads: list = []
    stop = threading.Event()
    threads = readers(url, tokens["dashboard"], stop, reads)
    for thread in threads:
        thread.start()
    time.sleep(args.seconds)  # the idle phase: only reads (it ends when the streaming starts)
    acked, freshness, idle_end = streaming(url, tokens, args.rate, args.seconds, args.senders)
    main_end = time.monotonic()
    sweep = []
    for rate in args.sweep:
        got, fresh, began = streaming(url, tokens, rate, args.seconds, args.senders)
        sweep.append({"rate": rate, "acked": got, "freshness": fresh, "from": began, "to": time.monotonic()})
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    time.sleep(1)  # let the last flush land (250 ms interval) before counting
    return {"reads": [r for r in reads if r[0] <= main_end], "all_reads": reads, "idle_end": idle_end,
            "freshness": freshness, "acked": acked, "sweep": sweep}


def streaming(url: str, tokens: dict, rate: int, seconds: float, senders: str) -> tuple[int, list, float]:
    """One streaming phase: (acknowledged, freshness records, when it began). The trackers run in a process of their
    own, as they run on other machines: their threads would otherwise hold this process's
    interpreter lock while a reader's answer waits for it."""
    context = multiprocessing.get_context("spawn")
    go, halt, results = context.Event(), context.Event(), context.Queue()
    trackers = context.Process(target=stream, args=(url, tokens, rate, go, halt, results, senders), daemon=True)
    trackers.start()
    time.sleep(1)  # the process's start (imports) is not part of the phase
    go.set()
    began = time.monotonic()
    time.sleep(seconds)
    halt.set()
    acked, freshness = results.get(timeout=120)
    trackers.join(timeout=60)
    return acked, freshness, began


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
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())  # live events happen now
                body = "\n".join(json.dumps({"event_id": f"live-{n}-{i}-{j}", "event_type": "tap", "user_id": f"u{j}",
                                             "timestamp": stamp}) for j in range(batch))
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
                tracker.track("tap", user_id=f"u{j}", event_id=f"live-t-{i}-{j}")  # stamped now
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


def print_sweep(report: dict, args, idle_p50: float) -> None:
    """Freshness against rate: a table, and a plot to --sweep-plot."""
    print(f"\nfreshness against rate ({args.seconds} s a rate, the readers reading throughout; reads idle p50 {idle_p50:.0f} ms)")
    print(f"  {'asked/s':>8} {'acked/s':>8} {'fresh p50':>10} {'p99':>6} {'max':>6} {'reads p50':>10} {'× idle':>7}")
    rows = []
    for phase in report["sweep"]:
        fresh = [ms for _, ms, _, _ in phase["freshness"]]
        reads = [ms for at, _, ms, _ in report["all_reads"] if phase["from"] < at <= phase["to"]]
        rows.append((phase["rate"], phase["acked"] / args.seconds, pct(fresh, 50), pct(fresh, 99), max(fresh, default=0)))
        print(f"  {phase['rate']:>8,} {rows[-1][1]:>8,.0f} {rows[-1][2]:>8.0f}ms {rows[-1][3]:>4.0f}ms {rows[-1][4]:>4.0f}ms "
              f"{pct(reads, 50):>8.0f}ms {pct(reads, 50) / idle_p50:>6.2f}x")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot([r[1] for r in rows], [r[2] for r in rows], "o-", label="freshness p50")
    axis.plot([r[1] for r in rows], [r[3] for r in rows], "s--", label="freshness p99")
    axis.set_xlabel("events acknowledged a second")
    axis.set_ylabel("202 to visible in get_events (ms)")
    axis.set_title(f"freshness against rate, {args.n:,} events preloaded, {args.senders} senders")
    axis.grid(True, alpha=0.3)
    axis.legend()
    args.sweep_plot.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.sweep_plot, dpi=100, bbox_inches="tight")
    print(f"plot: {args.sweep_plot}")


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
    acked = report["acked"] + sum(phase["acked"] for phase in report["sweep"])
    print(f"acknowledged {acked:,}, stored {report['stored']:,}; server CPU {report['cpu_s']:.1f} s, "
          f"peak RSS {report['peak_rss_mb']:.0f} MB")
    if report["sweep"]:
        print_sweep(report, args, pct(idle, 50))
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
