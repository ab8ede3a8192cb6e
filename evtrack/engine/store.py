"""The only module that talks to chDB: one embedded ClickHouse per data folder.

chDB allows one data path per process, and inside that process any number of ``chdb.connect()``
connections run statements at the same time. So a store keeps a pool of connections: a statement
takes an idle one (or opens one), runs, and gives it back. Nothing is shared between statements
but the data:

- Each connection gets the session settings (UTC, Tinybird's JSON numbers) when it is opened,
  and the limits of the statements it serves (``QueryLimits``: time, memory, result size), so a
  read with limits never runs on a connection without them.
- A connection whose statement failed is closed, never reused: chDB keeps the part of a result
  it had written before the failure (a JSON header, say) and hands it to that connection's next
  statement. A fresh connection starts clean.
- The first connection opens the engine with the process's memory budget
  (``max_server_memory_usage``) and stays open while the store is, so closing the others never
  restarts the engine.
- A statement run with a ``tag`` can be cancelled from another thread (``cancel``), as a client
  that goes away or a server that stops needs.

Stores opened on the same folder in one process share this; opening a second folder while one is
open is a clear error rather than chDB's own.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import QueryError, QueryTimeout, StoreError

__all__ = ["QueryLimits", "Store", "default_memory_budget", "param_text", "public_text"]

MIN_FREE_DISK = int(os.environ.get("EVTRACK_MIN_FREE_DISK", 256 * 1024 * 1024))
ALLOCATOR = "dirty_decay_ms:1000,muzzy_decay_ms:1000"

_SESSION_SETTINGS = (
    "SET session_timezone = 'UTC'",
    # Tinybird answers counts as JSON numbers, not quoted strings.
    "SET output_format_json_quote_64bit_integers = 0",
    # Blocks are deduplicated only where an insert asks for it (evtrack.engine.ingest.statement.exactly_once):
    # a copy appended twice, say, appends twice.
    "SET insert_deduplicate = 0",
    # A materialized view's SELECT may return columns its target lacks: ClickHouse writes the
    # columns they share (by name, converted) and defaults the rest, as Tinybird's views do.
    "SET allow_materialized_view_with_bad_select = 1",
    # An insert (an append, a copy, a refill) is refused while less than this is free on the store's
    # disk, so that merges under way keep the room they need: ClickHouse can leave a part it merged
    # onto a disk that filled up meanwhile unreadable. EVTRACK_MIN_FREE_DISK (bytes) changes it.
    f"SET min_free_disk_bytes_to_perform_insert = {MIN_FREE_DISK}",
)
_CODE = re.compile(r"\(([A-Z][A-Z_]+)\)")
_IDLE_PER_KIND = 16  # connections kept open per kind of limits; more are opened when busy, closed after


@dataclass(frozen=True)
class QueryLimits:
    """What one read may use: seconds, bytes of memory, bytes of result (0: no limit)."""

    max_execution_time: float = 0
    max_memory_usage: int = 0
    max_result_bytes: int = 0

    def statements(self) -> list[str]:
        out = []
        if self.max_execution_time:
            out += [f"SET max_execution_time = {self.max_execution_time}", "SET timeout_overflow_mode = 'throw'"]
        if self.max_memory_usage:
            out.append(f"SET max_memory_usage = {int(self.max_memory_usage)}")
        if self.max_result_bytes:
            out += [f"SET max_result_bytes = {int(self.max_result_bytes)}", "SET result_overflow_mode = 'throw'"]
        return out


def default_memory_budget() -> int:
    """60% of the machine's memory: a query hits the budget long before the kernel kills the process."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.6)
    except (ValueError, OSError):
        return 0


class _Shared:
    """The process's one embedded engine: its folder, its first connection, the idle pool."""

    lock = threading.Lock()
    drained = threading.Condition(lock)  # notified when a statement gives its connection back
    busy = 0  # statements running now
    path: Path | None = None
    anchor = None
    idle: dict[QueryLimits | None, list] = {}
    running: dict[str, str] = {}  # tag -> its marker in the statement text
    users = 0


