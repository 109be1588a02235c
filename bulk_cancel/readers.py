"""Read the user's list of ids, whatever the format, as a stream of :class:`InputRow` chunks.

:func:`open_input` checks the file eagerly (it exists, is a file, is readable, is really of its
format, and its header has a usable id column) and raises :class:`~bulk_cancel.errors.InputError`
with one line naming the file, the problem and the fix. Iterating the returned
:class:`InputSource` streams chunks of rows; a problem found later (a byte that is not UTF-8 at
line 10,000, a truncated Parquet file) raises the same kind of one-line error, with its line.
No pandas, pyarrow, openpyxl, codec or OS exception escapes.

Formats, by extension (:func:`detect_format`):

* ``.csv`` (or ``-`` for stdin) and ``.tsv``: read with the standard library's C ``csv`` parser
  over our own block decoder. Measured on these machines (1,000,000 rows, three columns):
  ``csv.reader`` 1.2 s and 10 MiB peak RSS, against 2.4–2.7 s and 137 MiB for
  ``pd.read_csv(chunksize=50_000, dtype=str, keep_default_na=False)`` (pandas 3 builds Arrow
  strings per chunk, then we need Python strings anyway); 10,000,000 rows through
  :class:`InputSource` (rows built and checked): 45 s, 51 MiB peak RSS. It also gives exact
  line numbers, keeps every cell a string without type inference (``007`` stays ``007``) and needs no import at start.
  A ``.csv`` whose first line has no comma but has semicolons or tabs is read with that delimiter
  (European Excel saves "CSV" with semicolons).
* ``.txt``: one id per line, no header; a first line that names an id column (``umid``,
  ``batch_id``...) is skipped and, for a batch name, makes the rows batch ids.
* ``.parquet``: ``pyarrow.parquet.ParquetFile(pre_buffer=False, buffer_size=1 MiB)`` and
  ``iter_batches`` over the columns we need only (MEASURED.md: 164 MiB for 10M rows, against
  529 MiB with default buffering).
* ``.xlsx`` / ``.xlsm``: openpyxl in read-only mode, rows streamed. Without ``sheet`` the first
  sheet whose header names a usable id column is read, so ids on a second sheet just work. Cells
  right of the header's last column are ignored.

Decisions worth knowing:

* A file with a header and no rows is *not* an error: it yields nothing and the run reports zero
  rows. A nightly cron job whose export is empty that day should succeed, not page someone with
  "bad input". A zero-byte file (or one with only blank lines) *is* an error: the export failed.
* Text is UTF-8, with or without a byte-order mark; UTF-16/UTF-32 are recognised by their BOM
  (a BOM wins over ``encoding=``). Anything else needs ``encoding=`` (``--encoding``).
* ``InputRow.line`` is the row's number as a spreadsheet shows it (CSV, TSV, XLSX: the header is
  1, or 3 below a title and a blank row), or
  the line number (TXT), or the row index + 1 (Parquet). Blank rows count. For CSV it equals the
  physical line unless an earlier quoted value spans lines; errors name the physical line.
* The header is the first row, among the first :data:`HEADER_SCAN_ROWS` non-blank ones, that
  names an id column; ``header_row`` (``--header-row``) names it instead. Rows before the header
  (a title, blank ones) are not rows. A line over 1 MiB, or a quoted value over
  128 KiB (the ``csv`` module's field limit, usually an unclosed quote), stops the read with an
  error instead of buffering an unbounded line. A CSV row with more non-blank values than the
  header has columns is an error too: its columns are shifted, so its subaccount cannot be trusted.
* An id or subaccount that fails its local check is kept as a row with a ``problem``, reported
  as written, trimmed, cut to 200 characters and with control characters escaped (``\\x1b``).
* The input's other columns are kept in ``extra``, except columns named like a results column
  (``model.RESULT_COLUMNS``), so a results file can be fed back in. CSV/TSV values are strings
  (``""`` for missing): no type is guessed, so ``007`` stays ``007``. Excel cells keep their
  own types (``None`` for empty); Parquet columns of the types a results file can hold keep them
  (:attr:`InputSource.extra_types`), others become text.
  Unnamed header cells become ``Unnamed: <index>`` and repeated names get ``.1``, ``.2``...
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import enum
import hashlib
import io
import itertools
import math
import os
import re
import stat
import sys
import warnings
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from operator import itemgetter
from pathlib import PurePath
from typing import IO, Any, BinaryIO, Final

from .errors import InputError
from .model import RESULT_COLUMNS, Kind, Outcome
from .normalize import canonical_uuid, clean, valid_subaccount

__all__ = [
    "HEADER_SCAN_ROWS",
    "STDIN",
    "Format",
    "InputRow",
    "InputSource",
    "detect_format",
    "open_input",
]

#: The path that means "read CSV from standard input".
STDIN: Final = "-"
_STDIN_LABEL: Final = "<stdin>"

#: Bytes read (and hashed) per read call.
_BLOCK_BYTES: Final = 1 << 20
#: A physical line longer than this stops the read: no id file has one, and buffering it costs memory.
_MAX_LINE_CHARS: Final = 1 << 20
#: Pyarrow's read buffer for streamed Parquet (MEASURED.md).
_PARQUET_BUFFER_BYTES: Final = 1 << 20
#: openpyxl rows pulled per call (each pull runs with openpyxl's style warnings silenced).
_XLSX_PULL_ROWS: Final = 1000
#: Invalid ids and subaccounts are reported as written, cut to this many characters.
_MAX_REPORTED_CHARS: Final = 200
#: Rows (CSV records, sheet rows) searched for the header: the first that names an id column.
HEADER_SCAN_ROWS: Final = 20

DETAIL_NOT_UUID: Final = "not a UUID (local check)"
DETAIL_NUMBER: Final = "not a UUID (local check): a number; Excel may have converted the id, re-export the column as text"
DETAIL_NO_SUBACCOUNT: Final = "missing subaccount id"
DETAIL_BAD_SUBACCOUNT: Final = "invalid subaccount id (local check)"


class Format(enum.StrEnum):
    """The input formats bulk-cancel reads, chosen by file extension."""

    CSV = "csv"
    TSV = "tsv"
    PARQUET = "parquet"
    XLSX = "xlsx"
    TXT = "txt"


_SUFFIXES: Final = {
    ".csv": Format.CSV,
    ".tsv": Format.TSV,
    ".parquet": Format.PARQUET,
    ".xlsx": Format.XLSX,
    ".xlsm": Format.XLSX,
    ".txt": Format.TXT,
}
_SUPPORTED: Final = ".csv .tsv .parquet .xlsx .txt, or - for CSV on stdin"

# Header names that identify a column, compared after clean() and casefold(), by precedence.
_ID_ALIASES: Final[tuple[tuple[frozenset[str], Kind], ...]] = (
    (frozenset({"umid"}), Kind.MESSAGE),
    (frozenset({"message_id", "messageid", "message id"}), Kind.MESSAGE),
    (frozenset({"batch_id", "batchid", "batch id"}), Kind.BATCH),
)
_BATCH_NAMES: Final = _ID_ALIASES[2][0]
_SUBACCOUNT_ALIASES: Final = frozenset(
    {"subaccount_id", "subaccountid", "subaccount", "subaccount id"}
)
_RESULT_NAMES: Final = frozenset(RESULT_COLUMNS)

# What a number looks like once Excel has had it: 123, 1.5, 1.23457E+35, -4e-2.
_NUMBER: Final = re.compile(r"[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][+-]?\d+)?")
# Characters escaped in messages and reported values: C0, DEL, C1 and Unicode line separators.
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Line breaks str.splitlines() honours but CSV does not (they may sit inside a value).
_ODD_BREAKS: Final = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_LINES: Final = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
_BREAK: Final = re.compile(r"\r\n|\r|\n")
_BOMS: Final = (
    # UTF-32 first: the UTF-32-LE mark starts with the UTF-16-LE one.
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Bytes that never appear in text: C0 controls except tab, LF, VT, FF, CR, and DEL.
_BINARY_BYTES: Final = bytes([*range(0, 9), *range(14, 32), 127])
_TEXT_BYTES: Final = bytes(b for b in range(256) if b not in _BINARY_BYTES)

_Record = tuple[int, object, object, tuple[object, ...]]
"""One data row as a format reader hands it over: line, raw id, raw subaccount (or None), extras."""
_Records = Generator[_Record, None, None]


def detect_format(path: str) -> Format:
    """The format of *path* by its extension (case-insensitive); ``-`` is CSV on stdin.

    Raises :class:`InputError` for an extension bulk-cancel does not read, naming those it does.
    """
    if path == STDIN:
        return Format.CSV
    suffix = PurePath(path).suffix.lower()
    found = _SUFFIXES.get(suffix)
    if found is not None:
        return found
    if suffix == ".xls":
        raise _fail(path, "old Excel .xls files are not read; save it as .xlsx or CSV")
    if not suffix:
        raise _fail(path, f"has no file extension to tell its format (supported: {_SUPPORTED})")
    raise _fail(path, f"unsupported file type {suffix!r} (supported: {_SUPPORTED})")


@dataclass(frozen=True, slots=True)
class InputRow:
    """One non-blank input row, normalised; ``problem`` is set when a local check failed."""

    line: int
    """The row's line (CSV/TSV/TXT), spreadsheet row (XLSX) or index + 1 (Parquet)."""
    subaccount: str
    """The row's own subaccount, else the default; as written when ``problem`` says it is bad."""
    target_id: str
    """The canonical lowercase UUID; when ``problem`` is ``INVALID_UMID``, the id as written."""
    kind: Kind
    extra: tuple[object, ...]
    """The row's values of :attr:`InputSource.extra_columns`, in that order, typed as
    :attr:`InputSource.extra_types` says: text from CSV/TSV, the cell's value from Excel."""
    problem: Outcome | None
    """``INVALID_UMID`` or ``SUBACCOUNT_REJECTED`` when decided locally; ``None`` to send."""
    detail: str | None
    """Why, when ``problem`` is set."""


