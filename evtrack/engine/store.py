"""The only module that talks to chDB: one embedded ClickHouse per data folder.

chDB allows one data path per process. Stores opened on the same folder in one process share
one chDB session (closed when the last of them closes); opening a second folder while one is
open is a clear error rather than chDB's own. Statements run under one lock, with UTC as the
session time zone and Tinybird's JSON settings.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from ..errors import QueryError, StoreError

__all__ = ["Store"]

_SESSION_SETTINGS = (
    "SET session_timezone = 'UTC'",
    # Tinybird answers counts as JSON numbers, not quoted strings.
    "SET output_format_json_quote_64bit_integers = 0",
)


class _Shared:
    """The process's one chDB session, with how many stores use it."""

    lock = threading.RLock()
    path: Path | None = None
    session = None
    users = 0


class Store:
    """An open chDB store on ``path``; use as a context manager or call ``close``."""

    def __init__(self, path: Path):
        self.path = Path(path).resolve()
        self._open = False
        with _Shared.lock:
            if _Shared.session is None:
                self._connect()
            elif _Shared.path != self.path:
                raise StoreError(f"another store ({_Shared.path}) is open in this process")
            _Shared.users += 1
            self._open = True

    def _connect(self) -> None:
        session = _import_chdb_session()
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            _Shared.session = session.Session(str(self.path))
        except Exception as exc:
            raise StoreError(f"cannot open the store at {self.path}: {_first_line(exc)}") from None
        _Shared.path = self.path
        for statement in _SESSION_SETTINGS:
            _Shared.session.query(statement)

    def _query(self, sql: str, fmt: str):
        with _Shared.lock:
            if not self._open:
                raise StoreError("the store is closed")
            try:
                return _Shared.session.query(sql, fmt)
            except Exception as exc:
                raise QueryError(f"[Error] {_first_line(exc)}") from None

    def run(self, sql: str, fmt: str = "CSV") -> bytes:
        """Run one statement; its result in ``fmt``. Database errors become ``QueryError``."""
        return self._query(sql, fmt).bytes()

    def execute(self, sql: str) -> int:
        """Run a write; the number of rows it wrote."""
        return self._query(sql, "CSV").rows_written()

    def close(self) -> None:
        with _Shared.lock:
            if not self._open:
                return
            self._open = False
            _Shared.users -= 1
            if _Shared.users == 0:
                _Shared.session.close()
                _Shared.session, _Shared.path = None, None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _import_chdb_session():
    """chDB's session module, imported here (it loads the whole engine) and without pyarrow.

    chDB imports pyarrow when it can, for its Arrow APIs; the store asks for CSV and JSON only,
    and pyarrow's import is about 0.2 s of every CLI call. It stays importable for anyone else.
    """
    if "chdb.session" in sys.modules:
        return sys.modules["chdb.session"]
    hidden = "pyarrow" not in sys.modules
    if hidden:
        sys.modules["pyarrow"] = None  # an ImportError for chDB's optional `import pyarrow`
    try:
        from chdb import session
    finally:
        if hidden and sys.modules.get("pyarrow", 0) is None:
            del sys.modules["pyarrow"]
    return session


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.split("\n", 1)[0] if text else type(exc).__name__
