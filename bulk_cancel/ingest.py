"""Reading the input into the ledger while the pipeline sends: a run's first request leaves
as soon as the first rows are durably in the ledger, not after the whole file is read.

The reading runs on the event loop, a slice at a time: parse rows, add them to the ledger
(with the reading's place in the ledger's meta), tell the pipeline's
:class:`~bulk_cancel.pipeline.Feed`, yield to the loop. It commits every :data:`COMMIT_EVERY_S`;
between those, any commit of the pipeline's (it commits before it sends a batch) takes the
slices along, and each slice leaves rows and meta consistent, so every commit is. One SQLite
connection serves both, with no lock between threads; a slice lasts about :data:`SLICE_S`, so
the rate gate is never kept waiting long (it counts arrivals: a stall costs rate, never
overshoots it).

The input's SHA-256 (the resume guard) is computed by :class:`InputHasher` in a thread beside
the reading. With each slice the ledger stores how far that hash got (bytes and the digest of
that prefix) and how many rows were read, so that ``--resume`` of a run killed mid-read refuses
another file (:func:`prefix_checksum` differs), skips the rows already in the ledger instead of
counting them as duplicates, and reads on from there.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog

from . import readers
from .errors import InputError, LedgerError
from .ledger import Ledger
from .pipeline import Feed, Progress
from .shard import Shard

log = structlog.get_logger("bulk_cancel")

#: How long one slice of reading keeps the event loop before it commits and yields. The rate
#: gate lets out one burst per turn of the loop (4 requests at 1,500/s), so a turn must come
#: every 2.7 ms to keep the pace: measured with 20 ms slices, 52 requests/s instead of 1,490.
SLICE_S: Final = 0.0015
#: Rows per chunk from the reader while streaming: about one slice's worth. Each chunk costs the
#: ledger a fixed overhead (its executemany, the duplicate check's numpy calls): measured on a
#: CSV of two subaccounts, reading and storing cost 11.3 µs a row in chunks of 50, 7.4 in 200.
CHUNK_ROWS: Final = 200
#: Between slices the reading yields the loop for as long as the slice took (half the loop's
#: time), up to :data:`AHEAD_PAUSE` times as long once :data:`AHEAD_ROWS` rows read are waiting
#: to be sent: then the sending needs the loop more than the reading does, which slows down
#: until the rows waiting fall below that again.
AHEAD_ROWS: Final = 20_000
AHEAD_PAUSE: Final = 20.0
#: How often the reading commits on its own. A commit writes every page the rows since the last
#: one touched, so fewer rows per commit cost more per row (measured with 30,000 rows, when an
#: index on the random umids touched a page per row: 15 µs a row at a commit per 1.5 ms slice,
#: 4 at one per 300 rows; rows are now appended, and a commit touches few pages).
COMMIT_EVERY_S: Final = 0.1
_BLOCK_BYTES: Final = 1 << 20
#: How often (in bytes hashed) the hasher publishes the digest of the prefix read so far.
_PREFIX_EVERY_BYTES: Final = 8 << 20

_TEXT_FORMATS: Final = frozenset({readers.Format.CSV, readers.Format.TSV, readers.Format.TXT})


def own_rows(chunk: list[readers.InputRow], shard: Shard) -> list[readers.InputRow]:
    """The rows of *chunk* that *shard* owns (``--shard K/N``)."""
    return [row for row in chunk if shard.owns(row.subaccount, row.target_id)]


# ---------------------------------------------------------------------------- counting


@dataclass(frozen=True, slots=True)
class RowCount:
    """How many rows the input holds, before reading it: exact, or an estimate."""

    rows: int
    exact: bool
    at_most: bool
    """The input holds no more rows than this (true of an exact count and of a line count)."""
    how: str
    """Where the figure comes from, for people: "Parquet metadata", "lines in the file"."""


def count_rows(source: readers.InputSource, *, sheet: str | None = None) -> RowCount | None:
    """A cheap count of *source*'s rows (well under a second per gigabyte), or None (stdin).

    Parquet: the row count in the file's metadata (exact). CSV, TSV, TXT: the line breaks in the
    file less the header (exact when no value is quoted: then every line is one row; with quotes
    a value may span lines, so it is an upper bound and said to be "about"). XLSX: the sheet's
    stated dimension (an estimate: Excel writes it, other tools may not).
    """
    path, fmt = source.path, source.format
    if path == readers.STDIN:
        return None
    try:
        if fmt is readers.Format.PARQUET:
            import pyarrow.parquet as pq

            rows = pq.ParquetFile(path).metadata.num_rows
            return RowCount(rows, True, True, "Parquet metadata")
        if fmt is readers.Format.XLSX:
            return _xlsx_rows(path, sheet)
        lines, quoted, lone_cr = count_lines(path)
    except Exception:  # a count is a courtesy: the reading reports the real problems
        return None
    header = 0 if fmt is readers.Format.TXT else 1
    # Each row takes at least one line, so the lines bound the rows, unless some lines end in a
    # lone CR (old Mac files), which this count does not see. Blank lines are counted as rows.
    exact = not quoted and not lone_cr
    return RowCount(max(0, lines - header), exact, not lone_cr, "lines in the file")


def count_lines(path: str) -> tuple[int, bool, bool]:
    """``(line breaks, holds a double quote, holds a lone CR)`` of a file read in binary; a last
    line without a line break counts as one."""
    lines = 0
    quoted = lone_cr = False
    last = b"\n"
    with open(path, "rb") as fh:
        while block := fh.read(4 * _BLOCK_BYTES):
            if block.endswith(b"\r"):
                block += fh.read(1)  # a CRLF split between two blocks is not a lone CR
            lines += block.count(b"\n")
            quoted = quoted or b'"' in block
            lone_cr = lone_cr or (b"\r" in block and block.count(b"\r") != block.count(b"\r\n"))
            last = block[-1:]
    if last != b"\n":
        lines += 1
    return lines, quoted, lone_cr


def _xlsx_rows(path: str, name: str | None) -> RowCount | None:
    import openpyxl

    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        sheet = book[name] if name is not None else book.worksheets[0]
        rows = sheet.max_row
    finally:
        book.close()
    how = "the sheet's stated size" if name is not None else "the first sheet's stated size"
    return None if not rows else RowCount(max(0, rows - 1), False, False, how)


# ---------------------------------------------------------------------------- the checksum


class InputHasher:
    """Hashes a file in a thread (hashlib and file reads release the GIL), publishing the
    digest of the prefix read so far every few MiB; :attr:`checksum` is set at the end."""

    def __init__(self, path: str) -> None:
        self.prefix: tuple[int, str] = (0, hashlib.sha256().hexdigest())
        self.checksum: str | None = None
        self.lines = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(path,), name="input-checksum", daemon=True
        )
        self._thread.start()

    def _run(self, path: str) -> None:
        digest = hashlib.sha256()
        done = published = 0
        try:
            with open(path, "rb") as fh:
                while not self._stop.is_set() and (block := fh.read(_BLOCK_BYTES)):
                    digest.update(block)
                    self.lines += block.count(b"\n")
                    done += len(block)
                    if done - published >= _PREFIX_EVERY_BYTES:
                        self.prefix = (done, digest.copy().hexdigest())
                        published = done
            if not self._stop.is_set():
                self.prefix = (done, digest.hexdigest())
                self.checksum = f"sha256:{digest.hexdigest()}"
        except OSError as exc:
            self.error = exc.strerror or type(exc).__name__

    def join(self) -> str | None:
        """Wait for the whole file to be hashed; its checksum (None if it could not be read)."""
        self._thread.join()
        return self.checksum

    def close(self) -> None:
        """Stop hashing (the run is ending without its input read)."""
        self._stop.set()
        self._thread.join()


def prefix_checksum(path: str, nbytes: int) -> str | None:
    """The SHA-256 hex digest of the first *nbytes* of *path*; None if it is shorter."""
    digest = hashlib.sha256()
    left = nbytes
    with open(path, "rb") as fh:
        while left > 0:
            block = fh.read(min(_BLOCK_BYTES, left))
            if not block:
                return None
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def check_same_input(path: str, meta: dict[str, Any], ledger_file: str) -> None:
    """Refuse *path* unless it is the input the ledger's run was reading: its full checksum if
    that run got to the end of the file, else the digest of the prefix it had hashed."""
    prefix = meta.get("input_prefix")
    if meta.get("input_checksum") is not None or not prefix:
        return  # compared in full by the caller (or nothing was read: nothing to compare)
    try:
        same = prefix_checksum(path, int(prefix["bytes"])) == prefix["sha256"]
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    if not same:
        raise LedgerError(
            f"{path}: not the input of the run in {ledger_file} (checksum of the part read "
            "differs); resume with the original file, or start afresh with another --output"
        )


# ---------------------------------------------------------------------------- streaming


@dataclass(slots=True)
class Reading:
    """How far the reading got; kept in the ledger's meta with every slice."""

    input_rows: int = 0
    """Non-blank rows read (duplicates and invalid ones included)."""
    duplicates: int = 0
    blank_rows: int = 0
    complete: bool = False

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Reading:
        return cls(
            input_rows=int(meta.get("input_rows", 0)),
            duplicates=int(meta.get("duplicates", 0)),
            blank_rows=int(meta.get("blank_rows", 0)),
            complete=bool(meta.get("ingest_complete")),
        )


