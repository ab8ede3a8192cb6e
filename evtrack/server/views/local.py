"""What Tinybird Local answers besides its API, for Forward ``tb``: ``GET /version`` (``tb local
version``), ``GET /v0/health``, and ``GET /examples/query.http`` (an endpoint's URL, which
``tb endpoint ls`` and ``tb build`` print)."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import __version__

__all__ = ["example_url", "health", "version"]


def _plain(text: str) -> Response:
    # Exactly "text/plain": the CLI returns the text of an answer only for that content type.
    return Response(text, headers={"content-type": "text/plain"})


async def version(request: Request) -> Response:
    return _plain(f"evtrack {__version__}")


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def example_url(request: Request) -> Response:
    """The URL that calls ``pipe`` in ``format`` with ``token``: Tinybird Local writes it for
    ``http://localhost:8001``, which the CLI replaces with its host; evtrack writes its own address."""
    params = request.query_params
    query = urlencode({"token": params["token"]}) if params.get("token") else ""
    url = f"{str(request.base_url).rstrip('/')}/v0/pipes/{params.get('pipe', '')}.{params.get('format', 'json')}"
    return _plain(f"{url}?{query}" if query else url)
