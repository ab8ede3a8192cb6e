"""``evtrack send``: stream NDJSON to a target in bounded batches, and account for every line.

- Input is read in blocks that end at a newline: constant memory whatever the file size. A file
  that is one JSON document (an array of objects, or one object over several lines) is turned into
  NDJSON first, as the Events API turns such a body (``ndjson.read_head``).
- Every line is checked where it is stored, by the engine's SQL (embedded, or behind the host's
  Events API), so both paths classify lines alike. The sender checks one thing only, what no
  server can: to a host, a line longer than the engine takes (``MAX_LINE_BYTES``) cannot be sent
  whole in a request, so it is read past and written to a rejects file with its line number and
  the engine's own reason. What is sent goes gzip-compressed, ``wait=true``, in requests under
  ``batch_bytes``, ``concurrency`` at a time, retried as ``client.Retry`` says.
- A checkpoint (the byte offset up to which every batch is acknowledged) lets ``--resume``
  continue an interrupted send without resending acknowledged batches.
- Every non-blank line ends up stored, quarantined or rejected, and the receipt says which.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .engine.ingest.statement import SHOWN_BYTES
from .engine.ingest.csvrows import file_format
from .errors import EvtrackError
from .ndjson import read_head
from .settings import MAX_BATCH_BYTES

if TYPE_CHECKING:
    from .targets import Target

__all__ = ["Batch", "Checkpoint", "Receipt", "SendOptions", "batches", "send_batches", "send_path"]


@dataclass
class Receipt:
    lines: int = 0
    stored: int = 0
    quarantined: int = 0
    rejected: int = 0
    retries: int = 0
    reasons: list[str] = field(default_factory=list)  # the first quarantine reasons
    rejects: list[str] = field(default_factory=list)  # the first rejects, "line N: reason"
    rejects_file: str | None = None

    def add(self, other: "Receipt") -> None:
        for name in ("lines", "stored", "quarantined", "rejected", "retries"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.reasons += other.reasons[: max(0, 5 - len(self.reasons))]
        self.rejects += other.rejects[: max(0, 5 - len(self.rejects))]

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Batch:
    start: int  # byte offset of the batch in the input
    end: int
    first_line: int  # 1-based line number of its first line
    data: bytes  # the lines to send
    next_line: int  # the number of the line after it
    rejects: list[dict] = field(default_factory=list)  # lines read past, not sent: {"line", "reason", "text"}


def batches(stream, batch_bytes: int = MAX_BATCH_BYTES, offset: int = 0, first_line: int = 1,
            max_line: int | None = None, head: bytes = b"") -> Iterator[Batch]:
    """Batches of whole lines, each under ``batch_bytes`` unless one line alone is longer.

    ``head`` is what was already read from ``stream``. A line longer than ``max_line`` bytes is a batch
    of its own with nothing to send and a reject, read past without being held whole.
    """
    rest = head
    while True:
        chunk = stream.read(batch_bytes)
        data = rest + chunk
        if not data:
            return
        long = _long_line(data, max_line) if max_line else -1
        if long == 0:
            batch, rest = _past_long_line(stream, data, batch_bytes, max_line, offset, first_line)
        else:
            end = long if long > 0 else len(data)  # what may go in this batch: the lines before a long one
            whole = long > 0 or not chunk  # data[:end] ends at the end of a line
            if whole and end <= batch_bytes:
                cut = end
            else:  # at the last newline under batch_bytes, else after one line longer than a batch
                cut = (data.rfind(b"\n", 0, min(end, batch_bytes)) + 1 or data.find(b"\n", 0, end) + 1
                       or (end if whole else 0))
            if not cut:  # one line longer than a batch, not all read yet
                rest = data
                continue
            sent, rest = data[:cut], data[cut:]
            batch = Batch(offset, offset + cut, first_line, sent, first_line + sent.count(b"\n"))
        yield batch
        offset, first_line = batch.end, batch.next_line


def _long_line(data: bytes, limit: int) -> int:
    """Where the first line of ``data`` longer than ``limit`` bytes starts, or -1.

    A line with no newline in the ``limit + 1`` bytes from its start is one: a search per ``limit``
    bytes of input, not one per line.
    """
    start = 0
    while len(data) - start > limit:
        newline = data.rfind(b"\n", start, start + limit + 1)
        if newline < 0:
            return start
        start = newline + 1
    return -1


def _past_long_line(stream, data: bytes, batch_bytes: int, limit: int, offset: int, line: int) -> tuple[Batch, bytes]:
    """The batch of the line over the limit that ``data`` starts with, and what follows it.

    Only its first bytes are kept, for the reason; the rest is read and dropped a block at a time."""
    shown, size = data[:SHOWN_BYTES].decode("utf-8", "replace"), 0
    while (newline := data.find(b"\n")) < 0 and (more := stream.read(batch_bytes)):
        size, data = size + len(data), more
    if newline < 0:  # the input ends inside the line
        size, ends, rest = size + len(data), 0, b""
    else:
        size, ends, rest = size + newline, 1, data[newline + 1:]
    # The engine's own words for such a line (engine/ingest.py), so that both paths say the same.
    reason = f"Line is too long: {size} bytes, at most {limit}: '{shown}...'"
    reject = {"line": line, "reason": reason, "text": shown}
    return Batch(offset, offset + size + ends, line, b"", line + ends, [reject]), rest


class Checkpoint:
    """The byte offset below which every batch of ``source`` is acknowledged, kept in ``path``."""

    def __init__(self, path: Path, source: Path):
        self.path, self.source = Path(path), Path(source).resolve()
        self._done: dict[int, int] = {}  # acknowledged batches: start -> end
        self.offset, self.line = 0, 1
        self._lock = threading.Lock()

    def load(self) -> None:
        if not self.path.exists():
            return
        saved = json.loads(self.path.read_text())
        if saved.get("source") == str(self.source) and saved.get("offset", 0) <= self.source.stat().st_size:
            self.offset, self.line = saved["offset"], saved.get("line", 1)

    def acknowledge(self, batch: Batch) -> None:
        with self._lock:
            self._done[batch.start] = batch.end, batch.next_line
            advanced = False
            while self.offset in self._done:
                self.offset, self.line = self._done.pop(self.offset)
                advanced = True
            if advanced:
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps({"source": str(self.source), "offset": self.offset, "line": self.line}))
                os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def send_batches(
    source: Iterator[Batch],
    deliver: Callable[[bytes], Receipt],
    *,
    concurrency: int = 1,
    rejects: Callable[[list[dict]], None] | None = None,
    checkpoint: Checkpoint | None = None,
    progress: Callable[[int, Receipt], None] | None = None,
) -> Receipt:
    """Deliver each batch (its rejected lines recorded), ``concurrency`` at a time; the total receipt.

    A failed delivery stops the send after the batches already in flight: the checkpoint then
    covers exactly what was acknowledged.
    """
    total = Receipt()
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        running: dict[Future, Batch] = {}
        try:
            for batch in source:
                if batch.rejects:
                    rejects(batch.rejects) if rejects else None
                    total.add(Receipt(lines=len(batch.rejects), rejected=len(batch.rejects),
                                      rejects=[f"line {r['line']}: {r['reason']}" for r in batch.rejects]))
                running[pool.submit(_deliver, deliver, batch.data)] = batch
                while len(running) >= max(1, concurrency):
                    _collect(running, total, checkpoint, progress)
            while running:
                _collect(running, total, checkpoint, progress)
        finally:
            for future in running:
                future.cancel()
    return total


def _deliver(deliver: Callable[[bytes], Receipt], payload: bytes) -> Receipt:
    if not payload.strip():
        return Receipt()
    return deliver(payload)


def _collect(running: dict, total: Receipt, checkpoint, progress) -> None:
    """Wait for one delivery at least, and account for every one finished."""
    done, _ = wait(running, return_when=FIRST_COMPLETED)
    for future in done:
        batch = running.pop(future)
        receipt = future.result()  # a delivery that failed for good stops the send here
        total.add(receipt)
        if checkpoint is not None:
            checkpoint.acknowledge(batch)
        if progress is not None:
            progress(batch.end - batch.start, receipt)


@dataclass(frozen=True)
class SendOptions:
    batch_bytes: int = MAX_BATCH_BYTES
    # None: the target's own default (see Remote.delivery).
    concurrency: int | None = None
    wait: bool = True
    resume: bool = False
    checkpoint: Path | None = None
    rejects: Path | None = None
    format: str | None = None  # ndjson, csv or parquet; None: by the file's name


@contextlib.contextmanager
def _named_as(path: Path, fmt: str):
    """``path``, or a link to it named for ``fmt`` (the engine reads a file's format from its name)."""
    if file_format(path) == fmt:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="evtrack-send-") as folder:
        link = Path(folder) / (f"input.{fmt}" + (".gz" if path.name.endswith(".gz") else ""))
        link.symlink_to(path.resolve())
        yield link


