"""The files users read: results (CSV, Parquet, Excel), the summary JSON, the errors CSV and
Prometheus metrics. This module knows files; it never sees HTTP or the ledger's SQLite.

Every write is atomic: the data goes to a temp file in the destination's own folder (named
``.<name>.<random>.tmp``), which is flushed and fsynced, then renamed over the final name with
``os.replace`` (atomic on POSIX and Windows), and the folder is fsynced so the rename survives a
power cut. On any exception the temp file is removed. A crash or a full disk therefore never leaves
a half-written file under the final name, and an older file under that name stays as it was.
Temp files are created with mode ``0o666`` less the umask, like ``open()``; ``tempfile.mkstemp``
would make them ``0o600``, and node_exporter (often another user) could not read the metrics.

Formats, and what each keeps exactly:

* **CSV** (:mod:`csv`): UTF-8, a header row, ``\\n`` line endings, minimal quoting, ``None`` as an
  empty cell. Comma-separated without BOM, unless the caller asks for the input's own style
  (``delimiter=";"``, ``bom=True``: what European Excel saves, so that it opens the results in
  columns). Byte-exact: no formula guard, because a CSV is data for programs and
  for feeding back into ``bulk-cancel``; a leading ``'`` would change the umid or the note.
  Typed values of the input's columns are written as text: ``7`` for the float 7.0, dates as
  ``2026-03-01 10:30:00``.
* **Parquet** (pyarrow): one row group per chunk; :data:`INT_COLUMNS` are nullable ``int64``; an
  input column whose *column_types* entry is an Arrow type (from a Parquet input) keeps that
  type; every other column is ``string``.
* **Excel** (openpyxl write-only): sheet ``results``, continued on ``results 2``, ``results 3``…
  (header repeated) past :data:`XLSX_MAX_ROWS`, then sheet ``summary``. Excel cannot tell ``""``
  from an empty cell, so both read back as empty, and XML reads a CR LF in text as LF. Text that Excel would take for a formula or an
  error value is written as text with the cell's *quotePrefix* style (Excel's own leading
  apostrophe, which is not part of the value) so the value stays exact; see :func:`_xlsx_value`.
  Numbers, booleans, dates and times stay typed (a date with a time zone is written in UTC, as
  Excel has no zones). openpyxl streams each sheet to an XML file in the system temp folder and zips them on save.

pyarrow and openpyxl are imported only when their format is written, so ``bulk-cancel --help``
does not pay for them; pandas is not used here at all.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import enum
import io
import json
import math
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO, Final

from .errors import ConfigError, UsageError

__all__ = [
    "INT_COLUMNS",
    "XLSX_MAX_ROWS",
    "OutputFormat",
    "errors_path",
    "output_format",
    "read_summary",
    "summary_path",
    "write_errors",
    "write_metrics",
    "write_results",
    "write_summary",
]

#: Results columns that hold whole numbers: nullable ``int64`` in Parquet, numbers in Excel.
INT_COLUMNS: Final = frozenset({"http_status", "error_code", "cancelled_count", "attempts", "line"})

#: Data rows an Excel sheet holds: 1,048,576 rows less the header (Excel's "Specifications and
#: limits"). Read at each row, so tests may lower it.
XLSX_MAX_ROWS: int = 1_048_575

#: ``column_types`` entries whose values are text already (see ``InputSource.extra_types``).
_TEXT_TYPES: Final = frozenset({"text", "string"})
#: ``column_types`` entries that are no Arrow type: text, or an Excel cell's own type.
_UNTYPED: Final = frozenset({"text", "cell"})
_TIMESTAMP: Final = re.compile(r"timestamp\[(\w+)(?:, tz=(.+))?\]")

#: Leading characters that make a spreadsheet read typed-in text as a formula (OWASP, "CSV Injection").
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")

#: Text that openpyxl would write as an Excel *error value* rather than as text.
_XLSX_ERROR_CODES: Final = frozenset(
    {"#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A"}
)


class OutputFormat(enum.StrEnum):
    """Formats the results can be written in, chosen by the output's extension."""

    CSV = "csv"
    PARQUET = "parquet"
    XLSX = "xlsx"


