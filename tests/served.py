"""A real `evtrack serve` in a subprocess on loopback, for tests that need a socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .conftest import ROOT


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TB_", "EVTRACK_"))}
    return {**env, "TB_VERSION_WARNING": "0", "TB_CLI_TELEMETRY_OPTOUT": "1", **extra}


def _read(marker: Path) -> dict:
    """The server's marker, or {} while there is none (a starting server removes a killed one's)."""
    try:
        return json.loads(marker.read_text() or "{}")
    except FileNotFoundError:
        return {}


class Served:
    def __init__(self, data: Path, *options: str, env: dict[str, str] | None = None):
        self.data = data
        # Its log goes to a file: a pipe nobody reads until the end fills, and then blocks the server.
        handle, self.log = tempfile.mkstemp(prefix="evtrack-serve-", suffix=".log")
        with os.fdopen(handle, "w") as log:  # the server holds its own copy
            self.process = subprocess.Popen(
                [sys.executable, "-m", "evtrack", "--data", str(data), "serve", "--port", "0", *options],
                cwd=ROOT, env=clean_env(**(env or {})), stdout=subprocess.DEVNULL, stderr=log, text=True,
            )
        deadline = time.monotonic() + 60  # a stale server.json of a killed server does not count
        marker = data / "server.json"
        while _read(marker).get("pid") != self.process.pid:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                self.process.communicate()
                raise RuntimeError(f"evtrack serve did not start: {self.stderr()}")
            time.sleep(0.05)
        self.url = json.loads(marker.read_text())["url"]
        self.admin = json.loads((data / "tokens.json").read_text())["tokens"][0]["token"]

    def stderr(self) -> str:
        return Path(self.log).read_text(errors="replace")

    def token(self, name: str) -> str:
        tokens = json.loads((self.data / "tokens.json").read_text())["tokens"]
        return next(t["token"] for t in tokens if t["name"] == name)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.communicate()
        return self.process.returncode


def evtrack(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evtrack", *args], cwd=cwd, env=clean_env(**env),
                          capture_output=True, text=True, timeout=300)


def tb(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinybird.tb_cli", *args], cwd=cwd, env=clean_env(),
                          capture_output=True, text=True, timeout=300)
