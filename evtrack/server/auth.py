"""Who is calling: the token of a request, and the scope checks behind Tinybird's 403s."""

from __future__ import annotations

from starlette.requests import Request

from ..engine import Workspace
from ..engine.tokens import Token, TokenStore
from ..errors import Forbidden, InvalidToken, MissingScope, NoAccess
from ..scopes import ADMIN, read_pipe

__all__ = ["request_token", "require", "require_pipe_read", "token_value", "workspace_of"]


def token_value(request: Request) -> str:
    """``?token=`` wins over ``Authorization: Bearer``, as on Tinybird."""
    value = request.query_params.get("token")
    if not value:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        value = credentials.strip() if scheme.lower() == "bearer" else ""
    return value or ""


def workspace_of(request: Request, jwt: bool = False) -> Workspace:
    """The workspace of the request's token: a request runs there, and sees nothing of the others.
    A request with no token, or an unknown one, gets the default workspace, whose token check then
    refuses it. With ``jwt``, a JWT counts: the workspace it names verifies it."""
    engine = request.app.state.engine
    found = engine.find_token(token_value(request), jwt)
    return found[0] if found is not None else engine.default


def request_token(request: Request, tokens: TokenStore, jwt: bool = False) -> Token | None:
    """The request's token among ``tokens``. JWTs count only with ``jwt`` (endpoint reads); a bad or
    expired one is a 403."""
    value = token_value(request)
    return tokens.find(value, jwt) if value else None


def require(request: Request, tokens: TokenStore, *scopes: str, jwt: bool = False,
            refusal: type[Forbidden] | None = None) -> Token:
    """The request's token, if it has ADMIN or one of ``scopes``; else 403 with Tinybird's text:
    ``refusal``'s when given, else the scope it needs."""
    token = request_token(request, tokens, jwt)
    if token is None:
        raise InvalidToken()
    if not token.allows(*scopes):
        raise refusal() if refusal else MissingScope(scopes[0] if scopes else ADMIN)
    return token


def require_pipe_read(request: Request, tokens: TokenStore, pipe: str, jwt: bool = False) -> Token:
    return require(request, tokens, read_pipe(pipe), jwt=jwt, refusal=NoAccess)
