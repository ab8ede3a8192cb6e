"""The tracker's disk spool: events not yet acknowledged, kept in append-only files.

A ``Tracker`` given ``spool_dir`` writes each event's line here before ``track()`` returns, and its
sender reads batches back from here; a batch is marked acknowledged once the target has it. So an
event outlives the app (``kill -9`` included: the line is in the operating system's hands when
``track()`` returns) and an outage of any length, up to ``max_spool_bytes``.

Layout: ``<spool_dir>/<writer>/`` per process that tracks, ``writer`` being its start time, pid and
a random tag. In it: ``lock`` (held with ``flock`` while the process lives), and segments
``<n>.ndjson`` (at most ``SEGMENT_BYTES`` each, then the next), each with ``<n>.acked``, the byte
offset up to which it is acknowledged. A segment wholly acknowledged is deleted, and a writer's
folder once empty. A ``Spool`` opened on a folder adopts every writer whose lock is free (its process
ended, or was killed) and sends its lines first. A batch resent after a kill, because its
acknowledgement was not recorded, has the same idempotency key (writer, segment, offsets) and the
same event ids, so it counts once.
"""

from __future__ import annotations

import bisect
import fcntl
import itertools
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Batch", "Spool"]

SEGMENT_BYTES = 16 * 1024 * 1024
_ACKED = 20  # digits of an acknowledged offset


@dataclass
class Batch:
    """Lines to send as one request: the payload (lines joined by newlines), how many, and the key a
    resend of the same lines carries. A batch of the tracker's queue in memory comes as ``items``
    (lines, or events not yet written) and gets its payload from ``seal``."""

    payload: bytes | None
    count: int
    key: str
    segment: "_Segment | None" = None
    end: int = 0  # the offset in the segment after the batch
    items: list | None = None

    def seal(self, max_bytes: int, write: Callable[[dict], bytes]) -> list[bytes]:
        """Write the payload from ``items`` (an event with ``write``), as many as fit in ``max_bytes``
        (one at least); the lines of those that did not fit."""
        lines = [item if type(item) is bytes else write(item) for item in self.items]
        keep = max(1, bisect.bisect_right(list(itertools.accumulate(map(len, lines))), max_bytes))
        self.payload, self.count, self.items = b"".join(lines[:keep])[:-1], keep, None
        return lines[keep:]


class _Segment:
    def __init__(self, path: Path, acked: int, end: int):
        self.path, self.acked, self.end = path, acked, end
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self.ack_fd = os.open(path.with_suffix(".acked"), os.O_RDWR | os.O_CREAT, 0o600)

    def close(self) -> None:
        for fd in (self.fd, self.ack_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        self.path.with_suffix(".acked").unlink(missing_ok=True)


class Spool:
    """One process's segments, and those it adopted from ended ones; ``put`` under the caller's lock."""

    def __init__(self, folder: str | Path, segment_bytes: int = SEGMENT_BYTES):
        self.root = Path(folder)
        self.root.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.lines = self.bytes = 0  # written, not yet taken to send
        self.recovered = 0  # lines adopted from ended writers
        self._segments: list[_Segment] = []  # oldest first: adopted ones, then this writer's
        self._adopted: list[tuple[Path, int]] = []  # (folder, lock fd) of ended writers
        self._adopt()
        self._start_writer()

    # -- this process's writer ------------------------------------------------------------------
    def _start_writer(self) -> None:
        self.writer = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(3)}"
        self.folder = self.root / self.writer
        self.folder.mkdir()
        self._lock_fd = os.open(self.folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._number = 0
        self._current = self._new_segment()

    def _new_segment(self) -> _Segment:
        self._number += 1
        segment = _Segment(self.folder / f"{self._number:08d}.ndjson", 0, 0)
        self._segments.append(segment)
        return segment

    def put(self, line: bytes) -> None:
        """One line, ending in a newline, written before this returns."""
        segment = self._current
        if segment.end >= self.segment_bytes:
            segment = self._current = self._new_segment()
        view = memoryview(line)
        while view:
            view = view[os.write(segment.fd, view):]
        segment.end += len(line)
        self.lines += 1
        self.bytes += len(line)

    # -- the sender -------------------------------------------------------------------------------
    def take(self, max_lines: int, max_bytes: int) -> Batch | None:
        """The next batch from where the last acknowledged one ended, or None when nothing waits."""
        while self._segments:
            segment = self._segments[0]
            if segment.acked < segment.end:
                break
            if segment is self._current:
                return None
            self._segments.pop(0).remove()
            self._forget_adopted()
        else:
            return None
        data = os.pread(segment.fd, min(max_bytes, segment.end - segment.acked), segment.acked)
        cut = data.rfind(b"\n") + 1
        if not cut:  # one line longer than a batch: alone
            data = os.pread(segment.fd, segment.end - segment.acked, segment.acked)
            cut = data.find(b"\n") + 1
        parts = data[:cut].split(b"\n", max_lines)
        if len(parts) > max_lines:
            cut -= len(parts[-1])
        count = min(len(parts) - 1, max_lines)
        end = segment.acked + cut
        key = f"{segment.path.parent.name}-{segment.path.stem}-{segment.acked}-{end}"
        return Batch(data[: cut - 1], count, key, segment, end)

    def ack(self, batch: Batch) -> None:
        """The batch is delivered: recorded, so neither this process nor an adopter sends it again."""
        segment = batch.segment
        segment.acked = batch.end
        os.pwrite(segment.ack_fd, f"{batch.end:0{_ACKED}d}".encode(), 0)
        self.lines -= batch.count
        self.bytes -= len(batch.payload) + 1

    def close(self) -> None:
        """Stop writing: segments wholly acknowledged go; the rest stay for the next spool on the folder."""
        for segment in self._segments:
            if segment.acked >= segment.end:
                segment.remove()
            else:
                segment.close()
        self._segments = []
        self._forget_adopted(every=True)
        if not any(self.folder.glob("*.ndjson")):
            shutil.rmtree(self.folder, ignore_errors=True)
        os.close(self._lock_fd)

    def after_fork(self) -> None:
        """In a forked child: the parent's files stay the parent's; the child writes its own."""
        for segment in self._segments:
            segment.close()
        for _, fd in self._adopted:
            os.close(fd)
        os.close(self._lock_fd)
        self._segments, self._adopted = [], []
        self.lines = self.bytes = self.recovered = 0
        self._start_writer()

    # -- adopting ended writers ---------------------------------------------------------------------
    def _adopt(self) -> None:
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            try:
                fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its writer lives
                os.close(fd)
                continue
            self._adopted.append((folder, fd))
            for path in sorted(folder.glob("*.ndjson")):
                acked = path.with_suffix(".acked")
                text = acked.read_bytes()[:_ACKED] if acked.exists() else b""
                start = int(text) if text.strip() else 0
                data = path.read_bytes()
                end = data.rfind(b"\n") + 1  # a line torn by the kill was never tracked
                if end > start:
                    self.recovered += data.count(b"\n", start, end)
                    self.bytes += end - start
                self._segments.append(_Segment(path, min(start, end), end))
        self.lines = self.recovered

    def _forget_adopted(self, every: bool = False) -> None:
        """Adopted writers whose segments are all sent: their folders go."""
        live = {segment.path.parent for segment in self._segments}
        for folder, fd in list(self._adopted):
            if every or folder not in live:
                if not any(folder.glob("*.ndjson")):
                    shutil.rmtree(folder, ignore_errors=True)
                os.close(fd)
                self._adopted.remove((folder, fd))
