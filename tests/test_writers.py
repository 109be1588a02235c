"""Writers: real files in tmp_path, read back with csv, pyarrow and openpyxl."""

from __future__ import annotations

import csv
import datetime as dt
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import tracemalloc
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from openpyxl import load_workbook

from bulk_cancel import writers
from bulk_cancel.errors import ConfigError, UsageError
from bulk_cancel.model import RESULT_COLUMNS
from bulk_cancel.writers import (
    OutputFormat,
    errors_path,
    output_format,
    read_summary,
    summary_path,
    write_errors,
    write_metrics,
    write_results,
    write_summary,
)

COLUMNS = [*RESULT_COLUMNS, "note", "ref"]
UMID = "0b7e5f4c-3c2a-4d1e-9f00-1a2b3c4d5e6f"

#: Rows that are hard to keep exact: leading zeros, empty vs missing, unicode, CSV's own syntax.
ROWS: list[tuple[object, ...]] = [
    (UMID, "acme_hq", "message", "cancelled", 200, None, None, None, 1, 1,
     "2026-11-28T23:00:01+00:00", 2, "007", "plain"),
    (UMID, "acme_hq", "message", "not_found", 404, 1300, "Message not found", "e-1", None, 2,
     "2026-11-28T23:00:02+00:00", 3, "", None),
    (UMID, "acme-eu", "batch", "failed", None, None, "a, b", None, None, 5,
     None, 4, 'say "hi"', "line one\nline two"),
    (UMID, "acme_hq", "message", "invalid_umid", None, None, "naïve ünïcødé ✓ 日本", None, None, 0,
     None, 5, "0", "\r\n"),
]  # fmt: skip


def chunked(rows: Sequence[tuple[object, ...]], size: int) -> Iterator[list[tuple[object, ...]]]:
    """*rows* in lists of *size*, as the ledger hands them over."""
    for i in range(0, len(rows), size):
        yield list(rows[i : i + size])


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def as_csv(value: object) -> str:
    return "" if value is None else str(value)


def sheet_values(path: Path, name: str) -> list[tuple[Any, ...]]:
    """A sheet's rows, padded to its width (read-only mode would drop trailing empty cells)."""
    wb = load_workbook(path)
    try:
        return list(wb[name].iter_rows(values_only=True))
    finally:
        wb.close()


def only_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------ naming


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("r.csv", OutputFormat.CSV),
        ("R.CSV", OutputFormat.CSV),
        ("a.b.parquet", OutputFormat.PARQUET),
        ("r.xlsx", OutputFormat.XLSX),
        ("r.XLSX", OutputFormat.XLSX),
    ],
)
def test_output_format_by_extension(name: str, fmt: OutputFormat) -> None:
    """The results format is the output's extension, in any case."""
    assert output_format(Path("out") / name) is fmt


@pytest.mark.parametrize("name", ["results.txt", "results", "results.xls", "results.csv.gz"])
def test_unknown_extension_is_a_config_error(name: str) -> None:
    """Any other extension is a ConfigError naming the path and the supported extensions."""
    with pytest.raises(ConfigError) as caught:
        output_format(Path("out") / name)
    message = str(caught.value)
    assert str(Path("out") / name) in message
    assert all(ext in message for ext in (".csv", ".parquet", ".xlsx"))


def test_write_results_refuses_unknown_extension_before_writing(tmp_path: Path) -> None:
    """write_results raises ConfigError for an unknown extension and creates nothing."""
    with pytest.raises(ConfigError):
        write_results(tmp_path / "r.json", COLUMNS, chunked(ROWS, 2))
    assert only_files(tmp_path) == []


@pytest.mark.parametrize(
    ("output", "summary", "errors"),
    [
        ("results.csv", "results.summary.json", "results.errors.csv"),
        ("a.b.csv", "a.b.summary.json", "a.b.errors.csv"),
        ("out/run.parquet", "out/run.summary.json", "out/run.errors.csv"),
        ("run.xlsx", "run.summary.json", "run.errors.csv"),
    ],
)
def test_summary_and_errors_paths(output: str, summary: str, errors: str) -> None:
    """The summary and errors files sit beside the results, named from its stem; errors is CSV."""
    assert summary_path(Path(output)) == Path(summary)
    assert errors_path(Path(output)) == Path(errors)