class InputSource:
    """An opened, validated input: iterate it once for chunks of :class:`InputRow`.

    ``blank_rows`` counts the rows skipped for a blank id so far; it is complete once iteration
    ends. :meth:`checksum` identifies the input's bytes.
    """

    def __init__(
        self,
        *,
        path: str,
        format: Format,
        id_column: str,
        subaccount_column: str | None,
        extra_columns: tuple[str, ...],
        extra_types: tuple[str, ...],
        kind: Kind,
        records: Callable[[], _Records],
        default_subaccount: str | None,
        chunk_rows: int,
        header_line: int = 1,
        delimiter: str | None = None,
        utf8_bom: bool = False,
        stdin: _HashingReader | None = None,
    ) -> None:
        self.path = path
        self.format = format
        self.id_column = id_column
        self.subaccount_column = subaccount_column
        self.extra_columns = extra_columns
        self.extra_types = extra_types
        """Per extra column: ``text`` (str values), ``cell`` (an Excel cell's own type: str, int,
        float, bool, datetime, date, time, timedelta or None) or a Parquet column's Arrow type
        (``int64``, ``double``, ``bool``, ``timestamp[us, tz=UTC]``, ``date32[day]``...)."""
        self.header_line = header_line
        """The header's line (CSV/TSV), row (XLSX); 1 for Parquet, 0 for TXT without one."""
        self.delimiter = delimiter
        """The CSV/TSV input's delimiter; ``None`` for other formats."""
        self.utf8_bom = utf8_bom
        """Whether the text input began with a UTF-8 byte-order mark (Excel's "CSV UTF-8")."""
        self.kind = kind
        self.blank_rows = 0
        self._label = _STDIN_LABEL if path == STDIN else path
        self._records = records
        self._builder = _RowBuilder(kind, default_subaccount)
        self._chunk_rows = chunk_rows
        self._stdin = stdin
        self._iterated = False

    def __repr__(self) -> str:
        return (
            f"InputSource(path={self.path!r}, format={self.format.value}, "
            f"id_column={self.id_column!r}, kind={self.kind.value})"
        )

    def __iter__(self) -> Iterator[list[InputRow]]:
        """Chunks of up to ``chunk_rows`` rows, in file order; blank rows are skipped and counted."""
        if self._iterated:
            raise RuntimeError("an InputSource can be iterated only once; open the input again")
        self._iterated = True
        build = self._builder.build
        size = self._chunk_rows
        chunk: list[InputRow] = []
        checked = False
        with closing(self._records()) as records:
            for line, raw_id, raw_sub, extra in records:
                row = build(line, raw_id, raw_sub, extra)
                if row is None:
                    continue
                chunk.append(row)
                if len(chunk) >= size:
                    if not checked:
                        self._check_numbers()
                        checked = True
                    self.blank_rows = self._builder.blank
                    yield chunk
                    chunk = []
        if not checked:
            self._check_numbers()
        self.blank_rows = self._builder.blank
        if chunk:
            yield chunk

    def _check_numbers(self) -> None:
        built = self._builder
        if built.rows and built.numeric == built.rows:
            raise _fail(
                self._label,
                f"the {self.id_column} column holds numbers, not UUIDs (Excel turns long ids into "
                "numbers like 1.23457E+35); re-export the column as text",
            )

    def checksum(self) -> str:
        """``sha256:<hex>`` of the input's bytes.

        For a file, a separate streaming read of it (1 MiB blocks), at any time. For stdin, the
        bytes hashed as they were read: known only once iteration has read to the end.
        """
        if self._stdin is not None:
            if not self._stdin.at_eof:
                raise RuntimeError(
                    "the checksum of stdin is known once it has been read to the end"
                )
            return f"sha256:{self._stdin.hexdigest()}"
        digest = hashlib.sha256()
        buffer = bytearray(_BLOCK_BYTES)
        view = memoryview(buffer)
        with _open_binary(self.path, self._label) as fh:
            while True:
                try:
                    n = fh.readinto(view)
                except OSError as exc:
                    raise _fail(self._label, f"cannot be read ({_reason(exc)})") from None
                if not n:
                    break
                digest.update(view[:n])
        return f"sha256:{digest.hexdigest()}"


