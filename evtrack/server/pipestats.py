"""Every API endpoint call, kept as Tinybird keeps it in ``tinybird.pipe_stats_rt``: when, which pipe,
how long, its status and error, the URL, method and parameters, and the token's name.

A call appends its row to a list; a task writes each workspace's rows in one insert a second (and
what is left when the server stops). Rows are a record of use, not data: a crash loses at most the
last second of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid

from starlette.requests import Request

from .calls import call
from ..times import utc_text

__all__ = ["PipeStats"]

log = logging.getLogger("evtrack.server")

HIDDEN = ("token",)  # never written: a parameter that is a credential
# The end of a JSON answer: {..., "rows": N, ..., "statistics": {"elapsed": E, "rows_read": R, "bytes_read": B}}
_STATISTICS = re.compile(rb'"rows":\s*(?P<rows>\d+),.*"rows_read":\s*(?P<read>\d+),\s*"bytes_read":\s*(?P<bytes>\d+)',
                         re.DOTALL)


def _path(request: Request) -> str:
    """The call's path and query, without its token (Tinybird's ``url``: the CLI prefixes its host)."""
    url = request.url.remove_query_params(HIDDEN)
    return url.path + (f"?{url.query}" if url.query else "")


class PipeStats:
    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self._rows: dict[str, tuple[object, list[dict]]] = {}  # workspace id -> (workspace, rows)
        self._task: asyncio.Task | None = None

    def record(self, request: Request, workspace, pipe: str, params: dict[str, str], started: float,
               status: int, token_name: str = "", body: bytes = b"") -> None:
        """One call: ``started`` (``time.time()``) to now. A JSON answer's own statistics (its tail)
        give the rows and bytes read and the rows returned; other formats leave them 0."""
        counts = _STATISTICS.search(body[-400:]) if body else None
        self._rows.setdefault(workspace.id, (workspace, []))[1].append({
            "start_datetime": utc_text(started),
            "pipe_id": pipe, "pipe_name": pipe, "duration": round(time.time() - started, 6),
            "url": _path(request), "error": int(status >= 400),
            "request_id": uuid.uuid4().hex, "token_name": token_name, "status_code": status,
            "method": request.method, "parameters": {k: v for k, v in params.items() if k not in HIDDEN},
            "user_agent": request.headers.get("user-agent"),
            **({"result_rows": int(counts["rows"]), "read_rows": int(counts["read"]), "read_bytes": int(counts["bytes"])}
               if counts else {}),
        })

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def flush(self) -> None:
        taken, self._rows = self._rows, {}
        for workspace, rows in taken.values():
            try:
                await call(workspace.log_requests, rows)
            except Exception:  # a workspace deleted meanwhile, a full disk: the record of use is dropped
                log.warning("could not write %d rows of tinybird.pipe_stats_rt", len(rows), exc_info=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()
