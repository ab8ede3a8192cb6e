"""A full disk, as a test: `evtrack serve` on a small filesystem (tmpfs) takes Events API requests
until the disk fills, to the floor inserts keep for merges (``EVTRACK_MIN_FREE_DISK``, here 16 MB).

- A refused request says why, and leaves no row in any table: the raw count of `events` (no FINAL)
  is exactly the events of the acknowledged requests, and every rollup equals its source.
- Nothing acknowledged is lost.
- The server stays up, and once space comes back, the refused requests sent again are stored:
  every event once.

It needs a tmpfs mount (root): skipped, saying so, where the test cannot mount one.
"""

from __future__ import annotations

import json
import subprocess
import time

import httpx
import pytest

from .served import Served, evtrack
from .test_change_kills import ROLLUPS

BATCH = 5_000
BATCHES = 80  # far more than the space left takes


def _batch(number: int) -> bytes:
    lines = (json.dumps({"event_id": f"b{number}-{i}", "event_type": ["click", "view", "buy"][i % 3],
                         "user_id": f"u{i % 997}", "session_id": f"s{number}-{i // 50}",
                         "timestamp": f"2024-02-{1 + i % 28:02d} 10:00:00", "platform": ["web", "ios"][i % 2],
                         "properties": "x" * 200})
             for i in range(BATCH))
    return "\n".join(lines).encode()


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"a tmpfs cannot be mounted here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _sql(server: Served, query: str) -> int:
    answer = httpx.get(f"{server.url}/v0/sql", params={"q": query + " FORMAT JSON"},
                       headers={"Authorization": f"Bearer {server.admin}"}, timeout=60)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["data"][0]["n"])


def _inconsistent(server: Served) -> dict[str, tuple[int, int]]:
    out = {}
    for rollup, (columns, source) in ROLLUPS.items():
        held, defined = f"SELECT DISTINCT {columns} FROM {rollup}", f"SELECT DISTINCT {source} FROM events"
        out[rollup] = (_sql(server, f"SELECT count() AS n FROM ({held} EXCEPT {defined})"),
                       _sql(server, f"SELECT count() AS n FROM ({defined} EXCEPT {held})"))
    return {rollup: pair for rollup, pair in out.items() if pair != (0, 0)}


def test_a_full_disk_refuses_appends_whole_loses_nothing_acknowledged_and_recovers(small_disk):
    store = small_disk / "store"
    deployed = evtrack("--data", str(store), "deploy")
    assert deployed.returncode == 0, deployed.stderr
    filler = small_disk / "filler"
    free = subprocess.run(["df", "--output=avail", "-B1", str(small_disk)], capture_output=True, text=True)
    room = int(free.stdout.split()[-1])
    filler.write_bytes(b"\0" * (room - 22 * 1024 * 1024))  # about 22 MB left for the store to grow
    # Inserts stop with 16 MB left (256 MB by default), the room merges under way may need.
    server = Served(store, env={"EVTRACK_MIN_FREE_DISK": str(16 * 1024 * 1024)})
    try:
        acknowledged, logged, refused, reasons = [], [], [], set()
        with httpx.Client(headers={"Authorization": f"Bearer {server.admin}"}, timeout=120) as client:
            for number in range(BATCHES):
                answer = client.post(f"{server.url}/v0/events", params={"name": "events", "wait": "true"},
                                     content=_batch(number))
                if answer.status_code == 200:
                    acknowledged.append(number)
                else:
                    refused.append(number)
                    reasons.add((answer.status_code, answer.text))
                if len(refused) >= 5:
                    break
            print(f"acknowledged {len(acknowledged)}, refused {len(refused)}: {refused}")
            assert acknowledged and refused, (acknowledged, refused, reasons)
            # Sent without waiting, once the disk is full: acknowledged (in the write-ahead log) or refused.
            for number in range(BATCHES, BATCHES + 3):
                answer = client.post(f"{server.url}/v0/events", params={"name": "events"}, content=_batch(number))
                if answer.status_code == 202:
                    logged.append(number)
                else:
                    refused.append(number)
                    reasons.add((answer.status_code, answer.text))
            # Tinybird's 503, with the reason
            assert all(status == 503 and "retry" in text and "Free space" in text for status, text in reasons), reasons
            print(f"then {len(logged)} logged: {reasons}")
            # Nothing refused is stored, nothing acknowledged is lost: raw rows, no FINAL.
            assert _sql(server, "SELECT count() AS n FROM events") - BATCH * len(acknowledged) in range(
                0, BATCH * len(logged) + 1, BATCH)
            assert _sql(server, "SELECT count() AS n FROM events_quarantine") == 0
            assert _inconsistent(server) == {}
            filler.unlink()  # the space comes back; the server is still up
            for number in refused:
                answer = client.post(f"{server.url}/v0/events", params={"name": "events", "wait": "true"},
                                     content=_batch(number))
                assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 30  # what was logged goes in at the next flushes
        total = BATCH * (len(acknowledged) + len(logged) + len(refused))
        while _sql(server, "SELECT count() AS n FROM events") < total and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _sql(server, "SELECT count() AS n FROM events") == total
        assert _sql(server, "SELECT uniqExact(event_id) AS n FROM events") == total
        assert _inconsistent(server) == {}
    finally:
        assert server.stop() == 0