def open_input(path: Path):
    if str(path) == "-":
        import sys

        return sys.stdin.buffer
    if path.name.endswith(".gz"):
        import gzip

        return gzip.open(path, "rb")
    return open(path, "rb")


def send_path(target: Target, datasource: str, path: Path, options: SendOptions,
              progress: Callable[[int, Receipt], None] | None = None) -> Receipt:
    """Send one input (a file, a .gz file or ``-``) to ``target``; every line accounted for."""
    delivery = target.delivery(datasource, options)
    seekable = str(path) != "-"
    fmt = options.format or (file_format(path) if seekable else "ndjson")
    if fmt != "ndjson":
        # CSV and Parquet are read by ClickHouse, whole, in one pass: the embedded store does it here;
        # a host takes them as a datasource append (`tb datasource append`), not as Events API lines.
        if delivery.whole_file is None or not seekable:
            raise EvtrackError(f"{path.name}: send {fmt.upper()} files to the embedded store, or to a host with "
                               f"`tb datasource append {datasource} FILE`; evtrack send --host and stdin take NDJSON")
        with _named_as(path, fmt) as readable:
            return delivery.whole_file(readable)
    checkpoint = None
    if seekable:
        checkpoint = Checkpoint(options.checkpoint or path.with_name(path.name + ".checkpoint.json"), path)
        if options.resume:
            checkpoint.load()
    start = checkpoint.offset if checkpoint else 0
    with open_input(path) as stream:
        head, document = read_head(stream)
        if document is None and delivery.whole_file is not None and seekable and progress is None and not start:
            receipt = delivery.whole_file(path)
            if checkpoint:
                checkpoint.clear()
            return receipt
        rejects_path = options.rejects or Path(f"{'stdin' if not seekable else path.name}.rejects.ndjson")
        if start:
            _keep_rejects_before(rejects_path, checkpoint.line)  # a resumed send adds to its rejects file
        else:
            rejects_path.unlink(missing_ok=True)  # a new send starts a new one
        writer = _RejectsWriter(rejects_path)
        # A document is sent as the NDJSON it becomes: a checkpoint's offset and lines count in that.
        source = stream if document is None else io.BytesIO(document)
        if start or document is not None:
            source.seek(start)
            head = b""
        receipt = send_batches(
            batches(source, options.batch_bytes, start, checkpoint.line if checkpoint else 1, delivery.max_line, head),
            delivery.deliver, concurrency=delivery.concurrency, rejects=writer.write, checkpoint=checkpoint,
            progress=progress)
    if checkpoint:
        checkpoint.clear()
    receipt.rejects_file = str(rejects_path) if rejects_path.exists() else None
    return receipt


def _keep_rejects_before(path: Path, line: int) -> None:
    """Keep the rejects of lines before ``line``: a resumed send reads the others again, and
    would otherwise record their rejects twice."""
    if not path.exists():
        return
    kept = path.with_name(path.name + ".tmp")
    with open(path, encoding="utf-8") as records, open(kept, "w", encoding="utf-8") as out:
        out.writelines(record for record in records if json.loads(record)["line"] < line)
    os.replace(kept, path)


class _RejectsWriter:
    """Appends reject records as JSON lines, opening the file only if there is something to write."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, records: list[dict]) -> None:
        with open(self.path, "a", encoding="utf-8") as out:
            out.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
