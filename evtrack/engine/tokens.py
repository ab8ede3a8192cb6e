"""Tokens and scopes of the embedded workspace, kept in the store as ``tokens.json``.

An admin token is made the first time the store is used. ``TOKEN`` lines in datafiles add
scoped tokens at deploy, as on Tinybird: ``TOKEN "tracker" APPEND`` on a datasource gives
``DATASOURCES:APPEND:<datasource>``, ``TOKEN "dashboard" READ`` on a pipe gives
``PIPES:READ:<pipe>``. Tokens are looked up in constant time and never printed unless asked.

JWTs are Tinybird's: HS256, signed with the workspace's admin token, with the payload
``{"workspace_id", "name", "exp", "scopes": [{"type": "PIPES:READ", "resource": <pipe>,
"fixed_params": {...}}]}``. They are not stored; only ``PIPES:READ`` scopes count, and only
where the caller asks for them (endpoint reads). Scopes naming one pipe merge: every fixed
parameter of any of them applies, and two different values for one parameter refuse the token.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadRequest, Forbidden
from ..scopes import ADMIN, DATASOURCES_APPEND, DATASOURCES_READ, PIPES_READ, on, read_pipe, reads

__all__ = ["ADMIN", "JWT_READ", "Token", "SignedToken", "TokenStore", "datafile_scope"]

JWT_READ = PIPES_READ  # the one scope a JWT can carry
_FILE = "tokens.json"
_DATAFILE_SCOPES = {
    ("datasource", "APPEND"): DATASOURCES_APPEND,
    ("datasource", "READ"): DATASOURCES_READ,
    ("pipe", "READ"): PIPES_READ,
}


def datafile_scope(kind: str, permission: str, resource: str) -> str:
    try:
        return on(_DATAFILE_SCOPES[(kind, permission.upper())], resource)
    except KeyError:
        raise BadRequest(f"TOKEN ... {permission} is not a permission of a {kind}") from None


@dataclass
class Token:
    id: str
    name: str
    token: str
    scopes: list[str] = field(default_factory=list)

    def allows(self, *scopes: str) -> bool:
        """True when the token has ADMIN or any one of ``scopes``."""
        return ADMIN in self.scopes or any(s in self.scopes for s in scopes)

    def reads_anything(self) -> bool:
        """Whether the token may read some datasource or pipe at all (the tracker's append token may not)."""
        return ADMIN in self.scopes or any(reads(s) for s in self.scopes)

    def fixed_params(self, pipe: str) -> dict[str, str]:
        """Parameters a call of ``pipe`` with this token must use, whatever the request says."""
        return {}


@dataclass
class SignedToken(Token):
    """A verified JWT: ``PIPES:READ`` scopes, each with its fixed parameters."""

    fixed: dict[str, dict[str, str]] = field(default_factory=dict)

    def fixed_params(self, pipe: str) -> dict[str, str]:
        return dict(self.fixed.get(pipe, {}))


class TokenStore:
    def __init__(self, folder: Path):
        self._path = Path(folder) / _FILE
        self._lock = threading.Lock()
        self.workspace_id = ""
        self._tokens: list[Token] = []
        self._load()

    def _load(self) -> None:
        if self._path.exists():
            saved = json.loads(self._path.read_text(encoding="utf-8"))
            self.workspace_id = saved["workspace_id"]
            self._tokens = [Token(**t) for t in saved["tokens"]]
        if not self.workspace_id:
            self.workspace_id = str(uuid.uuid4())
            self._tokens = [_new("admin token", [ADMIN])]
            self._save()

    def _save(self) -> None:
        body = {"workspace_id": self.workspace_id, "tokens": [t.__dict__ for t in self._tokens]}
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".tokens-")  # created 0600
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(body, indent=2))
        os.replace(tmp, self._path)

    @property
    def admin(self) -> Token:
        return next(t for t in self._tokens if ADMIN in t.scopes)

    def all(self) -> list[Token]:
        return list(self._tokens)

    def get(self, name_or_id: str) -> Token | None:
        return next((t for t in self._tokens if name_or_id in (t.name, t.id)), None)

    def find(self, value: str | None, jwt: bool = False) -> Token | None:
        """The token whose value is ``value``, comparing every one in constant time.

        With ``jwt``, a JWT is verified too: a valid one is a ``SignedToken``; a badly signed,
        expired or malformed one is a 403 (``Forbidden``) saying which.
        """
        if jwt and (value or "").count(".") == 2:
            return self._verify_jwt(value)
        found = None
        for token in self._tokens:
            if hmac.compare_digest(token.token.encode(), (value or "").encode()):
                found = token
        return found

    def grant(self, name: str, scopes: list[str], replace: bool = False) -> Token:
        """Create the token ``name`` or add ``scopes`` to it (``replace`` sets them instead)."""
        with self._lock:
            token, created = self.get(name), False
            if token is not None and ADMIN in token.scopes:
                raise BadRequest(f"The scopes of '{name}', the workspace's admin token, cannot be changed")
            if token is None:
                token, created = _new(name, []), True
                self._tokens.append(token)
            merged = list(scopes) if replace else token.scopes + [s for s in scopes if s not in token.scopes]
            if created or merged != token.scopes:
                token.scopes = merged
                self._save()
            return token


    def sign_jwt(self, name: str, pipes: dict[str, dict[str, str]], ttl: int, now: float | None = None) -> str:
        """A JWT reading ``pipes`` (each with its fixed parameters) for ``ttl`` seconds."""
        import jwt

        scopes = [{"type": JWT_READ, "resource": pipe, **({"fixed_params": fixed} if fixed else {})}
                  for pipe, fixed in pipes.items()]
        payload = {"workspace_id": self.workspace_id, "name": name,
                   "exp": int((time.time() if now is None else now) + ttl), "scopes": scopes}
        return jwt.encode(payload, self.admin.token, algorithm="HS256")

    def _verify_jwt(self, value: str) -> SignedToken:
        import jwt

        try:
            payload = jwt.decode(value, self.admin.token, algorithms=["HS256"],
                                 options={"require": ["exp", "workspace_id", "name", "scopes"]})
        except jwt.ExpiredSignatureError:
            raise Forbidden("invalid authentication token: the JWT has expired") from None
        except jwt.InvalidTokenError:
            raise Forbidden("invalid authentication token") from None
        if payload["workspace_id"] != self.workspace_id or not isinstance(payload["scopes"], list):
            raise Forbidden("invalid authentication token")
        fixed = _merged_scopes(payload["scopes"])
        return SignedToken(id="", name=str(payload["name"]), token=value,
                           scopes=[read_pipe(pipe) for pipe in fixed], fixed=fixed)


