"""Reading while sending: cheap counts, the checksum computed beside the reading, and the
streamer's slices into a real ledger."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path

import pytest
from helpers import umids

from bulk_cancel import ingest, readers
from bulk_cancel.errors import InputError, LedgerError
from bulk_cancel.ledger import Ledger
from bulk_cancel.pipeline import Feed, Progress


def csv_file(path: Path, lines: list[str]) -> Path:
    path.write_text("umid,campaign\n" + "".join(line + "\n" for line in lines))
    return path


def opened(path: Path) -> readers.InputSource:
    return readers.open_input(str(path), default_subaccount="acme")


def test_csv_counts(tmp_path: Path) -> None:
    """A CSV's rows are its lines less the header: exact without quotes, "about" with them."""
    plain = csv_file(tmp_path / "plain.csv", [f"{u},a" for u in umids(7)])
    quoted = csv_file(tmp_path / "quoted.csv", [f'{u},"two\nlines"' for u in umids(3)])
    assert ingest.count_rows(opened(plain)) == ingest.RowCount(7, True, True, "lines in the file")
    count = ingest.count_rows(opened(quoted))
    assert count is not None and count.rows == 6 and not count.exact and count.at_most


def test_a_last_line_without_a_line_break_counts(tmp_path: Path) -> None:
    """A file whose last row has no line break still counts that row."""
    path = tmp_path / "in.txt"
    path.write_text("\n".join(umids(4)))
    assert ingest.count_rows(opened(path)) == ingest.RowCount(4, True, True, "lines in the file")


def test_parquet_rows_come_from_its_metadata(tmp_path: Path) -> None:
    """A Parquet file's row count is read from its metadata, and is exact."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"umid": umids(11)}), path)
    assert ingest.count_rows(opened(path)) == ingest.RowCount(11, True, True, "Parquet metadata")


def test_the_hasher_gives_the_inputs_checksum_and_prefixes(tmp_path: Path) -> None:
    """The thread's checksum equals the reader's, and a prefix digest matches prefix_checksum."""
    path = csv_file(tmp_path / "in.csv", [f"{u},x" for u in umids(5000)])
    hasher = ingest.InputHasher(str(path))
    checksum = hasher.join()
    assert checksum == opened(path).checksum()
    done, _ = hasher.prefix
    assert done == path.stat().st_size
    assert (
        ingest.prefix_checksum(str(path), 100)
        == hashlib.sha256(path.read_bytes()[:100]).hexdigest()
    )
    assert ingest.prefix_checksum(str(path), done + 1) is None


def test_a_changed_prefix_is_refused(tmp_path: Path) -> None:
    """check_same_input refuses a file whose first bytes differ from those the run had hashed."""
    path = csv_file(tmp_path / "in.csv", [f"{u},x" for u in umids(50)])
    data = path.read_bytes()
    meta = {"input_prefix": {"bytes": 200, "sha256": hashlib.sha256(data[:200]).hexdigest()}}
    ingest.check_same_input(str(path), meta, "results.ledger.sqlite")
    path.write_bytes(data[:150] + b"X" + data[151:])
    with pytest.raises(LedgerError, match="checksum of the part read differs"):
        ingest.check_same_input(str(path), meta, "results.ledger.sqlite")


def streamer(ledger: Ledger, path: Path, reading: ingest.Reading, **kw: object) -> ingest.Streamer:
    source = readers.open_input(str(path), default_subaccount="acme", chunk_rows=7)
    return ingest.Streamer(
        ledger,
        source,
        Feed(),
        Progress(),
        reading=reading,
        hasher=ingest.InputHasher(str(path)),
        now=lambda: "2026-01-01T00:00:00+00:00",
        **kw,  # type: ignore[arg-type]
    )


async def test_streaming_counts_duplicates_and_invalid_rows_exactly(tmp_path: Path) -> None:
    """Every row read lands once; later duplicates are counted, invalid ids are final at once,
    the feed names the subaccount once and closes, and the checksum is stored at the end."""
    ids = umids(40)
    lines = [f"{u},x" for u in ids] + [f"{u},again" for u in ids[:15]] + ["junk,x"] * 2
    path = csv_file(tmp_path / "in.csv", lines)
    ledger = Ledger.create(tmp_path / "r.ledger.sqlite", {"settings": {}})
    ledger.build_work_index()
    s = streamer(ledger, path, ingest.Reading())
    reading = await s.run()
    meta = ledger.meta()
    assert (reading.input_rows, reading.duplicates, reading.complete) == (57, 16, True)
    assert s.feed.done and s.feed.subaccounts == ["acme"]
    assert meta["ingest_complete"] is True
    assert meta["input_checksum"] == opened(path).checksum()
    assert ledger.counts() == {"not_attempted": 40, "invalid_umid": 1}
    ledger.close()


async def test_a_resumed_reading_skips_what_was_read_and_checks_the_last_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resumed mid-read, the rows already read are skipped, not counted as duplicates; if the
    row where the earlier run stopped differs, the reading stops with a refusal."""
    ids = umids(30)
    path = csv_file(tmp_path / "in.csv", [f"{u},x" for u in ids])
    ledger = Ledger.create(tmp_path / "r.ledger.sqlite", {"settings": {}})
    ledger.build_work_index()
    monkeypatch.setattr(ingest, "SLICE_S", 0.0)  # one chunk (7 rows) per slice
    first = streamer(ledger, path, ingest.Reading())
    first._slice(iter(first._source))
    meta = ledger.meta()
    read = meta["input_rows"]
    assert read == 7 and meta["ingest_last"] == [8, ids[6]]
    resumed = streamer(ledger, path, ingest.Reading.from_meta(meta), last_row=meta["ingest_last"])
    reading = await resumed.run()
    assert (reading.input_rows, reading.duplicates) == (30, 0)
    assert ledger.counts() == {"not_attempted": 30}
    wrong = streamer(ledger, path, ingest.Reading(input_rows=5), last_row=[6, ids[0]])
    with pytest.raises(LedgerError, match="row 6 differs"):
        await wrong.run()
    ledger.close()


