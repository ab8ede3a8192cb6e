"""How the server calls what can block: in a worker thread, never on the event loop.

Every engine call that can reach chDB or wait for a lock (a deploy waits for running inserts, an
insert for a deploy), and heavy work on a request (inflating a body, parsing a datafile or a
query), goes through ``call``; a read goes through ``cancellable_read``, which also ends it when
its client goes away. The event loop itself only reads requests, looks the deployed project up
(``engine.pipe``, ``datasource``, ``pipe_names``, ``tables``: no lock, no SQL), checks tokens and
shapes answers, so a slow query or a waiting deploy never delays another request.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ..errors import ClientGone

__all__ = ["call", "cancellable_read"]


async def call(work: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``work(*args, **kwargs)`` in a worker thread; the event loop serves other requests meanwhile."""
    return await run_in_threadpool(work, *args, **kwargs)


async def cancellable_read(request: Request, read, *args):
    """``read(*args, tag=...)`` in a worker thread, cancelled if the client disconnects first.

    The read runs under a tag; while it runs, the request's ASGI channel is watched, and a
    disconnect kills the query by its tag instead of letting it run on for nobody.
    """
    store = request.app.state.engine.store
    tag = store.new_tag()
    work = asyncio.ensure_future(call(read, *args, tag=tag))
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if work.done():
        return work.result()
    await call(store.cancel, tag)
    with contextlib.suppress(Exception):
        await work
    raise ClientGone()


async def _disconnect(request: Request) -> None:
    """Returns when the client has gone (the request body is already read by then)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
