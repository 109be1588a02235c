"""Columns and header detection: which row is the header, and which of its columns hold the
id, the subaccount and the extra values kept in the results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from ..errors import InputError
from ..model import RESULT_COLUMNS, Kind
from ..normalize import canonical_uuid, clean
from .files import _fail, _HashingReader
from .rows import Format, InputSource, _Records

#: Rows (CSV records, sheet rows) searched for the header: the first that names an id column.
HEADER_SCAN_ROWS: Final = 20

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
