"""Readers: every format streams rows of canonical ids, and every bad input is one clear line.

Real files are written into tmp_path (CSV, TSV, TXT, Parquet via pyarrow, XLSX via openpyxl);
``tests/data/bad/`` holds a tiny committed corpus of broken inputs, and
``tests/data/make_bad_corpus.py`` writes the big or special ones into tmp_path.
"""

from __future__ import annotations

import codecs
import hashlib
import importlib.util
import io
import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest
from helpers import umids
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulk_cancel import readers
from bulk_cancel.errors import InputError, UsageError
from bulk_cancel.model import RESULT_COLUMNS, Kind, Outcome
from bulk_cancel.readers import Format, InputRow, InputSource, detect_format, open_input

DATA = Path(__file__).parent / "data"
BAD = DATA / "bad"
U = umids(5)
SUB = "acme_hq"


def _load_corpus_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_bad_corpus", DATA / "make_bad_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


corpus = _load_corpus_script()


def write(path: Path, content: str | bytes) -> Path:
    """Write text as UTF-8 (newlines untouched) or bytes as they are."""
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def read_all(path: Path | str, **options: Any) -> tuple[InputSource, list[InputRow]]:
    """Open and drain an input; the default subaccount is acme_hq unless given."""
    options.setdefault("default_subaccount", SUB)
    source = open_input(str(path), **options)
    rows = [row for chunk in source for row in chunk]
    return source, rows


def input_error(path: Path | str, **options: Any) -> str:
    """The message of the InputError that opening and draining *path* raises."""
    with pytest.raises(InputError) as caught:
        read_all(path, **options)
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    return message


def outcome_of(read: Callable[[], tuple[InputSource, list[InputRow]]]) -> Any:
    """What *read* returns, or the InputError it raises (any other exception propagates)."""
    try:
        return read()
    except InputError as exc:
        return exc


def xlsx(path: Path, sheets: dict[str, Sequence[Sequence[object]]]) -> Path:
    """An .xlsx with one sheet per entry, rows appended in order (None leaves a cell empty)."""
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(list(row))
    book.save(path)
    return path


