"""``evtrack serve``: the Tinybird-compatible HTTP API over the embedded store, run by uvicorn.

While it runs, ``server.json`` in the store folder says where it listens, so other evtrack
commands on the same folder go through it (chDB allows one process per folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

__all__ = ["serve", "running_server", "SERVER_FILE"]

SERVER_FILE = "server.json"


def serve(engine, host: str, port: int, on_ready=None) -> None:
    """Serve ``engine`` (an ``evtrack.engine.Engine``) until Ctrl-C or SIGTERM."""
    import uvicorn

    from ..engine.copies import CopyScheduler
    from .app import create_app  # the web stack is loaded only by the command that serves

    app = create_app(engine, scheduler=CopyScheduler(engine))
    # Requests still running when a stop is asked get a few seconds; the reads among them are cancelled at once.
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    marker = engine.store.path / SERVER_FILE

    startup = server.startup

    async def announced_startup(sockets=None):
        await startup(sockets)
        if server.started:
            bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
            real = f"http://{host}:{bound}"
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(json.dumps({"url": real, "pid": os.getpid()}))
            os.replace(tmp, marker)
            if on_ready:
                on_ready(real)

    server.startup = announced_startup
    server.capture_signals = lambda: _stop_on_signals(server, engine.store)
    try:
        server.run()
        buffer = app.state.buffer
        print(f"evtrack serve stopped: {buffer.requests} Events API requests written in {buffer.flushes} inserts",
              file=sys.stderr, flush=True)
    finally:
        if marker.exists() and json.loads(marker.read_text() or "{}").get("pid") == os.getpid():
            marker.unlink()


@contextlib.contextmanager
def _stop_on_signals(server, store):
    """Ctrl-C and SIGTERM stop the server gracefully, and the process then exits normally.

    Running reads are cancelled (a runaway query would otherwise hold the stop for as long as it
    runs); ingests are not: what was queued is still written before the process ends.
    """

    def stop(*_):
        server.should_exit = True
        threading.Thread(target=store.cancel, name="evtrack-cancel-reads", daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def running_server(data: Path) -> str | None:
    """The URL of a live ``evtrack serve`` on this store folder, if there is one.

    A ``server.json`` left by a server that was killed (kill -9, out of memory) is removed, with a
    one-line notice on stderr: the store is then opened directly.
    """
    marker = Path(data) / SERVER_FILE
    try:
        info = json.loads(marker.read_text())
        pid, url = int(info["pid"]), info["url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if _alive(pid):
        return url
    with contextlib.suppress(OSError):
        marker.unlink()
    print(f"Notice: evtrack serve (pid {pid}) on {data} is no longer running; opening the store directly",
          file=sys.stderr, flush=True)
    return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running evtrack (not a process that took over the number of a dead one)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return b"evtrack" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
