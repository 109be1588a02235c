"""What the operator sees: a live progress bar on a terminal, progress events off one, and the
end-of-run summary table. rich is imported only here, and only when something is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import structlog

from .errors import UsageError
from .model import Outcome, Summary
from .pipeline import Progress

if TYPE_CHECKING:
    from .ledger import Ledger

#: Seconds between ``run.progress`` log events when not on a terminal.
LOG_EVERY_S = 5.0


def progress_fields(p: Progress, elapsed_s: float) -> dict[str, Any]:
    """The figures every progress display shows, as plain values."""
    achieved = p.requests / elapsed_s if elapsed_s > 0 else 0.0
    left = max(0, p.total - p.done)
    pace = p.done / elapsed_s if elapsed_s > 0 else 0.0
    return {
        "done": p.done,
        "total": p.total,
        "counts": dict(p.counts),
        "requests": p.requests,
        "retries": p.retries,
        "throttled": p.throttled,
        "rate_per_s": round(achieved, 1),
        "pace_per_s": round(p.rate_per_s, 1),
        "target_rate_per_s": round(p.target_rate_per_s, 1),
        "eta_s": round(left / pace, 1) if pace > 0 and not p.reading else None,
        "read": p.read,
        "read_total": p.read_total,
        "read_total_exact": p.read_total_exact,
        "reading": p.reading,
    }


def read_text(p: Progress) -> str:
    """Rows read, for people: "read 120,000 of about 2,000,000", "read 2,000,000 (all)"."""
    if not p.reading:
        return f"read {p.read:,} (all)" if p.read else ""
    if p.read_total is None:
        return f"read {p.read:,}"
    about = "" if p.read_total_exact else "about "
    return f"read {p.read:,} of {about}{p.read_total:,}"


def confirmation_question(plan: Mapping[str, Any]) -> str:
    """The terminal's question before sending: what, how many (and whether that is a count or
    an estimate), where."""
    where = f"via {plan['base_url']}? [y/N] "
    if "per_subaccount" in plan:  # read whole first: the exact figures per subaccount
        subs = list(plan["per_subaccount"].items())
        shown = ", ".join(f"{sub} ({n:,})" for sub, n in subs[:5])
        more = f" and {len(subs) - 5} more" if len(subs) > 5 else ""
        lead = {"resume": "Resume the run: cancel", "retry": "Re-send the failures: cancel"}
        return (
            f"{lead.get(plan.get('mode', 'first'), 'Cancel')} {plan['to_send']:,} scheduled "
            f"messages in subaccount(s) {shown}{more} {where}"
        )
    rows = plan.get("rows")
    if rows is None:
        how_many = "the scheduled messages of every row (not counted)"
    elif plan.get("rows_exact"):
        how_many = f"the scheduled messages of {rows:,} rows ({plan['rows_counted_from']})"
    else:
        how_many = (
            f"the scheduled messages of about {rows:,} rows (an estimate from "
            f"{plan['rows_counted_from']})"
        )
    column = plan.get("subaccount_column")
    if column and plan.get("subaccount"):
        where_to = f"in the subaccounts of column {column!r}, else {plan['subaccount']}"
    elif column:
        where_to = f"in the subaccounts of column {column!r}"
    else:
        where_to = f"in subaccount {plan['subaccount']}"
    return f"Cancel {how_many} {where_to} {where}"


@asynccontextmanager
async def live_progress(
    progress: Progress,
    *,
    tty: bool,
    stream: IO[str] | None = None,
    every_s: float = LOG_EVERY_S,
    width: int | None = None,
    sending: asyncio.Event | None = None,
) -> Any:
    """Show *progress* while the block runs: a rich bar on a TTY, log events otherwise.

    With *sending*, nothing is shown until it is set: a run that ends before it sends anything
    (a "no" at the prompt, bad input, a signal while reading) leaves no empty bar behind.
    """
    stop = asyncio.Event()
    task = asyncio.create_task(_show(progress, stop, sending, tty, stream, width, every_s))
    try:
        yield
    finally:
        stop.set()
        await task


async def _show(
    progress: Progress,
    stop: asyncio.Event,
    sending: asyncio.Event | None,
    tty: bool,
    stream: IO[str] | None,
    width: int | None,
    every_s: float,
) -> None:
    if sending is not None and not sending.is_set():
        waits = [asyncio.ensure_future(e.wait()) for e in (sending, stop)]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if not sending.is_set():
            return
    started = asyncio.get_running_loop().time()
    if tty:
        await _rich_loop(progress, stop, started, stream, width)
    else:
        await _log_loop(progress, stop, started, every_s)


async def _log_loop(
    progress: Progress, stop: asyncio.Event, started: float, every_s: float
) -> None:
    log = structlog.get_logger("bulk_cancel")
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            log.info("run.progress", **progress_fields(progress, loop.time() - started))


async def _rich_loop(
    progress: Progress,
    stop: asyncio.Event,
    started: float,
    stream: IO[str] | None,
    width: int | None,
) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    loop = asyncio.get_running_loop()
    console = Console(file=stream, stderr=stream is None, width=width)
    columns = (
        TextColumn("[bold]cancelling"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[line]}"),
    )
    with Bar(*columns, console=console, transient=False, refresh_per_second=4) as bar:
        task = bar.add_task("run", total=progress.total or None, line="")
        while True:
            fields = progress_fields(progress, loop.time() - started)
            counts = " ".join(f"{k} {v}" for k, v in sorted(fields["counts"].items()))
            line = (
                f"{fields['rate_per_s']:.0f}/s (pace {fields['pace_per_s']:.0f}/s, limit "
                f"{fields['target_rate_per_s']:.0f}/s) · "
                f"429s {fields['throttled']} · retries {fields['retries']} · {counts}"
            )
            if progress.read:
                line = f"{read_text(progress)} · {line}"
            # While the input is read the total is what was read so far, and grows.
            bar.update(task, completed=progress.done, total=progress.total or None, line=line)
            if stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)


def summary_table(summary: Summary, stream: IO[str] | None = None, *, tty: bool = False) -> None:
    """Print the end-of-run summary: outcomes with counts and shares, totals, where things are."""
    from rich.table import Table

    console = _console(file=stream, force_terminal=tty, width=100 if not tty else None)
    counts = summary.counts
    total = sum(counts.values()) or 1
    table = Table(title="bulk-cancel summary", title_justify="left")
    table.add_column("outcome")
    table.add_column("rows", justify="right")
    table.add_column("share", justify="right")
    for outcome in Outcome:
        n = counts.get(outcome.value, 0)
        if n:
            table.add_row(outcome.value, f"{n:,}", f"{n / total:.1%}")
    table.add_row("[bold]total", f"[bold]{sum(counts.values()):,}", "")
    console.print(table)
    elapsed = summary.elapsed_s or 0
    console.print(
        f"cancelled messages: {summary.cancelled_total:,} · "
        f"input rows {summary.input_rows:,} · duplicates {summary.duplicates:,} · "
        f"requests {summary.requests:,} · retries {summary.retries:,}"
    )
    attempts = summary.attempts
    over = f" over {len(attempts)} attempts" if len(attempts) > 1 else ""
    console.print(
        f"elapsed {elapsed:.1f} s{over} · achieved {summary.achieved_rate_per_s:,.1f} requests/s"
    )
    if len(attempts) > 1:
        for n, attempt in enumerate(attempts, 1):
            console.print(f"  {_attempt_line(n, attempt)}", markup=False)
    console.print(f"results: {summary.results} · ledger: {summary.ledger}")
    if summary.ingest_complete is False:
        console.print(
            f"the input was not read to the end ({summary.input_rows:,} rows read): "
            "the rest is not in the results yet; the command below reads and sends it"
        )
    if summary.resume_command:
        _print_command(console, "to finish or retry", summary.resume_command)
        retry = _retry_failed_command(summary)
        resendable = ("failed", "not_attempted", "auth_failed", "subaccount_rejected")
        if retry and any(counts.get(outcome) for outcome in resendable):
            _print_command(console, "to re-send only the failures", retry)
        for note in summary.command_notes or ():
            console.print(f"note: {note}", soft_wrap=True, markup=False)


def _attempt_line(n: int, attempt: Mapping[str, Any]) -> str:
    """One attempt of a run (first, resume, retry) as the summary lists it."""
    if attempt.get("finished_at") is None:
        return (
            f"{n}. {attempt.get('mode')} at {attempt.get('started_at')}: did not finish (killed?)"
        )
    return (
        f"{n}. {attempt.get('mode')} at {attempt.get('started_at')}: "
        f"{attempt.get('elapsed_s') or 0:.1f} s, {attempt.get('requests') or 0:,} requests, "
        f"exit {attempt.get('exit_code')}"
    )


def _console(**kwargs: Any) -> Any:
    """A rich console for tables; on a closed pipe it raises BrokenPipeError like print() (rich
    would exit 1 by itself), so that the CLI ends every command the same quiet way."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError

    return _Console(highlight=False, **kwargs)