def parquet(path: Path, columns: dict[str, Any]) -> Path:
    """A .parquet file from a dict of pyarrow arrays (or Python lists)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


# ------------------------------------------------------------------------------ formats


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("umids.csv", Format.CSV),
        ("UMIDS.CSV", Format.CSV),
        ("-", Format.CSV),
        ("a/b.tsv", Format.TSV),
        ("x.parquet", Format.PARQUET),
        ("x.xlsx", Format.XLSX),
        ("x.xlsm", Format.XLSX),
        ("ids.txt", Format.TXT),
    ],
)
def test_detect_format_by_extension(path: str, expected: Format) -> None:
    """The extension (any case) picks the format; '-' is CSV on stdin."""
    assert detect_format(path) is expected


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("ids.json", "unsupported file type '.json'"),
        ("ids", "has no file extension"),
        ("old.xls", "save it as .xlsx or CSV"),
    ],
)
def test_detect_format_refuses_other_extensions(path: str, fragment: str) -> None:
    """An unknown extension is an InputError that names the file and the supported formats."""
    with pytest.raises(InputError) as caught:
        detect_format(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert fragment in str(caught.value)
    if fragment != "save it as .xlsx or CSV":
        assert ".csv .tsv .parquet .xlsx .txt" in str(caught.value)


def test_input_error_is_a_usage_error() -> None:
    """Bad input exits 2 like any other usage error: nothing was sent."""
    assert issubclass(InputError, UsageError)


def test_importing_readers_does_not_import_pandas_pyarrow_or_openpyxl() -> None:
    """The heavy libraries load only when a file needs them, so `bulk-cancel --help` stays fast."""
    code = (
        "import sys, bulk_cancel.readers; "
        "print(sorted(m for m in ('pandas', 'pyarrow', 'openpyxl') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------ CSV rows


def test_csv_rows_are_canonical_and_numbered(tmp_path: Path) -> None:
    """Ids come back lowercase; line is the file line with the header as line 1."""
    path = write(tmp_path / "u.csv", f"umid\n{U[0].upper()}\n{U[1]}\n")
    source, rows = read_all(path)
    assert [(r.line, r.target_id, r.subaccount, r.kind) for r in rows] == [
        (2, U[0], SUB, Kind.MESSAGE),
        (3, U[1], SUB, Kind.MESSAGE),
    ]
    assert all(r.problem is None and r.detail is None for r in rows)
    assert (source.format, source.id_column, source.kind) == (Format.CSV, "umid", Kind.MESSAGE)


def test_values_are_trimmed_and_unquoted(tmp_path: Path) -> None:
    """Spaces, stray quotes (straight and typographic) and no-break spaces around ids are removed."""
    cells = [
        f"  {U[0]}  ",
        f"' {U[1]} '",
        f"\u201c{U[2]}\u201d",
        f"\u00a0{U[3]}\t",
        f'"""{U[4]}"""',
    ]
    path = write(
        tmp_path / "u.csv", "umid,subaccount_id\n" + "".join(f"{c}, {SUB} \n" for c in cells)
    )
    _, rows = read_all(path, default_subaccount=None)
    assert [r.target_id for r in rows] == U
    assert {r.subaccount for r in rows} == {SUB}
    assert all(r.problem is None for r in rows)


def test_blank_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    """Blank lines, all-empty rows and rows with a blank id are skipped, counted, and keep numbering."""
    text = f'umid,note\n{U[0]},a\n\n,,\n  ,has a note\n"",x\n{U[1]},b\n\n'
    source, rows = read_all(write(tmp_path / "u.csv", text))
    assert [(r.line, r.target_id) for r in rows] == [(2, U[0]), (7, U[1])]
    assert source.blank_rows == 5


def test_blank_rows_count_is_updated_while_iterating(tmp_path: Path) -> None:
    """blank_rows grows chunk by chunk and is complete once iteration ends."""
    text = "umid\n" + "".join(f"{u}\n\n" for u in U)
    source = open_input(str(write(tmp_path / "u.csv", text)), default_subaccount=SUB, chunk_rows=2)
    seen = []
    for _ in source:
        seen.append(source.blank_rows)
    assert seen == [2, 4, 5]  # rows are read two at a time here: a blank counts with its pair
    assert source.blank_rows == 5


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        ("umid", Kind.MESSAGE),
        ("UMID", Kind.MESSAGE),
        ("  Umid ", Kind.MESSAGE),
        ("message_id", Kind.MESSAGE),
        ("messageId", Kind.MESSAGE),
        ("Message ID", Kind.MESSAGE),
        ("batch_id", Kind.BATCH),
        ("batchId", Kind.BATCH),
        ("\ufeffumid", Kind.MESSAGE),
    ],
)
def test_id_column_aliases(tmp_path: Path, header: str, kind: Kind) -> None:
    """Each documented name, in any case and with stray spaces or a BOM, is the id column."""
    source, rows = read_all(write(tmp_path / "u.csv", f"note,{header}\nx,{U[0]}\n"))
    assert source.id_column == header.strip().lstrip("\ufeff")
    assert source.kind is kind
    assert [(r.target_id, r.kind, r.extra) for r in rows] == [(U[0], kind, ("x",))]


def test_umid_wins_over_message_id_and_batch_id(tmp_path: Path) -> None:
    """With several id-like columns, umid comes first, then message_id, then batch_id."""
    path = write(tmp_path / "u.csv", f"batch_id,message_id,umid\n{U[0]},{U[1]},{U[2]}\n")
    source, rows = read_all(path)
    assert (source.id_column, rows[0].target_id) == ("umid", U[2])
    assert source.extra_columns == ("batch_id", "message_id")
    path = write(tmp_path / "v.csv", f"batch_id,messageId\n{U[0]},{U[1]}\n")
    source, rows = read_all(path)
    assert (source.id_column, source.kind, rows[0].target_id) == ("messageId", Kind.MESSAGE, U[1])


def test_batch_column_makes_batch_rows(tmp_path: Path) -> None:
    """A batch_id column means every target is a batch UUID."""
    source, rows = read_all(write(tmp_path / "b.csv", f"batchId\n{U[0]}\n"))
    assert source.kind is Kind.BATCH
    assert rows[0].kind is Kind.BATCH and rows[0].target_id == U[0]


def test_column_option_overrides_detection(tmp_path: Path) -> None:
    """--column picks the named column, exactly or ignoring case, even when umid exists."""
    path = write(tmp_path / "u.csv", f"umid,Ref\n{U[0]},{U[1]}\n")
    for name in ("Ref", "ref", " REF "):
        source, rows = read_all(path, column=name)
        assert (source.id_column, rows[0].target_id, source.kind) == ("Ref", U[1], Kind.MESSAGE)
    assert source.extra_columns == ()  # 'umid' is a results column: dropped from the extras


def test_column_option_naming_a_batch_column_reads_batches(tmp_path: Path) -> None:
    """--column batch_id reads batch ids, as detection would."""
    source, _ = read_all(
        write(tmp_path / "u.csv", f"umid,batch_id\n{U[0]},{U[1]}\n"), column="batch_id"
    )
    assert source.kind is Kind.BATCH


def test_column_option_must_exist(tmp_path: Path) -> None:
    """An unknown --column is an error naming the lines looked at, the columns and both fixes."""
    message = input_error(write(tmp_path / "u.csv", f"a,b\n{U[0]},x\n"), column="umid_x")
    assert message == (
        f"{tmp_path / 'u.csv'}: no column 'umid_x' in lines 1-2 (line 1: a, b); check --column, "
        "or the header's line with --header-row"
    )


def test_no_usable_column_names_file_columns_and_fix(tmp_path: Path) -> None:
    """No id column: one line with the file, the lines looked at, its columns and the fixes."""
    path = write(tmp_path / "umids.csv", f"a,b,c\n{U[0]},x,y\n")
    assert input_error(path) == (
        f"{path}: no umid column in lines 1-2 (line 1: a, b, c); name it with --column, "
        "or the header's line with --header-row"
    )


def test_headerless_csv_is_explained(tmp_path: Path) -> None:
    """A CSV whose first line is already an id gets told to add a header (or use .txt)."""
    message = input_error(write(tmp_path / "u.csv", f"{U[0]}\n{U[1]}\n"))
    assert "first line is already an id" in message


def test_ambiguous_id_columns_are_refused(tmp_path: Path) -> None:
    """Two columns with equal claim (umid and UMID) is an error, not a guess."""
    message = input_error(write(tmp_path / "u.csv", f"umid,UMID\n{U[0]},{U[1]}\n"))
    assert "'umid' and 'UMID'" in message and "--column" in message


def test_long_column_lists_are_shortened(tmp_path: Path) -> None:
    """An error lists at most 20 columns and cuts long names, so it stays one readable line."""
    header = ",".join(f"c{i}" for i in range(30)) + "," + "x" * 500
    message = input_error(write(tmp_path / "u.csv", header + "\n"))
    assert "(11 more)" in message and "x" * 100 not in message


# ------------------------------------------------------------------------------ subaccounts


@pytest.mark.parametrize(
    "header", ["subaccount_id", "subAccountId", "SubAccount", " subaccount_id "]
)
def test_subaccount_column_aliases(tmp_path: Path, header: str) -> None:
    """Each subaccount alias is read per row; a blank cell falls back to the default."""
    path = write(tmp_path / "u.csv", f"umid,{header}\n{U[0]},other_sub\n{U[1]},\n")
    source, rows = read_all(path)
    assert source.subaccount_column == header.strip()
    assert [r.subaccount for r in rows] == ["other_sub", SUB]
    assert source.extra_columns == ()


def test_subaccount_column_option(tmp_path: Path) -> None:
    """--subaccount-column names the column; unknown names are an error listing the columns."""
    path = write(tmp_path / "u.csv", f"umid,account\n{U[0]},acct_1\n")
    source, rows = read_all(path, subaccount_column="Account", default_subaccount=None)
    assert (source.subaccount_column, rows[0].subaccount) == ("account", "acct_1")
    message = input_error(path, subaccount_column="sub")
    assert "no column 'sub' (columns: umid, account); check --subaccount-column" in message


def test_missing_subaccount_everywhere_is_an_error(tmp_path: Path) -> None:
    """No subaccount column and no default: the documented one-line fix."""
    path = write(tmp_path / "u.csv", f"umid\n{U[0]}\n")
    assert input_error(path, default_subaccount=None) == (
        f"{path}: no subaccount: pass --subaccount ID or add a subaccount_id column"
    )


def test_row_without_any_subaccount_is_a_problem_row(tmp_path: Path) -> None:
    """A blank subaccount cell with no default: the row is reported, not sent."""
    path = write(tmp_path / "u.csv", f"umid,subaccount_id\n{U[0]},\n{U[1]},sub_b\n")
    _, rows = read_all(path, default_subaccount=None)
    assert (rows[0].problem, rows[0].detail, rows[0].subaccount) == (
        Outcome.SUBACCOUNT_REJECTED,
        "missing subaccount id",
        "",
    )
    assert rows[1].problem is None


def test_invalid_subaccount_is_a_problem_row(tmp_path: Path) -> None:
    """A subaccount failing the documented pattern is rejected locally, as written."""
    path = write(tmp_path / "u.csv", f"umid,subaccount_id\n{U[0]},ab\n")
    _, rows = read_all(path)
    assert (rows[0].problem, rows[0].detail, rows[0].subaccount, rows[0].target_id) == (
        Outcome.SUBACCOUNT_REJECTED,
        "invalid subaccount id (local check)",
        "ab",
        U[0],
    )


def test_id_and_subaccount_cannot_be_the_same_column(tmp_path: Path) -> None:
    """Naming one column for both is refused."""
    message = input_error(write(tmp_path / "u.csv", f"umid\n{U[0]}\n"), subaccount_column="umid")
    assert "both the id and the subaccount column" in message


# ------------------------------------------------------------------------------ extra columns


def test_extra_columns_are_kept_as_strings_in_order(tmp_path: Path) -> None:
    """Other columns come back as written ('007', '1.50', padding, quotes), '' when missing."""
    text = f'code,umid,amount,note\n007,{U[0]},1.50,"  padded, with comma "\n0042,{U[1]}\n'
    source, rows = read_all(write(tmp_path / "u.csv", text))
    assert source.extra_columns == ("code", "amount", "note")
    assert [r.extra for r in rows] == [("007", "1.50", "  padded, with comma "), ("0042", "", "")]


def test_result_columns_are_dropped_from_extras(tmp_path: Path) -> None:
    """A results file fed back in keeps its own columns, not bulk-cancel's result columns."""
    header = ",".join([*RESULT_COLUMNS, "customer"])
    values = [U[0], "sub_b", "message", "failed", "503", "", "", "", "", "3", "", "2", "c-1"]
    source, rows = read_all(write(tmp_path / "results.csv", f"{header}\n{','.join(values)}\n"))
    assert source.extra_columns == ("customer",)
    assert (rows[0].target_id, rows[0].subaccount, rows[0].extra) == (U[0], "sub_b", ("c-1",))


