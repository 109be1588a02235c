"""Delimited text: CSV and TSV files, and CSV on stdin, through the standard library's ``csv``
parser over :mod:`~bulk_cancel.readers.decoding`'s lines.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from typing import IO, BinaryIO

from ..errors import InputError
from .columns import HEADER_SCAN_ROWS, _Columns, _columns_of, _Options, _scan_header, _source
from .decoding import _Text
from .files import _fail, _HashingReader, _open_binary, _read
from .rows import STDIN, Format, InputSource, _Records


class _Delimited:
    """One pass of the ``csv`` parser over a text stream: the header first, then the records."""

    def __init__(
        self, raw: IO[bytes] | _HashingReader, options: _Options, delimiter: str | None
    ) -> None:
        self._label = options.label
        text = _Text(raw, options.label, options.encoding)
        self.utf8_bom = text.utf8_bom
        lines = text.lines()
        peeked: list[str] = []
        self.delimiter = delimiter or _sniff_header_line(lines, peeked, options)
        self.past_end = False
        """Whether the parser has asked for a line after the last one."""
        self.reader = csv.reader(
            self._feed(itertools.chain(peeked, lines)), delimiter=self.delimiter
        )
        self.record = 0
        self.scan = _scan_header(self.records(), options)
        """Where the header is; the parser stands just after it (or at the end)."""

    def _feed(self, lines: Iterator[str]) -> Iterator[str]:
        yield from lines
        self.past_end = True

    def records(self) -> Iterator[tuple[int, list[str]]]:
        """The records after those read so far, numbered from 1 (blank lines are records)."""
        reader = self.reader
        start = reader.line_num + 1
        try:
            for row in reader:
                if self.past_end:
                    raise _unclosed_quote(self._label, start)
                self.record += 1
                yield self.record, row
                start = reader.line_num + 1
        except csv.Error as exc:
            raise _fail(self._label, f"line {reader.line_num}: {_csv_problem(exc)}") from None


def _unclosed_quote(label: str, line: int) -> InputError:
    # csv.reader (non-strict) hands back an unterminated quoted value at the end of the input as
    # if it were fine, swallowing every row after it: refuse rather than silently lose rows.
    # A record that arrives after the parser asked for a line past the last one is that value.
    return _fail(
        label, f"line {line}: a quote opened in this row is never closed; check the quoting"
    )


def _sniff_header_line(lines: Iterator[str], peeked: list[str], options: _Options) -> str:
    """The delimiter of the header line, found as :func:`_scan_header` will find it; the
    physical lines read to find it are appended to *peeked*."""
    first: str | None = None
    seen = 0
    for number, line in enumerate(lines, start=1):
        peeked.append(line)
        if options.header_row is not None:
            if number >= options.header_row:
                return _sniff_delimiter(line)
            continue
        if not line.strip():
            continue
        first = first or line
        delimiter = _sniff_delimiter(line)
        try:
            if options.is_header(next(csv.reader([line], delimiter=delimiter), [])):
                return delimiter
        except (InputError, csv.Error):  # the real parse reports it
            return delimiter
        seen += 1
        if seen >= HEADER_SCAN_ROWS:
            break
    return _sniff_delimiter(first or "")


def _sniff_delimiter(first_line: str) -> str:
    """``,`` unless the header line has none and has semicolons or tabs instead."""
    if "," in first_line:
        return ","
    counts = {d: first_line.count(d) for d in (";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _csv_problem(exc: csv.Error) -> str:
    text = str(exc)
    if "field larger than field limit" in text:
        return "a value longer than 128 KiB (a quote left open?); check the quoting"
    if "NUL" in text:
        return "contains a NUL byte: this is not a text file; export the ids as CSV"
    return f"{text}; check the quoting"


def _delimited_rows(parsed: _Delimited, columns: _Columns, label: str) -> _Records:
    width = columns.width
    id_i, sub_i = columns.id_index, columns.sub_index
    extras = _getter(columns.extra_indexes)
    padding = [""] * width
    reader = parsed.reader
    number = parsed.record
    start = reader.line_num + 1
    try:
        for row in reader:
            if parsed.past_end:
                raise _unclosed_quote(label, start)
            number += 1
            n = len(row)
            if n < width:
                row.extend(padding[n:])
            elif n > width and any(cell.strip() for cell in row[width:]):
                raise _fail(
                    label,
                    f"line {reader.line_num} has {n} values but the header has {width} "
                    f"columns; quote values that contain {parsed.delimiter!r}",
                )
            yield number, row[id_i], None if sub_i is None else row[sub_i], extras(row)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise _fail(label, f"line {reader.line_num}: {_csv_problem(exc)}") from None


def _getter(indexes: tuple[int, ...]) -> Callable[[Sequence[str]], tuple[str, ...]]:
    if not indexes:
        return lambda row: ()
    if len(indexes) == 1:
        (only,) = indexes
        return lambda row: (row[only],)
    return itemgetter(*indexes)  # a tuple for 2+ indexes


def _open_delimited(path: str, fmt: Format, options: _Options) -> InputSource:
    forced = "\t" if fmt is Format.TSV else None
    with _open_binary(path, options.label) as fh:
        parsed = _Delimited(fh, options, forced)
    if parsed.scan.first is None and options.header_row is None:
        raise _fail(options.label, "is empty (only blank lines); check the export")
    header_line, columns = _columns_of(parsed.scan, options, "line")
    delimiter = parsed.delimiter
    again_options = dataclasses.replace(options, header_row=header_line)

    def records() -> _Records:
        with _open_binary(path, options.label) as fh:
            again = _Delimited(fh, again_options, delimiter)
            if again.scan.header is None or again.scan.header[0] != header_line:
                raise _fail(options.label, "changed while being read; run again")
            yield from _delimited_rows(again, columns, options.label)

    return _source(
        path,
        fmt,
        columns,
        records,
        options,
        header_line=header_line,
        delimiter=delimiter,
        utf8_bom=parsed.utf8_bom,
    )


def _open_stdin(options: _Options, stream: BinaryIO) -> InputSource:
    reader = _HashingReader(stream)
    parsed = _Delimited(reader, options, None)
    if parsed.scan.first is None and options.header_row is None:
        raise _fail(options.label, "is empty (only blank lines); check what is piped in")
    header_line, columns = _columns_of(parsed.scan, options, "line")

    def records() -> _Records:
        yield from _delimited_rows(parsed, columns, options.label)
        while _read(reader, options.label):  # hash whatever follows, so the checksum is whole
            pass

    return _source(
        STDIN,
        Format.CSV,
        columns,
        records,
        options,
        header_line=header_line,
        delimiter=parsed.delimiter,
        utf8_bom=parsed.utf8_bom,
        stdin=reader,
    )