def open_input(
    path: str,
    *,
    column: str | None = None,
    subaccount_column: str | None = None,
    default_subaccount: str | None = None,
    sheet: str | None = None,
    encoding: str | None = None,
    header_row: int | None = None,
    chunk_rows: int = 20_000,
    stdin: BinaryIO | None = None,
) -> InputSource:
    """Open and validate *path* (``-``: CSV on *stdin*, default ``sys.stdin.buffer``).

    *column* names the id column (default: ``umid``, else ``message_id`` / ``messageId`` /
    ``message id``, else ``batch_id`` / ``batchId`` for batch ids; a named column holds batch ids
    when its name is one of those). *subaccount_column* names the per-row subaccount column
    (default: ``subaccount_id`` / ``subAccountId`` / ``subaccount``); rows with a blank one, or
    every row when there is none, use *default_subaccount*. *sheet* picks an Excel sheet;
    *encoding* decodes CSV/TSV/TXT that is neither UTF-8 nor marked UTF-16.

    The header of a CSV/TSV or sheet is the first row among its first :data:`HEADER_SCAN_ROWS`
    that names an id column (the *column*, or a known name), so a title and blank rows above it
    are skipped; *header_row* (1-based: the file's line, the sheet's row) says which row it is
    instead. Parquet and TXT files ignore *header_row*.

    *chunk_rows* rows are built and stored at a time: 20,000 keeps a chunk with a few extra
    columns near 10 MiB (measured, issue 14: peak RSS of a 2 M-row dry run with three extra
    columns 157 MiB at 50,000, 128 MiB at 20,000, at the same CPU time).

    A header with no rows is not an error (zero rows); see the module docstring. Raises
    :class:`InputError` with one line (file, problem, fix) when the input cannot be used.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    if header_row is not None and header_row < 1:
        raise ValueError(f"header_row must be at least 1, not {header_row}")
    if path != STDIN and os.path.isdir(path):
        raise _fail(path, "is a directory, not a file; give the path of the file inside it")
    fmt = detect_format(path)
    options = _Options(
        label=_STDIN_LABEL if path == STDIN else path,
        column=column,
        subaccount_column=subaccount_column,
        default_subaccount=clean(default_subaccount) or None,
        sheet=sheet,
        encoding=encoding,
        header_row=header_row,
        chunk_rows=chunk_rows,
    )
    if path == STDIN:
        return _open_stdin(options, stdin if stdin is not None else sys.stdin.buffer)
    _check_file(path, options.label)
    opener = {
        Format.CSV: _open_delimited,
        Format.TSV: _open_delimited,
        Format.TXT: _open_txt,
        Format.PARQUET: _open_parquet,
        Format.XLSX: _open_xlsx,
    }[fmt]
    return opener(path, fmt, options)


# ---------------------------------------------------------------------------------- rows


@dataclass(frozen=True, slots=True)
class _Options:
    label: str
    column: str | None
    subaccount_column: str | None
    default_subaccount: str | None
    sheet: str | None
    encoding: str | None
    header_row: int | None
    chunk_rows: int

    def is_header(self, cells: Sequence[str]) -> bool:
        """Whether *cells* name an id column (raises when two could each be the one)."""
        return _find_id_column(cells, self.column, self.label) is not None


class _RowBuilder:
    """Turns raw cells into :class:`InputRow` values and counts blank and numeric ids."""

    __slots__ = ("_default", "_kind", "_subaccounts", "blank", "numeric", "rows")

    #: Distinct raw subaccount values remembered (a file has a handful; a hostile one, millions).
    _CACHE_LIMIT = 4096

    def __init__(self, kind: Kind, default_subaccount: str | None) -> None:
        self._kind = kind
        self._default = default_subaccount or ""
        self._subaccounts: dict[object, tuple[str, str | None]] = {}
        self.blank = 0
        self.rows = 0
        self.numeric = 0

    def build(
        self, line: int, raw_id: object, raw_sub: object, extra: tuple[object, ...]
    ) -> InputRow | None:
        text = clean(raw_id if type(raw_id) is str else _cell_text(raw_id))
        if not text:
            self.blank += 1
            return None
        self.rows += 1
        problem: Outcome | None = None
        detail: str | None = None
        target = canonical_uuid(text)
        if target is None:
            numeric = (
                isinstance(raw_id, int | float | Decimal) and not isinstance(raw_id, bool)
            ) or (len(text) < 64 and _NUMBER.fullmatch(text) is not None)
            if numeric:
                self.numeric += 1
            target = _reported(text)
            problem, detail = Outcome.INVALID_UMID, DETAIL_NUMBER if numeric else DETAIL_NOT_UUID
        known = self._subaccounts.get(raw_sub) if raw_sub is None or type(raw_sub) is str else None
        subaccount, sub_detail = known or self._subaccount(raw_sub)
        if sub_detail is not None:
            # Nothing can be sent without a usable subaccount, whatever the id.
            problem, detail = Outcome.SUBACCOUNT_REJECTED, sub_detail
        return InputRow(line, subaccount, target, self._kind, extra, problem, detail)

    def _subaccount(self, raw: object) -> tuple[str, str | None]:
        value = clean(_cell_text(raw)) or self._default
        if not value:
            answer: tuple[str, str | None] = ("", DETAIL_NO_SUBACCOUNT)
        elif valid_subaccount(value):
            answer = (value, None)
        else:
            answer = (_reported(value), DETAIL_BAD_SUBACCOUNT)
        if (raw is None or type(raw) is str) and len(self._subaccounts) < self._CACHE_LIMIT:
            self._subaccounts[raw] = answer
        return answer


def _cell_text(value: object) -> str:
    """A typed cell (Excel, Parquet) as text: ``""`` for missing, ``7`` for the float 7.0."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _reported(text: str) -> str:
    """*text* as it goes into a results row: control characters escaped, at most 200 characters."""
    return _printable(text[:_MAX_REPORTED_CHARS])[:_MAX_REPORTED_CHARS]