def test_unnamed_and_repeated_header_names_are_made_unique(tmp_path: Path) -> None:
    """Blank header cells become 'Unnamed: i'; repeated names get .1, .2."""
    source, rows = read_all(write(tmp_path / "u.csv", f"umid,,note,note,note\n{U[0]},a,b,c,d\n"))
    assert source.extra_columns == ("Unnamed: 1", "note", "note.1", "note.2")
    assert rows[0].extra == ("a", "b", "c", "d")


def test_short_rows_are_padded_and_trailing_empty_values_ignored(tmp_path: Path) -> None:
    """Missing trailing cells are ''; extra empty cells beyond the header are harmless."""
    _, rows = read_all(write(tmp_path / "u.csv", f"umid,a,b\n{U[0]}\n{U[1]},x,y,,,\n"))
    assert [r.extra for r in rows] == [("", ""), ("x", "y")]


def test_rows_wider_than_the_header_are_refused(tmp_path: Path) -> None:
    """A row with more values than columns is shifted (an unquoted comma): its line is named."""
    path = write(tmp_path / "u.csv", f"umid,subaccount_id\n{U[0]},sub_a\n{U[1]},sub_b,oops\n")
    message = input_error(path)
    assert message == (
        f"{path}: line 3 has 3 values but the header has 2 columns; quote values that contain ','"
    )


# ------------------------------------------------------------------------------ dialects


def test_semicolon_csv_is_read(tmp_path: Path) -> None:
    """A .csv saved by European Excel (semicolons) is read with its delimiter."""
    source, rows = read_all(
        write(tmp_path / "u.csv", f"umid;subaccount_id;note\n{U[0]};sub_a;a, b\n")
    )
    assert (rows[0].target_id, rows[0].subaccount, rows[0].extra) == (U[0], "sub_a", ("a, b",))
    assert source.extra_columns == ("note",)


def test_tsv_is_read(tmp_path: Path) -> None:
    """TSV splits on tabs only; commas stay inside values."""
    source, rows = read_all(write(tmp_path / "u.tsv", f"umid\tnote\n{U[0]}\ta,b\n"))
    assert source.format is Format.TSV
    assert (rows[0].target_id, rows[0].extra) == (U[0], ("a,b",))


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_any_line_ending_is_read(tmp_path: Path, newline: str) -> None:
    """LF, CRLF and old-Mac CR files read the same, with the same line numbers."""
    text = newline.join(["umid", U[0], "", U[1], ""])
    source, rows = read_all(write(tmp_path / "u.csv", text))
    assert [(r.line, r.target_id) for r in rows] == [(2, U[0]), (4, U[1])]
    assert source.blank_rows == 1


def test_quoted_value_spanning_lines_is_one_row(tmp_path: Path) -> None:
    """A quoted value with newlines stays intact; line counts rows as a spreadsheet does."""
    text = f'umid,note\n{U[0]},"two\r\nlines"\n{U[1]},x\n'
    _, rows = read_all(write(tmp_path / "u.csv", text))
    assert [(r.line, r.extra) for r in rows] == [(2, ("two\r\nlines",)), (3, ("x",))]


def test_unclosed_quote_is_refused_not_swallowed(tmp_path: Path) -> None:
    """A quote never closed would hide every later row inside one value: an error naming its line."""
    path = write(tmp_path / "u.csv", f'umid,note\n{U[0]},ok\n{U[1]},"open\n{U[2]},x\n{U[3]},y\n')
    assert input_error(path) == (
        f"{path}: line 3: a quote opened in this row is never closed; check the quoting"
    )


def test_huge_quoted_value_is_refused(tmp_path: Path) -> None:
    """A value over the csv field limit (usually an open quote) is an error, not a memory hog."""
    path = write(tmp_path / "u.csv", f'umid,note\n{U[0]},"' + "x\n" * 100_000 + '"\n')
    assert "longer than 128 KiB" in input_error(path)


# ------------------------------------------------------------------------------ chunks


def test_header_only_yields_no_rows(tmp_path: Path) -> None:
    """A header and no rows is not an error: zero rows, zero chunks."""
    source, rows = read_all(write(tmp_path / "u.csv", "umid,subaccount_id\n"))
    assert rows == [] and source.blank_rows == 0


def test_large_csv_streams_in_several_chunks(tmp_path: Path) -> None:
    """200,000 rows arrive as ten chunks of 20,000, in order, with consecutive lines."""
    many = umids(200_000, seed=7)
    path = write(
        tmp_path / "big.csv", "umid,note\n" + "".join(f"{u},n{i}\n" for i, u in enumerate(many))
    )
    source = open_input(str(path), default_subaccount=SUB)
    sizes, first, last = [], None, None
    for chunk in source:
        sizes.append(len(chunk))
        first = first or chunk[0]
        last = chunk[-1]
    assert sizes == [20_000] * 10
    assert first is not None and last is not None
    assert (first.line, first.target_id) == (2, many[0])
    assert (last.line, last.target_id, last.extra) == (200_001, many[-1], ("n199999",))


def test_chunk_rows_bounds_every_chunk(tmp_path: Path) -> None:
    """chunk_rows=2 over five rows gives chunks of 2, 2 and 1."""
    source = open_input(
        str(write(tmp_path / "u.csv", "umid\n" + "\n".join(U))),
        default_subaccount=SUB,
        chunk_rows=2,
    )
    assert [len(c) for c in source] == [2, 2, 1]


def test_chunk_rows_must_be_positive(tmp_path: Path) -> None:
    """chunk_rows below 1 is a programming error."""
    with pytest.raises(ValueError, match="chunk_rows"):
        open_input(str(write(tmp_path / "u.csv", f"umid\n{U[0]}\n")), chunk_rows=0)


def test_a_source_iterates_once(tmp_path: Path) -> None:
    """A second iteration is refused instead of silently yielding nothing."""
    source, _ = read_all(write(tmp_path / "u.csv", f"umid\n{U[0]}\n"))
    with pytest.raises(RuntimeError, match="only once"):
        list(source)


# ------------------------------------------------------------------------------ invalid values