class Streamer:
    """Reads *source* into *ledger* in slices while the pipeline sends, telling *feed*.

    The ``reading.input_rows`` rows an earlier run of this ledger read (resumed mid-read) are
    read again but not added, and the last of them must match *last_row* (its line and id).
    """

    def __init__(
        self,
        ledger: Ledger,
        source: readers.InputSource,
        feed: Feed,
        progress: Progress,
        *,
        reading: Reading,
        hasher: InputHasher | None,
        known_subaccounts: Iterable[str] = (),
        last_row: Sequence[object] | None = None,
        now: Callable[[], str],
        max_rows: int | None = None,
        shard: Shard | None = None,
    ) -> None:
        self._ledger = ledger
        self._source = source
        self.feed = feed
        self._progress = progress
        self.reading = reading
        self._hasher = hasher
        self._subaccounts = set(known_subaccounts)
        self._lanes_added = 0  # how many of the ledger's added_to_send keys were seen
        self._skip = reading.input_rows
        self._last_row = last_row
        self._now = now
        self._max_rows = max_rows
        self._shard = shard
        self.stopped = False
        """Set by :meth:`stop`: the reading ends at the next slice, unfinished."""
        self._prefix_stored = (-1, "")
        self._last: readers.InputRow | None = None
        self._ended = False
        self._committed_at = -math.inf  # the first slice commits at once

    def stop(self) -> None:
        """End the reading at the next slice, unfinished (a signal, a failed pipeline)."""
        self.stopped = True

    def abandon(self) -> None:
        """Never to be run: stop the hasher too."""
        self.stopped = True
        if self._hasher is not None:
            self._hasher.close()

    async def run(self, *, sending_stopped: Callable[[], bool] = lambda: False) -> Reading:
        """Read to the end, or until :meth:`stop`; the feed is closed however this ends.

        Once *sending_stopped* (a rejected key, the failure threshold) the rest is read flat
        out, so that the results still hold every row (``not_attempted``)."""
        progress = self._progress
        progress.reading = True
        try:
            chunks = iter(self._source)
            while not self.stopped:
                started = time.monotonic()
                self._slice(chunks)
                if self._ended:
                    break
                waiting = 0 if sending_stopped() else progress.total - progress.done
                ahead = min(1.0, waiting / AHEAD_ROWS)
                took = time.monotonic() - started
                await asyncio.sleep(took * (1.0 + (AHEAD_PAUSE - 1.0) * ahead))
            if self._ended:
                self._finish()
            else:
                self._ledger.commit()  # stopped: what was read so far, with its place
        finally:
            progress.reading = False
            self.feed.close()
            if self._hasher is not None and not self.reading.complete:
                self._hasher.close()
        return self.reading

    def _slice(self, chunks: Iterator[list[readers.InputRow]]) -> None:
        """Read, add and commit rows for about :data:`SLICE_S`."""
        deadline = time.monotonic() + SLICE_S
        reading, progress = self.reading, self._progress
        new: list[str] = []
        added = False
        while not added or time.monotonic() < deadline:  # at least one chunk per slice
            chunk = next(chunks, None)
            if chunk is None:
                self._ended = True
                break
            if self._skip:
                chunk = self._skipped(chunk)
                if not chunk:
                    continue
            reading.input_rows += len(chunk)
            if self._max_rows is not None and reading.input_rows > self._max_rows:
                raise InputError(
                    f"{self._source.path}: more than max_rows={self._max_rows} rows; raise "
                    "--max-rows if this many cancels is intended"
                )
            # A shard reads (and counts) every row, and keeps its own.
            owned = chunk if self._shard is None else own_rows(chunk, self._shard)
            to_send = self._ledger.added_to_send
            before = sum(to_send.values())
            reading.duplicates += self._ledger.add(owned, self._now())
            progress.total += sum(to_send.values()) - before
            if len(to_send) > self._lanes_added:  # subaccounts with their first rows to send
                for sub in itertools.islice(to_send, self._lanes_added, None):  # in order added
                    if sub not in self._subaccounts:
                        self._subaccounts.add(sub)
                        new.append(sub)
                self._lanes_added = len(to_send)
            self._last = chunk[-1]
            progress.read = reading.input_rows
            added = True
        if added:
            self._store(commit=time.monotonic() - self._committed_at >= COMMIT_EVERY_S)
            self.feed.publish(new)

    def _skipped(self, chunk: list[readers.InputRow]) -> list[readers.InputRow]:
        """Drop the rows an earlier run already read; check the last of them is the same row."""
        n = min(self._skip, len(chunk))
        self._skip -= n
        if self._skip == 0 and self._last_row is not None:
            last = chunk[n - 1]
            if [last.line, last.target_id] != list(self._last_row):
                raise LedgerError(
                    f"{self._source.path}: not the input of the run being resumed (row "
                    f"{last.line} differs); resume with the original file, or start afresh "
                    "with another --output"
                )
        if self._skip == 0:
            self._progress.read = self.reading.input_rows
        return chunk[n:]

    def _store(self, *, commit: bool) -> None:
        """Note the reading's place in the ledger's meta, beside the rows; *commit* both."""
        reading = self.reading
        meta: dict[str, Any] = {
            "ingest_last": None if self._last is None else [self._last.line, self._last.target_id],
            "input_rows": reading.input_rows,
            "duplicates": reading.duplicates,
            "blank_rows": self._source.blank_rows,
        }
        progress = self._progress
        hasher = self._hasher
        if progress.read_total is None and hasher is not None and hasher.checksum is not None:
            # Not counted before reading (off a terminal): the hasher's line count, an estimate.
            text = self._source.format in _TEXT_FORMATS
            if text:
                header = 0 if self._source.format is readers.Format.TXT else 1
                progress.read_total = max(reading.input_rows, hasher.lines - header)
        if hasher is not None and hasher.prefix != self._prefix_stored:
            self._prefix_stored = hasher.prefix
            done, digest = self._prefix_stored
            meta["input_prefix"] = {"bytes": done, "sha256": digest}
        self._ledger.set_meta(meta)
        if commit:
            self._ledger.commit()
            self._committed_at = time.monotonic()

    def _finish(self) -> None:
        reading, progress = self.reading, self._progress
        reading.blank_rows = self._source.blank_rows
        reading.complete = True
        meta: dict[str, Any] = {
            "ingest_complete": True,
            "input_rows": reading.input_rows,
            "duplicates": reading.duplicates,
            "blank_rows": reading.blank_rows,
        }
        if self._hasher is not None:
            checksum = self._hasher.join()
            if checksum is not None:
                meta["input_checksum"] = checksum
            else:
                log.warning("ingest.no_checksum", problem=self._hasher.error)
        self._ledger.set_meta(meta)
        self._ledger.commit()
        progress.read = progress.read_total = reading.input_rows
        progress.read_total_exact = True
        log.info(
            "ingest.done",
            input_rows=reading.input_rows,
            duplicates=reading.duplicates,
            blank_rows=reading.blank_rows,
        )