def _private(path: Path) -> None:
    """The store's folder, and all it holds, for its owner alone (0700 folders, 0600 files): it holds
    users' events and tokens. A process that opens a store creates files only its owner can read from
    then on (umask 077), the engine's included; a store made before this is made private once, when
    it opens (its folder's mode says whether that was done)."""
    os.umask(os.umask(0o077) | 0o077)
    existed = path.exists()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if existed and path.stat().st_mode & 0o077:
        for folder, dirs, files in os.walk(path):
            for name in dirs:
                _chmod(Path(folder) / name, 0o700)
            for name in files:
                _chmod(Path(folder) / name, 0o600)
    _chmod(path, 0o700)


def _chmod(path: Path, mode: int) -> None:
    try:
        if not path.is_symlink():
            os.chmod(path, mode)
    except OSError:
        pass  # gone, or not ours: what is left is still behind the 0700 folder


class Store:
    """An open chDB store on ``path``; use as a context manager or call ``close``."""

    def __init__(self, path: Path, memory_budget: int | None = None):
        self.path = Path(path).resolve()
        self._open = False
        with _Shared.lock:
            if _Shared.anchor is None:
                self._start(default_memory_budget() if memory_budget is None else memory_budget)
            elif _Shared.path != self.path:
                raise StoreError(f"another store ({_Shared.path}) is open in this process")
            _Shared.users += 1
            self._open = True

    def _start(self, budget: int) -> None:
        _private(self.path)
        target = str(self.path)
        if budget and not any(ch in target for ch in "?&#"):  # characters a connection string would misread
            target = f"file:{target}?max_server_memory_usage={int(budget)}"
        _Shared.anchor = _connect(target)
        _Shared.path, _Shared.idle, _Shared.running = self.path, {}, {}

    # -- connections ----------------------------------------------------------------------
    def _take(self, limits: QueryLimits | None):
        with _Shared.lock:
            if not self._open:
                raise StoreError("the store is closed")
            _Shared.busy += 1
            pool = _Shared.idle.setdefault(limits, [])
            if pool:
                return pool.pop()
        try:
            conn = _connect(str(self.path))
            for statement in limits.statements() if limits else ():
                conn.query(statement)
        except Exception as exc:
            self._give_back(None, limits)
            raise StoreError(f"cannot open a connection: {_first_line(exc)}") from None
        return conn

    def _give_back(self, conn, limits: QueryLimits | None) -> None:
        with _Shared.lock:
            _Shared.busy -= 1
            _Shared.drained.notify_all()
            pool = _Shared.idle.get(limits)
            if conn is not None and self._open and pool is not None and len(pool) < _IDLE_PER_KIND:
                pool.append(conn)
                return
        if conn is not None:
            conn.close()

    def _query(self, sql: str, fmt: str, limits: QueryLimits | None, tag: str | None, params: dict | None = None):
        if tag is not None:
            marker = f"/* evtrack:{tag} */"
            sql = f"{marker} {sql}"
            with _Shared.lock:
                _Shared.running[tag] = marker
        conn = self._take(limits)
        try:
            result = conn.query(sql, fmt, params=params)
        except Exception as exc:
            conn.close()  # it may hold part of the failed result: never reuse it
            self._give_back(None, limits)
            raise _query_error(exc) from None
        finally:
            if tag is not None:
                with _Shared.lock:
                    _Shared.running.pop(tag, None)
        self._give_back(conn, limits)
        return result

    # -- the public surface ---------------------------------------------------------------
    def run(self, sql: str, fmt: str = "CSV", *, limits: QueryLimits | None = None, tag: str | None = None,
            params: dict[str, str] | None = None) -> bytes:
        """Run one statement; its result in ``fmt``. Database errors become ``QueryError``.

        ``params`` are the values of the statement's query parameters (``{name:Type}``), as texts
        (see ``param_text``): a value never becomes part of the statement's own text."""
        return self._query(sql, fmt, limits, tag, params).bytes()

    def execute(self, sql: str, *, tag: str | None = None) -> int:
        """Run a write; the number of rows it wrote."""
        return self._query(sql, "CSV", None, tag).rows_written()

    @staticmethod
    def new_tag() -> str:
        return uuid.uuid4().hex

    def cancel(self, *tags: str) -> None:
        """Cancel the statements running with these tags (all tagged ones if none is named)."""
        with _Shared.lock:
            markers = [m for t, m in _Shared.running.items() if not tags or t in tags]
        if not markers or not self._open:
            return
        where = " OR ".join(f"startsWith(query, '{m}')" for m in markers)
        # A connection counted as busy, as every other: one made aside could outlive close() and keep
        # the engine up on this path, and the next store opened in the process could not start.
        try:
            self._query(f"KILL QUERY WHERE {where} ASYNC", "CSV", None, None)
        except (StoreError, QueryError):  # finished meanwhile, or the store is closing: nothing left to cancel
            pass

    def close(self) -> None:
        with _Shared.lock:
            if not self._open:
                return
            self._open = False
            _Shared.users -= 1
            if _Shared.users:
                return
            # The engine stops with its last connection: wait for the statements still running.
            _Shared.drained.wait_for(lambda: _Shared.busy == 0, timeout=60)
            idle = [conn for pool in _Shared.idle.values() for conn in pool]
            anchor, _Shared.anchor, _Shared.path, _Shared.idle = _Shared.anchor, None, None, {}
        for conn in idle:
            conn.close()
        anchor.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def param_text(value: str) -> str:
    """A String query parameter's value as ClickHouse reads it (its escaped text format)."""
    return (value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r").replace("\0", "\\0"))


def _connect(target: str):
    chdb = _import_chdb()
    conn = None
    try:
        conn = chdb.connect(target)
        for statement in _SESSION_SETTINGS:
            conn.query(statement)
    except Exception as exc:
        if conn is not None:  # an open connection keeps the engine up on this path
            conn.close()
        raise StoreError(f"cannot open the store at {target}: {_first_line(exc)}") from None
    return conn


def _query_error(exc: Exception) -> QueryError:
    text = public_text(_first_line(exc))
    codes = _CODE.findall(text)
    return (QueryTimeout if codes and codes[-1] == "TIMEOUT_EXCEEDED" else QueryError)(f"[Error] {text}")


# What a message of the engine may not show: the statement it ran (after "In scope", with internal
# names and the server's paths), a workspace's database before a table's name, an upload's path.
_SCOPE = re.compile(r":? In scope .*?(?=\. \([A-Z_]+\)$|$)", re.DOTALL)
_DATABASE_PREFIX = re.compile(r"`?\b(?:w_[0-9a-f]{12}|evtrack|check_[0-9a-f]+)`?\.(?=`?[A-Za-z_])")
_UPLOAD_PATH = re.compile(r"'/[^']*evtrack-(?:batch|rows|input)-[^']*'")


def public_text(text: str) -> str:
    """An engine message as a user may read it: what went wrong, in the names the user wrote."""
    text = _SCOPE.sub("", text)
    text = _UPLOAD_PATH.sub("'(the uploaded data)'", text)
    return _DATABASE_PREFIX.sub("", text)


def _import_chdb():
    """chDB, imported here (it loads the whole engine) and without pyarrow.

    chDB imports pyarrow when it can, for its Arrow APIs; the store asks for CSV and JSON only,
    and pyarrow's import is about 0.2 s of every CLI call. It stays importable for anyone else.
    """
    if "chdb" in sys.modules:
        return sys.modules["chdb"]
    # chDB's allocator (jemalloc) keeps freed pages a while before it returns them: returned after
    # 1 s, a send's peak memory was 965 MB against 1,164 MB for 3M events, and 1,151 against
    # 1,213 MB for 10M, for the same CPU. Read when the library loads, so set before; a value the
    # user set (JE_MALLOC_CONF) wins.
    os.environ.setdefault("JE_MALLOC_CONF", ALLOCATOR)
    hidden = "pyarrow" not in sys.modules
    if hidden:
        sys.modules["pyarrow"] = None  # an ImportError for chDB's optional `import pyarrow`
    try:
        import chdb
        import chdb.state  # what chdb.connect() imports on its first call
    finally:
        if hidden and sys.modules.get("pyarrow", 0) is None:
            del sys.modules["pyarrow"]
    return chdb


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.split("\n", 1)[0] if text else type(exc).__name__