async def test_more_rows_than_max_rows_stop_the_reading(tmp_path: Path) -> None:
    """max_rows still holds while streaming: the reading stops with the usual one-line error."""
    path = csv_file(tmp_path / "in.csv", [f"{u},x" for u in umids(30)])
    ledger = Ledger.create(tmp_path / "r.ledger.sqlite", {"settings": {}})
    ledger.build_work_index()
    with pytest.raises(InputError, match="more than max_rows=20"):
        await streamer(ledger, path, ingest.Reading(), max_rows=20).run()
    ledger.close()


async def test_slices_yield_the_loop(tmp_path: Path) -> None:
    """The reading gives the event loop back between slices: another task runs meanwhile."""
    path = csv_file(tmp_path / "in.csv", [f"{u},x" for u in umids(20_000)])
    ledger = Ledger.create(tmp_path / "r.ledger.sqlite", {"settings": {}})
    ledger.build_work_index()
    s = streamer(ledger, path, ingest.Reading())
    ticks = 0
    reads_seen: list[int] = []

    async def ticker() -> None:
        nonlocal ticks
        while not s.feed.done:
            ticks += 1
            reads_seen.append(s.reading.input_rows)
            await asyncio.sleep(0)

    await asyncio.gather(s.run(), ticker())
    assert ticks > 2 and len(set(reads_seen)) > 2  # it ran between slices, not only around
    ledger.close()


def test_an_excel_sheet_is_counted_as_an_estimate(tmp_path: Path) -> None:
    """An .xlsx sheet's stated size gives an estimate, never called exact."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["umid"])
    for u in umids(6):
        sheet.append([u])
    path = tmp_path / "in.xlsx"
    book.save(path)
    count = ingest.count_rows(opened(path))
    assert count is not None and (count.rows, count.exact, count.at_most) == (6, False, False)


def test_windows_line_ends_count_exactly_and_lone_crs_do_not(tmp_path: Path) -> None:
    """CRLF lines are counted as exactly as LF ones; a file with lone CRs is only "about"."""
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(b"umid\r\n" + b"".join(u.encode() + b"\r\n" for u in umids(9)))
    assert ingest.count_rows(opened(crlf)) == ingest.RowCount(9, True, True, "lines in the file")
    assert ingest.count_lines(str(crlf)) == (10, False, False)
    cr = tmp_path / "cr.csv"
    cr.write_bytes(b"umid\r" + b"".join(u.encode() + b"\r" for u in umids(9)))
    assert ingest.count_lines(str(cr)) == (1, False, True)


async def test_a_stopped_reading_leaves_its_rows_and_its_place_committed(tmp_path: Path) -> None:
    """Slices commit every COMMIT_EVERY_S, not each: a reading stopped between commits still
    leaves every row it read committed, with meta saying exactly how many (resume reads on)."""
    path = csv_file(tmp_path / "in.csv", [f"{u},x" for u in umids(20_000)])
    ledger_path = tmp_path / "r.ledger.sqlite"
    ledger = Ledger.create(ledger_path, {"settings": {}})
    ledger.build_work_index()
    s = streamer(ledger, path, ingest.Reading())

    async def stop_after_a_few_slices() -> None:
        while s.reading.input_rows < 100:
            await s.feed.wait()  # each slice publishes
        s.stop()

    await asyncio.gather(s.run(), stop_after_a_few_slices())
    other = sqlite3.connect(ledger_path)  # sees only what was committed
    try:
        (rows,) = other.execute("SELECT COUNT(*) FROM rows").fetchone()
        (read,) = other.execute("SELECT value FROM meta WHERE key = 'input_rows'").fetchone()
    finally:
        other.close()
    assert 100 <= rows < 20_000 and rows == int(read) == s.reading.input_rows
    ledger.close()
