"""`evtrack serve` under load, in one run on loopback.

    python bench/serve.py                      # 1,000,000 events in bulk, 3 rounds; 64 clients for 60 s
    python bench/serve.py -n 200000 --clients 32 --seconds 10
    python bench/serve.py --only bulk --rounds 5
    python bench/serve.py --only mixed --seconds 20

1. Bulk: `evtrack send --host` of N generated events through `evtrack serve` (9.5 MB requests,
   wait=true; no gzip on loopback), timed against the plain insert of bench/ingest.py (a whole process, column types named)
   of the same file just before it: the ratio of throughputs is the figure to read. The
   machine's speed drifts by tens of percent from minute to minute, so each round pairs the
   two, and the median ratio of the rounds is reported.
2. Many clients: C concurrent connections send single events for S seconds, with wait=false (as
   browser and mobile SDKs do) and then wait=true; acknowledged requests/s, p50/p99 latency,
   inserts the server made for them, active parts left, and stored == acknowledged. The load
   comes from wrk (Debian package `wrk`) when installed, else from asyncio clients, which on
   2 cores limit the rate well below what the server takes.
3. Mixed: clients reading small endpoint pages and clients sending one event at a time (200 with
   wait=true, 202 with wait=false), first alone, then while a heavy query runs every few seconds
   (a CPU-bound /v0/sql query cut at the server's time limit, 5 s here, so each runs 5 s);
   p50/p99 of small reads and of acknowledgements, in both phases. Also the cost of the
   write-ahead log: single-event wait=false requests/s with the log and with it turned off.
4. The server's peak memory (VmHWM) during each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import httpx  # noqa: E402

from ingest import plain_insert, write_events  # noqa: E402

ENV = {**os.environ, "TB_VERSION_WARNING": "0", "TB_CLI_TELEMETRY_OPTOUT": "1"}
EVENT = '{"event_id":"load-%d-%d","event_type":"tap","user_id":"u%d","timestamp":"2023-03-01 12:00:00"}'


def evtrack(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evtrack", *args], cwd=ROOT, env=ENV, capture_output=True, text=True)


class Server:
    def __init__(self, data: Path, *options: str, env: dict | None = None):
        self.data = data
        self.process = subprocess.Popen([sys.executable, "-m", "evtrack", "--data", str(data), "serve", "--port", "0",
                                         *options], cwd=ROOT, env={**ENV, **(env or {})}, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        marker = data / "server.json"
        while not (marker.exists() and json.loads(marker.read_text() or "{}").get("pid") == self.process.pid):
            if self.process.poll() is not None:
                raise SystemExit(self.process.stderr.read())
            time.sleep(0.05)
        self.url = json.loads(marker.read_text())["url"]
        self.admin = json.loads((data / "tokens.json").read_text())["tokens"][0]["token"]

    def peak_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=120)
        return err


def bulk(count: int, tmp: Path, rounds: int) -> None:
    """The ratio in each of ``rounds`` rounds (plain insert, then the send through a fresh server), and their median."""
    events = tmp / "events.ndjson"
    write_events(events, count)
    print(f"bulk: {count:,} events ({events.stat().st_size / 1e6:,.0f} MB NDJSON), {rounds} rounds")
    ratios = []
    for round_ in range(1, rounds + 1):
        plain = plain_insert(events, tmp / f"plain-{round_}").seconds
        server = Server(tmp / f"bulk-{round_}")
        try:
            assert evtrack("--host", server.url, "--token", server.admin, "deploy").returncode == 0
            started = time.perf_counter()
            sent = evtrack("--host", server.url, "--token", server.admin, "send", str(events), "--json")
            ours = time.perf_counter() - started
            receipt = json.loads(sent.stdout)
            peak = server.peak_mb()
        finally:
            server.stop()
        ratios.append(plain / ours)
        print(f"  round {round_}: plain insert (typed file(), whole process) {plain:6.2f} s ({count / plain:,.0f} events/s); "
              f"evtrack send --host (through serve) {ours:6.2f} s ({count / ours:,.0f} events/s, "
              f"stored {receipt['stored']:,}, retries {receipt['retries']}); ratio {plain / ours:.2f}; "
              f"server peak memory {peak:,.0f} MB")
    print(f"  ratio serve / plain, median of {rounds}: {statistics.median(ratios):.2f} "
          f"(lowest {min(ratios):.2f}, highest {max(ratios):.2f})")


WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  local body = '{"event_id":"wrk-' .. counter .. '-' .. math.random(1000000000) .. '","event_type":"tap","user_id":"u' .. counter .. '","timestamp":"2023-03-01 12:00:00"}'
  return wrk.format("POST", "/v0/events?name=events&wait=%s", {["Authorization"]="Bearer %s"}, body)
end
"""


