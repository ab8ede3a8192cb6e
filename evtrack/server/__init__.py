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
# Request heads, in bytes. Clients send long parameters as a POST body well before this (tb and
# evtrack's client do past 8,000 bytes of URL); a longer head is refused before it costs memory or time.
MAX_URL = 16 * 1024
MAX_HEADERS = 16 * 1024


def serve(engine, host: str, port: int, on_ready=None, allow_hosts=()) -> None:
    """Serve ``engine`` (an ``evtrack.engine.Engine``) until Ctrl-C or SIGTERM. ``allow_hosts``: names
    to answer to besides the loopback ones (``evtrack.server.hosts``)."""
    import uvicorn

    from ..engine.change.copies import CopyScheduler
    from .app import create_app  # the web stack is loaded only by the command that serves

    from .hosts import HostPolicy

    app = create_app(engine, scheduler=CopyScheduler(engine), hosts=HostPolicy.for_bind(host, allow_hosts))
    # Requests still running when a stop is asked get a few seconds; the reads among them are cancelled at once.
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5, http=_bounded_http_protocol())
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


def _bounded_http_protocol():
    """uvicorn's httptools protocol, with bounded request heads and errors in Tinybird's JSON.

    As it is, uvicorn bounds neither the headers (httptools gathers a header until it ends, copying
    it at each read) nor the URL (up to 64 KiB), and answers what it cannot parse with a plain-text
    400. Here a URL over ``MAX_URL`` gets 414, headers over ``MAX_HEADERS`` 431, anything else
    malformed 400, each as ``{"error", "documentation"}``. Built on first use: the web stack is
    loaded only by the command that serves.
    """
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

    from ..errors import BadRequest, EvtrackError, HeadersTooLarge, URLTooLong
    from .shapes import error

    class HeadTooLarge(Exception):
        pass

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        refusal: EvtrackError | None = None
        head_size: int | None = 0  # bytes read of the request head under way; None while reading a body
        header_size = 0

        def data_received(self, data: bytes) -> None:
            if self.head_size is not None:
                self.head_size += len(data)
            super().data_received(data)
            # A header is only seen once it ends: one that keeps on coming is cut by the bytes read,
            # at twice what a valid head holds (whitespace and line ends are not counted above).
            if self.head_size is not None and self.head_size > 2 * (MAX_URL + MAX_HEADERS) \
                    and not self.transport.is_closing():
                self.refusal = HeadersTooLarge(MAX_HEADERS)
                self.send_400_response("")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.header_size = 0

        def on_url(self, url: bytes) -> None:  # also called at the end of each read with the URL so far
            super().on_url(url)
            if len(self.url) > MAX_URL:
                self.refuse(URLTooLong(MAX_URL))

        def on_header(self, name: bytes, value: bytes) -> None:
            super().on_header(name, value)
            self.header_size += len(name) + len(value) + 4  # with ": " and CRLF
            if self.header_size > MAX_HEADERS:
                self.refuse(HeadersTooLarge(MAX_HEADERS))

        def on_headers_complete(self) -> None:
            self.head_size = None
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self.head_size = 0

        def refuse(self, refusal: EvtrackError) -> None:
            self.refusal = refusal
            raise HeadTooLarge  # stops the parser, and uvicorn answers with send_400_response

        def send_400_response(self, msg: str) -> None:
            refusal = self.refusal or BadRequest(msg)
            body = json.dumps(error(refusal.message), separators=(",", ":")).encode()
            head = [STATUS_LINE[refusal.status]]
            head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
            head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
                     b"connection: close\r\n\r\n"]
            self.transport.write(b"".join(head) + body)
            self.transport.close()

    return BoundedHttpToolsProtocol


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
