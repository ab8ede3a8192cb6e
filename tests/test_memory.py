"""The embedded send's memory does not grow with the size of what it sends.

Before, the input was mapped into memory whole and rows went in 1M-row blocks: a 1M-event send
peaked at 1.37 GB and a 3M-event send at 2.2 GB. Bounded: two sends of 1M and 3M lines.
"""

from __future__ import annotations

import subprocess
import sys

from .conftest import FIXTURE, ROOT
from .served import clean_env

# VmHWM, the peak of this process since it started: not getrusage's ru_maxrss, which also counts
# the memory of the process that forked it (here pytest, holding a chDB engine of its own).
PEAK = (
    "import re, sys\n"
    "from evtrack.cli import cli\n"
    "try:\n"
    "    cli(sys.argv[1:])\n"
    "except SystemExit as exc:\n"
    "    assert not exc.code, exc.code\n"
    "print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024, file=sys.stderr)\n"
)


def peak_mb(*args: str) -> int:
    done = subprocess.run([sys.executable, "-c", PEAK, *args], cwd=ROOT, env=clean_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return int(done.stderr.strip().splitlines()[-1])


def test_embedded_send_peak_memory_stays_flat_as_the_file_grows(tmp_path):
    fixture = FIXTURE.read_bytes()  # 6,000 events
    sizes = {"1m": 167, "3m": 500}  # copies of the fixture: 1.0M and 3.0M lines (resends, as far as the store knows)
    peaks = {}
    for name, copies in sizes.items():
        events = tmp_path / f"{name}.ndjson"
        events.write_bytes(fixture * copies)
        store = tmp_path / f"store-{name}"
        assert peak_mb("--data", str(store), "deploy", "--project", str(ROOT)) > 0
        peaks[name] = peak_mb("--data", str(store), "send", str(events), "--json")
        events.unlink()
    print(peaks)
    assert peaks["3m"] <= 1.35 * peaks["1m"], peaks
    assert peaks["3m"] <= 1500, peaks
