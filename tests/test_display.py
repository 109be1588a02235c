"""What the operator sees: progress events off a TTY, a rich bar on one, the summary table."""

from __future__ import annotations

import asyncio
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bulk_cancel.display import (
    confirmation_question,
    live_progress,
    load_summary,
    progress_fields,
    read_text,
    summary_table,
)
from bulk_cancel.errors import UsageError
from bulk_cancel.model import Summary
from bulk_cancel.pipeline import Progress

SUMMARY = {
    "counts": {"cancelled": 90, "not_found": 8, "failed": 2, "not_attempted": 0},
    "cancelled_total": 90,
    "input_rows": 105,
    "unique": 100,
    "duplicates": 5,
    "requests": 104,
    "retries": 4,
    "elapsed_s": 2.0,
    "achieved_rate_per_s": 52.0,
    "results": "out/results.csv",
    "ledger": "out/results.ledger.sqlite",
    "resume_command": "bulk-cancel run job.toml --input in.csv --output out/r.csv --resume",
    "retry_failed_command": "bulk-cancel run job.toml --input in.csv --output out/r.csv --retry-failed",
}


def test_progress_fields_compute_rate_and_eta() -> None:
    """Done, total, achieved rate and ETA come from the live counters."""
    p = Progress(
        total=1000,
        done=250,
        requests=260,
        counts=Counter(cancelled=250),
        rate_per_s=1782,
        target_rate_per_s=1800,
    )
    fields = progress_fields(p, 10.0)
    assert fields["rate_per_s"] == 26.0
    assert fields["eta_s"] == 30.0
    assert fields["counts"] == {"cancelled": 250}
    assert (fields["pace_per_s"], fields["target_rate_per_s"]) == (1782, 1800)


async def test_progress_events_when_not_on_a_tty() -> None:
    """Off a terminal, a `run.progress` JSON event is logged every few seconds with the figures."""
    p = Progress(total=10)
    with capture_logs() as events:
        async with live_progress(p, tty=False, every_s=0.05):
            for _ in range(4):
                p.done += 1
                p.counts["cancelled"] += 1
                await asyncio.sleep(0.06)
    progress = [e for e in events if e["event"] == "run.progress"]
    assert len(progress) >= 2
    assert progress[-1]["total"] == 10 and progress[-1]["done"] >= 2


async def test_rich_bar_on_a_terminal() -> None:
    """On a terminal the bar shows done/total, the rate and the outcome counts."""
    stream = io.StringIO()
    p = Progress(total=4, done=3, requests=3, counts=Counter(cancelled=3), rate_per_s=100)
    async with live_progress(p, tty=True, stream=stream, width=160):
        await asyncio.sleep(0.05)
    text = stream.getvalue()
    assert "3/4" in text and "cancelled 3" in text


async def test_nothing_is_shown_for_a_run_that_never_sends() -> None:
    """Until sending starts nothing is drawn: a run that ends first (a no at the prompt) shows no bar."""
    stream = io.StringIO()
    sending = asyncio.Event()
    p = Progress(total=4)
    async with live_progress(p, tty=True, stream=stream, width=160, sending=sending):
        await asyncio.sleep(0.3)  # the bar refreshes every 0.25 s once shown
    assert stream.getvalue() == ""
    async with live_progress(p, tty=True, stream=stream, width=160, sending=sending):
        sending.set()
        p.done = 3
        await asyncio.sleep(0.05)
    assert "3/4" in stream.getvalue()


async def test_no_progress_events_before_sending_starts() -> None:
    """Off a terminal too, `run.progress` events begin only once sending starts."""
    sending = asyncio.Event()
    p = Progress(total=10)
    with capture_logs() as events:
        async with live_progress(p, tty=False, every_s=0.05, sending=sending):
            await asyncio.sleep(0.2)
            assert events == []
            sending.set()
            await asyncio.sleep(0.2)
    names = [e["event"] for e in events]
    assert names and set(names) == {"run.progress"}


def test_summary_table_shows_outcomes_shares_and_next_steps() -> None:
    """The end summary lists each outcome with count and share, totals, paths and the commands."""
    out = io.StringIO()
    summary_table(Summary.from_dict(SUMMARY), out)
    text = out.getvalue()
    assert "cancelled" in text and "90.0%" in text and "8.0%" in text
    assert "not_attempted" not in text  # zero rows: not listed
    assert "out/results.csv" in text
    assert f"to finish or retry: {SUMMARY['resume_command']}" in text
    assert f"to re-send only the failures: {SUMMARY['retry_failed_command']}" in text
    assert "not read to the end" not in text
    unread = io.StringIO()
    summary_table(Summary.from_dict({**SUMMARY, "ingest_complete": False}), unread)
    assert "the input was not read to the end (105 rows read)" in unread.getvalue()


def test_report_loads_a_summary_from_results_or_ledger_paths(tmp_path: Path) -> None:
    """`report` finds the summary beside a results file; a missing one is one clear error."""
    (tmp_path / "results.summary.json").write_text(json.dumps(SUMMARY))
    assert load_summary(tmp_path / "results.csv").unique == 100
    assert load_summary(tmp_path / "results.summary.json").to_dict() == {
        **Summary.from_dict({}).to_dict(),
        **SUMMARY,
    }
    with pytest.raises(UsageError, match="no summary found"):
        load_summary(tmp_path / "other.csv")


async def test_progress_shows_rows_read_and_answered_while_reading() -> None:
    """While the input is read, events carry read, its estimated total and answered; the bar
    says "read N of about M" beside answered of those read; no ETA while the total grows."""
    p = Progress(total=500, done=120, read=900, read_total=10_000, reading=True)
    with capture_logs() as events:
        async with live_progress(p, tty=False, every_s=0.05):
            await asyncio.sleep(0.12)
    last = [e for e in events if e["event"] == "run.progress"][-1]
    assert (last["read"], last["read_total"], last["reading"]) == (900, 10_000, True)
    assert (last["done"], last["total"], last["eta_s"]) == (120, 500, None)
    bar = io.StringIO()
    async with live_progress(p, tty=True, stream=bar, width=160):
        await asyncio.sleep(0.05)
    assert "read 900 of about 10,000" in bar.getvalue() and "120/500" in bar.getvalue()
    p.reading, p.read, p.read_total_exact = False, 10_000, True
    assert read_text(p) == "read 10,000 (all)"


def test_the_question_says_whether_the_count_is_exact() -> None:
    """The terminal's question gives an exact count as such and an estimate as "about"."""
    plan = {
        "rows": 2_000_000,
        "rows_exact": True,
        "rows_counted_from": "Parquet metadata",
        "subaccount": "acme",
        "subaccount_column": None,
        "base_url": "https://sms.8x8.com",
    }
    exact = confirmation_question(plan)
    assert exact.startswith("Cancel the scheduled messages of 2,000,000 rows (Parquet metadata)")
    assert exact.endswith("in subaccount acme via https://sms.8x8.com? [y/N] ")
    about = confirmation_question(
        {**plan, "rows_exact": False, "rows_counted_from": "lines in the file"}
    )
    assert "about 2,000,000 rows (an estimate from lines in the file)" in about
    by_column = confirmation_question({**plan, "subaccount": None, "subaccount_column": "sub"})
    assert "in the subaccounts of column 'sub'" in by_column
