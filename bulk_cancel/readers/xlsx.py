"""Excel ``.xlsx`` / ``.xlsm``: openpyxl in read-only mode (imported only when one is read),
rows streamed; without ``--sheet``, the first sheet whose header names an id column.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Generator, Iterator
from contextlib import closing, contextmanager
from typing import Any, Final

from .columns import (
    HEADER_SCAN_ROWS,
    _Columns,
    _columns_of,
    _display_names,
    _find_named,
    _list,
    _Options,
    _Scan,
    _scan_header,
    _source,
)
from .files import _fail, _looks_like_text, _open_binary, _peek, _short
from .rows import Format, InputSource, _cell_text, _Records

#: openpyxl rows pulled per call (each pull runs with openpyxl's style warnings silenced).
_XLSX_PULL_ROWS: Final = 1000


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