def _print_command(console: Any, label: str, command: str) -> None:
    """A command to paste: one line whatever the width (the terminal wraps it, a copy does
    not), taken literally (a "[" in a path is not markup)."""
    console.print(f"{label}: {command}", soft_wrap=True, markup=False, emoji=False)


def _retry_failed_command(summary: Summary) -> str | None:
    import shlex

    if summary.retry_failed_command:
        return summary.retry_failed_command
    # A summary written before the command was kept in it: the results path is all there is.
    results = summary.results
    return (
        shlex.join(["bulk-cancel", "run", "--retry-failed", "--output", str(results)])
        if results
        else None
    )


def load_summary(path: Path) -> Summary:
    """A past run's summary from its results file, summary JSON or ledger."""
    from . import writers
    from .ledger import ledger_path

    candidates = [path]
    name = path.name
    if name.endswith(".ledger.sqlite"):
        candidates = [path.with_name(name.removesuffix(".ledger.sqlite") + ".summary.json")]
    elif not name.endswith(".summary.json"):
        candidates = [writers.summary_path(path)]
    for candidate in candidates:
        if candidate.is_file():
            try:
                data: dict[str, Any] = json.loads(candidate.read_text())
            except (OSError, ValueError) as exc:
                raise UsageError(f"{candidate}: not a readable summary ({exc})") from None
            if not isinstance(data, dict):
                raise UsageError(f"{candidate}: not a summary (a JSON object)")
            return Summary.from_dict(data)
    if name.endswith(".ledger.sqlite") or ledger_path(path).is_file():
        return summary_from_ledger(path if name.endswith(".ledger.sqlite") else ledger_path(path))
    raise UsageError(
        f"{path}: no summary found beside it; give the results file, its .summary.json or its .ledger.sqlite"
    )