def _merged_scopes(scopes: list) -> dict[str, dict[str, str]]:
    """Each pipe a JWT may read, with the fixed parameters of all its scopes together.

    A scope without ``fixed_params`` lifts none that another scope of the pipe sets; two scopes
    fixing one parameter to different values, or ``fixed_params`` that is not an object, make the
    token invalid: no reading of it is safe to guess.
    """
    fixed: dict[str, dict[str, str]] = {}
    for scope in scopes:
        if not (isinstance(scope, dict) and scope.get("type") == JWT_READ and isinstance(scope.get("resource"), str)):
            continue
        params = scope.get("fixed_params") or {}
        if not isinstance(params, dict):
            raise Forbidden("invalid authentication token")
        merged = fixed.setdefault(scope["resource"], {})
        for name, value in params.items():
            if merged.setdefault(name, _param_text(value)) != _param_text(value):
                raise Forbidden("invalid authentication token")
    return fixed


def _param_text(value) -> str:
    """A fixed parameter as a request would carry it: text, numbers as written."""
    return value if isinstance(value, str) else json.dumps(value)


def _new(name: str, scopes: list[str]) -> Token:
    return Token(id=str(uuid.uuid4()), name=name, token=f"p.{secrets.token_urlsafe(32)}", scopes=scopes)
