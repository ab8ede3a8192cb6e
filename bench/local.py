"""evtrack serve as Tinybird Local for Tinybird's current CLI: start time, memory, disk, and the
time of `tb build` followed by `tb test run` on this project (its datafiles, fixtures and tests).

    python3 -m venv /tmp/tb-forward && /tmp/tb-forward/bin/pip install 'tinybird>=5,<6'
    .venv/bin/python bench/local.py --tb /tmp/tb-forward/bin/tb

Each figure is the median of --rounds runs, each on a fresh store, whole processes: the server as
`evtrack serve` starts it, and the unmodified `tb` with telemetry and version checks off.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _project(folder: Path) -> Path:
    """The committed project: datasources, pipes, fixtures and tests/*.yaml."""
    archive = subprocess.run(["git", "archive", "HEAD", "datasources", "pipes", "fixtures", "tests"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    folder.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    for path in (folder / "tests").iterdir():
        if path.suffix not in (".yaml", ".yml"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return folder


def one_round(tb: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="evtrack-local-") as tmp:
        tmp = Path(tmp)
        project = _project(tmp / "project")
        port = _port()
        started = time.perf_counter()
        server = subprocess.Popen([sys.executable, "-m", "evtrack", "--data", str(tmp / "store"), "serve",
                                   "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/v0/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None:
                    raise SystemExit("evtrack serve stopped")
                time.sleep(0.02)
            start = time.perf_counter() - started
            rss_idle = _kib(server.pid, "VmRSS")
            env = {**os.environ, "TB_LOCAL_PORT": str(port), "CI": "1", "HOME": str(tmp),
                   "TB_VERSION_WARNING": "0", "TB_CLI_TELEMETRY_OPTOUT": "1"}
            began = time.perf_counter()
            for args in (["build"], ["test", "run"]):
                done = subprocess.run([str(tb), *args], cwd=project, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"tb {' '.join(args)} failed: {done.stdout}{done.stderr}")
            loop = time.perf_counter() - began
            peak = _kib(server.pid, "VmHWM")
            store = _du(tmp / "store")
        finally:
            server.terminate()
            server.wait(timeout=60)
    return {"start": start, "rss_idle": rss_idle, "loop": loop, "peak": peak, "store": store}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tb", type=Path, required=True, help="the current CLI's `tb`, in a venv of its own")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = [one_round(args.tb) for _ in range(args.rounds)]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    venv = Path(sys.prefix)
    print(f"{args.rounds} rounds, each a fresh store; medians")
    print(f"  evtrack serve, start to first answer of /v0/health: {med('start'):.2f} s")
    print(f"  server memory (RSS) idle after start: {med('rss_idle') / 1024:.0f} MB; "
          f"peak through tb build + tb test run: {med('peak') / 1024:.0f} MB")
    print(f"  tb build, then tb test run (11 cases, three test workspaces): {med('loop'):.1f} s")
    print(f"  store on disk after them: {med('store') / 2**20:.1f} MB; "
          f"this virtualenv (evtrack, chDB and their dependencies): {_du(venv) / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