def load_breakdown(path: Path, by: str) -> dict[str, Any]:
    """Rows by outcome per subaccount (*by* ``subaccount``) or per value of an input column, from
    the run's ledger, else from a CSV results file: ``{"by": …, "groups": {value: {outcome: n}}}``.
    """
    import difflib

    from .ledger import Ledger, ledger_path

    name = path.name
    if name.endswith(".ledger.sqlite"):
        ledger_file = path
    elif name.endswith(".summary.json"):
        ledger_file = path.with_name(name.removesuffix(".summary.json") + ".ledger.sqlite")
    else:
        ledger_file = ledger_path(path)
    if ledger_file.is_file():
        ledger = Ledger.read_only(ledger_file)
        try:
            columns = list(ledger.meta().get("extra_columns", []))
            if by == "subaccount":
                return {"by": by, "groups": ledger.breakdown()}
            index = _column_index(by, columns, ledger_file)
            return {"by": columns[index], "groups": ledger.breakdown(index)}
        finally:
            ledger.close()
    if path.suffix.lower() == ".csv" and path.is_file():
        import csv

        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            key = "subaccount_id" if by == "subaccount" else fields[_column_index(by, fields, path)]
            groups: dict[str, dict[str, int]] = {}
            for row in reader:
                tally = groups.setdefault(row.get(key) or "", {})
                tally[row["outcome"]] = tally.get(row["outcome"], 0) + 1
        return {"by": by if by == "subaccount" else key, "groups": dict(sorted(groups.items()))}
    hint = difflib.get_close_matches(by, ["subaccount"], n=1)
    raise UsageError(
        f"{path}: --by needs the run's ledger or a .csv results file beside it"
        + (f" (did you mean --by {hint[0]}?)" if hint and hint[0] != by else "")
    )