def output_format(path: Path) -> OutputFormat:
    """The results format for *path* by its extension (any case); anything else is a ConfigError."""
    try:
        return OutputFormat(path.suffix.lower().removeprefix("."))
    except ValueError:
        raise ConfigError(
            f"{path}: results cannot be written as {path.suffix or '(no extension)'}; "
            "name the file .csv, .parquet or .xlsx"
        ) from None


def summary_path(output: Path) -> Path:
    """``results.csv`` → ``results.summary.json`` beside it (``a.b.csv`` → ``a.b.summary.json``)."""
    return output.with_name(output.stem + ".summary.json")


def errors_path(output: Path) -> Path:
    """``results.csv`` → ``results.errors.csv`` beside it: always CSV, easy to fix and feed back."""
    return output.with_name(output.stem + ".errors.csv")


# ----------------------------------------------------------------------------- atomic writes


def _create_temp(path: Path) -> tuple[BinaryIO, Path]:
    """A new, empty temp file beside *path*, opened for binary writing."""
    # O_EXCL makes the name ours alone; mode 0o666 lets the umask decide, as open() does.
    flags = (
        os.O_WRONLY
        | os.O_CREAT
        | os.O_EXCL
        | getattr(os, "O_BINARY", 0)  # Windows: no newline translation under the text layer
        | getattr(os, "O_NOFOLLOW", 0)
    )
    for _ in range(100):
        tmp = path.with_name(f".{path.name[:200]}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        try:
            return os.fdopen(fd, "wb"), tmp
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
    raise FileExistsError(f"{path.parent}: no free temp file name beside {path.name}")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in *folder* durable. POSIX only; some filesystems refuse, which is harmless."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[BinaryIO]:
    """A binary file that becomes *path* only if the block finishes; else it never existed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f, tmp = _create_temp(path)
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def _replacing_text(path: Path) -> Iterator[IO[str]]:
    """:func:`_replacing` as UTF-8 text, ``\\n`` written as is on every platform."""
    with _replacing(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        try:
            yield text
        finally:
            text.detach()  # flushes into raw and leaves it open for the fsync


# ----------------------------------------------------------------------------- results


def write_results(
    path: Path,
    columns: Sequence[str],
    chunks: Iterable[Sequence[Sequence[object]]],
    *,
    summary: Mapping[str, Any] | None = None,
    column_types: Mapping[str, str] | None = None,
    delimiter: str = ",",
    bom: bool = False,
) -> int:
    """Stream *chunks* of rows (values in *columns* order) to *path* in the format its extension
    names, atomically; return the number of rows written.

    *summary* fills the Excel file's ``summary`` sheet; CSV and Parquet ignore it (the summary
    JSON beside them holds it). *column_types* gives the input's columns their types
    (``InputSource.extra_types``: ``text``, ``cell`` or an Arrow type such as ``int64``); a
    column not in it is text, or ``int64`` if in :data:`INT_COLUMNS`. *delimiter* and *bom*
    shape a CSV (the input's own, so that Excel opens it as it opened the input).
    """
    fmt = output_format(path)
    types = column_types or {}
    if fmt is OutputFormat.PARQUET:
        return _write_parquet(path, columns, chunks, types)
    if fmt is OutputFormat.XLSX:
        return _write_xlsx(path, columns, chunks, summary or {})
    return _write_csv(path, columns, chunks, types, delimiter, bom)


def write_errors(
    path: Path,
    columns: Sequence[str],
    chunks: Iterable[Sequence[Sequence[object]]],
    *,
    column_types: Mapping[str, str] | None = None,
    delimiter: str = ",",
    bom: bool = False,
) -> int:
    """The rows worth another look, as CSV whatever *path* is called (the caller picks the rows)."""
    return _write_csv(path, columns, chunks, column_types or {}, delimiter, bom)


def _write_csv(
    path: Path,
    columns: Sequence[str],
    chunks: Iterable[Sequence[Sequence[object]]],
    types: Mapping[str, str],
    delimiter: str,
    bom: bool,
) -> int:
    typed = [i for i, c in enumerate(columns) if types.get(c, "text") not in _TEXT_TYPES]
    rows = 0
    with _replacing_text(path) as f:
        if bom:
            f.write("\ufeff")
        writer = csv.writer(f, delimiter=delimiter, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(columns)
        for chunk in chunks:
            if typed:
                chunk = [_as_text(row, typed) for row in chunk]
            writer.writerows(chunk)
            rows += len(chunk)
    return rows


def _as_text(row: Sequence[object], indexes: Sequence[int]) -> list[object]:
    out = list(row)
    for i in indexes:
        out[i] = _text(out[i])
    return out


def _text(value: object) -> object:
    """A typed input value as CSV text, as bulk-cancel has always written it: ``7`` for 7.0."""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return value  # csv writes None as "", others by str()


def _arrow_type(name: str) -> Any:
    """The Arrow type ``str(type)`` gave *name* (``int64``, ``timestamp[us, tz=UTC]``...)."""
    import pyarrow as pa

    found = _TIMESTAMP.fullmatch(name)
    if found:
        return pa.timestamp(found[1], tz=found[2])
    return pa.type_for_alias(name)


def _write_parquet(
    path: Path,
    columns: Sequence[str],
    chunks: Iterable[Sequence[Sequence[object]]],
    types: Mapping[str, str],
) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinds = []
    for c in columns:
        name = types.get(c, "int64" if c in INT_COLUMNS else "text")
        kinds.append(pa.string() if name in _UNTYPED else _arrow_type(name))
    schema = pa.schema([pa.field(c, k) for c, k in zip(columns, kinds, strict=True)])
    cells = {c for c in columns if types.get(c) == "cell"}  # an Excel column's mixed types
    rows = 0
    with _replacing(path) as f, pq.ParquetWriter(f, schema) as writer:
        for chunk in chunks:
            if not chunk:
                continue
            values = list(zip(*chunk, strict=True))
            if len(values) != len(columns):
                raise ValueError(f"rows have {len(values)} values for {len(columns)} columns")
            arrays = [
                pa.array(col, type=kind)
                if kind != pa.string()
                else pa.array([None if v is None else str(v) for v in col], type=kind)
                if c not in cells
                else pa.array([None if v is None else str(_text(v)) for v in col], type=kind)
                for c, col, kind in zip(columns, values, kinds, strict=True)
            ]
            table = pa.Table.from_arrays(arrays, schema=schema)
            writer.write_table(table, row_group_size=len(chunk))
            rows += len(chunk)
    return rows


def _write_xlsx(
    path: Path,
    columns: Sequence[str],
    chunks: Iterable[Sequence[Sequence[object]]],
    summary: Mapping[str, Any],
) -> int:
    from openpyxl import Workbook

    cell_value = _xlsx_converter()
    wb = Workbook(write_only=True)
    sheet_names: list[str] = []
    rows = in_sheet = 0
    try:
        ws = _xlsx_results_sheet(wb, sheet_names, columns, cell_value)
        for chunk in chunks:
            for row in chunk:
                if in_sheet >= XLSX_MAX_ROWS:
                    ws = _xlsx_results_sheet(wb, sheet_names, columns, cell_value)
                    in_sheet = 0
                ws.append([cell_value(ws, v) for v in row])
                in_sheet += 1
                rows += 1
        meta = wb.create_sheet("summary")
        meta.append(["key", "value"])
        for k, v in _flatten(summary):
            meta.append([cell_value(meta, k), cell_value(meta, v)])
        meta.append(["results_rows", rows])
        meta.append(["results_sheets", ", ".join(sheet_names)])
        if len(sheet_names) > 1:
            meta.append(
                [
                    "note",
                    f"Excel holds {XLSX_MAX_ROWS:,} rows a sheet: the results continue on "
                    f"{', '.join(sheet_names[1:])}, each with the header",
                ]
            )
        with _replacing(path) as f:
            wb.save(f)
    except BaseException:
        _discard_workbook(wb)
        raise
    return rows


def _xlsx_results_sheet(
    wb: Any, names: list[str], columns: Sequence[str], cell_value: Callable[[Any, object], object]
) -> Any:
    """Start the next results sheet (``results``, ``results 2``…) with the header row."""
    names.append("results" if not names else f"results {len(names) + 1}")
    ws = wb.create_sheet(names[-1])
    ws.append([cell_value(ws, c) for c in columns])
    return ws


def _xlsx_converter() -> Callable[[Any, object], object]:
    """A function that turns a value into what openpyxl should store in a sheet: text stays text.

    openpyxl turns text starting with ``=`` into a formula and ``#N/A`` and friends into error
    values. Such text, and text starting with ``+``, ``-``, ``@``, tab or CR (OWASP "CSV
    Injection"), goes in a cell typed as a string with *quotePrefix* set: the value is unchanged,
    Excel shows it as text and keeps it text when someone edits the cell. Prefixing ``'`` would
    change the value. Control characters that XML 1.0 cannot hold (openpyxl refuses them) become
    U+FFFD; text over 32,767 characters (Excel's cell limit) is cut there by openpyxl.
    Numbers stay numbers; anything else is written as its ``str()``.
    """
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    def convert(ws: Any, value: object) -> object:
        if isinstance(value, str):
            text = str(value)  # a StrEnum as its plain value
            if ILLEGAL_CHARACTERS_RE.search(text):
                text = ILLEGAL_CHARACTERS_RE.sub("\ufffd", text)
            if text.startswith(_FORMULA_START) or text in _XLSX_ERROR_CODES:
                cell = WriteOnlyCell(ws, value=text)
                cell.data_type = "s"
                cell.quotePrefix = True
                return cell
            return text
        if value is None or isinstance(value, int | float | dt.date | dt.time | dt.timedelta):
            if isinstance(value, dt.datetime) and value.tzinfo is not None:
                return value.astimezone(dt.UTC).replace(tzinfo=None)  # Excel has no zones
            return value
        return str(value)

    return convert


def _discard_workbook(wb: Any) -> None:
    """Close a write-only workbook that will not be saved and remove its temp XML files.

    Left to the garbage collector, openpyxl's sheet writers fail noisily ("Exception ignored")
    and their files stay in the temp folder until the process exits.
    """
    for ws in wb.worksheets:
        writer = getattr(ws, "_writer", None)  # openpyxl internals: best effort
        if writer is None:
            continue
        with contextlib.suppress(Exception):
            if not ws.closed:
                ws.close()
        with contextlib.suppress(Exception):
            writer.cleanup()


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, object]]:
    """``{"counts": {"cancelled": 3}}`` → ``("counts.cancelled", 3)``; lists joined with ", "."""
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, name + ".")
        elif isinstance(value, list | tuple | set | frozenset):
            yield name, ", ".join(map(str, value))
        else:
            yield name, value


# ----------------------------------------------------------------------------- summary


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    """The summary as JSON (indent 2, keys in insertion order, trailing newline), atomically."""
    text = json.dumps(summary, indent=2, ensure_ascii=False, default=str)
    with _replacing_text(path) as f:
        f.write(text + "\n")


def read_summary(path: Path) -> dict[str, Any]:
    """A summary written by :func:`write_summary`; unreadable or not an object → UsageError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable summary ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not a summary (expected a JSON object)")
    return data


# ----------------------------------------------------------------------------- metrics

_LAST_SUCCESS: Final = "bulk_cancel_last_success_timestamp_seconds"


def write_metrics(path: Path, summary: Mapping[str, Any], *, job: str) -> None:
    """An invocation's numbers for node_exporter's textfile collector, atomically.

    *summary* is a run's summary, or the sum of several (:mod:`bulk_cancel.jobs` adds up the
    files of one invocation, with its ``runs``). The collector reads ``*.prom`` files whenever it
    is scraped, so a file must appear whole: the temp file ends in ``.tmp`` (never read) and is
    renamed into place (node_exporter README, "Textfile Collector"). Every metric is a gauge
    labelled ``job``, so none ends in ``_total`` (a suffix Prometheus keeps for counters:
    "Metric and label naming"); the last run's time is its ``finished_at``. The last success time is the
    invocation's own when ``exit_code`` is 0, else the one already in the file for this job, else
    absent.
    """
    ended = _timestamp(summary.get("finished_at"))
    if summary.get("exit_code") == 0:
        last_success: float | None = ended
    else:
        last_success = _previous_success(path, job)
    j = _label(job)
    lines = [
        "# HELP bulk_cancel_rows Results rows of the files the last invocation ran, by outcome.",
        "# TYPE bulk_cancel_rows gauge",
    ]
    counts: Mapping[str, Any] = summary.get("counts") or {}
    for outcome, n in counts.items():
        lines.append(f'bulk_cancel_rows{{job="{j}",outcome="{_label(str(outcome))}"}} {_number(n)}')
    scalars: list[tuple[str, str, object]] = [
        (
            "bulk_cancel_requests",
            "Requests the last invocation sent.",
            summary.get("requests"),
        ),
        (
            "bulk_cancel_retries",
            "Retries the last invocation sent.",
            summary.get("retries"),
        ),
        (
            "bulk_cancel_duration_seconds",
            "How long the last invocation took.",
            summary.get("elapsed_s"),
        ),
        (
            "bulk_cancel_cancelled_messages",
            "Messages cancelled: the sum of cancelledCount.",
            summary.get("cancelled_total"),
        ),
        ("bulk_cancel_runs", "Input files the last invocation ran.", summary.get("runs")),
        ("bulk_cancel_last_run_timestamp_seconds", "When the last invocation ended.", ended),
        (_LAST_SUCCESS, "When an invocation last ended with exit code 0.", last_success),
        ("bulk_cancel_exit_code", "Exit code of the last invocation.", summary.get("exit_code")),
    ]
    for name, help_text, value in scalars:
        if value is None:
            continue
        lines += [
            f"# HELP {name} {help_text}",
            f"# TYPE {name} gauge",
            f'{name}{{job="{j}"}} {_number(value)}',
        ]
    with _replacing_text(path) as f:
        f.write("\n".join(lines) + "\n")


def _label(value: str) -> str:
    """A label value escaped per the exposition format: backslash, double quote, newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: object) -> str:
    """A sample value in the exposition format (Go float syntax; ``NaN``, ``+Inf``, ``-Inf``)."""
    if isinstance(value, bool | int):
        return str(int(value))
    if not isinstance(value, float | str):
        raise TypeError(f"not a metric value: {value!r}")
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    return repr(number)


def _timestamp(iso: object) -> float:
    """Seconds since the epoch of an ISO 8601 time with offset; now if there is none."""
    if isinstance(iso, str):
        with contextlib.suppress(ValueError):
            moment = dt.datetime.fromisoformat(iso)
            if moment.tzinfo is not None:
                return moment.timestamp()
    return time.time()


def _previous_success(path: Path, job: str) -> float | None:
    """The last success time this job's metrics file holds, if any."""
    prefix = f'{_LAST_SUCCESS}{{job="{_label(job)}"}} '
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    for line in text.splitlines():
        if line.startswith(prefix):
            with contextlib.suppress(ValueError, IndexError):
                return float(line.removeprefix(prefix).split()[0])
    return None
