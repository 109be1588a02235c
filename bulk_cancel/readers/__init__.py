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
  :class:`InputSource` (rows built and checked): 45 s, 51 MiB peak RSS; with four columns and
  rows checked a block of 1,024 ids at a time, 34 s of CPU and 47 MiB. It also gives exact
  line numbers, keeps every cell a string without type inference (``007`` stays ``007``) and
  needs no import at start.
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

The package, one room each: ``rows`` (:class:`Format`, :class:`InputRow`, :class:`InputSource`
and the checks every format shares), ``columns`` (header detection and column choice), ``files``
(opening, reading, one-line errors), ``decoding`` (bytes to lines), ``delimited`` (CSV, TSV,
stdin), ``txt``, ``parquet`` and ``xlsx``. Their underscored names are the package's own; users
import what ``__all__`` lists from ``bulk_cancel.readers``.
"""

from __future__ import annotations

import os
import sys
from typing import BinaryIO

from ..normalize import clean
from .columns import HEADER_SCAN_ROWS, _Options
from .delimited import _open_delimited, _open_stdin
from .files import _check_file, _fail
from .parquet import _open_parquet
from .rows import _STDIN_LABEL, STDIN, Format, InputRow, InputSource, detect_format
from .txt import _open_txt
from .xlsx import _open_xlsx

__all__ = [
    "HEADER_SCAN_ROWS",
    "STDIN",
    "Format",
    "InputRow",
    "InputSource",
    "detect_format",
    "open_input",
]


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
