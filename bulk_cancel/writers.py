"""The files users read: results (CSV, Parquet, Excel), the summary JSON, the errors file and
Prometheus metrics. Every write is atomic: a temp file in the same folder, fsync, ``os.replace``.
A crash never leaves a half-written file under the final name.

pandas is not needed here; pyarrow and openpyxl are imported only when that format is written.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

from .errors import ConfigError

#: Results columns that hold whole numbers (typed as int64 in Parquet).
INT_COLUMNS: Final = frozenset({"http_status", "error_code", "cancelled_count", "attempts", "line"})
#: Excel's limit is 1,048,576 rows a sheet, the header included.
XLSX_MAX_ROWS: Final = 1_048_575
#: Leading characters that make Excel read a cell as a formula (OWASP "CSV injection").
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


class OutputFormat(enum.StrEnum):
    """Formats the results can be written in, chosen by the output's extension."""

    CSV = "csv"
    PARQUET = "parquet"
    XLSX = "xlsx"


def output_format(path: Path) -> OutputFormat:
    """The results format for *path*, by extension; anything else is a ConfigError."""
    try:
        return OutputFormat(path.suffix.lower().lstrip("."))
    except ValueError:
        raise ConfigError(
            f"--output {path}: unsupported extension {path.suffix or '(none)'!r}; "
            "use .csv, .parquet or .xlsx"
        ) from None


def summary_path(output: Path) -> Path:
    """``results.csv`` → ``results.summary.json`` beside it."""
    return output.with_name(output.stem + ".summary.json")


def errors_path(output: Path) -> Path:
    """``results.csv`` → ``results.errors.csv`` beside it (always CSV: easy to fix and feed back)."""
    return output.with_name(output.stem + ".errors.csv")


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w", **open_kw: Any) -> Iterator[IO[Any]]:
    """Open a temp file beside *path*; on success fsync and rename it over *path*, else remove it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _atomic_path(path: Path, write: Callable[[Path], None]) -> None:
    """For writers that need a path rather than a file object (pyarrow, openpyxl)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_results(
    path: Path,
    columns: Sequence[str],
    chunks: Iterable[Sequence[Sequence[object]]],
    *,
    summary: Mapping[str, Any] | None = None,
) -> int:
    """Stream *chunks* of rows (in *columns* order) to *path* in its format; return rows written."""
    fmt = output_format(path)
    if fmt is OutputFormat.PARQUET:
        return _write_parquet(path, columns, chunks)
    if fmt is OutputFormat.XLSX:
        return _write_xlsx(path, columns, chunks, summary or {})
    return _write_csv(path, columns, chunks)


def write_errors(
    path: Path, columns: Sequence[str], chunks: Iterable[Sequence[Sequence[object]]]
) -> int:
    """The rows worth another look, as CSV (the caller chooses the rows)."""
    return _write_csv(path, columns, chunks)


def _write_csv(
    path: Path, columns: Sequence[str], chunks: Iterable[Sequence[Sequence[object]]]
) -> int:
    # CSV stays byte-exact (no formula guard): it is data for programs and for feeding back in.
    rows = 0
    with atomic_file(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        for chunk in chunks:
            writer.writerows(chunk)
            rows += len(chunk)
    return rows


def _write_parquet(
    path: Path, columns: Sequence[str], chunks: Iterable[Sequence[Sequence[object]]]
) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [pa.field(c, pa.int64() if c in INT_COLUMNS else pa.string()) for c in columns]
    )
    rows = 0

    def write(tmp: Path) -> None:
        nonlocal rows
        with pq.ParquetWriter(tmp, schema) as writer:
            for chunk in chunks:
                arrays = [
                    pa.array(
                        [r[i] if r[i] is not None else None for r in chunk],
                        type=schema.field(i).type,
                        from_pandas=False,
                    )
                    if schema.field(i).type == pa.int64()
                    else pa.array(
                        [None if r[i] is None else str(r[i]) for r in chunk], type=pa.string()
                    )
                    for i in range(len(columns))
                ]
                writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
                rows += len(chunk)
            if rows == 0:
                writer.write_table(schema.empty_table())

    _atomic_path(path, write)
    return rows


