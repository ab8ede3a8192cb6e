"""``evtrack serve``: the Tinybird-compatible HTTP API over the embedded store, run by uvicorn.

While it runs, ``server.json`` in the store folder says where it listens, so other evtrack
commands on the same folder go through it (chDB allows one process per folder).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..engine import Engine
from .app import create_app

__all__ = ["create_app", "serve", "running_server", "SERVER_FILE"]

SERVER_FILE = "server.json"


def serve(engine: Engine, host: str, port: int, on_ready=None) -> None:
    import uvicorn

    app = create_app(engine)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    marker = engine.store.path / SERVER_FILE
    url = f"http://{host}:{port}"

    startup = server.startup

    async def announced_startup(sockets=None):
        await startup(sockets)
        if server.started:
            bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
            real = f"http://{host}:{bound}"
            marker.write_text(json.dumps({"url": real, "pid": os.getpid()}))
            if on_ready:
                on_ready(real)

    server.startup = announced_startup
    try:
        server.run()
    finally:
        if marker.exists() and json.loads(marker.read_text() or "{}").get("pid") == os.getpid():
            marker.unlink()


def running_server(data: Path) -> str | None:
    """The URL of a live ``evtrack serve`` on this store folder, if there is one."""
    marker = Path(data) / SERVER_FILE
    try:
        info = json.loads(marker.read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info["url"]