HOSTILE_IDS = [
    "/",
    "..",
    "../../admin",
    f"{U[0]}/../x",
    f"{U[0]}%2F",
    f"%2F{U[0][3:]}",
    f"{U[0]}?x=1",
    f"{U[0]}#frag",
    f"{U[0][:8]} {U[0][9:]}",
    f"ü{U[0][1:]}",
    f"{U[0][:-1]}\x1b",
    "\x07bell",
    "x" * 10_000,
]


@pytest.mark.parametrize("value", HOSTILE_IDS, ids=range(len(HOSTILE_IDS)))
def test_hostile_ids_are_invalid_umid_rows(tmp_path: Path, value: str) -> None:
    """Path, URL, space, non-ASCII, control and 10 kB ids become INVALID_UMID rows, never targets."""
    path = tmp_path / "u.csv"
    path.write_text(f'umid\n"{value}"\n{U[1]}\n', encoding="utf-8", newline="")
    _, rows = read_all(path)
    bad, good = rows
    assert (bad.line, bad.problem, bad.detail) == (
        2,
        Outcome.INVALID_UMID,
        "not a UUID (local check)",
    )
    assert len(bad.target_id) <= 200
    assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in bad.target_id)
    assert good.problem is None


def test_invalid_id_is_reported_as_written_cut_to_200(tmp_path: Path) -> None:
    """The reported id is the trimmed original, at most 200 characters, controls escaped."""
    path = tmp_path / "u.csv"
    path.write_text(f"umid\n  not-an-id  \n{'y' * 10_000}\nbad\x1bid\n", newline="")
    _, rows = read_all(path)
    assert [r.target_id for r in rows] == ["not-an-id", "y" * 200, "bad\\x1bid"]


HOSTILE_SUBACCOUNTS = [
    "acme/hq",
    "..",
    "../x",
    "acme%2Fhq",
    "acme?x",
    "acme#x",
    "acme hq",
    "ácmé",
    "ac\x07me",
    "s" * 10_000,
]


@pytest.mark.parametrize("value", HOSTILE_SUBACCOUNTS, ids=range(len(HOSTILE_SUBACCOUNTS)))
def test_hostile_subaccounts_are_rejected_rows(tmp_path: Path, value: str) -> None:
    """Subaccounts that could escape a path segment become SUBACCOUNT_REJECTED rows."""
    path = tmp_path / "u.csv"
    path.write_text(f'umid,subaccount_id\n{U[0]},"{value}"\n', encoding="utf-8", newline="")
    _, rows = read_all(path)
    assert (rows[0].problem, rows[0].detail) == (
        Outcome.SUBACCOUNT_REJECTED,
        "invalid subaccount id (local check)",
    )
    assert len(rows[0].subaccount) <= 200


def test_number_looking_ids_mention_excel(tmp_path: Path) -> None:
    """Ids Excel turned into numbers are INVALID_UMID rows whose detail says so."""
    path = write(tmp_path / "u.csv", f"umid\n{U[0]}\n1.23457E+35\n12345\n-4.5e-2\n")
    _, rows = read_all(path)
    assert rows[0].problem is None
    for row in rows[1:]:
        assert row.problem is Outcome.INVALID_UMID
        assert row.detail is not None and "Excel may have converted" in row.detail


def test_a_column_of_numbers_is_an_error(tmp_path: Path) -> None:
    """When every id of the first chunk is a number, the column was mangled: re-export as text."""
    message = input_error(write(tmp_path / "u.csv", "umid\n1.23457E+35\n4.5E+18\n\n123\n"))
    assert "the umid column holds numbers" in message and "re-export the column as text" in message


# ------------------------------------------------------------------------------ encodings


def test_utf8_with_bom_is_read(tmp_path: Path) -> None:
    """A UTF-8 byte-order mark does not end up in the first column's name."""
    source, rows = read_all(
        write(tmp_path / "u.csv", b"\xef\xbb\xbfumid,note\n" + f"{U[0]},Zo\u00eb\n".encode())
    )
    assert (source.id_column, rows[0].extra) == ("umid", ("Zo\u00eb",))


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le"])
def test_utf16_and_utf32_are_recognised_by_bom(tmp_path: Path, codec: str) -> None:
    """Excel's 'Unicode text' (UTF-16 with a BOM) just works, as does UTF-32."""
    bom = {
        "utf-16-le": codecs.BOM_UTF16_LE,
        "utf-16-be": codecs.BOM_UTF16_BE,
        "utf-32-le": codecs.BOM_UTF32_LE,
    }
    data = bom[codec] + f"umid,note\r\n{U[0]},Zo\u00eb\r\n{U[1]},\u65e5\u672c\r\n".encode(codec)
    _, rows = read_all(write(tmp_path / "u.csv", data))
    assert [(r.line, r.target_id, r.extra) for r in rows] == [
        (2, U[0], ("Zo\u00eb",)),
        (3, U[1], ("\u65e5\u672c",)),
    ]


def test_latin1_names_the_line_and_the_fixes(tmp_path: Path) -> None:
    """Bytes that are not UTF-8: the line, re-save as UTF-8, or --encoding."""
    path = write(
        tmp_path / "u.csv", f"umid,note\n{U[0]},plain\n{U[1]},caf\u00e9\n".encode("latin-1")
    )
    assert input_error(path) == (
        f"{path}: line 3 is not UTF-8 (byte 0xe9); re-save the file as UTF-8, or pass "
        "--encoding latin-1 (cp1252 for files from Windows Excel)"
    )


def test_encoding_option_is_honoured(tmp_path: Path) -> None:
    """--encoding cp1252 reads a Windows Excel file, euro sign included."""
    path = write(tmp_path / "u.csv", f"umid,note\n{U[0]},5 \u20ac caf\u00e9\n".encode("cp1252"))
    _, rows = read_all(path, encoding="cp1252")
    assert rows[0].extra == ("5 \u20ac caf\u00e9",)


def test_unknown_encoding_is_an_input_error(tmp_path: Path) -> None:
    """A misspelt --encoding is one line, not a LookupError."""
    assert "unknown encoding 'latin-9x'" in input_error(
        write(tmp_path / "u.csv", f"umid\n{U[0]}\n"), encoding="latin-9x"
    )


def test_wrong_explicit_encoding_names_the_line(tmp_path: Path) -> None:
    """--encoding utf-8 on a latin-1 file: the line and a hint to check --encoding."""
    path = write(tmp_path / "u.csv", f"umid\n{U[0]}\n\u00e9\n".encode("latin-1"))
    assert input_error(path, encoding="utf-8") == (
        f"{path}: line 3 cannot be decoded as utf-8 (byte 0xe9); check --encoding"
    )


def test_decode_error_far_into_the_file_is_raised_while_iterating(tmp_path: Path) -> None:
    """A bad byte at line 30,002 (past the first block) fails the read with that line number."""
    many = umids(30_000, seed=3)
    data = ("umid\n" + "".join(f"{u}\n" for u in many)).encode() + b"caf\xe9\n"
    source = open_input(
        str(write(tmp_path / "u.csv", data)), default_subaccount=SUB, chunk_rows=1000
    )
    with pytest.raises(InputError) as caught:
        for _ in source:
            pass
    assert str(caught.value).startswith(f"{tmp_path / 'u.csv'}: line 30002 is not UTF-8")


