"""The write-ahead log of acknowledged events: on disk before the answer, replayed after a crash.

An Events API request answered 202 (``wait=false``) is written here and synced (``fsync``) before
it is answered; its rows reach the datasource at the next insert. The log is a series of segment
files in ``<store>/wal/``: each insert of the server's queue takes the current segment with it, and
the segment is deleted once that insert is committed. So a segment on disk at start-up holds
acknowledged rows that may not have been written, and is replayed.

Replaying cannot count a row twice, in any table. Each segment's rows go in as one idempotent
insert per datasource (``evtrack.engine.ingest.statement.exactly_once``), under an import id derived from
the segment's name (``wal-<segment>-<datasource>``), with the same bytes whether it is the
server's flush, its retry after a failure, or a replay after a crash: every table the insert
reaches, materialized targets included, skips the blocks it already has. So a segment whose
insert ran, whole or in part, before the crash adds exactly what was missing.

A request's ``Idempotency-Key`` is logged with its rows and remembered after they are committed
(``keys``, the last ``KEEP``): a request sent again with a key the log has, because its answer was
lost to a kill of either side, is acknowledged without its rows being stored again.

A record is ``EVW1``, then the CRC32, the datasource name's length and the payload's length
(little-endian 4, 2 and 4 bytes), then the name (and, after a newline, the request's key) and the payload. A record torn by the crash (short,
or with a wrong CRC) ends the segment: it was never synced, so never acknowledged. A write that
fails (a full disk) is cut off the file before the request is refused, so no record follows a torn one.
"""

from __future__ import annotations

import os
import struct
import time
import uuid
import zlib
from pathlib import Path

from ..journal import sync_folder

__all__ = ["WriteAheadLog", "import_id"]

_MAGIC = b"EVW1"
_HEADER = struct.Struct("<4sIHI")
FOLDER = "wal"
KEEP = 100_000  # idempotency keys remembered after their rows are committed


def import_id(segment: str, datasource: str) -> str:
    return f"wal-{segment}-{datasource}"


class WriteAheadLog:
    def __init__(self, store_path: Path):
        self.folder = Path(store_path) / FOLDER
        self.folder.mkdir(exist_ok=True)
        self._segment: str | None = None
        self._fd: int | None = None
        self._fds: dict[str, int] = {}  # open segments, until dropped
        self._keys: dict[str, str | None] | None = None  # key -> its open segment (None: committed); loaded when asked
        self._segment_keys: dict[str, list[str]] = {}

    # -- idempotency keys ------------------------------------------------------------------------
    def seen(self, key: str) -> tuple[bool, int | None]:
        """Whether a request with ``key`` is logged, and the fd of its segment while that is open
        (to sync before answering again)."""
        keys = self._known()
        if key not in keys:
            return False, None
        segment = keys[key]
        return True, self._fds.get(segment) if segment is not None else None

    def _known(self) -> dict[str, str | None]:
        if self._keys is None:
            path = self.folder / "keys"
            self._keys = dict.fromkeys(path.read_text().split() if path.exists() else ())
            for segment in self.pending():
                self._keys.update(dict.fromkeys(key for _, key, _ in self._records(segment) if key))
        return self._keys

    def _remember(self, keys: list[str]) -> None:
        """The keys of a committed segment, kept (synced) before the segment goes."""
        if not keys:
            return
        known = self._known()
        for key in keys:
            known[key] = None
        path = self.folder / "keys"
        with open(path, "a") as out:
            out.write("".join(f"{key}\n" for key in keys))
            out.flush()
            os.fsync(out.fileno())
        if len(known) > 2 * KEEP:  # keep the newest KEEP, in a file written whole and then swapped in
            for key in list(known)[: len(known) - KEEP]:
                del known[key]
            staged = path.with_suffix(".new")
            staged.write_text("".join(f"{key}\n" for key in known))
            with open(staged) as synced:
                os.fsync(synced.fileno())
            os.replace(staged, path)

    # -- writing (the server) --------------------------------------------------------------
    def write(self, datasource: str, payload: bytes, key: str | None = None) -> int:
        """Append one record to the current segment (opened on first use); the fd to sync."""
        if self._fd is None:
            self._segment = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
            self._fd = os.open(self.folder / f"{self._segment}.wal", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._fds[self._segment] = self._fd
            sync_folder(self.folder)  # the new file's name is durable too
        name = datasource.encode() + (b"\n" + key.encode() if key else b"")
        record = _HEADER.pack(_MAGIC, zlib.crc32(payload, zlib.crc32(name)), len(name), len(payload)) + name + payload
        end = os.lseek(self._fd, 0, os.SEEK_END)
        view = memoryview(record)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:  # a full disk: no torn record stays between the records before and after it
            os.ftruncate(self._fd, end)
            raise
        if key:
            self._known()[key] = self._segment
            self._segment_keys.setdefault(self._segment, []).append(key)
        return self._fd

    @staticmethod
    def sync(fd: int) -> None:
        os.fsync(fd)

    def rotate(self) -> str | None:
        """End the current segment (the next write starts another); its name, if it has records."""
        segment, self._segment, self._fd = self._segment, None, None
        return segment

    def fd(self, segment: str) -> int | None:
        return self._fds.get(segment)

    def drop(self, segment: str | None) -> None:
        """The segment's rows are committed: delete it."""
        if segment is None:
            return
        keys = self._segment_keys.pop(segment, None)
        if keys is None and (self.folder / f"{segment}.wal").exists():  # a replayed segment
            keys = [key for _, key, _ in self._records(segment) if key]
        self._remember(keys or [])
        fd = self._fds.pop(segment, None)
        if fd is not None:
            os.close(fd)
        (self.folder / f"{segment}.wal").unlink(missing_ok=True)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._segment = self._fd = None

    # -- replay (whoever opens the store next) -----------------------------------------------
    def pending(self) -> list[str]:
        """Segments on disk and not in use by this process, oldest first."""
        return sorted(p.stem for p in self.folder.glob("*.wal") if p.stem not in self._fds)

    def read(self, segment: str) -> dict[str, list[bytes]]:
        """The segment's payloads by datasource, up to the first torn record."""
        out: dict[str, list[bytes]] = {}
        for datasource, _, payload in self._records(segment):
            out.setdefault(datasource, []).append(payload)
        return out

    def _records(self, segment: str):
        """(datasource, key or None, payload) of each record, up to the first torn one."""
        data = (self.folder / f"{segment}.wal").read_bytes()
        at = 0
        while at + _HEADER.size <= len(data):
            magic, crc, name_len, size = _HEADER.unpack_from(data, at)
            start = at + _HEADER.size
            end = start + name_len + size
            if magic != _MAGIC or end > len(data):
                break
            name, payload = data[start : start + name_len], data[start + name_len : end]
            if zlib.crc32(payload, zlib.crc32(name)) != crc:
                break
            datasource, _, key = name.decode().partition("\n")
            yield datasource, key or None, payload
            at = end