def _excel_safe(value: object) -> object:
    """Keep text that starts like a formula as text: Excel must not evaluate a umid or a note."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _write_xlsx(
    path: Path,
    columns: Sequence[str],
    chunks: Iterable[Sequence[Sequence[object]]],
    summary: Mapping[str, Any],
) -> int:
    from openpyxl import Workbook

    rows = 0
    sheets = 1

    def write(tmp: Path) -> None:
        nonlocal rows, sheets
        wb = Workbook(write_only=True)
        ws = wb.create_sheet("results")
        ws.append(list(columns))
        in_sheet = 0
        for chunk in chunks:
            for row in chunk:
                if in_sheet == XLSX_MAX_ROWS:
                    sheets += 1
                    ws = wb.create_sheet(f"results {sheets}")
                    ws.append(list(columns))
                    in_sheet = 0
                ws.append([_excel_safe(v) for v in row])
                in_sheet += 1
                rows += 1
        meta = wb.create_sheet("summary")
        meta.append(["key", "value"])
        for key, value in _flatten(summary):
            meta.append([key, _excel_safe(value)])
        if sheets > 1:
            meta.append(["results_sheets", sheets])
        wb.save(tmp)

    _atomic_path(path, write)
    return rows


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, object]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, name + ".")
        elif isinstance(value, list | tuple):
            yield name, ", ".join(map(str, value))
        else:
            yield name, value


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    """The summary as indented JSON, atomically."""
    with atomic_file(path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, default=str)
        f.write("\n")


def read_summary(path: Path) -> dict[str, Any]:
    """A summary written by :func:`write_summary`."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _label(value: str) -> str:
    """Escape a label value per the Prometheus exposition format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_metrics(path: Path, summary: Mapping[str, Any], *, job: str) -> None:
    """Prometheus node_exporter textfile-collector metrics for one run, atomically.

    The collector may read the file at any moment, which is why it must appear whole
    (node_exporter docs, "Textfile Collector"). The last success time survives failed runs.
    """
    now = time.time()
    last_success = now if summary.get("exit_code") == 0 else _previous_success(path)
    j = _label(job)
    lines = [
        "# HELP bulk_cancel_rows Rows of the last run by outcome.",
        "# TYPE bulk_cancel_rows gauge",
    ]
    for outcome, n in summary.get("counts", {}).items():
        lines.append(f'bulk_cancel_rows{{job="{j}",outcome="{_label(str(outcome))}"}} {int(n)}')
    scalars = [
        (
            "bulk_cancel_requests_total",
            "Requests sent by the last run.",
            summary.get("requests", 0),
        ),
        ("bulk_cancel_retries_total", "Retries by the last run.", summary.get("retries", 0)),
        (
            "bulk_cancel_cancelled_total",
            "Messages cancelled by the last run.",
            summary.get("cancelled_total", 0),
        ),
        ("bulk_cancel_duration_seconds", "Duration of the last run.", summary.get("elapsed_s", 0)),
        ("bulk_cancel_exit_code", "Exit code of the last run.", summary.get("exit_code", 0)),
        ("bulk_cancel_last_run_timestamp_seconds", "When the last run ended.", round(now, 3)),
    ]
    if last_success is not None:
        scalars.append(
            (
                "bulk_cancel_last_success_timestamp_seconds",
                "When a run last ended with exit code 0.",
                round(last_success, 3),
            )
        )
    for name, help_text, value in scalars:
        lines += [
            f"# HELP {name} {help_text}",
            f"# TYPE {name} gauge",
            f'{name}{{job="{j}"}} {value}',
        ]
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _previous_success(path: Path) -> float | None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("bulk_cancel_last_success_timestamp_seconds{"):
            with contextlib.suppress(ValueError):
                return float(line.rsplit(" ", 1)[-1])
    return None
