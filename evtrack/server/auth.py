"""Who is calling: the token of a request, and Tinybird's scope checks and 403 texts."""

from __future__ import annotations

from starlette.requests import Request

from ..engine.tokens import Token, TokenStore
from ..errors import Forbidden

__all__ = ["request_token", "require", "require_pipe_read", "INVALID_TOKEN"]

INVALID_TOKEN = "invalid authentication token"
NO_ACCESS = "The token you have provided doesn't have access to this resource"


def request_token(request: Request, tokens: TokenStore, jwt: bool = False) -> Token | None:
    """``?token=`` wins over ``Authorization: Bearer``, as on Tinybird. JWTs count only with ``jwt``
    (endpoint reads); a bad or expired one is a 403."""
    value = request.query_params.get("token")
    if not value:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        value = credentials.strip() if scheme.lower() == "bearer" else ""
    return tokens.find(value, jwt) if value else None


def require(request: Request, tokens: TokenStore, *scopes: str, message: str | None = None, jwt: bool = False) -> Token:
    """The request's token, if it has ADMIN or one of ``scopes``; else 403 with Tinybird's text."""
    token = request_token(request, tokens, jwt)
    if token is None:
        raise Forbidden(INVALID_TOKEN)
    if not token.allows(*scopes):
        raise Forbidden(message or f"token needs scope {scopes[0] if scopes else 'ADMIN'}")
    return token


def require_pipe_read(request: Request, tokens: TokenStore, pipe: str, jwt: bool = False) -> Token:
    return require(request, tokens, f"PIPES:READ:{pipe}", message=NO_ACCESS, jwt=jwt)