def test_importing_writers_loads_no_heavy_library() -> None:
    """pyarrow, openpyxl and pandas load only when a file needs them (fast `--help`)."""
    code = (
        "import sys, bulk_cancel.writers; "
        "print(sorted(m for m in ('pandas', 'pyarrow', 'openpyxl') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------ CSV


def test_csv_round_trips_values_exactly(tmp_path: Path) -> None:
    """CSV keeps '007', '', unicode, commas, quotes and newlines; None is an empty cell."""
    path = tmp_path / "r.csv"
    assert write_results(path, COLUMNS, chunked(ROWS, 3)) == len(ROWS)
    assert read_csv(path) == [COLUMNS, *([as_csv(v) for v in row] for row in ROWS)]


def test_csv_bytes_are_utf8_lf_minimal_quoting(tmp_path: Path) -> None:
    """CSV is UTF-8 without BOM, \\n line ends, quotes only where needed, no formula guard."""
    path = tmp_path / "r.csv"
    rows = [("a", "x,y"), ("b", 'say "hi"'), ("c", "l1\nl2"), ("d", None), ("=1+1", "ü")]
    write_results(path, ["umid", "note"], [rows])
    assert path.read_bytes() == (
        'umid,note\na,"x,y"\nb,"say ""hi"""\nc,"l1\nl2"\nd,\n=1+1,ü\n'.encode()
    )


def test_csv_with_no_rows_has_the_header(tmp_path: Path) -> None:
    """No rows still makes a results file: the header line alone."""
    path = tmp_path / "r.csv"
    assert write_results(path, COLUMNS, iter(())) == 0
    assert path.read_text(encoding="utf-8") == ",".join(COLUMNS) + "\n"


def test_csv_memory_does_not_grow_with_rows(tmp_path: Path) -> None:
    """Rows are streamed: writing 100,000 rows holds about one chunk in memory, not the file."""
    row = (UMID, "acme_hq", "message", "cancelled", 200, None, None, None, 1, 1, "t", 2, "x", "y")

    def chunks() -> Iterator[list[tuple[object, ...]]]:
        for _ in range(100):
            yield [row] * 1000

    path = tmp_path / "r.csv"
    tracemalloc.start()
    try:
        assert write_results(path, COLUMNS, chunks()) == 100_000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert path.stat().st_size > 8_000_000
    assert peak < 2_000_000


def test_write_errors_is_csv_whatever_the_name(tmp_path: Path) -> None:
    """write_errors writes CSV (the caller's rows) and returns how many rows it wrote."""
    path = tmp_path / "r.errors.csv"
    assert write_errors(path, COLUMNS, chunked(ROWS[1:], 1)) == len(ROWS) - 1
    assert read_csv(path) == [COLUMNS, *([as_csv(v) for v in row] for row in ROWS[1:])]


# ------------------------------------------------------------------------------ Parquet


def test_parquet_round_trips_values_exactly(tmp_path: Path) -> None:
    """Parquet keeps every value, '' apart from None, '007' as text, numbers as numbers."""
    path = tmp_path / "r.parquet"
    assert write_results(path, COLUMNS, chunked(ROWS, 3)) == len(ROWS)
    table = pq.read_table(path)
    assert table.column_names == COLUMNS
    assert [tuple(r.values()) for r in table.to_pylist()] == ROWS


def test_parquet_types_integer_columns_and_strings_otherwise(tmp_path: Path) -> None:
    """The integer results columns are nullable int64; every other column, extras too, is string."""
    path = tmp_path / "r.parquet"
    write_results(path, COLUMNS, chunked(ROWS, 3))
    schema = pq.read_schema(path)
    ints = {"http_status", "error_code", "cancelled_count", "attempts", "line"}
    for name in COLUMNS:
        field = schema.field(name)
        assert field.type == (pa.int64() if name in ints else pa.string()), name
        assert field.nullable


def test_parquet_writes_one_row_group_per_chunk(tmp_path: Path) -> None:
    """Each chunk becomes one row group (empty chunks none), so memory stays at one chunk."""
    path = tmp_path / "r.parquet"
    chunks = [list(ROWS[:3]), [], [ROWS[3]]]
    write_results(path, COLUMNS, chunks)
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [3, 1]


def test_parquet_with_no_rows_has_the_schema(tmp_path: Path) -> None:
    """No rows still makes a readable Parquet file with the typed columns."""
    path = tmp_path / "r.parquet"
    assert write_results(path, COLUMNS, iter(())) == 0
    table = pq.read_table(path)
    assert table.num_rows == 0
    assert table.schema.field("line").type == pa.int64()


def test_parquet_refuses_rows_of_the_wrong_width(tmp_path: Path) -> None:
    """A row with more or fewer values than columns is a bug: it raises and writes nothing."""
    path = tmp_path / "r.parquet"
    with pytest.raises(ValueError, match="zip"):
        write_results(path, COLUMNS, [[ROWS[0], ROWS[1][:-1]]])
    with pytest.raises(ValueError, match="columns"):
        write_results(path, COLUMNS, [[ROWS[0][:-1]]])
    assert only_files(tmp_path) == []


# ------------------------------------------------------------------------------ Excel


SUMMARY: dict[str, Any] = {
    "counts": {"cancelled": 3, "not_found": 1},
    "cancelled_total": 3,
    "input_rows": 5,
    "started_at": "2026-11-28T23:00:00+00:00",
    "finished_at": "2026-11-28T23:00:01.5+00:00",
    "elapsed_s": 1.5,
    "exit_code": 0,
    "stop_reason": None,
    "rejected_subaccounts": ["bad_one", "bad_two"],
    "results": "out/results.xlsx",
    "settings": {"rate_per_s": 1500.0, "retry": {"max_attempts": 5}},
}


def test_xlsx_round_trips_values(tmp_path: Path) -> None:
    """Excel keeps text as text ('007'), numbers as numbers; '' reads back empty, CR LF as LF."""
    path = tmp_path / "r.xlsx"
    assert write_results(path, COLUMNS, chunked(ROWS, 3), summary=SUMMARY) == len(ROWS)
    expected = [
        tuple(
            None if v == "" else v.replace("\r\n", "\n") if isinstance(v, str) else v for v in row
        )
        for row in ROWS
    ]
    assert sheet_values(path, "results") == [tuple(COLUMNS), *expected]


def test_xlsx_summary_sheet_flattens_the_summary(tmp_path: Path) -> None:
    """Sheet 'summary' holds key/value rows in order: nested keys dotted, lists joined."""
    path = tmp_path / "r.xlsx"
    write_results(path, COLUMNS, chunked(ROWS, 3), summary=SUMMARY)
    wb = load_workbook(path, read_only=True)
    try:
        assert wb.sheetnames == ["results", "summary"]
    finally:
        wb.close()
    assert sheet_values(path, "summary") == [
        ("key", "value"),
        ("counts.cancelled", 3),
        ("counts.not_found", 1),
        ("cancelled_total", 3),
        ("input_rows", 5),
        ("started_at", "2026-11-28T23:00:00+00:00"),
        ("finished_at", "2026-11-28T23:00:01.5+00:00"),
        ("elapsed_s", 1.5),
        ("exit_code", 0),
        ("stop_reason", None),
        ("rejected_subaccounts", "bad_one, bad_two"),
        ("results", "out/results.xlsx"),
        ("settings.rate_per_s", 1500),
        ("settings.retry.max_attempts", 5),
        ("results_rows", 4),
        ("results_sheets", "results"),
    ]


FORMULA_LIKE = ["=1+1", '=HYPERLINK("http://x","y")', "+1", "-1", "@SUM(A1)", "\tx", "#N/A"]


def test_xlsx_text_that_looks_like_a_formula_stays_exact_text(tmp_path: Path) -> None:
    """Formula-like text (=, +, -, @, tab, #N/A) is an exact string cell with quotePrefix, no formula."""
    path = tmp_path / "r.xlsx"
    columns = ["umid", "=note"]
    rows = [(v, v) for v in FORMULA_LIKE] + [("plain", "007")]
    write_results(path, columns, [rows], summary={"-k": "=v"})

    wb = load_workbook(path)  # not read-only: cell styles are needed
    try:
        cells = list(wb["results"].iter_rows())
        assert [c.value for c in cells[0]] == columns
        assert [(c.value, c.data_type, c.quotePrefix) for c in cells[0]] == [
            ("umid", "s", False),
            ("=note", "s", True),
        ]
        for row, value in zip(cells[1:], FORMULA_LIKE, strict=False):
            assert [(c.value, c.data_type, c.quotePrefix) for c in row] == [(value, "s", True)] * 2
        assert [(c.value, c.quotePrefix) for c in cells[-1]] == [("plain", False), ("007", False)]
        summary = [[c.value for c in row] for row in wb["summary"].iter_rows()]
        assert ["-k", "=v"] in summary
    finally:
        wb.close()
    with zipfile.ZipFile(path) as z:
        sheets = [z.read(n) for n in z.namelist() if n.startswith("xl/worksheets/")]
    assert sheets
    assert not any(b"<f>" in xml or b"<f " in xml or b't="e"' in xml for xml in sheets)


def test_xlsx_replaces_characters_xml_cannot_hold(tmp_path: Path) -> None:
    """Control characters Excel's XML cannot hold become U+FFFD instead of failing the file."""
    path = tmp_path / "r.xlsx"
    write_results(path, ["umid", "note"], [[("a", "bell\x07 esc\x1b tab\t nl\n")]])
    assert sheet_values(path, "results")[1] == ("a", "bell\ufffd esc\ufffd tab\t nl\n")


def test_xlsx_continues_on_new_sheets_past_the_row_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past XLSX_MAX_ROWS rows the results go on in 'results 2', 'results 3'… with the header."""
    monkeypatch.setattr(writers, "XLSX_MAX_ROWS", 5)
    rows = [("u", "note", i) for i in range(12)]
    path = tmp_path / "r.xlsx"
    assert write_results(path, ["umid", "note", "line"], chunked(rows, 4), summary={}) == 12

    wb = load_workbook(path, read_only=True)
    try:
        assert wb.sheetnames == ["results", "results 2", "results 3", "summary"]
    finally:
        wb.close()
    header = ("umid", "note", "line")
    assert sheet_values(path, "results") == [header, *rows[0:5]]
    assert sheet_values(path, "results 2") == [header, *rows[5:10]]
    assert sheet_values(path, "results 3") == [header, *rows[10:12]]
    summary = dict(sheet_values(path, "summary")[1:])
    assert summary["results_rows"] == 12
    assert summary["results_sheets"] == "results, results 2, results 3"
    assert "results 2, results 3" in summary["note"]


def test_xlsx_exactly_at_the_row_limit_is_one_sheet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sheet takes XLSX_MAX_ROWS data rows in full before a second one is started."""
    monkeypatch.setattr(writers, "XLSX_MAX_ROWS", 5)
    path = tmp_path / "r.xlsx"
    write_results(path, ["umid"], [[("u",)] * 5])
    summary = dict(sheet_values(path, "summary")[1:])
    assert summary["results_sheets"] == "results"
    assert "note" not in summary
    assert len(sheet_values(path, "results")) == 6


def test_xlsx_failure_leaves_no_temp_xml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed Excel write removes openpyxl's per-sheet temp files and closes them quietly."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "out"
    out.mkdir()

    def failing() -> Iterator[list[tuple[object, ...]]]:
        yield [("u", "n")]
        raise RuntimeError("ledger went away")

    with pytest.raises(RuntimeError, match="ledger went away"):
        write_results(out / "r.xlsx", ["umid", "note"], failing())
    gc.collect()  # an abandoned write-only sheet complains only when collected
    assert only_files(scratch) == []
    assert only_files(out) == []


# ------------------------------------------------------------------------------ atomicity


def failing_chunks() -> Iterator[list[tuple[object, ...]]]:
    """One good chunk, then the source breaks, as a crash in the ledger would."""
    yield list(ROWS[:2])
    raise RuntimeError("boom midway")


@pytest.mark.parametrize("name", ["r.csv", "r.parquet", "r.xlsx"])
def test_failure_midway_leaves_no_file_and_no_temp(tmp_path: Path, name: str) -> None:
    """A source that breaks midway leaves nothing under the final name and no temp file."""
    with pytest.raises(RuntimeError, match="boom midway"):
        write_results(tmp_path / name, COLUMNS, failing_chunks())
    assert only_files(tmp_path) == []


@pytest.mark.parametrize("name", ["r.csv", "r.parquet", "r.xlsx"])
def test_failure_midway_keeps_the_previous_file(tmp_path: Path, name: str) -> None:
    """An existing results file is left byte for byte as it was when a new write fails."""
    path = tmp_path / name
    path.write_bytes(b"the previous run's results")
    with pytest.raises(RuntimeError, match="boom midway"):
        write_results(path, COLUMNS, failing_chunks())
    assert path.read_bytes() == b"the previous run's results"
    assert only_files(tmp_path) == [name]


@pytest.mark.parametrize("name", ["r.csv", "r.parquet", "r.xlsx"])
def test_success_replaces_the_file_and_leaves_no_temp(tmp_path: Path, name: str) -> None:
    """A successful write replaces an older file, creates missing folders, leaves only the file."""
    path = tmp_path / "new" / "dir" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"old")
    assert write_results(path, COLUMNS, chunked(ROWS, 2)) == len(ROWS)
    assert path.read_bytes() != b"old"
    assert only_files(path.parent) == [name]
    fresh = tmp_path / "made" / name
    write_results(fresh, COLUMNS, chunked(ROWS, 2))
    assert only_files(fresh.parent) == [name]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_new_files_get_the_umask_mode_not_0600(tmp_path: Path) -> None:
    """Files are created 0o666 less the umask, as open() does, so another user can read metrics."""
    old = os.umask(0o022)
    try:
        write_results(tmp_path / "r.csv", COLUMNS, [])
        write_metrics(tmp_path / "m.prom", SUMMARY, job="j")
    finally:
        os.umask(old)
    assert (tmp_path / "r.csv").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "m.prom").stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------------------------ summary