def test_utf16_without_bom_gets_a_hint(tmp_path: Path) -> None:
    """UTF-16 with no byte-order mark is recognised and the --encoding fix suggested."""
    message = input_error(write(tmp_path / "u.csv", f"umid\r\n{U[0]}\r\n".encode("utf-16-le")))
    assert "UTF-16 without a byte-order mark" in message and "--encoding utf-16-le" in message


def test_binary_garbage_is_not_a_csv(tmp_path: Path) -> None:
    """Random bytes named .csv: 'not a CSV/text file'."""
    assert "is not a CSV/text file" in input_error(write(tmp_path / "u.csv", bytes(range(256)) * 8))


@pytest.mark.parametrize(
    ("magic", "fragment"),
    [
        (b"PK\x03\x04", "name it .xlsx"),
        (b"PAR1", "name it .parquet"),
        (b"\xd0\xcf\x11\xe0", "old Excel .xls"),
        (b"\x1f\x8b\x08", "gzip"),
    ],
)
def test_other_formats_named_csv_are_recognised(
    tmp_path: Path, magic: bytes, fragment: str
) -> None:
    """An xlsx, Parquet, xls or gzip file saved as .csv is told apart and the fix named."""
    assert fragment in input_error(write(tmp_path / "u.csv", magic + b"\x00" * 100))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_never_escape_as_another_exception(data: bytes) -> None:
    """Whatever bytes arrive on stdin, reading gives rows or one-line InputErrors, nothing else."""
    stdin = io.BytesIO(b"umid,subaccount_id\n" + data)
    outcome = outcome_of(lambda: read_all("-", stdin=stdin))
    if isinstance(outcome, InputError):
        assert len(str(outcome).splitlines()) == 1
        assert str(outcome).startswith("<stdin>: ")
    else:
        assert all(row.problem is not None or len(row.target_id) == 36 for row in outcome[1])


# ------------------------------------------------------------------------------ files


def test_missing_file(tmp_path: Path) -> None:
    """A path that does not exist: one line naming it."""
    path = tmp_path / "umids.csv"
    assert input_error(path) == f"{path}: does not exist; check the path"


def test_empty_file(tmp_path: Path) -> None:
    """A zero-byte file is an error: the export that wrote it failed."""
    assert "is empty" in input_error(write(tmp_path / "u.csv", b""))


def test_blank_lines_only(tmp_path: Path) -> None:
    """A file of blank lines has no header: an error."""
    assert "is empty (only blank lines)" in input_error(write(tmp_path / "u.csv", "\n  \n\n"))


def test_generated_bad_files_give_one_line_errors(tmp_path: Path) -> None:
    """Directories, symlink loops, dangling links, FIFOs and 50 MB lines: each one clear line."""
    made = corpus.write_generated(tmp_path)
    expected = {
        "huge_single_line": "longer than 1 MiB",
        "huge_line_after_header": "line 3 is longer than 1 MiB",
        "directory": "is a directory",
        "symlink_loop": "cannot be read (Too many levels of symbolic links)",
        "dangling_symlink": "does not exist",
        "fifo": "is not a regular file",
    }
    for key, fragment in expected.items():
        message = input_error(made[key])
        assert message.startswith(f"{made[key]}: ") and fragment in message, (key, message)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    """A file without read permission: one line saying so."""
    path = corpus.write_generated(tmp_path)["unreadable"]
    assert "permission denied" in input_error(path)


def test_permission_error_becomes_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When opening fails with EACCES (as for a chmod 000 file), the reader says so in one line."""
    path = write(tmp_path / "u.csv", f"umid\n{U[0]}\n")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(readers.files, "open", refuse, raising=False)
    assert input_error(path) == f"{path}: cannot be read (permission denied); check its permissions"


def test_read_error_mid_file_becomes_one_line(tmp_path: Path) -> None:
    """An I/O error while reading stdin (EIO) is an InputError, not an OSError."""

    class Failing(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            self.calls += 1
            if self.calls > 1:
                raise OSError(5, "Input/output error")
            data = f"umid\n{U[0]}\n".encode()
            buffer[: len(data)] = data
            return len(data)

    with pytest.raises(InputError, match=r"^<stdin>: cannot be read \(Input/output error\)$"):
        read_all("-", stdin=Failing())


# ------------------------------------------------------------------------------ stdin and checksums


def test_stdin_is_read_as_csv_and_hashed(tmp_path: Path) -> None:
    """'-' reads CSV from the given stream; after iteration the checksum is the sha256 of its bytes."""
    data = f"umid,subaccount_id\n{U[0]},sub_a\n{U[1]},\n".encode()
    source = open_input("-", stdin=io.BytesIO(data), default_subaccount=SUB)
    with pytest.raises(RuntimeError, match="read to the end"):
        source.checksum()
    rows = [r for chunk in source for r in chunk]
    assert [(r.line, r.target_id, r.subaccount) for r in rows] == [
        (2, U[0], "sub_a"),
        (3, U[1], SUB),
    ]
    assert source.checksum() == "sha256:" + hashlib.sha256(data).hexdigest()
    assert source.path == "-" and source.format is Format.CSV


def test_stdin_checksum_equals_the_file_checksum(tmp_path: Path) -> None:
    """The same bytes give the same checksum whether read from a file or from stdin."""
    data = codecs.BOM_UTF16_LE + f"umid\r\n{U[0]}\r\n".encode("utf-16-le")
    from_file, _ = read_all(write(tmp_path / "u.csv", data))
    from_stdin, _ = read_all("-", stdin=io.BytesIO(data))
    assert from_file.checksum() == from_stdin.checksum()


def test_stdin_errors_name_stdin() -> None:
    """Errors about stdin say <stdin>."""
    assert (
        input_error("-", stdin=io.BytesIO(b""))
        == "<stdin>: is empty; check that the export that wrote it succeeded"
    )
    assert input_error("-", stdin=io.BytesIO(b"a,b\n")).startswith("<stdin>: no umid column")


def test_file_checksum_before_and_after_iteration(tmp_path: Path) -> None:
    """A file's checksum is known before reading it, is stable, and is sha256 of its bytes."""
    data = f"umid\n{U[0]}\n".encode()
    source = open_input(str(write(tmp_path / "u.csv", data)), default_subaccount=SUB)
    before = source.checksum()
    list(source)
    assert before == source.checksum() == "sha256:" + hashlib.sha256(data).hexdigest()


def test_checksum_depends_on_bytes_only(tmp_path: Path) -> None:
    """Equal bytes under different names hash equal; one changed byte hashes differently."""
    a = open_input(str(write(tmp_path / "a.csv", f"umid\n{U[0]}\n")), default_subaccount=SUB)
    b = open_input(str(write(tmp_path / "b.csv", f"umid\n{U[0]}\n")), default_subaccount=SUB)
    c = open_input(str(write(tmp_path / "c.csv", f"umid\n{U[1]}\n")), default_subaccount=SUB)
    assert a.checksum() == b.checksum() != c.checksum()


