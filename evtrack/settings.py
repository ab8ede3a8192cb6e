"""Where commands go, resolved once: what the command line says first.

1. a flag: ``--host`` (with ``--token``), or ``--data`` for the embedded store;
2. an environment variable: ``TB_HOST`` (with ``TB_TOKEN``), or ``EVTRACK_DATA``;
3. ``.tinyb`` in the working folder (JSON ``host`` and ``token``, as ``tb auth`` writes it);
4. otherwise the embedded store in ``./.evtrack``.

The first level that names a target decides, so ``--data`` means the embedded store even in a
folder where ``tb auth`` left a ``.tinyb``. A level that names both a store and a host is refused,
naming both. When ``evtrack serve`` is running on the store, commands go through it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import BadRequest

__all__ = ["MAX_BATCH_BYTES", "Secret", "Target", "resolve"]

MAX_BATCH_BYTES = 9_500_000  # just under Tinybird's 10 MB per Events API request


class Secret:
    """A token that never prints itself."""

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class Target:
    data: Path
    host: str | None = None
    token: Secret | None = None
    origin: str = "embedded"

    @property
    def remote(self) -> bool:
        return self.host is not None


def _tinyb(folder: Path) -> dict:
    path = folder / ".tinyb"
    if not path.exists():
        return {}
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise BadRequest(f"{path} is not valid JSON") from None
    return found if isinstance(found, dict) else {}


def resolve(data: Path, host: str | None = None, token: str | None = None, cwd: Path | None = None,
            data_origin: str | None = None) -> Target:
    """``data_origin``: where ``data`` was named (``--data`` or ``EVTRACK_DATA``), None for the default."""
    tinyb = _tinyb(Path(cwd or Path.cwd()))
    for origin, (h, t), store in (
        ("--host", (host, token), "--data"),
        ("TB_HOST", (os.environ.get("TB_HOST"), os.environ.get("TB_TOKEN")), "EVTRACK_DATA"),
        (".tinyb", (tinyb.get("host"), tinyb.get("token")), None),
    ):
        named = store is not None and data_origin == store
        if h and named:
            raise BadRequest(f"both {store} ({data}) and {origin} ({h}) say where this command goes: "
                             f"give one, {store} for the embedded store or {origin} for a host")
        if named:
            return Target(data=data, origin=store)
        if h:
            t = t or token or os.environ.get("TB_TOKEN") or tinyb.get("token")
            if not t:
                raise BadRequest(f"no token for {h}: pass --token, set TB_TOKEN, or add \"token\" to .tinyb")
            return Target(data=data, host=h.rstrip("/"), token=Secret(t), origin=origin)
    return Target(data=data)
