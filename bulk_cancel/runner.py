"""One ``bulk-cancel run`` from start to finish: ledger, ingest, send, results.

Phase 1 reads the whole input into the ledger (normalised, de-duplicated): bad input fails here,
before a single request. Phase 2 sends what the ledger still has to send. Results and summary are
rebuilt from the ledger and written atomically, whatever way phase 2 ended.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shlex
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from . import readers, writers
from .client import CancelClient, Canceller, ClientSettings
from .errors import ExitCode, InputError, Interrupted, LedgerError, UsageError
from .ledger import Ledger, ledger_path
from .model import RESULT_COLUMNS, Kind, Outcome, Result
from .normalize import canonical_uuid, clean
from .pipeline import Pipeline, PipelineSettings, Progress, RunReport, StopReason
from .settings import DEFAULT_BASE_URL, RunSettings

log = structlog.get_logger("bulk_cancel")

#: Outcomes written to ``<name>.errors.csv`` by ``--split``: the rows worth another look.
ERROR_OUTCOMES = frozenset(
    {
        Outcome.FAILED,
        Outcome.NOT_ATTEMPTED,
        Outcome.UNCONFIRMED,
        Outcome.AUTH_FAILED,
        Outcome.SUBACCOUNT_REJECTED,
        Outcome.INVALID_UMID,
    }
)


@dataclass(slots=True)
class RunResult:
    """What the command reports when a run ends."""

    exit_code: ExitCode
    summary: dict[str, Any]
    summary_path: Path | None = None
    message: str | None = None
    plan: dict[str, Any] | None = None


@dataclass(slots=True)
class _Ingest:
    input_rows: int = 0
    duplicates: int = 0
    blank_rows: int = 0
    extra_columns: list[str] = field(default_factory=list)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def resume_command(settings: RunSettings) -> str:
    """The exact command that finishes an interrupted run, to copy and paste.

    A run from a job file names the job file first, so that the job's other settings (rate,
    metrics, split, its lock) apply again; the flags after it pin this run's input and output (a
    job's input may be a glob, its output a template holding ``{date}``) and what is sent. A drop
    folder's file is finished by the job's next run, which resumes what is left in processing/.
    """
    s = settings
    if s.job_file is not None and s.archive_dir is not None:
        return shlex.join(["bulk-cancel", "run", str(s.job_file), *_what_is_sent(s)])
    parts = ["bulk-cancel", "run", *_job_file(s)]
    if s.input is not None:
        parts += ["--input", s.input]
    return shlex.join([*parts, *_what_is_sent(s), "--output", str(s.output), "--resume"])


def retry_failed_command(settings: RunSettings) -> str:
    """The exact command that re-sends only the rows this run left ``failed`` or ``not_attempted``.

    From a job file it names the job file and this run's input (a glob would match other files
    too). A drop folder refuses ``--retry-failed``, so one of its files is retried by flags alone.
    """
    s = settings
    parts = ["bulk-cancel", "run"]
    if s.job_file is not None and s.archive_dir is None:
        parts.append(str(s.job_file))
        if s.input not in (None, "-"):
            parts += ["--input", str(s.input)]
    return shlex.join([*parts, *_what_is_sent(s), "--output", str(s.output), "--retry-failed"])


def _job_file(settings: RunSettings) -> list[str]:
    return [] if settings.job_file is None else [str(settings.job_file)]


def _what_is_sent(settings: RunSettings) -> list[str]:
    """Flags for the settings that decide what is read and where it is sent: a resume repeats
    them, whatever layer they came from, so the environment of the next shell cannot change them."""
    s = settings
    parts: list[str] = []
    for flag, value in (
        ("--subaccount", s.subaccount),
        ("--column", s.column),
        ("--subaccount-column", s.subaccount_column),
        ("--sheet", s.sheet),
        ("--encoding", s.encoding),
        ("--batch-id", s.batch_id),
        ("--base-url", None if s.base_url == DEFAULT_BASE_URL else s.base_url),
        ("--shard", None if s.shard is None else str(s.shard)),
    ):
        if value is not None:
            parts += [flag, value]
    if s.allow_insecure_http:
        parts.append("--allow-insecure-http")
    return parts


class Runner:
    """Runs one job; :meth:`run` is the only entry point."""

    def __init__(
        self,
        settings: RunSettings,
        api_key: str,
        *,
        canceller: Canceller | None = None,
        progress: Progress | None = None,
        stdin: Any = None,
        confirm: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        self.settings = settings
        self._api_key = api_key
        self._canceller = canceller
        self.progress = progress or Progress()
        self._stdin = stdin
        self._confirm = confirm
        self.pipeline: Pipeline | None = None
        self.sending = asyncio.Event()
        """Set once the input is read and confirmed, as the first requests are about to leave."""
        self._signal: int | None = None

    # ------------------------------------------------------------------ phases

    def _open_source(self) -> readers.InputSource:
        s = self.settings
        assert s.input is not None
        return readers.open_input(
            s.input,
            column=s.column,
            subaccount_column=s.subaccount_column,
            default_subaccount=s.subaccount,
            sheet=s.sheet,
            encoding=s.encoding,
            stdin=self._stdin,
        )

    def _fingerprint(self) -> dict[str, Any]:
        """Settings that change what is sent: a resume must use the same."""
        s = self.settings
        return {
            "subaccount": s.subaccount,
            "column": s.column,
            "subaccount_column": s.subaccount_column,
            "sheet": s.sheet,
            "batch_id": s.batch_id,
            "base_url": s.base_url,
            "shard": None if s.shard is None else str(s.shard),
        }

    def _ingest(self, ledger: Ledger, source: readers.InputSource | None) -> _Ingest:
        stats = _Ingest()
        s = self.settings
        if source is None:  # a single --batch-id, no input file
            assert s.batch_id is not None and s.subaccount is not None
            stats.input_rows = 1
            batch_id = canonical_uuid(clean(s.batch_id))
            local = None
            if batch_id is None:
                local = Result(
                    outcome=Outcome.INVALID_UMID, error_message="not a UUID (local check)"
                )
            target = batch_id or clean(s.batch_id)[:200]
            if s.shard is None or s.shard.owns(s.subaccount, target):
                ledger.add([(s.subaccount, target, Kind.BATCH, 0, None, local)])
            else:
                stats.input_rows = 0
        else:
            stats.extra_columns = list(source.extra_columns)
            ledger.set_meta({"extra_columns": stats.extra_columns})
            now = _now()
            shard = s.shard
            read = 0
            for chunk in source:
                self._check_interrupt()
                read += len(chunk)
                if s.max_rows is not None and read > s.max_rows:
                    raise InputError(
                        f"{s.input}: more than max_rows={s.max_rows} rows; raise --max-rows "
                        "if this many cancels is intended"
                    )
                if shard is not None:
                    chunk = [row for row in chunk if shard.owns(row.subaccount, row.target_id)]
                stats.input_rows += len(chunk)
                stats.duplicates += ledger.add(
                    (
                        row.subaccount,
                        row.target_id,
                        row.kind,
                        row.line,
                        row.extra,
                        None
                        if row.problem is None
                        else Result(outcome=row.problem, error_message=row.detail, finished_at=now),
                    )
                    for row in chunk
                )
            # Blank rows belong to no row's shard: the first shard counts them, once.
            stats.blank_rows = source.blank_rows if shard is None or shard.index == 0 else 0
        ledger.set_meta(
            {
                "ingest_complete": True,
                "input_rows": stats.input_rows,
                "duplicates": stats.duplicates,
                "blank_rows": stats.blank_rows,
            }
        )
        ledger.finish_ingest()
        log.info(
            "ingest.done",
            input_rows=stats.input_rows,
            duplicates=stats.duplicates,
            blank_rows=stats.blank_rows,
        )
        return stats

    def _check_interrupt(self) -> None:
        """Between input chunks: leave if a signal arrived (nothing has been sent yet)."""
        if self._signal is not None:
            raise Interrupted(
                "interrupted while reading the input; nothing was sent and no ledger was kept: "
                "run the same command again",
                sigterm=self._signal == signal.SIGTERM,
            )

    def _signals_while_reading(self) -> AbstractContextManager[None]:
        """Reading is synchronous, so the event loop's signal handlers cannot run: note a
        SIGINT/SIGTERM in a plain handler instead, and stop at the next chunk."""

        def note(signum: int, frame: object) -> None:
            self._signal = signum

        return _handling_signals(note)

    def _ask(self, ledger: Ledger) -> None:
        """On a terminal, say what is about to be sent and ask; a no, or a signal while asking,
        leaves no ledger behind (nothing was sent), so the same command can simply run again."""
        s = self.settings
        if self._confirm is None or s.resume or s.retry_failed:
            return
        lanes = ledger.lanes()
        plan = {
            "to_send": sum(n for _, n in lanes),
            "per_subaccount": dict(lanes),
            "base_url": s.base_url,
        }
        if not plan["to_send"]:
            return

        def interrupt(signum: int, frame: object) -> None:
            # The prompt blocks in input(): only an exception raised here ends the wait. The
            # event loop's own SIGINT handler would merely cancel the task, which input() never
            # sees, so a first Ctrl-C would do nothing at all.
            raise Interrupted(
                "interrupted at the confirmation; nothing was sent and no ledger was kept",
                sigterm=signum == signal.SIGTERM,
            )

        try:
            with _handling_signals(interrupt):
                confirmed = self._confirm(plan)
        except BaseException:
            _discard(ledger)
            raise
        if not confirmed:
            _discard(ledger)
            raise UsageError("not confirmed: nothing was sent")

    def _prepare(self) -> Ledger:
        """Open or create the ledger and make sure it holds the whole input."""
        s = self.settings
        path = ledger_path(s.output)
        if s.retry_failed:
            ledger = Ledger.open(path)
            meta = ledger.meta()
            if not meta.get("ingest_complete"):
                ledger.close()
                raise LedgerError(
                    f"{path}: the earlier run never finished reading its input; "
                    "use --resume with the same --input instead of --retry-failed"
                )
            earlier = meta.get("settings", {}).get("base_url")
            if earlier is not None and earlier != s.base_url:
                ledger.close()
                raise LedgerError(
                    f"{path}: --retry-failed would send to {s.base_url}, but the run went to "
                    f"{earlier}; add --base-url {earlier} (or the same --product/--region)"
                )
            reopened = ledger.reopen_failures()
            log.info("run.retry_failed", rows=reopened)
            return ledger
        source = self._open_source() if s.input is not None else None
        if s.resume:
            ledger = Ledger.open(path)
            try:
                meta = ledger.meta()
                if source is not None:
                    # Reading the input again costs a few seconds on millions of rows, and is
                    # the only way to be sure the rows match: compare checksums first.
                    checksum = source.checksum()
                    if meta.get("input_checksum") not in (None, checksum):
                        raise LedgerError(
                            f"{s.input}: not the input of the run in {path} (checksum differs); "
                            "resume with the original file, or start afresh with another --output"
                        )
                changed = {
                    k: (meta.get("settings", {}).get(k), v)
                    for k, v in self._fingerprint().items()
                    if meta.get("settings", {}).get(k) != v
                }
                if changed:
                    what = ", ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in changed.items())
                    raise LedgerError(
                        f"{path}: --resume with settings that change what is sent ({what}); "
                        "use the original settings, or start afresh with another --output"
                    )
                if not meta.get("ingest_complete"):
                    # Killed while reading: nothing was sent yet, so read it all again.
                    ledger.close()
                    path.unlink()
                    return self._create(path, source)
                reopened = ledger.reopen_failures()
                log.info("run.resume", ledger=str(path), reopened=reopened)
                return ledger
            except BaseException:
                with suppress(Exception):
                    ledger.close()
                raise
        return self._create(path, source)

    def _create(self, path: Path, source: readers.InputSource | None) -> Ledger:
        s = self.settings
        meta: dict[str, Any] = {
            "created_at": _now(),
            "input": s.input,
            "settings": self._fingerprint(),
        }
        if source is not None and s.input != "-":
            meta["input_checksum"] = source.checksum()
        ledger = Ledger.create(path, meta)
        try:
            self._ingest(ledger, source)
            if source is not None and s.input == "-":
                ledger.set_meta({"input_checksum": source.checksum()})
                ledger.commit()
        except BaseException:
            # Nothing was sent: leave no ledger behind, so the fixed input can simply run again.
            _discard(ledger)
            raise
        return ledger

    # ------------------------------------------------------------------ dry run

    def plan(self) -> dict[str, Any]:
        """Read, validate and de-duplicate into a throw-away ledger; send nothing."""
        with tempfile.TemporaryDirectory(prefix="bulk-cancel-plan-") as tmp:
            source = self._open_source() if self.settings.input is not None else None
            ledger = Ledger.create(Path(tmp) / "plan.ledger.sqlite", {"settings": {}})
            try:
                with self._signals_while_reading():
                    stats = self._ingest(ledger, source)
                lanes = ledger.lanes()
                counts = ledger.counts()
                examples = {
                    o.value: [
                        {"line": line, "value": value, "problem": detail}
                        for line, value, detail in ledger.examples(o)
                    ]
                    for o in (Outcome.INVALID_UMID, Outcome.SUBACCOUNT_REJECTED)
                    if counts.get(o.value)
                }
            finally:
                ledger.close()
        to_send = sum(n for _, n in lanes)
        rate = self.settings.lane_rate_per_s
        return {
            "input_rows": stats.input_rows,
            "unique": sum(counts.values()),
            "duplicates": stats.duplicates,
            "blank_rows": stats.blank_rows,
            "to_send": to_send,
            "invalid_locally": {k: v for k, v in counts.items() if k != Outcome.NOT_ATTEMPTED},
            "examples": examples,
            "per_subaccount": dict(lanes),
            "rate_per_s": rate,
            "expected_duration_s": round(max((n for _, n in lanes), default=0) / rate, 1),
            "base_url": self.settings.base_url,
            **({} if self.settings.shard is None else {"shard": str(self.settings.shard)}),
        }

    # ------------------------------------------------------------------ the run

    async def run(self) -> RunResult:
        """Prepare, send and write results; never raises for one row's failure."""
        s = self.settings
        started_wall = _now()
        started = time.monotonic()
        with self._signals_while_reading():
            ledger = self._prepare()
        self._ask(ledger)
        report = RunReport()
        try:
            ledger.set_meta({"last_run_started_at": started_wall})
            ledger.commit()
            log.info(
                "run.started",
                base_url=s.base_url,
                rate_per_s=s.lane_rate_per_s,
                ledger=str(ledger.path),
                **({} if s.shard is None else {"shard": str(s.shard)}),
            )
            self.sending.set()
            report = await self._send(ledger)
            meta = ledger.meta()
            requests = int(meta.get("requests", 0)) + self.progress.requests
            retries = int(meta.get("retries", 0)) + self.progress.retries
            ledger.set_meta({"requests": requests, "retries": retries})
            ledger.commit()
            summary = self._summary(ledger, report, started_wall, time.monotonic() - started)
            self._write_outputs(ledger, summary)
        finally:
            ledger.close()
        return RunResult(
            exit_code=ExitCode(summary["exit_code"]),
            summary=summary,
            summary_path=writers.summary_path(s.output),
            message=self._closing_message(report),
        )

    async def _send(self, ledger: Ledger) -> RunReport:
        s = self.settings
        pipeline_settings = PipelineSettings(
            rate_per_s=s.lane_rate_per_s,
            ip_rate_per_s=s.ip_rate_per_s,
            concurrency=s.concurrency,
            retry=s.retry,
            failure_threshold=s.failure_threshold,
            failure_window=s.failure_window,
        )
        if self._canceller is not None:
            self.pipeline = Pipeline(
                ledger, self._canceller, pipeline_settings, progress=self.progress
            )
            return await self._run_with_signals(self.pipeline)
        client_settings = ClientSettings(
            base_url=s.base_url,
            timeout_s=s.timeout_s,
            max_connections=s.concurrency or 512,
        )
        async with CancelClient(client_settings, self._api_key) as client:
            self.pipeline = Pipeline(ledger, client, pipeline_settings, progress=self.progress)
            return await self._run_with_signals(self.pipeline)

    async def _run_with_signals(self, pipeline: Pipeline) -> RunReport:
        """SIGINT/SIGTERM: stop taking rows, let in-flight finish (bounded); a second one exits now."""
        loop = asyncio.get_running_loop()
        # Everything alive now (modules, settings, the ledger) lives until the run ends. Freezing
        # it keeps Python's full collections from walking it all while sending: one stalls the
        # loop for 10-30 ms, and requests due meanwhile leave together (measured: a server
        # counting arrivals saw 1,834-1,846 in one second at a 1,791/s pace, 1,802 frozen).
        gc.freeze()
        try:
            return await self._send_until_done(loop, pipeline)
        finally:
            gc.unfreeze()

    async def _send_until_done(
        self, loop: asyncio.AbstractEventLoop, pipeline: Pipeline
    ) -> RunReport:
        task = asyncio.ensure_future(pipeline.run())

        def on_signal(signum: int) -> None:
            if self._signal is not None:
                # Second signal: leave at once. Every SQLite statement is atomic, so the ledger
                # is consistent as it stands; rows in flight stay SENT and resume as ambiguous.
                pipeline._ledger.commit()
                os._exit(128 + signum)
            self._signal = signum
            log.warning("run.interrupted", signal=signal.Signals(signum).name)
            pipeline.stop(StopReason.INTERRUPTED, signal.Signals(signum).name)
            loop.call_later(pipeline._settings.drain_timeout_s, task.cancel)

        installed = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            with suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, on_signal, signum)
                installed.append(signum)
        try:
            return await task
        except asyncio.CancelledError:
            if self._signal is None:
                raise
            # The drain timeout passed: requests still in flight stay SENT (reported unconfirmed).
            return pipeline.report
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    # ------------------------------------------------------------------ reporting

    def _summary(
        self, ledger: Ledger, report: RunReport, started_at: str, elapsed_s: float
    ) -> dict[str, Any]:
        s = self.settings
        meta = ledger.meta()
        counts = ledger.counts()
        unique, cancelled_total = ledger.totals()
        if (
            report.stop_reason in (StopReason.AUTH, StopReason.SUBACCOUNT)
            or report.rejected_subaccounts
        ):
            exit_code = ExitCode.REJECTED
        elif self._signal is not None:
            exit_code = ExitCode.SIGINT if self._signal == signal.SIGINT else ExitCode.SIGTERM
        elif (
            report.stop_reason is not None
            or counts.get(Outcome.FAILED, 0)
            or counts.get(Outcome.NOT_ATTEMPTED, 0)
        ):
            exit_code = ExitCode.INCOMPLETE
        else:
            exit_code = ExitCode.OK
        summary: dict[str, Any] = {
            "counts": {o.value: counts.get(o.value, 0) for o in Outcome},
            "cancelled_total": cancelled_total,
            "input_rows": meta.get("input_rows", 0),
            "unique": unique,
            "duplicates": meta.get("duplicates", 0),
            "blank_rows": meta.get("blank_rows", 0),
            "requests": meta.get("requests", 0),
            "retries": meta.get("retries", 0),
            "requests_this_run": self.progress.requests,
            "throttled_this_run": self.progress.throttled,
            "started_at": started_at,
            "finished_at": _now(),
            "elapsed_s": round(elapsed_s, 3),
            "achieved_rate_per_s": round(self.progress.requests / elapsed_s, 1)
            if elapsed_s
            else 0.0,
            "exit_code": int(exit_code),
            "stop_reason": report.stop_reason,
            "stop_detail": report.stop_detail,
            "rejected_subaccounts": report.rejected_subaccounts,
            "results": str(s.output),
            "ledger": str(ledger.path),
            "input_checksum": meta.get("input_checksum"),
            "shard": None if s.shard is None else str(s.shard),
            "settings": s.public(),
        }
        if exit_code != ExitCode.OK:
            summary["resume_command"] = resume_command(s)
            summary["retry_failed_command"] = retry_failed_command(s)
        return summary

    def _write_outputs(self, ledger: Ledger, summary: dict[str, Any]) -> None:
        s = self.settings
        columns = [*RESULT_COLUMNS, *ledger.meta().get("extra_columns", [])]
        writers.write_results(s.output, columns, ledger.iter_results(), summary=summary)
        writers.write_summary(writers.summary_path(s.output), summary)
        if s.split:
            wanted = frozenset(o.value for o in ERROR_OUTCOMES)
            writers.write_errors(
                writers.errors_path(s.output), columns, ledger.iter_results(outcomes=wanted)
            )
        keys = ("counts", "exit_code", "elapsed_s", "resume_command", "retry_failed_command")
        log.info("run.finished", **{k: summary[k] for k in keys if k in summary})

    def _closing_message(self, report: RunReport) -> str | None:
        s = self.settings
        if report.stop_reason == StopReason.AUTH:
            return (
                f"the API rejected the key ({report.stop_detail}); remaining rows were not sent. "
                f"Check {'EIGHTX8_API_KEY'} and the region's host, then: {resume_command(s)}"
            )
        if report.rejected_subaccounts:
            subs = ", ".join(report.rejected_subaccounts)
            return (
                f"the API rejected subaccount(s) {subs} (code 1001: not in this key's account); "
                "their remaining rows were not sent"
            )
        if report.stop_reason == StopReason.THRESHOLD:
            return f"stopped: {report.stop_detail}. Fix the cause, then: {resume_command(s)}"
        if report.stop_reason == StopReason.FATAL:
            return f"stopped: {report.stop_detail}"
        if report.stop_reason == StopReason.INTERRUPTED:
            return f"interrupted; nothing is lost. To finish: {resume_command(s)}"
        return None


@contextmanager
def _handling_signals(handler: Callable[[int, object], None]) -> Iterator[None]:
    """SIGINT and SIGTERM go to *handler* for the block, then back to whoever had them."""
    previous = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with suppress(ValueError):  # not the main thread: leave the handlers alone
                previous[signum] = signal.signal(signum, handler)
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _discard(ledger: Ledger) -> None:
    """Close and delete a ledger through which nothing was sent."""
    ledger.close()
    for suffix in ("", "-wal", "-shm", ".lock"):
        with suppress(FileNotFoundError):
            Path(str(ledger.path) + suffix).unlink()