def test_checksum_of_a_multi_block_file(tmp_path: Path) -> None:
    """A file larger than the 1 MiB hashing block still hashes to its sha256."""
    data = ("umid\n" + "".join(f"{u}\n" for u in umids(40_000, seed=9))).encode()
    source = open_input(str(write(tmp_path / "u.csv", data)), default_subaccount=SUB)
    assert len(data) > 1 << 20
    assert source.checksum() == "sha256:" + hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------ txt


def test_txt_is_one_id_per_line(tmp_path: Path) -> None:
    """Each line is an id; blank lines are counted; line is the line number."""
    source, rows = read_all(write(tmp_path / "ids.txt", f"{U[0]}\n\n  {U[1].upper()}  \r\nnope\n"))
    assert [(r.line, r.target_id, r.problem) for r in rows] == [
        (1, U[0], None),
        (3, U[1], None),
        (4, "nope", Outcome.INVALID_UMID),
    ]
    assert (source.format, source.blank_rows, source.extra_columns) == (Format.TXT, 1, ())


def test_txt_header_line_is_skipped(tmp_path: Path) -> None:
    """A first line 'umid' is a header, not an invalid id."""
    source, rows = read_all(write(tmp_path / "ids.txt", f"UMID\n{U[0]}\n"))
    assert [(r.line, r.target_id) for r in rows] == [(2, U[0])]
    assert source.kind is Kind.MESSAGE


def test_txt_batch_header_reads_batches(tmp_path: Path) -> None:
    """A first line 'batch_id' makes every line a batch id."""
    source, rows = read_all(write(tmp_path / "ids.txt", f"batch_id\n{U[0]}\n"))
    assert source.kind is Kind.BATCH and rows[0].kind is Kind.BATCH


def test_txt_needs_a_default_subaccount(tmp_path: Path) -> None:
    """A .txt has no subaccount column: --subaccount is required."""
    assert "pass --subaccount ID" in input_error(
        write(tmp_path / "ids.txt", f"{U[0]}\n"), default_subaccount=None
    )


def test_txt_that_is_really_a_csv_is_refused(tmp_path: Path) -> None:
    """A table saved as .txt would make every row invalid: told to rename it."""
    assert "name it .csv" in input_error(
        write(tmp_path / "ids.txt", f"umid,subaccount_id\n{U[0]},x\n")
    )


def test_txt_ignores_the_column_option(tmp_path: Path) -> None:
    """--column means nothing for one id per line."""
    _, rows = read_all(write(tmp_path / "ids.txt", f"{U[0]}\n"), column="whatever")
    assert rows[0].target_id == U[0]


# ------------------------------------------------------------------------------ parquet


def test_parquet_rows_and_extras(tmp_path: Path) -> None:
    """Parquet ids and subaccounts come back as strings, extras typed; line is index + 1."""
    path = parquet(
        tmp_path / "u.parquet",
        {
            "count": [7, None, 3],
            "umid": [U[0].upper(), None, U[2]],
            "subaccount_id": ["sub_a", None, ""],
            "price": [1.5, 2.0, float("nan")],
            "note": ["007", "x", None],
            "outcome": ["failed", "failed", "failed"],
        },
    )
    source, rows = read_all(path)
    assert (source.format, source.extra_columns) == (Format.PARQUET, ("count", "price", "note"))
    assert source.extra_types == ("int64", "double", "string")
    assert [(r.line, r.target_id, r.subaccount, r.extra[0], r.extra[2]) for r in rows] == [
        (1, U[0], "sub_a", 7, "007"),
        (3, U[2], SUB, 3, None),
    ]
    assert rows[0].extra[1] == 1.5 and math.isnan(cast(float, rows[1].extra[1]))
    assert source.blank_rows == 1


def test_parquet_streams_in_chunks(tmp_path: Path) -> None:
    """Parquet is read in batches of chunk_rows."""
    many = umids(10, seed=4)
    source = open_input(
        str(parquet(tmp_path / "u.parquet", {"umid": many})), default_subaccount=SUB, chunk_rows=4
    )
    chunks = list(source)
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert [r.line for c in chunks for r in c] == list(range(1, 11))


def test_parquet_uuid_bytes_are_read(tmp_path: Path) -> None:
    """16-byte binary ids (Parquet's UUID type) become canonical UUID text."""
    import uuid

    import pyarrow as pa

    raw = [uuid.UUID(u).bytes for u in U[:2]]
    _, rows = read_all(parquet(tmp_path / "u.parquet", {"umid": pa.array(raw, pa.binary(16))}))
    assert [r.target_id for r in rows] == U[:2]


def test_parquet_numeric_id_column_is_an_error(tmp_path: Path) -> None:
    """An integer or float id column cannot hold UUIDs: re-export as text."""
    message = input_error(parquet(tmp_path / "u.parquet", {"umid": [1.5e35, 2.0]}))
    assert "the umid column holds numbers (double)" in message


def test_parquet_without_rows_yields_nothing(tmp_path: Path) -> None:
    """An empty table is zero rows, like a header-only CSV."""
    import pyarrow as pa

    _, rows = read_all(parquet(tmp_path / "u.parquet", {"umid": pa.array([], pa.string())}))
    assert rows == []


def test_parquet_column_detection_errors(tmp_path: Path) -> None:
    """A Parquet file without an id column lists its columns."""
    path = parquet(tmp_path / "u.parquet", {"id": [U[0]], "sub": ["x"]})
    assert input_error(path) == f"{path}: no umid column (columns: id, sub); name it with --column"


# ------------------------------------------------------------------------------ xlsx


def test_xlsx_rows_extras_and_lines(tmp_path: Path) -> None:
    """Excel rows keep their row numbers (gaps included) and typed cells keep their types."""
    path = xlsx(
        tmp_path / "u.xlsx",
        {
            "ids": [
                ["umid", "subaccount_id", "count", "note"],
                [U[0], "sub_a", 7, "007"],
                [None, None, None, None],
                [U[1].upper(), None, 2.5, None],
                ["bad id", "sub_a", 7.0, "x"],
            ]
        },
    )
    source, rows = read_all(path)
    assert (source.format, source.extra_columns) == (Format.XLSX, ("count", "note"))
    assert source.extra_types == ("cell", "cell")
    assert [(r.line, r.target_id, r.subaccount, r.extra, r.problem) for r in rows] == [
        (2, U[0], "sub_a", (7, "007"), None),
        (4, U[1], SUB, (2.5, None), None),
        (5, "bad id", "sub_a", (7, "x"), Outcome.INVALID_UMID),
    ]
    assert source.blank_rows == 1


def test_xlsx_ids_on_a_second_sheet_just_work(tmp_path: Path) -> None:
    """Without --sheet, the first sheet whose header has an id column is read."""
    path = xlsx(
        tmp_path / "u.xlsx", {"Read me": [["hello"]], "Empty": [], "ids": [["messageId"], [U[0]]]}
    )
    source, rows = read_all(path)
    assert (source.id_column, [r.target_id for r in rows]) == ("messageId", [U[0]])


def test_xlsx_sheet_option(tmp_path: Path) -> None:
    """--sheet picks a sheet (case-insensitively); an unknown one lists the sheets."""
    path = xlsx(tmp_path / "u.xlsx", {"first": [["umid"], [U[0]]], "Second": [["umid"], [U[1]]]})
    _, rows = read_all(path, sheet="second")
    assert [r.target_id for r in rows] == [U[1]]
    assert (
        input_error(path, sheet="third")
        == f"{path}: no sheet 'third' (sheets: first, Second); check --sheet"
    )