def _column_index(by: str, columns: list[str], where: Path) -> int:
    """Where column *by* is (exact, else ignoring case); UsageError naming the choices."""
    import difflib

    if by in columns:
        return columns.index(by)
    lowered = [c.lower() for c in columns]
    if by.lower() in lowered:
        return lowered.index(by.lower())
    close = difflib.get_close_matches(by, [*columns, "subaccount"], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    shown = ", ".join(["subaccount", *columns])
    raise UsageError(f"{where}: no column {by!r} to break down by (there are: {shown}){hint}")


def breakdown_table(breakdown: Mapping[str, Any], stream: IO[str] | None = None) -> None:
    """Print rows by outcome for each group, one row per group, with totals."""
    from rich.table import Table

    console = _console(file=stream, width=120)
    groups: Mapping[str, Mapping[str, int]] = breakdown["groups"]
    seen = {o for tally in groups.values() for o in tally}
    outcomes = [o.value for o in Outcome if o.value in seen]
    table = Table(title=f"by {breakdown['by']}", title_justify="left")
    table.add_column(str(breakdown["by"]))
    for outcome in outcomes:
        table.add_column(outcome, justify="right")
    table.add_column("total", justify="right")
    for value, tally in groups.items():
        cells = [f"{tally.get(o, 0):,}" for o in outcomes]
        table.add_row(value or "(blank)", *cells, f"{sum(tally.values()):,}")
    totals = [sum(t.get(o, 0) for t in groups.values()) for o in outcomes]
    table.add_row("[bold]total", *(f"{n:,}" for n in totals), f"[bold]{sum(totals):,}")
    console.print(table)


def summary_from_ledger(path: Path) -> Summary:
    """Rebuild the tallies from a ledger (a run that was killed before writing its summary)."""
    from .ledger import Ledger

    ledger = Ledger.read_only(path)
    try:
        return ledger_summary(ledger, results=None, other={"rebuilt_from_ledger": True})
    finally:
        ledger.close()


def ledger_summary(ledger: Ledger, *, started_at: str | None = None, **fields: Any) -> Summary:
    """The account of everything *ledger* holds: counts, totals and every attempt (the first
    run, resumes, retries); *fields* add to it or override it. *started_at* stands in for a
    ledger with no attempt recorded yet."""
    from .ledger import attempt_totals

    meta = ledger.meta()
    counts = ledger.counts()
    unique, cancelled = ledger.totals()
    attempts = ledger.attempts()
    elapsed_s = attempt_totals(attempts)["elapsed_s"]
    requests = int(meta.get("requests", 0))
    known: dict[str, Any] = {
        "counts": {o.value: counts.get(o.value, 0) for o in Outcome},
        "cancelled_total": cancelled,
        "input_rows": meta.get("input_rows", 0),
        "unique": unique,
        "duplicates": meta.get("duplicates", 0),
        "blank_rows": meta.get("blank_rows", 0),
        "requests": requests,
        "retries": meta.get("retries", 0),
        "started_at": attempts[0]["started_at"] if attempts else started_at,
        "elapsed_s": elapsed_s,
        "achieved_rate_per_s": round(requests / elapsed_s, 1) if elapsed_s else 0.0,
        "attempts": tuple(attempts),
        "ledger": str(ledger.path),
        "input_checksum": meta.get("input_checksum"),
    }
    return Summary(**{**known, **fields})


def plan_table(plan: Mapping[str, Any], stream: IO[str] | None = None) -> None:
    """Print a dry run's plan for people: what would be sent, where, and what was refused."""
    from rich.table import Table

    console = _console(file=stream)
    console.print(
        f"rows {plan['input_rows']:,} · unique {plan['unique']:,} · duplicates {plan['duplicates']:,} · "
        f"blank {plan['blank_rows']:,} · to send {plan['to_send']:,}"
    )
    table = Table(title="per subaccount", title_justify="left")
    table.add_column("subaccount")
    table.add_column("rows to send", justify="right")
    for sub, n in plan["per_subaccount"].items():
        table.add_row(sub, f"{n:,}")
    console.print(table)
    for outcome, n in plan["invalid_locally"].items():
        console.print(f"[bold]{outcome}[/bold]: {n:,} rows, never sent; first ones:")
        for ex in plan["examples"].get(outcome, []):
            console.print(f"  line {ex['line']}: {ex['value'][:80]!r} ({ex['problem']})")
    console.print(
        f"at {plan['rate_per_s']:g}/s per subaccount this takes about {plan['expected_duration_s']:g} s "
        f"against {plan['base_url']}; nothing was sent"
    )
