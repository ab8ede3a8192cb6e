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

A record is ``EVW1``, then the CRC32, the datasource name's length and the payload's length
(little-endian 4, 2 and 4 bytes), then the name and the payload. A record torn by the crash (short,
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


def import_id(segment: str, datasource: str) -> str:
    return f"wal-{segment}-{datasource}"


class WriteAheadLog:
    def __init__(self, store_path: Path):
        self.folder = Path(store_path) / FOLDER
        self.folder.mkdir(exist_ok=True)
        self._segment: str | None = None
        self._fd: int | None = None
        self._fds: dict[str, int] = {}  # open segments, until dropped

    # -- writing (the server) --------------------------------------------------------------
    def write(self, datasource: str, payload: bytes) -> int:
        """Append one record to the current segment (opened on first use); the fd to sync."""
        if self._fd is None:
            self._segment = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
            self._fd = os.open(self.folder / f"{self._segment}.wal", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._fds[self._segment] = self._fd
            sync_folder(self.folder)  # the new file's name is durable too
        name = datasource.encode()
        record = _HEADER.pack(_MAGIC, zlib.crc32(payload, zlib.crc32(name)), len(name), len(payload)) + name + payload
        end = os.lseek(self._fd, 0, os.SEEK_END)
        view = memoryview(record)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:  # a full disk: no torn record stays between the records before and after it
            os.ftruncate(self._fd, end)
            raise
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
        data = (self.folder / f"{segment}.wal").read_bytes()
        out: dict[str, list[bytes]] = {}
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
            out.setdefault(name.decode(), []).append(payload)
            at = end
        return out