# ---------------------------------------------------------------------------------- columns


@dataclass(frozen=True, slots=True)
class _Columns:
    id_index: int
    id_name: str
    kind: Kind
    sub_index: int | None
    sub_name: str | None
    extra_indexes: tuple[int, ...]
    extra_names: tuple[str, ...]
    width: int


def _display_names(raw: Sequence[str]) -> list[str]:
    """Header cells as column names: trimmed, ``Unnamed: i`` when blank, ``.1`` on repeats."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for i, cell in enumerate(raw):
        name = clean(cell) or f"Unnamed: {i}"
        if name in seen:
            seen[name] += 1
            name = f"{name}.{seen[name]}"
        seen.setdefault(name, 0)
        names.append(name)
    return names


def _find_id_column(
    names: Sequence[str], column: str | None, label: str
) -> tuple[int, Kind] | None:
    """The id column and its kind, ``None`` when the header has none; raises on ambiguity."""
    keys = [clean(n).casefold() for n in names]
    if column is not None:
        index = _find_named(names, keys, column, label, "--column")
        if index is None:
            return None
        return index, Kind.BATCH if keys[index] in _BATCH_NAMES else Kind.MESSAGE
    for aliases, kind in _ID_ALIASES:
        found = [i for i, k in enumerate(keys) if k in aliases]
        if len(found) > 1:
            raise _ambiguous(label, names, found, "--column")
        if found:
            return found[0], kind
    return None


def _find_named(
    names: Sequence[str], keys: Sequence[str], wanted: str, label: str, flag: str
) -> int | None:
    """The column called *wanted*: exactly, else ignoring case and surrounding whitespace."""
    target = clean(wanted)
    exact = [i for i, n in enumerate(names) if clean(n) == target]
    if len(exact) == 1:
        return exact[0]
    folded = exact or [i for i, k in enumerate(keys) if k == target.casefold()]
    if len(folded) > 1:
        raise _ambiguous(label, names, folded, flag)
    return folded[0] if folded else None


@dataclass(frozen=True, slots=True)
class _Scan:
    """What a search for the header row saw (rows numbered as the file or sheet numbers them)."""

    header: tuple[int, list[str]] | None
    """The header row's number and cells; ``None`` when no row looked at names an id column."""
    first: tuple[int, list[str]] | None
    """The first non-blank row, ``None`` when every row looked at was blank."""
    last: int
    """The last row looked at."""


def _scan_header(rows: Iterator[tuple[int, list[str]]], options: _Options) -> _Scan:
    """Find the header among *rows*: the row numbered ``--header-row``, else the first of the
    first :data:`HEADER_SCAN_ROWS` non-blank rows that names an id column. Title and blank rows
    above it are skipped (an export with a title line, a blank line, then the header)."""
    first: tuple[int, list[str]] | None = None
    number = seen = 0
    for number, cells in rows:
        if options.header_row is not None:
            if number < options.header_row:
                continue
            header = (number, cells) if any(clean(c) for c in cells) else None
            return _Scan(header, header, number)
        if not any(clean(c) for c in cells):
            continue
        if first is None:
            first = (number, cells)
        if options.is_header(cells):
            return _Scan((number, cells), first, number)
        seen += 1
        if seen >= HEADER_SCAN_ROWS:
            break
    return _Scan(None, first, number)