def test_xlsx_without_an_id_column_lists_sheets(tmp_path: Path) -> None:
    """No sheet with an id column: the sheets and their columns, and both fixes."""
    path = xlsx(tmp_path / "u.xlsx", {"a": [["x", "y"]], "b": []})
    assert input_error(path) == (
        f"{path}: no sheet has a umid column in its first 20 rows (sheets: a (x, y); b (empty)); "
        "name the sheet with --sheet and the column with --column, or the header's row with "
        "--header-row"
    )


def test_xlsx_header_below_blank_rows(tmp_path: Path) -> None:
    """Blank rows above the header are skipped; row numbers stay Excel's."""
    path = xlsx(tmp_path / "u.xlsx", {"s": [[None], [None], ["umid"], [U[0]]]})
    _, rows = read_all(path)
    assert [(r.line, r.target_id) for r in rows] == [(4, U[0])]


def test_xlsx_numbers_in_the_id_column(tmp_path: Path) -> None:
    """Excel numbers among ids are INVALID_UMID with the Excel hint; all numbers is an error."""
    mixed = xlsx(tmp_path / "m.xlsx", {"s": [["umid"], [U[0]], [1.23457e35]]})
    _, rows = read_all(mixed)
    assert rows[1].problem is Outcome.INVALID_UMID and "Excel" in (rows[1].detail or "")
    numbers = xlsx(tmp_path / "n.xlsx", {"s": [["umid"], [1.23457e35], [42]]})
    assert "the umid column holds numbers" in input_error(numbers)


# ------------------------------------------------------------------------------ the bad corpus

#: What each committed file does: an int is the number of rows read, a str a fragment of the error.
CORPUS: dict[str, int | str] = {
    "empty.csv": "is empty",
    "header_only.csv": 0,
    "blank_lines_only.csv": "is empty (only blank lines)",
    "no_usable_column.csv": "no umid column in lines 1-2 (line 1: id, sub, note); name it",
    "ambiguous_columns.csv": "'message_id' and 'messageId' could each be the one to use",
    "headerless.csv": "first line is already an id",
    "binary_garbage.csv": "is not a CSV/text file",
    "latin1.csv": "line 3 is not UTF-8 (byte 0xe9)",
    "utf16.csv": 1,
    "utf16_no_bom.csv": "UTF-16 without a byte-order mark",
    "utf8_bom.csv": 1,
    "semicolons.csv": 1,
    "mac_line_endings.csv": 2,
    "ragged.csv": "line 2 has 3 values but the header has 2 columns",
    "unclosed_quote.csv": "line 2: a quote opened in this row is never closed",
    "nul_byte.csv": "is not a CSV/text file",
    "zip_named.csv": "is a zip archive",
    "hostile_values.csv": 14,
    "fake.parquet": "is not a Parquet file (it looks like text: a CSV named .parquet?)",
    "truncated.parquet": "is not a Parquet file",
    "fake.xlsx": "is not an Excel .xlsx file (it looks like text: a CSV named .xlsx?)",
    "password_protected.xlsx": "an old .xls, or a password-protected workbook",
    "old_excel.xls": "old Excel .xls files are not read",
    "second_sheet.xlsx": 2,
    "excel_numbers.xlsx": "the umid column holds numbers",
    "ids_with_header.txt": 3,
    "table.txt": "looks like a table with a header",
    "no_extension": "has no file extension",
}


def corpus_files() -> list[Path]:
    return sorted(p for p in BAD.iterdir() if not p.name.startswith("."))


def test_corpus_table_covers_every_committed_file() -> None:
    """Every file in tests/data/bad has an expectation, and every expectation a file."""
    assert sorted(p.name for p in corpus_files()) == sorted(CORPUS)


def test_committed_corpus_is_what_the_script_writes() -> None:
    """The byte-stable corpus files equal make_bad_corpus.py's output; the rest exist."""
    for name, data in corpus.STABLE.items():
        assert (BAD / name).read_bytes() == data, name
    assert set(corpus.STABLE) | set(corpus.variable()) == set(CORPUS)


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_file_reads_or_fails_in_one_line(path: Path) -> None:
    """Each bad file either reads as expected or raises one InputError line naming the file."""
    expected = CORPUS[path.name]
    outcome = outcome_of(lambda: read_all(path))
    if isinstance(outcome, InputError):
        message = str(outcome)
        assert len(message.splitlines()) == 1
        assert message.startswith(f"{path}: ")
        assert isinstance(expected, str), message
        assert expected in message
    else:
        rows = outcome[1]
        assert expected == len(rows), rows
        assert all(r.problem is not None or len(r.target_id) == 36 for r in rows)


def test_corpus_hostile_rows_are_all_problems() -> None:
    """Every row of hostile_values.csv is refused locally: nothing in it would be sent."""
    _, rows = read_all(BAD / "hostile_values.csv")
    assert all(r.problem in (Outcome.INVALID_UMID, Outcome.SUBACCOUNT_REJECTED) for r in rows)


def test_corpus_second_sheet_values(tmp_path: Path) -> None:
    """second_sheet.xlsx: ids from sheet 'ids', extras as the cells hold them ('007' stays '007')."""
    _, rows = read_all(BAD / "second_sheet.xlsx")
    assert [(r.line, r.target_id, r.extra) for r in rows] == [
        (2, corpus.U1, ("007",)),
        (3, corpus.U2, (None,)),
    ]


READERS: list[tuple[str, Callable[[Path], Path]]] = [
    ("csv", lambda d: write(d / "u.csv", f"umid\n{U[0]}\n")),
    ("txt", lambda d: write(d / "u.txt", f"{U[0]}\n")),
    ("parquet", lambda d: parquet(d / "u.parquet", {"umid": [U[0]]})),
    ("xlsx", lambda d: xlsx(d / "u.xlsx", {"s": [["umid"], [U[0]]]})),
]


@pytest.mark.parametrize(("name", "make"), READERS, ids=[n for n, _ in READERS])
def test_sources_opened_but_never_iterated_leak_nothing(
    tmp_path: Path, name: str, make: Callable[[Path], Path]
) -> None:
    """Opening validates and closes its files: an unread source leaves no open handle behind."""
    path = make(tmp_path)
    before = len(os.listdir("/proc/self/fd"))
    source = open_input(str(path), default_subaccount=SUB)
    source.checksum()
    assert len(os.listdir("/proc/self/fd")) <= before
    assert source.extra_columns == ()


# ------------------------------------------------------------------------------ header search (issue 14)

TITLE = "Spring campaign abort list (exported 2026-03-01)"


def test_xlsx_header_below_a_title_and_a_blank_row(tmp_path: Path) -> None:
    """A sheet with a title row and a blank row above the header is read; rows keep their numbers."""
    path = xlsx(
        tmp_path / "u.xlsx",
        {
            "Abort list": [
                [TITLE],
                [],
                ["Message ID", "Cost", "Campaign"],
                [U[0], 0.05, "Spring"],
                [U[1], 0.07, "Spring"],
            ]
        },
    )
    source, rows = read_all(path)
    assert (source.id_column, source.header_line, source.extra_columns) == (
        "Message ID",
        3,
        ("Cost", "Campaign"),
    )
    assert [(r.line, r.target_id, r.extra) for r in rows] == [
        (4, U[0], (0.05, "Spring")),
        (5, U[1], (0.07, "Spring")),
    ]


