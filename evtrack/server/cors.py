"""CORS for the API under ``/v0/``, so that web pages can send and read as they do on Tinybird.

Any origin may call: requests carry tokens, never cookies, so the token alone decides what a
call may do, exactly as without CORS. A preflight (``OPTIONS`` with
``Access-Control-Request-Method``) is answered 204 here, before routing; every other answer
under ``/v0/``, errors included, carries ``Access-Control-Allow-Origin``, so a page can read
the API's error message. ``/tokens`` is left out on purpose: no page of another origin may read
the admin token from a browser on this machine.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CORSMiddleware", "ALLOW_METHODS", "ALLOW_HEADERS", "EXPOSE_HEADERS"]

PREFIX = "/v0/"
ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Content-Encoding"
# The headers a client needs to retry politely after a 429.
EXPOSE_HEADERS = "Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset"
MAX_AGE = "86400"


class CORSMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await _preflight(headers)(scope, receive, send)
            return

        async def send_with_origin(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out["Access-Control-Allow-Origin"] = "*"
                out["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_origin)


def _preflight(headers: Headers) -> Response:
    return Response(status_code=204, headers={
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": ALLOW_METHODS,
        # Whatever the page asks to send is allowed: the token is what is checked.
        "Access-Control-Allow-Headers": headers.get("access-control-request-headers") or ALLOW_HEADERS,
        "Access-Control-Max-Age": MAX_AGE,
    })