def test_summary_round_trips_in_insertion_order(tmp_path: Path) -> None:
    """The summary JSON keeps key order, indents by 2, ends with a newline and reads back equal."""
    path = tmp_path / "r.summary.json"
    summary = {"zeta": 1, "alpha": {"b": 2, "a": 1}, "note": "ünï"}
    write_summary(path, summary)
    text = path.read_text(encoding="utf-8")
    assert text == json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    assert list(read_summary(path)) == ["zeta", "alpha", "note"]
    assert read_summary(path) == summary


def test_summary_that_cannot_be_encoded_leaves_the_old_file(tmp_path: Path) -> None:
    """A summary that fails to encode raises before the old summary is touched."""
    path = tmp_path / "r.summary.json"
    path.write_text("{}\n")
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="Circular"):
        write_summary(path, loop)
    assert path.read_text() == "{}\n"
    assert only_files(tmp_path) == ["r.summary.json"]


@pytest.mark.parametrize("content", [None, "not json", "[1, 2]"])
def test_read_summary_refuses_what_is_not_a_summary(tmp_path: Path, content: str | None) -> None:
    """A missing, unparsable or non-object summary is a UsageError naming the file."""
    path = tmp_path / "r.summary.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=re.escape(str(path))):
        read_summary(path)


# ------------------------------------------------------------------------------ metrics

SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[a-zA-Z_]\w*="(?:[^"\\\n]|\\.)*",?)*)\} (\S+)$'
)
LABEL = re.compile(r'([a-zA-Z_]\w*)="((?:[^"\\\n]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse the exposition format strictly: every line is HELP, TYPE or `name{labels} value`."""
    assert text.endswith("\n")
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind == "gauge"
            typed.add(name)
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        assert name in typed, f"{name} has no TYPE line before it"
        unescaped = {
            k: re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], v)
            for k, v in LABEL.findall(labels)
        }
        samples[name, frozenset(unescaped.items())] = float(value)
    return samples


def ts(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def run_summary(*, exit_code: int, finished_at: str) -> dict[str, Any]:
    return {
        "counts": {"cancelled": 3, "not_found": 1, "failed": 0},
        "cancelled_total": 7,
        "requests": 6,
        "retries": 2,
        "finished_at": finished_at,
        "elapsed_s": 1.5,
        "exit_code": exit_code,
    }


def test_metrics_are_valid_textfile_gauges(tmp_path: Path) -> None:
    """Every line is HELP/TYPE or a labelled sample; rows by outcome and the run's numbers."""
    path = tmp_path / "bulk_cancel.prom"
    write_metrics(path, run_summary(exit_code=0, finished_at="2026-11-28T23:00:01+00:00"), job="j")
    got = parse_metrics(path.read_text(encoding="utf-8"))
    job = ("job", "j")
    end = ts("2026-11-28T23:00:01+00:00")
    assert got == {
        ("bulk_cancel_rows", frozenset({job, ("outcome", "cancelled")})): 3,
        ("bulk_cancel_rows", frozenset({job, ("outcome", "not_found")})): 1,
        ("bulk_cancel_rows", frozenset({job, ("outcome", "failed")})): 0,
        ("bulk_cancel_requests", frozenset({job})): 6,
        ("bulk_cancel_retries", frozenset({job})): 2,
        ("bulk_cancel_duration_seconds", frozenset({job})): 1.5,
        ("bulk_cancel_cancelled_messages", frozenset({job})): 7,
        ("bulk_cancel_last_run_timestamp_seconds", frozenset({job})): end,
        ("bulk_cancel_last_success_timestamp_seconds", frozenset({job})): end,
        ("bulk_cancel_exit_code", frozenset({job})): 0,
    }
    assert only_files(tmp_path) == ["bulk_cancel.prom"]


def test_no_gauge_is_named_like_a_counter(tmp_path: Path) -> None:
    """Every metric is a gauge, and no gauge ends in `_total` (Prometheus keeps it for counters)."""
    path = tmp_path / "bulk_cancel.prom"
    write_metrics(path, run_summary(exit_code=0, finished_at="2026-11-28T23:00:01+00:00"), job="j")
    text = path.read_text(encoding="utf-8")
    types = [line.split() for line in text.splitlines() if line.startswith("# TYPE ")]
    assert types and all(kind == "gauge" for _, _, _, kind in types)
    assert [name for _, _, name, _ in types if name.endswith("_total")] == []


def test_metrics_keep_the_last_success_through_a_failed_run(tmp_path: Path) -> None:
    """A failed run updates the last run time and exit code but keeps the previous success time."""
    path = tmp_path / "bulk_cancel.prom"
    first, second = "2026-11-28T23:00:00+00:00", "2026-11-29T23:00:00+00:00"
    write_metrics(path, run_summary(exit_code=0, finished_at=first), job="nightly")
    write_metrics(path, run_summary(exit_code=1, finished_at=second), job="nightly")
    got = parse_metrics(path.read_text(encoding="utf-8"))
    job = frozenset({("job", "nightly")})
    assert got["bulk_cancel_last_success_timestamp_seconds", job] == ts(first)
    assert got["bulk_cancel_last_run_timestamp_seconds", job] == ts(second)
    assert got["bulk_cancel_exit_code", job] == 1


def test_metrics_have_no_last_success_without_one(tmp_path: Path) -> None:
    """A failed run with no earlier success for this job writes no last success time at all."""
    path = tmp_path / "bulk_cancel.prom"
    write_metrics(path, run_summary(exit_code=0, finished_at="2026-11-28T23:00:00+00:00"), job="a")
    write_metrics(path, run_summary(exit_code=3, finished_at="2026-11-29T23:00:00+00:00"), job="b")
    names = {name for name, _ in parse_metrics(path.read_text(encoding="utf-8"))}
    assert "bulk_cancel_last_success_timestamp_seconds" not in names
    assert "bulk_cancel_exit_code" in names


def test_metrics_escape_label_values(tmp_path: Path) -> None:
    """Backslash, double quote and newline in a label value are escaped and parse back exactly."""
    path = tmp_path / "bulk_cancel.prom"
    job = 'we\\ird "job"\nname'
    write_metrics(path, run_summary(exit_code=0, finished_at="2026-11-28T23:00:00+00:00"), job=job)
    write_metrics(path, run_summary(exit_code=1, finished_at="2026-11-29T23:00:00+00:00"), job=job)
    text = path.read_text(encoding="utf-8")
    assert 'job="we\\\\ird \\"job\\"\\nname"' in text
    got = parse_metrics(text)
    labels = frozenset({("job", job)})
    assert got["bulk_cancel_last_success_timestamp_seconds", labels] == ts(
        "2026-11-28T23:00:00+00:00"
    )


# ------------------------------------------------------------------------------ typed input columns (issue 14)

TYPED_COLUMNS = [*RESULT_COLUMNS, "Cost", "count", "paid", "scheduled_at", "day", "phone"]
WHEN = dt.datetime(2026, 3, 1, 10, 30, tzinfo=dt.UTC)
TYPED_ROWS: list[tuple[object, ...]] = [
    (UMID, "acme_hq", "message", "cancelled", 200, None, None, None, 1, 1, None, 2,
     0.05, 7, True, WHEN, dt.date(2026, 3, 1), "07700900123"),
    (UMID, "acme_hq", "message", "not_found", 404, 1300, "Message not found", None, None, 1,
     None, 3, None, None, None, None, None, None),
]  # fmt: skip
PARQUET_TYPES = {
    "Cost": "double",
    "count": "int64",
    "paid": "bool",
    "scheduled_at": "timestamp[us, tz=UTC]",
    "day": "date32[day]",
    "phone": "string",
}


def test_parquet_keeps_the_input_columns_arrow_types(tmp_path: Path) -> None:
    """A Parquet input's int64, double, bool, timestamp and date columns keep their Arrow types."""
    path = tmp_path / "r.parquet"
    write_results(path, TYPED_COLUMNS, [TYPED_ROWS], column_types=PARQUET_TYPES)
    schema = pq.read_schema(path)
    assert [str(schema.field(c).type) for c in PARQUET_TYPES] == list(PARQUET_TYPES.values())
    assert [tuple(r.values()) for r in pq.read_table(path).to_pylist()] == TYPED_ROWS


def test_xlsx_keeps_numbers_and_dates_of_the_input(tmp_path: Path) -> None:
    """Excel results hold the input's numbers as numbers and dates as dates (zones as UTC)."""
    path = tmp_path / "r.xlsx"
    types = dict.fromkeys(PARQUET_TYPES, "cell")
    write_results(path, TYPED_COLUMNS, [TYPED_ROWS], column_types=types)
    first = sheet_values(path, "results")[1][len(RESULT_COLUMNS) :]
    assert first == (
        0.05,
        7,
        True,
        WHEN.replace(tzinfo=None),
        dt.datetime(2026, 3, 1),
        "07700900123",
    )
    assert isinstance(first[0], float)


def test_csv_writes_typed_values_as_the_text_they_always_were(tmp_path: Path) -> None:
    """In a CSV, an Excel number 7.0 is '7', 0.05 is '0.05', a date its ISO text, missing ''."""
    path = tmp_path / "r.csv"
    cells = [(*TYPED_ROWS[0][: len(RESULT_COLUMNS)], 0.05, 7.0, True, WHEN, float("nan"), "007")]
    write_results(path, TYPED_COLUMNS, [cells], column_types=dict.fromkeys(PARQUET_TYPES, "cell"))
    assert read_csv(path)[1][len(RESULT_COLUMNS) :] == [
        "0.05",
        "7",
        "True",
        "2026-03-01 10:30:00+00:00",
        "",
        "007",
    ]


def test_csv_for_a_semicolon_input_uses_its_delimiter_and_bom(tmp_path: Path) -> None:
    """delimiter=';' and bom=True give what European Excel opens in columns; errors CSV too."""
    path = tmp_path / "r.csv"
    write_results(path, COLUMNS, chunked(ROWS, 3), delimiter=";", bom=True)
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfumid;subaccount_id;kind;")
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f, delimiter=";"))
    assert rows[1:] == [[as_csv(v) for v in row] for row in ROWS]
    errors = tmp_path / "r.errors.csv"
    write_errors(errors, COLUMNS, [ROWS[:1]], delimiter=";", bom=True)
    assert errors.read_bytes().startswith(b"\xef\xbb\xbfumid;")