async def python_clients(url: str, token: str, count: int, seconds: float, wait: bool) -> dict:
    """Without wrk: asyncio clients (the client side then limits the rate more than the server)."""
    latencies: list[float] = []
    acked = refused = 0
    deadline = time.perf_counter() + seconds

    async def one(n: int) -> None:
        nonlocal acked, refused
        async with httpx.AsyncClient(base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"}) as http:
            i = 0
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                answer = await http.post(f"/v0/events?name=events&wait={str(wait).lower()}", content=EVENT % (n, i, n))
                latencies.append(time.perf_counter() - started)
                if answer.status_code in (200, 202):
                    acked += answer.json()["successful_rows"]
                else:
                    refused += 1
                i += 1

    await asyncio.gather(*(one(n) for n in range(count)))
    latencies.sort()
    return {"tool": "python asyncio clients", "completed": acked, "refused": refused,
            "p50_ms": latencies[len(latencies) // 2] * 1000, "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000}


def wrk_clients(url: str, token: str, count: int, seconds: float, wait: bool, tmp: Path) -> dict:
    script = tmp / "post.lua"
    script.write_text(WRK_SCRIPT % (str(wait).lower(), token))
    out = subprocess.run(["wrk", "-t1", f"-c{count}", f"-d{seconds:.0f}s", "-s", str(script), "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0

    def ms(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    return {"tool": "wrk", "completed": total - bad, "refused": bad, "p50_ms": ms("50"), "p99_ms": ms("99")}


def many(count: int, seconds: float, wait: bool, tmp: Path) -> None:
    folder = tmp / f"many-{wait}"
    server = Server(folder)
    try:
        assert evtrack("--host", server.url, "--token", server.admin, "deploy").returncode == 0
        tracker = json.loads((folder / "tokens.json").read_text())["tokens"]
        token = next(t["token"] for t in tracker if t["name"] == "tracker")
        if shutil.which("wrk"):
            result = wrk_clients(server.url, token, count, seconds, wait, tmp)
        else:
            result = asyncio.run(python_clients(server.url, token, count, seconds, wait))
        peak = server.peak_mb()
    finally:
        log = server.stop()
    written = re.search(r"stopped: (\d+) Events API requests written in (\d+) inserts", log)
    requests_seen, inserts = (int(written.group(1)), int(written.group(2))) if written else (None, None)
    stored = _sql(folder, "SELECT count() AS n FROM events FINAL")
    parts = _sql(folder, "SELECT count() AS n FROM system.parts WHERE database = 'evtrack' AND table = 'events' AND active",
                 raw=True)
    print(f"many clients ({result['tool']}): {count} connections, one event per request, {seconds:.0f} s, wait={str(wait).lower()}")
    print(f"  acknowledged: {result['completed']:,} requests, {result['completed'] / seconds:,.0f}/s; refused: {result['refused']}")
    print(f"  latency p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms")
    print(f"  requests the server took: {requests_seen:,}, written in {inserts} inserts; active parts after: {parts}")
    print(f"  stored {stored:,}; stored == requests taken: {stored == requests_seen}; "
          f"every acknowledged request stored: {stored >= result['completed']}")
    print(f"  server peak memory: {peak:,.0f} MB")


HEAVY = "SELECT count() FROM numbers(1000000000000)"  # runs until the server's time limit cuts it
PAUSE = 0.1  # between one client's calls: the clients measure the server, and do not load the two cores themselves


async def mixed_phase(url: str, tokens: dict, seconds: float, heavy: bool) -> dict:
    """Readers and senders for ``seconds``; with ``heavy``, a heavy query every few seconds."""
    lat: dict[str, list[float]] = {"read": [], "ack 200 (wait=true)": [], "ack 202 (wait=false)": []}
    heavy_runs: list[tuple[int, float]] = []
    deadline = time.perf_counter() + seconds

    async def timed(kind: str, call) -> None:
        started = time.perf_counter()
        answer = await call
        assert answer.status_code in (200, 202), answer.text
        lat[kind].append(time.perf_counter() - started)

    async def reader(n: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            while time.perf_counter() < deadline:
                pipe, params = (("get_events", {"limit": 10}) if n % 2 else ("user_activity", {"user_id": f"u{n}"}))
                await timed("read", http.get(f"/v0/pipes/{pipe}.json", params={"token": tokens["dashboard"], **params}))
                await asyncio.sleep(PAUSE)

    async def sender(n: int, wait: bool) -> None:
        kind = "ack 200 (wait=true)" if wait else "ack 202 (wait=false)"
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            i = 0
            while time.perf_counter() < deadline:
                await timed(kind, http.post(f"/v0/events?name=events&wait={str(wait).lower()}&token={tokens['tracker']}",
                                            content=EVENT % (n, i, n)))
                i += 1
                await asyncio.sleep(PAUSE)

    async def heavy_loop() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            while time.perf_counter() < deadline - 5:
                started = time.perf_counter()
                answer = await http.get("/v0/sql", params={"q": HEAVY, "token": tokens["admin"]})
                heavy_runs.append((answer.status_code, time.perf_counter() - started))
                await asyncio.sleep(1)

    tasks = [reader(n) for n in range(2)] + [sender(0, True), sender(1, False)]
    await asyncio.gather(*tasks, *([heavy_loop()] if heavy else []))
    out = {}
    for kind, values in lat.items():
        values.sort()
        out[kind] = (len(values), values[len(values) // 2] * 1000, values[min(len(values) - 1, int(len(values) * 0.99))] * 1000)
    out["heavy"] = heavy_runs
    return out


def mixed(seconds: float, tmp: Path) -> None:
    folder = tmp / "mixed"
    server = Server(folder, "--max-execution-time", "5")
    try:
        assert evtrack("--host", server.url, "--token", server.admin, "deploy").returncode == 0
        assert evtrack("--host", server.url, "--token", server.admin, "send", str(ROOT / "fixtures" / "events.ndjson")).returncode == 0
        names = {t["name"]: t["token"] for t in json.loads((folder / "tokens.json").read_text())["tokens"]}
        tokens = {"admin": server.admin, "dashboard": names["dashboard"], "tracker": names["tracker"]}
        print(f"mixed: 2 readers (get_events, user_activity), a sender with wait=true, a sender with wait=false, "
              f"each pausing {PAUSE * 1000:.0f} ms between calls; {seconds:.0f} s a phase")
        for heavy in (False, True):
            result = asyncio.run(mixed_phase(server.url, tokens, seconds, heavy))
            runs = result.pop("heavy")
            label = "with a heavy query running" if heavy else "alone"
            if heavy:
                busy = sum(t for _, t in runs)
                print(f"  {label}: {len(runs)} heavy queries ({', '.join(f'{s} in {t:.1f} s' for s, t in runs)}), "
                      f"running {busy / seconds:.0%} of the phase")
            else:
                print(f"  {label}:")
            for kind, (n, p50, p99) in result.items():
                print(f"    {kind:<22} {n:>6,} calls  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms")
        print(f"  server peak memory: {server.peak_mb():,.0f} MB")
    finally:
        server.stop()


def _sql(folder: Path, query: str, raw: bool = False) -> int:
    if raw:  # system tables: straight from the engine, which the CLI's read-only SQL does not expose
        code = ("import sys,json; from pathlib import Path; from evtrack.engine import Engine\n"
                "e = Engine.open(Path(sys.argv[1])); print(json.loads(e.store.run(sys.argv[2], 'JSONCompactEachRow'))[0])")
        return int(subprocess.run([sys.executable, "-c", code, str(folder), query], cwd=ROOT, env=ENV,
                                  capture_output=True, text=True, check=True).stdout)
    return json.loads(evtrack("--data", str(folder), "sql", query, "--format", "json").stdout)["data"][0]["n"]


def main() -> None:
    parser = argparse.ArgumentParser(description="evtrack serve under load")
    parser.add_argument("-n", "--count", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rounds", type=int, default=3, help="Bulk rounds (the machine is noisy: read the median).")
    parser.add_argument("--only", choices=["bulk", "many", "mixed"], help="Run one of the parts.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "bulk"):
            bulk(args.count, Path(tmp), args.rounds)
        if args.only in (None, "many"):
            many(args.clients, args.seconds, False, Path(tmp))
            many(args.clients, min(args.seconds, 20), True, Path(tmp))
        if args.only in (None, "mixed"):
            mixed(min(args.seconds, 30), Path(tmp))


if __name__ == "__main__":
    main()
