"""Endpoints at scale: ingest, storage and latency through `evtrack serve`, against hand-written SQL.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/scale.py                          # 200,000 events, both shapes: minutes
    .venv/bin/python bench/scale.py --sizes 1M,3M,10M --shape realistic
    .venv/bin/python bench/scale.py --sizes 100M --shape realistic --work /big/disk --keep   # about an hour

For each shape (realistic: sessions and power-law users; uniform: every field drawn uniformly,
the worst case for rollups; see bench/events_gen.py) and each size, in one run:
1. generate the events (about 1% exact resends) as numpy columns, and their NDJSON as files of
   10M lines at most, each written just before its send (100M events are ten 2.6 GB files, not
   one of 26 GB; kept until the plain inserts below have read them);
2. ingest: `evtrack send FILE` of each file into a fresh embedded store, a whole process each,
   the sends' times summed and their peak memory the largest (after `deploy`);
   then each endpoint case is called through a server started as soon as the send has returned,
   while it merges the parts the bulk insert left (the "right after the send" column); then
   (unless --no-settle) the store is opened until its background merges have settled, as a store
   that has been running a while has (those the datasources' ENGINE_SETTINGS set off too: a
   partition is merged into one part once it has had no new part for 5 minutes), and the calls of
   step 4 run on the settled store;
   and a plain chDB insert (column types named) of the same events into two tables with the engine
   and keys of `events` and `events_by_user` (ReplacingMergeTrees sorted by time and by user: the
   same access paths, without evtrack), merged as the settled store is (one part per partition)
   when the store was settled;
3. stored bytes per event of every datasource (the raw events and each access path or rollup),
   as `GET /v0/datasources` reports them;
4. for each case of a parameter matrix (one heavy user, a typical user, the first page, filters,
   offset=100000, a day, a month, all time): p50 and p99 of --calls calls through `evtrack serve`
   (HTTP on loopback, the client's wall time), and of the fastest SQL written by hand for this
   data over those two tables (deduplicating with FINAL, as the endpoints do; pages bounded by the newest
   2 x (limit + offset) rows, exact while resends are rare, as here; in chDB in this process),
   with their ratio;
5. every answer, the endpoint's and the hand-written SQL's, compared with an independent
   computation in numpy over the generated events (each original event once, by construction),
   so resends counted twice anywhere would show.
Then a table, and a plot of p50 against size (--plot, PNG). --results FILE keeps each run's
figures in FILE (a run replaces those of its shape and size) and plots them all: sizes measured in
different runs share one plot. --work DIR --keep keeps the stores; --reuse then measures the
settled calls again on them (after a change to the pipes, say) without generating or sending.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import httpx  # noqa: E402
from events_gen import EVENT_TYPES, PLATFORMS, Events, generate, write_ndjson  # noqa: E402
from ingest import deploy, plain_table, send, settle  # noqa: E402
from serve import Server  # noqa: E402

COLUMNS = "event_id, event_type, user_id, session_id, timestamp, platform, app_version, device_type, os, country, properties"
CHECKED = ("event_id", "event_type", "user_id", "session_id", "timestamp", "platform")
DAY = ("2024-03-05 00:00:00", "2024-03-05 23:59:59")
MONTH = ("2024-06-01 00:00:00", "2024-06-30 23:59:59")
PARTIAL = ("2024-06-01 10:20:00", "2024-07-01 05:59:59")  # a month with edges inside hours and days


def _size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("KM")) * scale)


# -- the independent answers -----------------------------------------------------------------
def _ts(seconds) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(seconds)))


def _epoch(text: str) -> int:
    import calendar

    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


class Truth:
    """Each endpoint computed in numpy over the original events."""

    def __init__(self, events: Events):
        self.e = events

    def _mask(self, p: dict) -> np.ndarray:
        e, mask = self.e, np.ones(len(self.e), dtype=bool)
        if "start_date" in p:
            mask &= e.timestamp >= _epoch(p["start_date"])
        if "end_date" in p:
            mask &= e.timestamp <= _epoch(p["end_date"])
        if "platform" in p:
            mask &= e.platform == int(np.nonzero(PLATFORMS == p["platform"])[0][0])
        if "event_type" in p:
            mask &= e.event_type == int(np.nonzero(EVENT_TYPES == p["event_type"])[0][0])
        if "user_id" in p:
            mask &= e.user == int(p["user_id"][1:])
        return mask

    def get_events(self, p: dict) -> list:
        e = self.e
        idx = np.nonzero(self._mask(p))[0]
        idx = idx[np.lexsort((e.event_id[idx], -e.timestamp[idx]))]
        offset, limit = int(p.get("offset", 0)), int(p.get("limit", 100))
        return [[f"e{e.event_id[i]:010d}", str(EVENT_TYPES[e.event_type[i]]), f"u{e.user[i]:07d}",
                 f"s{e.session[i]:09d}", _ts(e.timestamp[i]), str(PLATFORMS[e.platform[i]])]
                for i in idx[offset:offset + limit]]

    def user_activity(self, p: dict) -> list:
        e = self.e
        idx = np.nonzero(self._mask(p))[0]
        if not len(idx):
            return []
        types, ts = e.event_type[idx], e.timestamp[idx]
        latest = {}
        for t in np.unique(types):
            latest[str(EVENT_TYPES[t])] = int(ts[types == t].max())
        recent = [name for name, _ in sorted(latest.items(), key=lambda kv: (-kv[1], kv[0]))][:10]
        return [{"user_id": p["user_id"], "event_count": len(idx), "session_count": len(np.unique(e.session[idx])),
                 "first_seen": _ts(ts.min()), "last_seen": _ts(ts.max()), "recent_event_types": recent}]

    def event_stats(self, p: dict) -> list:
        e = self.e
        idx = np.nonzero(self._mask(p))[0]
        rows = []
        for t in np.unique(e.event_type[idx]):
            sel = idx[e.event_type[idx] == t]
            rows.append({"event_type": str(EVENT_TYPES[t]), "event_count": len(sel),
                         "unique_users": len(np.unique(e.user[sel])), "session_count": len(np.unique(e.session[sel])),
                         "first_seen": _ts(e.timestamp[sel].min()), "last_seen": _ts(e.timestamp[sel].max())})
        return sorted(rows, key=lambda r: (-r["event_count"], r["event_type"]))


def comparable(pipe: str, data: list) -> list:
    """Rows in the shape the truth gives them."""
    if pipe == "get_events":
        return [[row[c] for c in CHECKED] for row in data]
    return data


# -- hand-written SQL over a plain MergeTree --------------------------------------------------
def _where(p: dict) -> str:
    parts = []
    for name, column, op in (("start_date", "timestamp", ">="), ("end_date", "timestamp", "<="),
                             ("platform", "platform", "="), ("event_type", "event_type", "="), ("user_id", "user_id", "=")):
        if name in p:
            parts.append(f"{column} {op} '{p[name]}'")
    return ("WHERE " + " AND ".join(parts)) if parts else ""


def hand_sql(pipe: str, p: dict) -> str:
    """Exact on this data over the two tables with their resends: every event counted once (FINAL)."""
    w = _where(p)
    if pipe == "get_events":
        page = f"LIMIT {int(p.get('limit', 100))} OFFSET {int(p.get('offset', 0))}"
        if "user_id" in p:
            return f"SELECT {COLUMNS} FROM hand_user FINAL {w} ORDER BY timestamp DESC, event_id {page}"
        bound = 2 * (int(p.get("limit", 100)) + int(p.get("offset", 0)))
        newest = f"SELECT min(timestamp) FROM (SELECT timestamp FROM hand_time {w} ORDER BY timestamp DESC LIMIT {bound})"
        w = (w + " AND " if w else "WHERE ") + f"timestamp >= ({newest})"
        return f"SELECT {COLUMNS} FROM hand_time FINAL {w} ORDER BY timestamp DESC, event_id {page}"
    if pipe == "user_activity":
        return (f"SELECT user_id, count() AS event_count, uniqExactIf(session_id, session_id != '') AS session_count, "
                f"min(timestamp) AS first_seen, max(timestamp) AS last_seen, arraySlice(arrayMap(x -> x.2, arraySort("
                f"x -> (-toUnixTimestamp(x.1), x.2), arrayZip(maxMap([event_type], [timestamp]).2, "
                f"maxMap([event_type], [timestamp]).1))), 1, 10) AS recent_event_types FROM hand_user FINAL {w} GROUP BY user_id")
    return (f"SELECT event_type, count() AS event_count, uniqExactIf(user_id, user_id != '') AS unique_users, "
            f"uniqExactIf(session_id, session_id != '') AS session_count, min(timestamp) AS first_seen, "
            f"max(timestamp) AS last_seen FROM hand_time FINAL {w} GROUP BY event_type ORDER BY event_count DESC, event_type")


# -- the run ----------------------------------------------------------------------------------
@dataclass
class Case:
    label: str
    pipe: str
    params: dict


def matrix(events: Events) -> list[Case]:
    counts = np.bincount(events.user)
    heavy = f"u{int(counts.argmax()):07d}"
    active = np.nonzero(counts)[0]
    typical = f"u{int(active[np.argsort(counts[active], kind='stable')[len(active) // 2]]):07d}"
    return [
        Case("user_activity, heaviest user", "user_activity", {"user_id": heavy}),
        Case("user_activity, typical user", "user_activity", {"user_id": typical}),
        Case("user_activity, heaviest user, a month", "user_activity", {"user_id": heavy, "start_date": MONTH[0], "end_date": MONTH[1]}),
        Case("get_events, first page", "get_events", {}),
        Case("get_events, event_type", "get_events", {"event_type": "purchase"}),
        Case("get_events, typical user", "get_events", {"user_id": typical}),
        Case("get_events, platform + a day", "get_events", {"platform": "web", "start_date": DAY[0], "end_date": DAY[1]}),
        Case("get_events, offset=100000", "get_events", {"offset": "100000"}),
        Case("event_stats, a day", "event_stats", {"start_date": DAY[0], "end_date": DAY[1]}),
        Case("event_stats, a month + platform", "event_stats", {"start_date": MONTH[0], "end_date": MONTH[1], "platform": "web"}),
        Case("event_stats, a month, partial edges", "event_stats", {"start_date": PARTIAL[0], "end_date": PARTIAL[1]}),
        Case("event_stats, all time", "event_stats", {}),
    ]


@dataclass
class Result:
    shape: str
    size: int
    ingest_s: float = 0.0
    plain_ingest_s: float = 0.0
    ingest_peak_mb: float = 0.0
    bytes_per_event: dict = field(default_factory=dict)
    latency: dict = field(default_factory=dict)  # label -> (p50, p99, hand p50, hand p99) in ms
    fresh: dict = field(default_factory=dict)  # label -> (p50, p99) right after the send, when settled after
    settled: str = ""
    sent_at: float = 0.0  # monotonic time the last send returned
    first_call_s: float = 0.0  # seconds from then to the first answer right after the send
    checked: int = 0
    mismatches: list = field(default_factory=list)
    errors: list = field(default_factory=list)  # answers other than 200, e.g. 408 past the 10 s limit


def percentiles(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))] * 1000


CHUNK = 10_000_000  # lines per generated file: 100M events are ten 2.6 GB files, not one 26 GB file
TABLES = (("hand_time", "PARTITION BY toYYYYMM(timestamp) ORDER BY (timestamp, event_id, event_type, user_id)"),
          ("hand_user", "ORDER BY (user_id, timestamp, event_id, event_type)"))


def run_size(shape: str, size: int, work: Path, calls: int, db, settled: bool = True, reuse: bool = False,
             keep: bool = False) -> Result:
    """One size: generate, send in chunks, call right after the send, settle, insert the same
    chunks plainly, call settled. With ``reuse`` and a finished run of this shape and size in
    ``work`` (--work DIR --keep), only the settled calls run again, on the stores kept."""
    result = Result(shape, size)
    folder = work / f"{shape}-{size}"
    store, done = folder / "store", folder / "ingested.json"
    events = generate(size, shape)
    truth = Truth(events)
    # Every answer computed first, so the calls right after the send follow each other without a pause.
    truth.answers = {case.label: getattr(truth, case.pipe)(case.params) for case in matrix(events)}
    if reuse and done.exists():
        kept = json.loads(done.read_text())
        result.ingest_s, result.ingest_peak_mb, result.plain_ingest_s = kept["ingest_s"], kept["peak_mb"], kept["plain_s"]
        result.settled = f"{kept['settled']} (kept from the run that ingested)"
        _call_cases(result, store, events, truth, calls, db, result.latency)
        return result
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    deploy(store)
    chunks = []
    for first in range(0, len(events.order), CHUNK):
        chunks.append(folder / f"events-{first // CHUNK:03d}.ndjson")
        write_ndjson(events, chunks[-1], db, slice(first, first + CHUNK))
        sent = send(chunks[-1], store)  # a whole process each, timed; generating the next one is not
        receipt = json.loads(sent.output)
        assert receipt["stored"] == receipt["lines"], receipt
        result.ingest_s += sent.seconds
        result.ingest_peak_mb = max(result.ingest_peak_mb, sent.peak_mb)
    result.sent_at = time.monotonic()
    if settled:  # first the calls right after the send, alone (no hand-written SQL between them)
        _call_cases(result, store, events, truth, calls, None, result.fresh)
        result.settled = settle(store)
    else:
        result.settled = "no (measured right after the insert)"

    columns, _, structure = plain_table()
    started = time.perf_counter()
    for table, key in TABLES:
        db.query(f"DROP TABLE IF EXISTS default.{table}")
        db.query(f"CREATE TABLE default.{table} ({columns}) ENGINE = ReplacingMergeTree {key}")
        db.query(f"INSERT INTO default.{table} SELECT * FROM file('{folder}/events-*.ndjson', 'JSONEachRow', '{structure}') "
                 "SETTINGS date_time_input_format = 'best_effort'")
    result.plain_ingest_s = time.perf_counter() - started
    if settled:  # the state the settled store is in: one part per partition, which FINAL reads as is
        for table, _ in TABLES:
            db.query(f"OPTIMIZE TABLE default.{table} FINAL")
    for chunk in chunks:
        chunk.unlink()
    done.write_text(json.dumps({"ingest_s": result.ingest_s, "peak_mb": result.ingest_peak_mb,
                                "plain_s": result.plain_ingest_s, "settled": result.settled}))

    _call_cases(result, store, events, truth, calls, db, result.latency)
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def _call_cases(result: Result, store: Path, events: Events, truth: Truth, calls: int, db, into: dict) -> None:
    """Each case ``calls`` times through a server on ``store`` (and, with ``db``, the hand-written SQL
    after each call), every answer checked; p50 and p99 into ``into``."""
    server = Server(store)
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin}"}, timeout=120) as client:
            for ds in client.get("/v0/datasources").json()["datasources"]:
                if not ds["name"].endswith("_quarantine"):
                    result.bytes_per_event[ds["name"]] = ds["statistics"]["bytes"] / len(events)
            for case in matrix(events):
                expected = truth.answers[case.label]
                ours, hand, by_hand = [], [], None
                for _ in range(calls):
                    started = time.perf_counter()
                    answer = client.get(f"/v0/pipes/{case.pipe}.json", params=case.params)
                    ours.append(time.perf_counter() - started)
                    if into is result.fresh and not result.first_call_s:
                        result.first_call_s = time.monotonic() - result.sent_at
                    if answer.status_code != 200:  # e.g. a 408 past the 10 s limit: kept, and the call made again
                        result.errors.append(f"{case.label}: {answer.status_code} after {ours[-1]:.1f} s "
                                             f"({'right after the send' if into is result.fresh else 'settled'})")
                        continue
                    if db is not None:
                        started = time.perf_counter()
                        by_hand = db.query(hand_sql(case.pipe, case.params), "JSON").bytes()
                        hand.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    into[case.label] = (*percentiles(ours), *((float("nan"),) * 2 if db is not None else ()))
                    continue
                answers = [("evtrack", answer.json())] + ([("hand-written SQL", json.loads(by_hand))] if db is not None else [])
                for who, body in answers:
                    result.checked += 1
                    if comparable(case.pipe, body["data"]) != expected:
                        result.mismatches.append(f"{who}: {case.label}")
                into[case.label] = (*percentiles(ours), *(percentiles(hand) if hand else ()))
    finally:
        server.stop()


def report(results: list[Result]) -> None:
    for r in results:
        print(f"\n{r.shape}, {r.size:,} events")
        print(f"  ingest: evtrack send {r.ingest_s:.1f} s ({r.size / r.ingest_s:,.0f} events/s, {r.ingest_peak_mb:,.0f} MB peak); "
              f"plain inserts into the two hand-written SQL's tables {r.plain_ingest_s:.1f} s")
        print(f"  merges settled before the calls: {r.settled}")
        if r.first_call_s:
            print(f"  first answer right after the send: {r.first_call_s:.1f} s after it returned (server start included)")
        for error in r.errors:
            print(f"  NOT 200: {error}")
        stored = ", ".join(f"{name} {b:.1f}" for name, b in sorted(r.bytes_per_event.items()))
        print(f"  stored bytes per event: {stored}; total {sum(r.bytes_per_event.values()):.1f}")
        fresh = "  right after the send: p50     p99" if r.fresh else ""
        print(f"  {'case':<42} {'serve p50':>10} {'p99':>8} {'hand p50':>9} {'p99':>8} {'ratio':>6}{fresh}")
        for label, (p50, p99, h50, h99) in r.latency.items():
            after = ""
            if label in r.fresh:
                f50, f99 = r.fresh[label]
                after = f"  {f50:26.1f}ms {f99:6.1f}ms ({f50 / p50:.1f}x settled)"
            print(f"  {label:<42} {p50:8.1f}ms {p99:6.1f}ms {h50:7.1f}ms {h99:6.1f}ms {p50 / h50:6.2f}{after}")
        verdict = "all match" if not r.mismatches else "MISMATCH: " + "; ".join(r.mismatches)
        print(f"  answers checked against numpy over the generated events: {r.checked}, {verdict}")


def merge_results(path: Path, results: list[Result]) -> list[Result]:
    """``results`` and those kept in ``path`` of other shapes or sizes, all written back to it."""
    from dataclasses import asdict

    kept = [Result(**r) for r in json.loads(path.read_text())] if path.exists() else []
    new = {(r.shape, r.size) for r in results}
    merged = sorted([r for r in kept if (r.shape, r.size) not in new] + results, key=lambda r: (r.shape, r.size))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(r) for r in merged], indent=1))
    return merged


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = sorted({r.shape for r in results}, reverse=True)
    fig, axes = plt.subplots(1, len(shapes), figsize=(7 * len(shapes), 5.5), squeeze=False)
    for ax, shape in zip(axes[0], shapes):
        runs = sorted((r for r in results if r.shape == shape), key=lambda r: r.size)
        styles = {"user_activity": "-", "get_events": "--", "event_stats": ":"}
        for i, label in enumerate(runs[0].latency):
            ax.plot([r.size for r in runs], [r.latency[label][0] for r in runs], marker="o", label=label,
                    color=plt.cm.tab20(i / 12), linestyle=styles[label.split(",")[0]])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("events")
        ax.set_ylabel("p50 through evtrack serve (ms)")
        ax.set_title(f"{shape} events")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nplot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200K", help="comma-separated event counts, e.g. 1M,3M,10M (default 200K)")
    parser.add_argument("--shape", choices=("realistic", "uniform", "both"), default="both")
    parser.add_argument("--calls", type=int, default=10, help="calls per case (p99 of few calls is their maximum)")
    parser.add_argument("--plot", type=Path, default=ROOT / "bench" / "scale.png")
    parser.add_argument("--results", type=Path,
                        help="a JSON file of results: each run's replace those of its shape and size, and the plot "
                             "shows them all (so 1M and 10M in one run, 100M in another, make one plot)")
    parser.add_argument("--no-settle", action="store_true",
                        help="call the endpoints right after the insert, while its merges run")
    parser.add_argument("--work", type=Path, help="folder for the generated files and stores (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the stores in --work, for --reuse")
    parser.add_argument("--reuse", action="store_true",
                        help="with --keep, measure the settled calls again on a kept run's stores (after a pipe change)")
    args = parser.parse_args()
    if args.keep and not args.work:
        parser.error("--keep needs --work")
    from chdb import session

    sizes = [_size(s) for s in args.sizes.split(",")]
    shapes = ["realistic", "uniform"] if args.shape == "both" else [args.shape]
    with contextlib.ExitStack() as stack:
        if args.keep:
            work = args.work
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = stack.enter_context(tempfile.TemporaryDirectory(prefix="evtrack-scale-", dir=args.work))
        db = session.Session(str(Path(work) / "plain"))
        db.query("SET session_timezone = 'UTC'")
        db.query("SET output_format_json_quote_64bit_integers = 0")
        results = []
        for shape in shapes:
            for size in sizes:
                results.append(run_size(shape, size, Path(work), args.calls, db, not args.no_settle, args.reuse, args.keep))
                report(results[-1:])
        db.close()
    if args.results:
        results = merge_results(args.results, results)
    plot(results, args.plot)


if __name__ == "__main__":
    main()
