"""The only module that talks to chDB: one embedded ClickHouse per data folder.

chDB allows one data path per process. A store is opened for a folder and closed when done;
opening a second folder while one is open is a clear error rather than chDB's own. Every
statement runs under a lock, with UTC as the session time zone and Tinybird's JSON settings.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..errors import QueryError, StoreError

__all__ = ["Store"]

_SESSION_SETTINGS = (
    "SET session_timezone = 'UTC'",
    # Tinybird answers counts as JSON numbers, not quoted strings.
    "SET output_format_json_quote_64bit_integers = 0",
    "SET date_time_input_format = 'best_effort'",
)
_open_lock = threading.Lock()
_open_path: Path | None = None


class Store:
    """An open chDB session on ``path``; use as a context manager or call ``close``."""

    def __init__(self, path: Path):
        global _open_path
        from chdb import session  # imported here: it loads the whole engine

        self.path = Path(path).resolve()
        self._lock = threading.RLock()
        with _open_lock:
            if _open_path is not None and _open_path != self.path:
                raise StoreError(f"another store ({_open_path}) is open in this process")
            self.path.mkdir(parents=True, exist_ok=True)
            try:
                self._session = session.Session(str(self.path))
            except Exception as exc:
                raise StoreError(f"cannot open the store at {self.path}: {_first_line(exc)}") from None
            _open_path = self.path
        for statement in _SESSION_SETTINGS:
            self.run(statement)

    def run(self, sql: str, fmt: str = "CSV") -> bytes:
        """Run one statement; the result in ``fmt``. Database errors become ``QueryError``."""
        with self._lock:
            try:
                result = self._session.query(sql, fmt)
            except Exception as exc:
                raise QueryError(f"[Error] {_first_line(exc)}") from None
        return result.bytes()

    def execute(self, sql: str) -> int:
        """Run a write; the number of rows it wrote."""
        with self._lock:
            try:
                return self._session.query(sql).rows_written()
            except Exception as exc:
                raise QueryError(f"[Error] {_first_line(exc)}") from None

    def close(self) -> None:
        global _open_path
        with _open_lock, self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None
                _open_path = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.split("\n", 1)[0] if text else type(exc).__name__
