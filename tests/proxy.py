"""A real HTTP proxy on loopback that misbehaves on purpose: a test tool, not a stand-in for evtrack.

``Proxy(upstream, plan)`` listens on 127.0.0.1 and forwards each HTTP/1.1 request to ``upstream``
(``evtrack serve``), unless ``plan(n)`` (``n``: the request's number, from 0) says otherwise:

- ``"pass"``: forwarded, and the answer returned;
- ``("delay", seconds)``: forwarded after a wait;
- ``("429", retry_after)``: answered 429 with ``Retry-After``, not forwarded;
- ``"drop"``: the connection closed with no answer, not forwarded;
- ``"lose"``: forwarded (the server stores it), then the connection closed with no answer: the case
  a resend must not count twice.

``counts`` says how many requests met each action.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable

import httpx

__all__ = ["Proxy"]


class Proxy:
    def __init__(self, upstream: str, plan: Callable[[int], object] = lambda n: "pass"):
        self.upstream, self.plan = upstream.rstrip("/"), plan
        self.counts: collections.Counter = collections.Counter()
        self._n = 0
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def start():
            self._http = httpx.AsyncClient(base_url=self.upstream, timeout=60)
            self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            started.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def close(self) -> None:
        async def stop():
            self._server.close()
            await self._http.aclose()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines if ":" in line]
                size = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
                body = await reader.readexactly(size) if size else b""
                n, self._n = self._n, self._n + 1
                action = self.plan(n)
                kind = action[0] if isinstance(action, tuple) else action
                self.counts[kind] += 1
                if kind == "drop":
                    break
                if kind == "429":
                    writer.write(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: %s\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 26\r\n\r\n{\"error\": \"rate limited\"}\n" % str(action[1]).encode())
                    await writer.drain()
                    continue
                if kind == "delay":
                    await asyncio.sleep(action[1])
                forwarded = {k: v for k, v in headers if k.lower() not in ("host", "content-length", "connection")}
                response = await self._http.request(method, target, headers=forwarded, content=body)
                if kind == "lose":
                    break
                payload = response.content
                out = [f"HTTP/1.1 {response.status_code} {response.reason_phrase}"]
                out += [f"{k}: {v}" for k, v in response.headers.items()
                        if k.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection")]
                out.append(f"Content-Length: {len(payload)}")
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