def test_xlsx_title_row_with_column_and_sheet_options(tmp_path: Path) -> None:
    """--column "Message ID" --sheet NAME finds the header under a title (the issue's command)."""
    path = xlsx(
        tmp_path / "u.xlsx",
        {
            "Notes": [["read me"]],
            "Abort list": [[TITLE], [], ["Message ID", "Cost", "Campaign"], [U[2], 1, "x"]],
        },
    )
    source, rows = read_all(path, column="Message ID", sheet="Abort list")
    assert (source.header_line, [(r.line, r.target_id) for r in rows]) == (3, [(4, U[2])])


def test_csv_header_below_a_title_and_a_blank_line(tmp_path: Path) -> None:
    """A CSV with a title line (padded with commas, as sheets export it) and a blank line above
    the header is read; lines stay true to the file."""
    path = write(
        tmp_path / "u.csv",
        f"{TITLE},,\n,,\nMessage ID,Cost,Campaign\n{U[0]},0.05,Spring\n\n{U[1]},0.07,Spring\n",
    )
    source, rows = read_all(path)
    assert (source.id_column, source.header_line, source.delimiter) == ("Message ID", 3, ",")
    assert [(r.line, r.target_id, r.extra) for r in rows] == [
        (4, U[0], ("0.05", "Spring")),
        (6, U[1], ("0.07", "Spring")),
    ]


def test_semicolon_csv_with_a_title_takes_the_header_lines_delimiter(tmp_path: Path) -> None:
    """A European ';' CSV whose title line has a comma is split by the header line's ';'."""
    path = write(
        tmp_path / "u.csv", f"Abort list, spring\n\nmessage_id;Cost\n{U[0]};0,05\n{U[1]};0,07\n"
    )
    source, rows = read_all(path)
    assert (source.delimiter, source.header_line) == (";", 3)
    assert [(r.line, r.target_id, r.extra) for r in rows] == [
        (4, U[0], ("0,05",)),
        (5, U[1], ("0,07",)),
    ]


def test_stdin_header_below_a_title(tmp_path: Path) -> None:
    """CSV on stdin with a title line above the header is read like a file."""
    data = f"{TITLE}\numid,note\n{U[0]},x\n".encode()
    source, rows = read_all("-", stdin=io.BytesIO(data))
    assert (source.header_line, [(r.line, r.target_id) for r in rows]) == (2, [(3, U[0])])


def test_header_row_option_reads_a_header_past_the_search(tmp_path: Path) -> None:
    """A header below 20 other rows is not found (the error names the lines looked at);
    --header-row names it."""
    notes = "".join(f"note {i}\n" for i in range(1, 25))
    path = write(tmp_path / "u.csv", f"{notes}umid,cost\n{U[0]},3\n")
    assert input_error(path) == (
        f"{path}: no umid column in lines 1-20 (line 1: note 1); name it with --column, "
        "or the header's line with --header-row"
    )
    source, rows = read_all(path, header_row=25)
    assert (source.header_line, [(r.line, r.target_id, r.extra) for r in rows]) == (
        25,
        [(26, U[0], ("3",))],
    )


def test_header_row_option_wins_over_the_search(tmp_path: Path) -> None:
    """--header-row takes that row even when an earlier one names an id column."""
    path = write(tmp_path / "u.csv", f"umid\nnot this\nmessage_id,umid_old\n{U[1]},{U[0]}\n")
    source, rows = read_all(path, header_row=3)
    assert (source.id_column, [r.target_id for r in rows]) == ("message_id", [U[1]])
    xl = xlsx(tmp_path / "u.xlsx", {"s": [["umid"], ["x"], ["message_id"], [U[3]]]})
    source, rows = read_all(xl, header_row=3)
    assert (source.header_line, [(r.line, r.target_id) for r in rows]) == (3, [(4, U[3])])


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (2, "line 2 is blank; check --header-row"),
        (9, "has no line 9 (it ends at line 3); check --header-row"),
        (3, "no umid column in line 3 (columns: x); name it with --column (or --header-row)"),
    ],
)
def test_header_row_option_errors(tmp_path: Path, row: int, problem: str) -> None:
    """A --header-row that is blank, past the end or without an id column is one clear line."""
    path = write(tmp_path / "u.csv", "umid\n\nx\n")
    assert input_error(path, header_row=row) == f"{path}: {problem}"


def test_xlsx_without_a_header_in_the_named_sheet(tmp_path: Path) -> None:
    """--sheet with no id column in its first rows names the rows looked at and --header-row."""
    path = xlsx(tmp_path / "u.xlsx", {"s": [["Abort list"], [], ["id", "cost"], ["a", 1]]})
    assert input_error(path, sheet="s") == (
        f"{path}: no umid column in rows 1-4 (row 1: Abort list); name it with --column, "
        "or the header's row with --header-row"
    )


# ------------------------------------------------------------------------------ csv style (issue 14)


def test_csv_style_is_reported_for_the_results(tmp_path: Path) -> None:
    """The source tells the delimiter and whether a UTF-8 BOM began the file."""
    plain, _ = read_all(write(tmp_path / "a.csv", f"umid\n{U[0]}\n"))
    excel = write(tmp_path / "b.csv", codecs.BOM_UTF8 + f"umid;note\n{U[0]};x\n".encode())
    european, _ = read_all(excel)
    tsv, _ = read_all(write(tmp_path / "c.tsv", f"umid\tnote\n{U[0]}\tx\n"))
    parq, _ = read_all(parquet(tmp_path / "d.parquet", {"umid": [U[0]]}))
    assert [(s.delimiter, s.utf8_bom) for s in (plain, european, tsv, parq)] == [
        (",", False),
        (";", True),
        ("\t", False),
        (None, False),
    ]


def test_parquet_extras_keep_their_arrow_types(tmp_path: Path) -> None:
    """Int, float, bool, timestamp and date Parquet columns keep their types; others are text."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    when = dt.datetime(2026, 3, 1, 10, 30, tzinfo=dt.UTC)
    table = pa.table(
        {
            "umid": [U[0]],
            "n": pa.array([7], pa.int64()),
            "cost": pa.array([0.05], pa.float64()),
            "ok": pa.array([True]),
            "at": pa.array([when], pa.timestamp("us", tz="UTC")),
            "day": pa.array([dt.date(2026, 3, 1)], pa.date32()),
            "raw": pa.array([b"ab"], pa.binary()),
        }
    )
    path = tmp_path / "u.parquet"
    pq.write_table(table, path)
    source, rows = read_all(path)
    assert source.extra_types == (
        "int64",
        "double",
        "bool",
        "timestamp[us, tz=UTC]",
        "date32[day]",
        "text",
    )
    assert rows[0].extra == (7, 0.05, True, when, dt.date(2026, 3, 1), "ab")
