"""`evtrack serve` under load, in one run on loopback.

    python bench/serve.py                      # 1,000,000 events in bulk, 3 rounds; 64 clients for 60 s
    python bench/serve.py -n 200000 --clients 32 --seconds 10
    python bench/serve.py --only bulk --rounds 5

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
3. The server's peak memory (VmHWM) during each.
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
    def __init__(self, data: Path):
        self.data = data
        self.process = subprocess.Popen([sys.executable, "-m", "evtrack", "--data", str(data), "serve", "--port", "0"],
                                        cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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
    parser.add_argument("--only", choices=["bulk", "many"], help="Run one of the two parts.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "bulk"):
            bulk(args.count, Path(tmp), args.rounds)
        if args.only in (None, "many"):
            many(args.clients, args.seconds, False, Path(tmp))
            many(args.clients, min(args.seconds, 20), True, Path(tmp))


if __name__ == "__main__":
    main()