def _columns_of(scan: _Scan, options: _Options, unit: str) -> tuple[int, _Columns]:
    """The header *scan* found (its number) and its columns, or the one-line error for what it
    saw (*unit*: ``line`` or ``row``). Call only when *scan* saw a non-blank row."""
    if scan.header is not None:
        number, cells = scan.header
        if options.header_row is None:
            return number, _choose_columns(cells, options)
        looked = f" in {unit} {number} (columns:"
        return number, _choose_columns(cells, options, looked=looked, fix=" (or --header-row)")
    if options.header_row is not None:
        if scan.last < options.header_row:
            raise _fail(
                options.label,
                f"has no {unit} {options.header_row} (it ends at {unit} {scan.last}); "
                "check --header-row",
            )
        raise _fail(options.label, f"{unit} {options.header_row} is blank; check --header-row")
    assert scan.first is not None
    number, cells = scan.first
    where = f"{unit}s 1-{scan.last}" if scan.last > 1 else f"{unit} 1"
    _choose_columns(
        cells,
        options,
        looked=f" in {where} ({unit} {number}:",
        fix=f", or the header's {unit} with --header-row",
    )
    raise AssertionError("unreachable: that row names no id column")


def _choose_columns(
    names: Sequence[str], options: _Options, *, looked: str = " (columns:", fix: str = ""
) -> _Columns:
    """Pick the id, subaccount and extra columns of a header, or raise a one-line InputError.

    *looked* and *fix* put where the header was looked for, and the --header-row fix, in the
    error for a header without an id column.
    """
    label = options.label
    display = _display_names(names)
    found = _find_id_column(names, options.column, label)
    if found is None:
        if options.column is not None:
            raise _fail(
                label,
                f"no column {options.column!r}{looked} {_list(display)}); check --column{fix}",
            )
        if len(names) == 1 and canonical_uuid(clean(names[0])) is not None:
            raise _fail(
                label,
                "has no header: its first line is already an id; add a first line 'umid' "
                "(or save the ids one per line as .txt)",
            )
        raise _fail(label, f"no umid column{looked} {_list(display)}); name it with --column{fix}")
    id_index, kind = found
    keys = [clean(n).casefold() for n in names]
    sub_index: int | None
    if options.subaccount_column is not None:
        sub_index = _find_named(
            names, keys, options.subaccount_column, label, "--subaccount-column"
        )
        if sub_index is None:
            raise _fail(
                label,
                f"no column {options.subaccount_column!r} (columns: {_list(display)}); "
                "check --subaccount-column",
            )
    else:
        subs = [i for i, k in enumerate(keys) if k in _SUBACCOUNT_ALIASES]
        if len(subs) > 1:
            raise _ambiguous(label, names, subs, "--subaccount-column")
        sub_index = subs[0] if subs else None
    if sub_index == id_index:
        raise _fail(
            label, f"column {display[id_index]!r} cannot be both the id and the subaccount column"
        )
    if sub_index is None and options.default_subaccount is None:
        raise _fail(label, "no subaccount: pass --subaccount ID or add a subaccount_id column")
    extra = tuple(
        i
        for i in range(len(names))
        if i not in (id_index, sub_index) and clean(names[i]) not in _RESULT_NAMES
    )
    return _Columns(
        id_index=id_index,
        id_name=display[id_index],
        kind=kind,
        sub_index=sub_index,
        sub_name=None if sub_index is None else display[sub_index],
        extra_indexes=extra,
        extra_names=tuple(display[i] for i in extra),
        width=len(names),
    )


def _ambiguous(label: str, names: Sequence[str], found: Sequence[int], flag: str) -> InputError:
    both = " and ".join(repr(clean(names[i])) for i in found)
    return _fail(label, f"columns {both} could each be the one to use; name one with {flag}")


def _list(names: Sequence[str], limit: int = 20) -> str:
    """Column names for a message: at most *limit*, each at most 40 characters."""
    shown = [n if len(n) <= 40 else n[:39] + "…" for n in names[:limit]]
    more = f", … ({len(names) - limit} more)" if len(names) > limit else ""
    return (", ".join(shown) or "none") + more


# ---------------------------------------------------------------------------------- errors


