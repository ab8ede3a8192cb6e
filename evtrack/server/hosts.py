"""Which names the server answers to: the defence against DNS rebinding.

A page of another site can make its own name resolve to 127.0.0.1 and so become same-origin with
this server in the user's browser; CORS does not stop it. What such a request cannot change is its
``Host`` header, which names the attacker's site. So:

- what is answered only to loopback peers (``/tokens``, the admin token) also needs a loopback
  name in ``Host`` (``localhost``, ``127.0.0.1``, ``[::1]``, any port) or a name given with
  ``--allow-host``; on any server, whatever it is bound to;
- a server bound to a loopback address checks every request so, as development servers do (Vite's
  ``server.allowedHosts``, Jupyter's ``allow_remote_access``): nothing but this machine can reach
  it, so nothing legitimate names it otherwise, and the dashboard page, which carries a read token,
  is not left to a rebinding page either. Bound to another address, it is reached by the names of
  the network, which the server cannot know: only the loopback-only routes are checked.

A refusal is a JSON 403 that says why and names the flag.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .shapes import error

__all__ = ["HostPolicy", "HostMiddleware", "LOOPBACK_NAMES", "LOOPBACK_ONLY", "is_loopback_address"]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# Routes answered only to loopback peers.
LOOPBACK_ONLY = frozenset({"/tokens"})


def is_loopback_address(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return address == "localhost"


@dataclass(frozen=True)
class HostPolicy:
    """``every_route``: check the ``Host`` of every request, not only of the loopback-only routes.
    ``allowed``: more names to answer to (``--allow-host``)."""

    every_route: bool = False
    allowed: frozenset[str] = frozenset()

    @classmethod
    def for_bind(cls, bind: str, allowed=()) -> "HostPolicy":
        return cls(every_route=is_loopback_address(bind), allowed=frozenset(name.lower() for name in allowed))

    def admits(self, host_header: str) -> bool:
        name = _hostname(host_header)
        return name in LOOPBACK_NAMES or name in self.allowed or "*" in self.allowed


def _hostname(host_header: str) -> str:
    """The name of a ``Host`` header, without its port: ``[::1]:7181`` -> ``::1``."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HostMiddleware:
    def __init__(self, app: ASGIApp, policy: HostPolicy = HostPolicy()):
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A loopback-only route answers other peers its own 404; from a loopback peer it needs a loopback name.
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        peer = (scope.get("client") or ("",))[0]
        loopback_only = scope["path"] in LOOPBACK_ONLY and is_loopback_address(peer or "")
        if self.policy.every_route or loopback_only:
            host = Headers(scope=scope).get("host", "")
            if not self.policy.admits(host):
                await _refusal(host)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _refusal(host: str) -> JSONResponse:
    name = _hostname(host) or "(none)"
    return JSONResponse(error(
        f"Host '{name}' is not allowed: this server answers to localhost, 127.0.0.1 and [::1], so that no web "
        f"page can reach it through a name of its own (DNS rebinding). To answer to '{name}' too, start it with "
        f"`evtrack serve --allow-host {name}`"), status_code=403)
