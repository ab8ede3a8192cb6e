"""The browser side served by ``evtrack serve``: the dashboard at ``/`` and the tracker at
``/tracker.js``, static files shipped inside the package (``evtrack/web``), no build step."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["asset", "static"]

_FILES = {"/": ("dashboard.html", "text/html; charset=utf-8"),
          "/tracker.js": ("tracker.js", "text/javascript; charset=utf-8")}


@lru_cache(maxsize=None)
def asset(name: str) -> bytes:
    return resources.files("evtrack.web").joinpath(name).read_bytes()


async def static(request: Request) -> Response:
    name, media_type = _FILES[request.url.path]
    # Any site may load the tracker; a short cache lets a new version reach pages soon.
    headers = {"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"} if name == "tracker.js" else {}
    return Response(asset(name), media_type=media_type, headers=headers)