def _printable(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _fail(label: str, problem: str) -> InputError:
    """The one-line error for *label*: control characters (newlines too) escaped."""
    return InputError(_printable(f"{label}: {problem}"))


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _check_file(path: str, label: str) -> None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise _fail(label, "does not exist; check the path") from None
    except PermissionError:
        raise _fail(
            label, "cannot be reached (permission denied); check the folder's permissions"
        ) from None
    except (OSError, ValueError) as exc:
        reason = _reason(exc) if isinstance(exc, OSError) else str(exc)
        raise _fail(label, f"cannot be read ({reason}); check the path") from None
    if stat.S_ISDIR(info.st_mode):
        raise _fail(label, "is a directory, not a file; give the path of the file inside it")
    if not stat.S_ISREG(info.st_mode):
        raise _fail(
            label, "is not a regular file; for a pipe use --input - and redirect it to stdin"
        )
    if info.st_size == 0:
        raise _fail(label, "is empty; check that the export that wrote it succeeded")


def _open_binary(path: str, label: str) -> io.BufferedReader:
    """*path* opened for reading bytes; OS errors become one-line InputErrors."""
    try:
        return open(path, "rb")  # callers close it (with / finally)
    except PermissionError:
        raise _fail(label, "cannot be read (permission denied); check its permissions") from None
    except FileNotFoundError:
        raise _fail(label, "does not exist; check the path") from None
    except OSError as exc:
        raise _fail(label, f"cannot be read ({_reason(exc)})") from None


def _read(raw: IO[bytes] | _HashingReader, label: str, size: int = _BLOCK_BYTES) -> bytes:
    try:
        return raw.read(size)
    except OSError as exc:
        raise _fail(label, f"cannot be read ({_reason(exc)})") from None


def _looks_like_text(head: bytes) -> bool:
    sample = head[:4096]
    if not sample or b"\x00" in sample:
        return False
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(sample) - 3  # only a character cut at the end of the sample
    return True


def _peek(path: str, label: str, size: int = 4096) -> bytes:
    with _open_binary(path, label) as fh:
        return _read(fh, label, size)


# ---------------------------------------------------------------------------------- text


class _HashingReader:
    """A binary stream hashed (sha256) as it is read, for stdin that cannot be read twice."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()
        self.at_eof = False

    def read(self, size: int) -> bytes:
        data = self._raw.read(size)
        if data:
            self._digest.update(data)
        else:
            self.at_eof = True
        return data

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _choose_codec(head: bytes, label: str, encoding: str | None) -> tuple[str, int, bool]:
    """The codec for a text input, the byte-order mark's length, and whether the user chose it."""
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec, len(bom), False
    if encoding is not None:
        try:
            codec = codecs.lookup(encoding).name
        except LookupError:
            raise _fail(
                label, f"unknown encoding {encoding!r}; try --encoding utf-8, latin-1 or cp1252"
            ) from None
        if not codec.startswith(("utf-16", "utf-32")):
            _refuse_binary(head, label)
        return codec, 0, True
    _refuse_binary(head, label)
    return "utf-8", 0, False


def _refuse_binary(head: bytes, label: str) -> None:
    """Raise when the first block of a 'text' input is another format or binary data."""
    known = (
        (b"PK\x03\x04", "is a zip archive (an Excel .xlsx?), not a CSV/text file; name it .xlsx"),
        (b"PAR1", "is a Parquet file, not a CSV/text file; name it .parquet"),
        (b"\xd0\xcf\x11\xe0", "is an old Excel .xls file, not a CSV/text file; save it as CSV"),
        (b"\x1f\x8b", "is gzip-compressed, not a CSV/text file; decompress it first"),
        (b"%PDF", "is a PDF, not a CSV/text file; export the ids as CSV"),
    )
    for magic, problem in known:
        if head.startswith(magic):
            raise _fail(label, problem)
    sample = head[:65536]
    if b"\x00" in sample:
        pairs = sample[: len(sample) & ~1]
        if pairs and pairs[1::2].count(0) > 0.9 * (len(pairs) // 2):
            raise _fail(
                label,
                "looks like UTF-16 without a byte-order mark; pass --encoding utf-16-le "
                "or re-save the file as UTF-8",
            )
        raise _fail(label, "is not a CSV/text file (binary data); export the ids as CSV")
    controls = len(sample.translate(None, _TEXT_BYTES))
    if controls >= 4 and controls * 100 > len(
        sample
    ):  # a stray ESC or BEL in a value is not binary
        raise _fail(label, "is not a CSV/text file (binary data); export the ids as CSV")


def _split_lines(text: str) -> list[str]:
    """*text* cut after each ``\\n``, ``\\r\\n`` or ``\\r``; the last piece may be unfinished."""
    if _ODD_BREAKS.search(text) is None:
        return text.splitlines(keepends=True)  # fast, and equal when no odd breaks are present
    return _LINES.findall(text)


class _Text:
    """A byte stream decoded block by block into physical lines that keep their line endings.

    Decoding is ours, not io's, so an undecodable byte names its line, and a line that never
    ends stops the read at 1 MiB instead of filling memory.
    """

    def __init__(self, raw: IO[bytes] | _HashingReader, label: str, encoding: str | None) -> None:
        self._raw = raw
        self._label = label
        head = _read(raw, label)
        if not head:
            raise _fail(label, "is empty; check that the export that wrote it succeeded")
        self.codec, skip, self._chosen = _choose_codec(head, label, encoding)
        self.utf8_bom = skip > 0 and self.codec == "utf-8"
        self._head = head[skip:]

    def lines(self) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder(self.codec)("strict")
        data = self._head or _read(self._raw, self._label)
        self._head = b""
        pending = ""
        breaks = 0  # line breaks split off so far
        while True:
            final = not data
            buffered = decoder.getstate()[0]
            try:
                text = decoder.decode(data, final)
            except UnicodeDecodeError as exc:
                raise self._undecodable(exc, buffered + data, breaks, pending) from None
            if text or (final and pending):
                lines = _split_lines(pending + text)
                pending = ""
                if lines and not final:
                    last = lines[-1]
                    # Keep back an unfinished line, and a final "\r" that may be half of "\r\n".
                    if last[-1] not in "\r\n" or last[-1] == "\r":
                        pending = lines.pop()
                    if len(pending) > _MAX_LINE_CHARS:
                        raise _fail(
                            self._label,
                            f"line {breaks + len(lines) + 1} is longer than 1 MiB; this is not a "
                            "list of ids (a file with a single huge line?)",
                        )
                breaks += len(lines)
                yield from lines
            if final:
                return
            data = _read(self._raw, self._label)

    def _undecodable(
        self, exc: UnicodeDecodeError, data: bytes, breaks: int, pending: str
    ) -> InputError:
        before = data[: exc.start].decode(self.codec, "replace")
        line = breaks + len(_BREAK.findall(pending + before)) + 1
        byte = f"byte 0x{data[exc.start]:02x}" if exc.start < len(data) else "truncated character"
        if self._chosen:
            fix = f"cannot be decoded as {self.codec} ({byte}); check --encoding"
        elif self.codec == "utf-8":
            fix = (
                f"is not UTF-8 ({byte}); re-save the file as UTF-8, or pass --encoding latin-1 "
                "(cp1252 for files from Windows Excel)"
            )
        else:
            fix = f"is not valid {self.codec.upper()} ({byte}); re-save the file as UTF-8"
        return _fail(self._label, f"line {line} {fix}")


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


def _source(
    path: str,
    fmt: Format,
    columns: _Columns,
    records: Callable[[], _Records],
    options: _Options,
    *,
    extra_types: tuple[str, ...] | None = None,
    header_line: int = 1,
    delimiter: str | None = None,
    utf8_bom: bool = False,
    stdin: _HashingReader | None = None,
) -> InputSource:
    return InputSource(
        path=path,
        format=fmt,
        id_column=columns.id_name,
        subaccount_column=columns.sub_name,
        extra_columns=columns.extra_names,
        extra_types=extra_types or ("text",) * len(columns.extra_names),
        kind=columns.kind,
        records=records,
        default_subaccount=options.default_subaccount,
        chunk_rows=options.chunk_rows,
        header_line=header_line,
        delimiter=delimiter,
        utf8_bom=utf8_bom,
        stdin=stdin,
    )


# ---------------------------------------------------------------------------------- txt


def _txt_header(line: str) -> Kind | None:
    """The kind a header-looking first line announces, or ``None`` for a data line."""
    key = clean(line).casefold()
    for aliases, kind in _ID_ALIASES:
        if key in aliases:
            return kind
    return None


def _open_txt(path: str, fmt: Format, options: _Options) -> InputSource:
    label = options.label
    header_line = 0
    kind = Kind.MESSAGE
    with _open_binary(path, label) as fh:
        for number, line in enumerate(_Text(fh, label, options.encoding).lines(), start=1):
            if not clean(line):
                continue
            announced = _txt_header(line)
            if announced is not None:
                header_line, kind = number, announced
            elif any(_txt_header(cell) for cell in re.split(r"[,;\t]", line)):
                raise _fail(
                    label,
                    "looks like a table with a header, not one id per line; name it .csv (or .tsv)",
                )
            break
    if options.default_subaccount is None:
        raise _fail(label, "no subaccount: pass --subaccount ID (a .txt file has only ids)")
    columns = _Columns(
        id_index=0,
        id_name="batch_id" if kind is Kind.BATCH else "umid",
        kind=kind,
        sub_index=None,
        sub_name=None,
        extra_indexes=(),
        extra_names=(),
        width=1,
    )

    def records() -> _Records:
        with _open_binary(path, label) as fh:
            for number, line in enumerate(_Text(fh, label, options.encoding).lines(), start=1):
                if number > header_line:
                    yield number, line.rstrip("\r\n"), None, ()

    return _source(path, fmt, columns, records, options, header_line=header_line)


# ---------------------------------------------------------------------------------- parquet


@contextmanager
def _parquet_file(path: str, label: str) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _open_binary(path, label) as fh:
        try:
            pf = pq.ParquetFile(fh, pre_buffer=False, buffer_size=_PARQUET_BUFFER_BYTES)
        except (pa.ArrowException, OSError, ValueError) as exc:
            hint = (
                " (it looks like text: a CSV named .parquet?)"
                if _looks_like_text(_peek(path, label))
                else ""
            )
            raise _fail(
                label, f"is not a Parquet file{hint}; export it again ({_short(exc)})"
            ) from None
        yield pf


def _short(exc: BaseException, limit: int = 120) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _open_parquet(path: str, fmt: Format, options: _Options) -> InputSource:
    import pyarrow as pa

    label = options.label
    with _parquet_file(path, label) as pf:
        schema = pf.schema_arrow
    names = [str(n) for n in schema.names]
    columns = _choose_columns(names, options)
    id_type = schema.field(columns.id_index).type
    if (
        pa.types.is_integer(id_type)
        or pa.types.is_floating(id_type)
        or pa.types.is_decimal(id_type)
    ):
        raise _fail(
            label,
            f"the {columns.id_name} column holds numbers ({id_type}), not UUIDs; "
            "re-export the column as text",
        )
    id_name = names[columns.id_index]
    sub_name = None if columns.sub_index is None else names[columns.sub_index]
    extra_names = [names[i] for i in columns.extra_indexes]
    extra_types = tuple(_kept_type(schema.field(i).type) for i in columns.extra_indexes)
    wanted = [id_name, *([sub_name] if sub_name else []), *extra_names]

    def records() -> _Records:
        line = 0
        with _parquet_file(path, label) as pf:
            batches = pf.iter_batches(batch_size=options.chunk_rows, columns=wanted)
            while True:
                try:
                    batch = next(batches, None)
                except (pa.ArrowException, OSError, ValueError) as exc:
                    raise _fail(
                        label,
                        f"row {line + 1} cannot be read; the file may be truncated or corrupt "
                        f"({_short(exc)})",
                    ) from None
                if batch is None:
                    return
                ids = _arrow_ids(batch.column(id_name))
                subs = batch.column(sub_name).to_pylist() if sub_name else [None] * len(ids)
                extras = [
                    _arrow_texts(batch.column(n)) if t == "text" else batch.column(n).to_pylist()
                    for n, t in zip(extra_names, extra_types, strict=True)
                ]
                for raw_id, raw_sub, *extra in zip(ids, subs, *extras, strict=True):
                    line += 1
                    yield line, raw_id, raw_sub, tuple(extra)

    return _source(path, fmt, columns, records, options, extra_types=extra_types)


def _kept_type(kind: Any) -> str:
    """The Arrow type an extra Parquet column keeps in the results, or ``text``.

    Kept: integers, float32/64, booleans, strings, timestamps (with their unit and zone) and
    dates, the types a spreadsheet or a results file can hold. Others (decimal, binary, lists,
    structs...) become text, as before.
    """
    import pyarrow as pa

    types = pa.types
    if (
        types.is_integer(kind)
        or types.is_float32(kind)
        or types.is_float64(kind)
        or types.is_boolean(kind)
        or types.is_timestamp(kind)
        or types.is_date(kind)
    ):
        return str(kind)
    if types.is_string(kind) or types.is_large_string(kind):
        return "string"
    return "text"


def _arrow_ids(array: Any) -> list[object]:
    """An id column as Python values; 16-byte binary (Parquet's UUID type) as UUID text."""
    import uuid

    import pyarrow as pa

    values: list[Any] = array.to_pylist()
    kind = array.type
    if pa.types.is_fixed_size_binary(kind) and kind.byte_width == 16:
        return [None if v is None else str(uuid.UUID(bytes=v)) for v in values]
    return values


def _arrow_texts(array: Any) -> list[str]:
    import pyarrow as pa

    values: list[Any] = array.to_pylist()
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return ["" if v is None else v for v in values]
    return [_cell_text(v) for v in values]


# ---------------------------------------------------------------------------------- xlsx


@contextmanager
def _workbook(path: str, label: str) -> Iterator[Any]:
    """An openpyxl read-only workbook over our own file handle, closed on exit."""
    import openpyxl

    head = _peek(path, label)
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise _fail(
            label,
            "is not an Excel .xlsx file (an old .xls, or a password-protected workbook); "
            "save it as .xlsx without a password, or as CSV",
        )
    if not head.startswith(b"PK\x03\x04"):
        hint = " (it looks like text: a CSV named .xlsx?)" if _looks_like_text(head) else ""
        raise _fail(label, f"is not an Excel .xlsx file{hint}; save it from Excel as .xlsx")
    with _open_binary(path, label) as fh:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # openpyxl's notes on styles it does not read
                book = openpyxl.load_workbook(fh, read_only=True, data_only=True)
        except Exception as exc:  # zipfile, XML and openpyxl errors alike: the file is unusable
            raise _fail(
                label, f"is not an Excel .xlsx file; save it from Excel again ({_short(exc)})"
            ) from None
        try:
            yield book
        finally:
            book.close()


def _pull(rows: Iterator[Any], label: str, line: int, count: int) -> list[Any]:
    """Up to *count* rows from openpyxl, its warnings silenced and its errors made one line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return list(itertools.islice(rows, count))
    except Exception as exc:  # a corrupt sheet can fail in zipfile, XML or openpyxl code
        raise _fail(
            label, f"row {line + 1} cannot be read ({_short(exc)}); save it from Excel again"
        ) from None


def _sheet_rows(sheet: Any, label: str) -> Generator[tuple[int, list[str]], None, None]:
    """The rows of *sheet*, numbered from 1, as text (for finding the header)."""
    sheet.reset_dimensions()  # read-only mode trusts the stored size, which some writers get wrong
    with closing(sheet.iter_rows(values_only=True)) as rows:
        line = 0
        while block := _pull(rows, label, line, _XLSX_PULL_ROWS):
            for row in block:
                line += 1
                yield line, [_cell_text(v) for v in row]


def _sheet_scan(sheet: Any, options: _Options) -> _Scan:
    with closing(_sheet_rows(sheet, options.label)) as rows:
        return _scan_header(rows, options)


def _pick_sheet(book: Any, options: _Options) -> tuple[str, int, _Columns]:
    """The sheet to read, its header's row and its columns."""
    label = options.label
    sheets = list(book.worksheets)
    if options.sheet is not None:
        titles = [str(s.title) for s in sheets]
        index = _find_named(titles, [t.casefold() for t in titles], options.sheet, label, "--sheet")
        if index is None:
            raise _fail(
                label, f"no sheet {options.sheet!r} (sheets: {_list(titles)}); check --sheet"
            )
        sheet = sheets[index]
        scan = _sheet_scan(sheet, options)
        if scan.first is None and options.header_row is None:
            raise _fail(label, f"sheet {sheet.title!r} is empty; check --sheet")
        return str(sheet.title), *_columns_of(scan, options, "row")
    seen: list[str] = []
    for sheet in sheets:
        scan = _sheet_scan(sheet, options)
        if scan.header is not None and (
            options.header_row is None or options.is_header(scan.header[1])
        ):
            return str(sheet.title), *_columns_of(scan, options, "row")
        if scan.first is None:
            seen.append(f"{sheet.title} (empty)")
        else:
            seen.append(f"{sheet.title} ({_list(_display_names(scan.first[1]), 6)})")
    what = repr(options.column) if options.column is not None else "umid"
    where = (
        f"in row {options.header_row}"
        if options.header_row is not None
        else f"in its first {HEADER_SCAN_ROWS} rows"
    )
    raise _fail(
        label,
        f"no sheet has a {what} column {where} (sheets: {'; '.join(seen) or 'none'}); "
        "name the sheet with --sheet and the column with --column, or the header's row "
        "with --header-row",
    )


def _open_xlsx(path: str, fmt: Format, options: _Options) -> InputSource:
    label = options.label
    with _workbook(path, label) as book:
        title, header_line, columns = _pick_sheet(book, options)
    width = columns.width
    id_i, sub_i, extra_i = columns.id_index, columns.sub_index, columns.extra_indexes

    def records() -> _Records:
        with _workbook(path, label) as book:
            sheet = book[title]
            sheet.reset_dimensions()
            line = header_line
            with closing(sheet.iter_rows(min_row=header_line + 1, values_only=True)) as rows:
                while block := _pull(rows, label, line, _XLSX_PULL_ROWS):
                    for cells in block:
                        line += 1
                        row = (
                            cells
                            if len(cells) >= width
                            else (*cells, *[None] * (width - len(cells)))
                        )
                        yield (
                            line,
                            row[id_i],
                            None if sub_i is None else row[sub_i],
                            tuple(row[i] for i in extra_i),
                        )

    return _source(
        path,
        fmt,
        columns,
        records,
        options,
        extra_types=("cell",) * len(extra_i),
        header_line=header_line,
    )
