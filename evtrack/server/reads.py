"""Reads that end with their request: a client that goes away cancels its query.

A read runs in a worker thread (chDB calls block) under a tag; while it runs, the request's
ASGI channel is watched, and a disconnect kills the query by its tag instead of letting it run
on for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ..errors import ClientGone

__all__ = ["cancellable_read"]


async def cancellable_read(request: Request, read, *args):
    """``read(*args, tag=...)`` in a worker thread, cancelled if the client disconnects first."""
    store = request.app.state.engine.store
    tag = store.new_tag()
    work = asyncio.ensure_future(run_in_threadpool(lambda: read(*args, tag=tag)))
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if work.done():
        return work.result()
    await run_in_threadpool(store.cancel, tag)
    with contextlib.suppress(Exception):
        await work
    raise ClientGone()


async def _disconnect(request: Request) -> None:
    """Returns when the client has gone (the request body is already read by then)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
