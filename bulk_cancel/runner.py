"""One ``bulk-cancel run`` from start to finish: ledger, ingest, send, results.

Phase 1 reads the whole input into the ledger (normalised, de-duplicated): bad input fails here,
before a single request. Phase 2 sends what the ledger still has to send. Results and summary are
rebuilt from the ledger and written atomically, whatever way phase 2 ended.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shlex
import signal
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import structlog

from . import ingest, readers, writers
from .display import ledger_summary
from .errors import BulkCancelError, ExitCode, InputError, Interrupted, LedgerError, UsageError
from .ledger import Ledger, ledger_path
from .model import RESULT_COLUMNS, Canceller, Kind, Outcome, Summary
from .normalize import canonical_uuid, clean
from .pipeline import (
    MAX_ACTIVE_LANES,
    Feed,
    Pipeline,
    PipelineSettings,
    Progress,
    RunReport,
    StopReason,
)
from .settings import RunSettings, mask_url

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
    summary: Summary
    summary_path: Path | None = None
    message: str | None = None
    plan: dict[str, Any] | None = None
    nothing_to_do: bool = False
    """A resume or retry that found nothing left to send: no attempt was made."""
    read_error: BulkCancelError | None = None
    """A row further into the input that could not be read stopped the run (exit 2)."""
    ledger: Path | None = None
    """The run's ledger: every row's final word (closed when the run returns)."""


@dataclass(slots=True)
class _Ingest:
    input_rows: int = 0
    duplicates: int = 0
    blank_rows: int = 0
    extra_columns: list[str] = field(default_factory=list)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class NextSteps:
    """How the caller tells its user to finish, or re-send the failures of, a stopped run.

    The command (:func:`bulk_cancel.cli.shell.next_steps`) gives shell commands, which the summary
    keeps (``resume_command``, ``retry_failed_command``, ``command_notes``); the library gives
    words about its own call, which the summary does not keep.
    """

    resume: str
    retry_failed: str | None = None
    notes: tuple[str, ...] = ()
    """What the commands need from the user (a password left out of them)."""
    commands: bool = True
    """Shell commands, kept in the summary."""


#: A run without a caller's word: the library's.
LIBRARY_STEPS: Final = NextSteps(
    resume="run it again with the same ledger= and resume=True", commands=False
)


class Runner:
    """Runs one job; :meth:`run` is the only entry point.

    Made only by :mod:`bulk_cancel.api` (:func:`~bulk_cancel.api.run`, and its dry run
    :func:`~bulk_cancel.api.plan`). It owns nothing of the process: it installs no signal
    handler, never exits and never freezes the collector. Whoever owns the process (an
    :class:`bulk_cancel.api.Owner`: the command's turns signals into these calls, the library's
    its task's cancellation) calls :meth:`note_signal` (while the input is read, a plain handler
    may only take a note) and :meth:`interrupt` (once sending, from the event loop), and
    :meth:`commit` before leaving at once.

    *ledger* overrides the ledger's place (beside the output by default); *write_files* False
    keeps the results in the ledger only (the library builds its DataFrame from it);
    *next_steps* words what the messages and the summary tell the user to do next;
    *input_name* names the input in the summary and the ledger when the path read is not what
    the user gave (the library's temporary file for a DataFrame).
    """

    def __init__(
        self,
        settings: RunSettings,
        api_key: str,
        *,
        canceller: Canceller | None = None,
        progress: Progress | None = None,
        stdin: Any = None,
        confirm: Callable[[dict[str, Any]], bool] | None = None,
        ledger: Path | None = None,
        write_files: bool = True,
        next_steps: NextSteps = LIBRARY_STEPS,
        input_name: str | None = None,
    ) -> None:
        self.settings = settings
        self.input_name = input_name if input_name is not None else settings.input
        self.next_steps = next_steps
        self.ledger_path = ledger if ledger is not None else ledger_path(settings.output)
        self._write_files = write_files
        self._ledger: Ledger | None = None
        self._pipeline_settings: PipelineSettings | None = None
        self._pipeline_task: asyncio.Future[RunReport] | None = None
        self._api_key = api_key
        self._canceller = canceller
        self.progress = progress or Progress()
        self._stdin = stdin
        self._confirm = confirm
        self.pipeline: Pipeline | None = None
        self.sending = asyncio.Event()
        """Set once the input is read and confirmed, as the first requests are about to leave."""
        self._signal: int | None = None
        self._created = False
        """Whether this run made its ledger (nothing was ever sent through it before)."""
        self._streamer: ingest.Streamer | None = None
        """While the input is read as rows are sent (see :mod:`bulk_cancel.ingest`)."""
        self._read_error: BulkCancelError | None = None
        self._drain_cut = False  # the drain timeout cancelled requests still in flight
        self._stopping: str | None = None
        """Set by :meth:`interrupt`: the signal's name (or the caller's word)."""

    @property
    def mode(self) -> str:
        """``first``, ``resume`` or ``retry``: how this run uses its ledger."""
        s = self.settings
        return "retry" if s.retry_failed else "resume" if s.resume else "first"

    # ------------------------------------------------------------------ phases

    def _open_source(self, *, chunk_rows: int = 20_000) -> readers.InputSource:
        s = self.settings
        assert s.input is not None
        return readers.open_input(
            s.input,
            column=s.column,
            subaccount_column=s.subaccount_column,
            default_subaccount=s.subaccount,
            sheet=s.sheet,
            header_row=s.header_row,
            encoding=s.encoding,
            stdin=self._stdin,
            chunk_rows=chunk_rows,
        )

    def _fingerprint(self) -> dict[str, Any]:
        """Settings that change what is sent: a resume must use the same."""
        s = self.settings
        return {
            "subaccount": s.subaccount,
            "column": s.column,
            "subaccount_column": s.subaccount_column,
            "sheet": s.sheet,
            "header_row": s.header_row,
            "batch_id": s.batch_id,
            "base_url": s.base_url,
            "shard": None if s.shard is None else str(s.shard),
        }

    def _ingest(self, ledger: Ledger, source: readers.InputSource | None) -> _Ingest:
        """Read the whole input into *ledger*, then build the index sending needs."""
        stats = _Ingest()
        s = self.settings
        if source is None:  # a single --batch-id, no input file
            assert s.batch_id is not None and s.subaccount is not None
            stats.input_rows = 1
            batch_id = canonical_uuid(clean(s.batch_id))
            problem, detail = (
                (None, None)
                if batch_id is not None
                else (Outcome.INVALID_UMID, "not a UUID (local check)")
            )
            target = batch_id or clean(s.batch_id)[:200]
            if s.shard is None or s.shard.owns(s.subaccount, target):
                ledger.add([(0, s.subaccount, target, Kind.BATCH, None, problem, detail)], _now())
        else:
            stats.extra_columns = list(source.extra_columns)
            ledger.set_meta(_input_meta(source))
            now = _now()
            for chunk in source:
                self._check_interrupt()
                stats.input_rows += len(chunk)
                if s.max_rows is not None and stats.input_rows > s.max_rows:
                    raise InputError(
                        f"{s.input}: more than max_rows={s.max_rows} rows; raise --max-rows "
                        "if this many cancels is intended"
                    )
                if s.shard is not None:  # every shard reads (and counts) all; keeps its own
                    chunk = ingest.own_rows(chunk, s.shard)
                stats.duplicates += ledger.add(chunk, now)
            stats.blank_rows = source.blank_rows
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

    # ------------------------------------------------------------------ stopping

    def note_signal(self, signum: int) -> None:
        """A SIGINT/SIGTERM while the input is read (synchronously: the event loop's handlers
        cannot run): the reading stops at the next chunk, and nothing is sent. Safe to call
        from a plain signal handler."""
        self._signal = signum

    def interrupt(self, signum: int = signal.SIGINT, *, detail: str | None = None) -> None:
        """Stop as a first Ctrl-C does: no new rows are taken or read, requests in flight may
        finish for the drain timeout, then results are written and :meth:`run` returns (exit
        130, or 143 for SIGTERM). Call it from the event loop's thread; a second call does
        nothing (a hard stop is the caller's: :meth:`commit`, then leave)."""
        if self._stopping is not None:
            return
        self._signal = signum
        self._stopping = detail or signal.Signals(signum).name
        log.warning("run.interrupted", signal=self._stopping)
        self._stop_sending()

    def _stop_sending(self) -> None:
        """Stop the reading and the pipeline, and arm the drain timeout (once both exist)."""
        if self._stopping is None or self.pipeline is None or self._pipeline_settings is None:
            return  # not sending yet: the sending stops as it starts
        if self._streamer is not None:
            self._streamer.stop()
        self.pipeline.stop(StopReason.INTERRUPTED, self._stopping)
        loop = asyncio.get_running_loop()
        loop.call_later(self._pipeline_settings.drain_timeout_s, self._cut)

    def _cut(self) -> None:
        """The drain timeout passed: requests still in flight stay SENT (reported unconfirmed)."""
        task = self._pipeline_task
        if task is not None and not task.done():
            self._drain_cut = True
            task.cancel()

    @property
    def noted_signal(self) -> int | None:
        """The first signal noted or acted on (the library's cancellation counts as SIGINT)."""
        return self._signal

    def commit(self) -> None:
        """Commit the ledger as it stands, before a hard exit (a second signal): every SQLite
        statement is atomic, so it is consistent; rows in flight stay SENT and resume as
        ambiguous."""
        if self._ledger is not None:
            self._ledger.commit()

    def _ask(self, ledger: Ledger) -> None:
        """On a terminal, say what is about to be sent and ask, for a resume or a retry too; a
        no, or a signal while asking, sends nothing: a new ledger is deleted (the same command
        can simply run again), a resumed one is left as it was (the rows it reopened roll back).
        """
        s = self.settings
        if self._confirm is None:
            return
        lanes = ledger.lanes()
        plan = {
            "to_send": sum(n for _, n in lanes),
            "per_subaccount": dict(lanes),
            "base_url": s.base_url,
            "mode": self.mode,
        }
        if not plan["to_send"]:
            return
        if self._created:
            what = "nothing was sent and no ledger was kept"
        else:
            what = f"nothing was sent; the ledger is as it was ({ledger.path})"

        try:
            # The process's owner turns a signal at the prompt into Interrupted (the CLI's
            # confirm does); this says what was kept.
            confirmed = self._confirm(plan)
        except Interrupted as exc:
            self._give_up(ledger)
            raise Interrupted(
                f"interrupted at the confirmation; {what}",
                sigterm=exc.exit_code == ExitCode.SIGTERM,
            ) from None
        except BaseException:
            self._give_up(ledger)
            raise
        if not confirmed:
            self._give_up(ledger)
            raise UsageError("not confirmed: nothing was sent")

    def _give_up(self, ledger: Ledger) -> None:
        """Nothing will be sent: delete a new ledger; leave an earlier one as it was."""
        if self._created:
            _discard(ledger)
        else:
            ledger.rollback()
            ledger.close()

    def _prepare(self) -> Ledger:
        """Open or create the ledger and make sure it holds the whole input."""
        s = self.settings
        path = self.ledger_path
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
                expected = meta.get("input_checksum")
                if source is not None and expected is not None:
                    # Reading the input again costs a few seconds on millions of rows, and is
                    # the only way to be sure the rows match: compare checksums first. Stdin's
                    # is known once it is read to the end (its rows are in the ledger already).
                    if source.path == readers.STDIN:
                        for _ in source:
                            pass
                    checksum = source.checksum()
                    if checksum != expected:
                        raise LedgerError(
                            f"{s.input}: not the input of the run in {path} (checksum differs); "
                            "resume with the original file, or start afresh with another --output"
                        )
                self._check_same_settings(meta, path)
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
            "input": self.input_name,
            "settings": self._fingerprint(),
        }
        if source is not None and s.input != "-":
            meta["input_checksum"] = source.checksum()
        ledger = Ledger.create(path, meta)
        self._created = True
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

    # ------------------------------------------------------------------ reading while sending

    def _streams(self) -> bool:
        """Whether rows are sent while the input is still being read (see :mod:`.ingest`).

        Not for ``--retry-failed`` (nothing to read) nor stdin, which cannot be read again by a
        ``--resume``: stdin is read whole first, as before.
        """
        s = self.settings
        return not s.retry_failed and s.input not in (None, readers.STDIN)

    def _prepare_streaming(self) -> Ledger | None:
        """Open or create the ledger and a :class:`~.ingest.Streamer` to fill it as rows are
        sent; None when the input must be read whole first (a ``max_rows`` that a cheap count
        cannot show is kept: then nothing is sent from a file that holds too many rows)."""
        s = self.settings
        path = self.ledger_path
        source = self._open_source(chunk_rows=ingest.CHUNK_ROWS)
        asking = self._confirm is not None and not s.resume
        count = None
        if asking or s.max_rows is not None or source.format is readers.Format.PARQUET:
            count = ingest.count_rows(source, sheet=s.sheet)
        if (
            s.max_rows is not None
            and not s.resume  # a resume streams on (its ledger may hold rows already sent)
            and (count is None or not count.at_most or count.rows > s.max_rows)
        ):
            return None
        if count is not None:
            self.progress.read_total = count.rows
            self.progress.read_total_exact = count.exact
        if s.resume and path.exists():
            ledger = self._resume_streaming(path, source)
            if ledger is not None:
                return ledger
        elif s.resume:
            Ledger.open(path)  # raises: no ledger to resume
        if asking:
            self._ask_before_reading(source, count)
        ledger = Ledger.create(
            path,
            {"created_at": _now(), "input": self.input_name, "settings": self._fingerprint()},
        )
        self._created = True
        try:
            ledger.set_meta(_input_meta(source))
            ledger.build_work_index()  # rows are sent as they arrive: the lanes' index must exist
            self._start_streamer(ledger, source, ingest.Reading())
        except BaseException:
            _discard(ledger)
            raise
        return ledger

    def _resume_streaming(self, path: Path, source: readers.InputSource) -> Ledger | None:
        """Open the ledger of the run being resumed; None if it read nothing (start afresh)."""
        s = self.settings
        assert s.input is not None
        ledger = Ledger.open(path)
        try:
            meta = ledger.meta()
            full = meta.get("input_checksum")
            if full is not None and full != source.checksum():
                raise LedgerError(
                    f"{s.input}: not the input of the run in {path} (checksum differs); "
                    "resume with the original file, or start afresh with another --output"
                )
            ingest.check_same_input(s.input, meta, str(path))
            self._check_same_settings(meta, path)
            reading = ingest.Reading.from_meta(meta)
            if not reading.complete and not meta.get("input_prefix"):
                # Killed before its first rows were committed (or by a version that read
                # everything first): nothing was sent, so read it all again.
                ledger.close()
                path.unlink()
                return None
            reopened = ledger.reopen_failures()
            lanes = ledger.lanes()
            self.progress.total = sum(n for _, n in lanes)
            log.info("run.resume", ledger=str(path), reopened=reopened, read=reading.input_rows)
            if not reading.complete:
                ledger.build_work_index()
                self._start_streamer(
                    ledger,
                    source,
                    reading,
                    known=[sub for sub, _ in lanes],
                    last_row=meta.get("ingest_last"),
                )
            return ledger
        except BaseException:
            with suppress(Exception):
                ledger.close()
            raise

    def _check_same_settings(self, meta: dict[str, Any], path: Path) -> None:
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

    def _start_streamer(
        self,
        ledger: Ledger,
        source: readers.InputSource,
        reading: ingest.Reading,
        *,
        known: list[str] | None = None,
        last_row: list[object] | None = None,
    ) -> None:
        assert source.path != readers.STDIN
        one_subaccount = source.subaccount_column is None
        self._streamer = ingest.Streamer(
            ledger,
            source,
            Feed(lanes_hint=1 if one_subaccount else MAX_ACTIVE_LANES),
            self.progress,
            reading=reading,
            hasher=ingest.InputHasher(source.path),
            known_subaccounts=known or (),
            last_row=last_row,
            now=_now,
            max_rows=self.settings.max_rows,
            shard=self.settings.shard,
        )
        self.progress.read = reading.input_rows
        self.progress.reading = True

    def _ask_before_reading(
        self, source: readers.InputSource, count: ingest.RowCount | None
    ) -> None:
        """On a terminal, say what is about to be cancelled, counted cheaply, and ask; nothing is
        read into a ledger, let alone sent, before the yes."""
        assert self._confirm is not None
        s = self.settings
        plan: dict[str, Any] = {
            "rows": None if count is None else count.rows,
            "rows_exact": count is not None and count.exact,
            "rows_counted_from": None if count is None else count.how,
            "subaccount": s.subaccount,
            "subaccount_column": source.subaccount_column,
            "base_url": s.base_url,
        }
        confirmed = self._confirm(plan)  # a signal here raises Interrupted (the CLI's confirm)
        if not confirmed:
            raise UsageError("not confirmed: nothing was sent")

    async def _read(self, pipeline: Pipeline) -> None:
        """The reading task beside the pipeline: a bad row stops the sending too."""
        assert self._streamer is not None
        try:
            await self._streamer.run(sending_stopped=lambda: pipeline.stopping)
        except BulkCancelError as exc:
            self._read_error = exc
            log.error("ingest.failed", problem=str(exc))
            pipeline.stop(StopReason.INPUT, str(exc))

    def _nothing_sent_yet(self, ledger: Ledger) -> None:
        """A fresh run stopped by a signal or a bad row before its first request: as when it
        read everything first, nothing was sent and no ledger is kept."""
        if self.settings.resume or self.progress.requests or self._drain_cut:
            return
        if self._read_error is None and self._signal is None:
            return
        error: BulkCancelError = self._read_error or Interrupted(
            "interrupted while reading the input; nothing was sent and no ledger was kept: "
            "run the same command again",
            sigterm=self._signal == signal.SIGTERM,
        )
        raise _NothingSent(error)

    def _note_reading(self, summary: Summary) -> Summary:
        """Say in the summary whether the whole input was read; if not, the run is not done."""
        assert self._streamer is not None
        complete = self._streamer.reading.complete
        if complete:
            return dataclasses.replace(summary, ingest_complete=True)
        exit_code = summary.exit_code
        if self._read_error is not None:
            exit_code = int(self._read_error.exit_code)
        elif exit_code == ExitCode.OK:
            exit_code = int(ExitCode.INCOMPLETE)
        steps = self.next_steps
        return dataclasses.replace(
            summary,
            ingest_complete=False,
            exit_code=exit_code,
            resume_command=summary.resume_command or (steps.resume if steps.commands else None),
            # --retry-failed needs the whole input read: the resume command is the one that helps.
            retry_failed_command=None,
        )

    def _read_error_message(self) -> str | None:
        if self._read_error is None:
            return None
        return (
            f"{self._read_error}. The rows before it were sent and are in the results; fix the "
            "file and run it again with another --output (rows already cancelled then answer "
            "not_found)"
        )

    # ------------------------------------------------------------------ dry run

    def plan(self) -> dict[str, Any]:
        """Read, validate and de-duplicate into a throw-away ledger that counts the rows to send
        and keeps only those refused locally (for their examples); send nothing."""
        with tempfile.TemporaryDirectory(prefix="bulk-cancel-plan-") as tmp:
            source = self._open_source() if self.settings.input is not None else None
            ledger = Ledger.create(Path(tmp) / "plan.ledger.sqlite", {"settings": {}}, plan=True)
            try:
                stats = self._ingest(ledger, source)
                # Counted as they went in: a GROUP BY would sort every row once more.
                counts = {
                    Outcome.NOT_ATTEMPTED.value: sum(ledger.added_to_send.values()),
                    **ledger.added_refused,
                }
                lanes = sorted(
                    ((sub, n) for sub, n in ledger.added_to_send.items() if n),
                    key=lambda lane: (-lane[1], lane[0]),
                )
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
        try:
            return await self._run()
        except _NothingSent as stop:
            _remove_ledger(self.ledger_path)
            raise stop.error from None

    async def _run(self) -> RunResult:
        s = self.settings
        started_wall = _now()
        started = time.monotonic()
        if self._canceller is None:
            # aiohttp (0.1 s to import) before the prompt and the ledger, not between "yes" (or
            # run.started) and the first request. A dry run (plan()) never imports it.
            from . import client  # noqa: F401
        ledger = (self._prepare_streaming() if self._streams() else None) or self._prepare()
        self._ledger = ledger
        if self._streamer is None:
            self._ask(ledger)
        elif self._signal is not None:  # while opening: nothing was read or sent yet
            self._streamer.abandon()
            if s.resume:  # the earlier run's ledger stays, as it was
                ledger.close()
                raise Interrupted(
                    "interrupted before sending anything; the ledger is kept: run the same "
                    "command again",
                    sigterm=self._signal == signal.SIGTERM,
                )
            _discard(ledger)
            self._check_interrupt()
        report = RunReport()
        try:
            if not self._created and self._streamer is None and not ledger.lanes():
                # A resume or retry with nothing to send is not a run: say so, and keep the
                # ledger's account of its attempts as it is (results are rebuilt all the same,
                # for a run that was killed after its last answer).
                summary = self._summary(ledger, report, started_wall)
                self._write_outputs(ledger, summary, announce=False)
                return RunResult(
                    exit_code=ExitCode(summary.exit_code),
                    summary=summary,
                    summary_path=writers.summary_path(s.output),
                    message=f"nothing to {'re-send' if s.retry_failed else 'resume'}: every "
                    f"row of {ledger.path.name} has its final answer"
                    + (
                        f" (bulk-cancel report {shlex.quote(str(s.output))})"
                        if self.next_steps.commands
                        else ""
                    ),
                    nothing_to_do=True,
                    ledger=ledger.path,
                )
            attempt = ledger.begin_attempt(self.mode, started_wall)
            log.info(
                "run.started",
                base_url=s.base_url,
                proxy=None if s.proxy is None else mask_url(s.proxy),
                rate_per_s=s.lane_rate_per_s,
                ledger=str(ledger.path),
                mode=self.mode,
                attempt=attempt + 1,
                **({} if s.shard is None else {"shard": str(s.shard)}),
            )
            self.sending.set()
            report = await self._send(ledger)
            if self._streamer is not None:
                self._nothing_sent_yet(ledger)
            meta = ledger.meta()
            requests = int(meta.get("requests", 0)) + self.progress.requests
            retries = int(meta.get("retries", 0)) + self.progress.retries
            ledger.set_meta({"requests": requests, "retries": retries})
            ledger.end_attempt(
                attempt,
                {
                    "finished_at": _now(),
                    "elapsed_s": round(time.monotonic() - started, 3),
                    "requests": self.progress.requests,
                    "retries": self.progress.retries,
                    "exit_code": int(self._exit_code(ledger, report)),
                },
            )
            ledger.commit()
            summary = self._summary(ledger, report, started_wall)
            if self._streamer is not None:
                summary = self._note_reading(summary)
            self._write_outputs(ledger, summary)
        finally:
            ledger.close()
        return RunResult(
            exit_code=ExitCode(summary.exit_code),
            summary=summary,
            summary_path=writers.summary_path(s.output),
            message=self._read_error_message() or self._closing_message(report),
            read_error=self._read_error,
            ledger=ledger.path,
        )

    async def _send(self, ledger: Ledger) -> RunReport:
        s = self.settings
        self._pipeline_settings = PipelineSettings(
            rate_per_s=s.lane_rate_per_s,
            ip_rate_per_s=s.ip_rate_per_s,
            concurrency=s.concurrency,
            retry=s.retry,
            failure_threshold=s.failure_threshold,
            failure_window=s.failure_window,
        )
        feed = None if self._streamer is None else self._streamer.feed
        if self._canceller is not None:
            self.pipeline = Pipeline(
                ledger, self._canceller, self._pipeline_settings, progress=self.progress, feed=feed
            )
            return await self._send_until_done(self.pipeline)
        # aiohttp is imported only by a run that sends (a dry run never needs it: 23 MB of its
        # 300 MB budget at 10 M rows); _run imported it already.
        from .client import CancelClient, ClientSettings

        client_settings = ClientSettings(
            base_url=s.base_url,
            timeout_s=s.timeout_s,
            max_connections=s.concurrency or 512,
            proxy=s.proxy,
            ca_bundle=s.ca_bundle,
        )
        async with CancelClient(client_settings, self._api_key) as client:
            self.pipeline = Pipeline(
                ledger, client, self._pipeline_settings, progress=self.progress, feed=feed
            )
            return await self._send_until_done(self.pipeline)

    async def _send_until_done(self, pipeline: Pipeline) -> RunReport:
        """Send until the pipeline ends; :meth:`interrupt` stops it (bounded by the drain)."""
        task = self._pipeline_task = asyncio.ensure_future(pipeline.run())
        reading = None if self._streamer is None else asyncio.ensure_future(self._read(pipeline))
        if self._signal is not None:  # a signal noted in the gap before sending, or a cancel
            self._stopping = self._stopping or signal.Signals(self._signal).name
            self._stop_sending()
        try:
            return await task
        except asyncio.CancelledError:
            if not self._drain_cut:
                raise
            # The drain timeout passed: requests still in flight stay SENT (reported unconfirmed).
            return pipeline.report
        finally:
            if reading is not None:
                # A stop other than a signal (a rejected key, the threshold) lets the reading
                # finish, so the results hold every row; a signal or a failure stops it too.
                assert self._streamer is not None
                ended_well = task.done() and not task.cancelled() and task.exception() is None
                if self._signal is not None or not ended_well:
                    self._streamer.stop()
                await reading

    # ------------------------------------------------------------------ reporting

    def _exit_code(self, ledger: Ledger, report: RunReport) -> ExitCode:
        """The run's exit code, from the whole ledger: never 0 while rows it could still cancel
        are unsent (``failed``, ``not_attempted``, and rows refused by the key: 3)."""
        left = ledger.resendable()
        refused = left.get(Outcome.AUTH_FAILED, 0) + left.get(Outcome.SUBACCOUNT_REJECTED, 0)
        if (
            report.stop_reason in (StopReason.AUTH, StopReason.SUBACCOUNT)
            or report.rejected_subaccounts
            or refused
        ):
            return ExitCode.REJECTED
        if report.stop_reason == StopReason.NETWORK:
            return ExitCode.NETWORK
        if self._signal is not None:
            return ExitCode.SIGINT if self._signal == signal.SIGINT else ExitCode.SIGTERM
        if report.stop_reason is not None or left:
            return ExitCode.INCOMPLETE
        return ExitCode.OK

    def _summary(self, ledger: Ledger, report: RunReport, started_at: str) -> Summary:
        """The summary of the whole ledger: counts, and requests and time over every attempt
        (``attempts`` lists each: first run, resumes, retries)."""
        s = self.settings
        exit_code = self._exit_code(ledger, report)
        steps = self.next_steps
        commands = steps.commands and exit_code != ExitCode.OK
        return ledger_summary(
            ledger,
            started_at=started_at,
            requests_this_run=self.progress.requests,
            retries_this_run=self.progress.retries,
            throttled_this_run=self.progress.throttled,
            finished_at=_now(),
            exit_code=int(exit_code),
            stop_reason=report.stop_reason,
            stop_detail=report.stop_detail,
            rejected_subaccounts=tuple(report.rejected_subaccounts),
            results=str(s.output) if self._write_files else None,
            shard=None if s.shard is None else str(s.shard),
            settings={
                **s.public(),
                "input": self.input_name,
                "output": str(s.output) if self._write_files else None,
            },
            resume_command=steps.resume if commands else None,
            retry_failed_command=steps.retry_failed if commands else None,
            command_notes=steps.notes if commands and steps.notes else None,
        )

    def _write_outputs(self, ledger: Ledger, summary: Summary, *, announce: bool = True) -> None:
        s = self.settings
        if not self._write_files:
            if announce:
                log.info("run.finished", counts=summary.counts, exit_code=summary.exit_code)
            return
        meta = ledger.meta()
        extra = meta.get("extra_columns", [])
        columns = [*RESULT_COLUMNS, *extra]
        # Typed outputs keep the input's types; a CSV for a ';' input is ';' (with its BOM).
        style: dict[str, Any] = {
            "column_types": dict(zip(extra, meta.get("extra_types", []), strict=False)),
            "delimiter": ";" if meta.get("input_delimiter") == ";" else ",",
            "bom": bool(meta.get("input_utf8_bom")),
        }
        data = summary.to_dict()
        writers.write_results(s.output, columns, ledger.iter_results(), summary=data, **style)
        writers.write_summary(writers.summary_path(s.output), data)
        if s.split:
            wanted = frozenset(o.value for o in ERROR_OUTCOMES)
            writers.write_errors(
                writers.errors_path(s.output),
                columns,
                ledger.iter_results(outcomes=wanted),
                **style,
            )
        if announce:  # not for a resume or retry that found nothing to send
            keys = ("counts", "exit_code", "elapsed_s", "resume_command", "retry_failed_command")
            log.info("run.finished", **{k: data[k] for k in keys if k in data})

    def _closing_message(self, report: RunReport) -> str | None:
        message = self._stop_message(report)
        notes = self.next_steps.notes
        return f"{message} ({'; '.join(notes)})" if message and notes else message

    def _stop_message(self, report: RunReport) -> str | None:
        resume = self.next_steps.resume
        if report.stop_reason == StopReason.AUTH:
            return (
                f"the API rejected the key ({report.stop_detail}); remaining rows were not sent. "
                f"Check {'EIGHTX8_API_KEY'} and the region's host, then: {resume}"
            )
        if report.rejected_subaccounts:
            subs = ", ".join(report.rejected_subaccounts)
            return (
                f"the API rejected subaccount(s) {subs} (code 1001: not in this key's account); "
                "their remaining rows were not sent. With the right key (or subaccount), "
                f"they are sent again by: {resume}"
            )
        if report.stop_reason == StopReason.THRESHOLD:
            return f"stopped: {report.stop_detail}. Fix the cause, then: {resume}"
        if report.stop_reason == StopReason.NETWORK:
            return (
                f"stopped, nothing more sent: {report.stop_detail}. Rows without an answer stay "
                f"not_attempted; fix it, then: {resume}"
            )
        if report.stop_reason == StopReason.FATAL:
            return f"stopped: {report.stop_detail}"
        if report.stop_reason == StopReason.INTERRUPTED:
            return f"interrupted; nothing is lost. To finish: {resume}"
        return None


def _input_meta(source: readers.InputSource) -> dict[str, Any]:
    """What the results need to give the input's own columns back as they came."""
    return {
        "extra_columns": list(source.extra_columns),
        "extra_types": list(source.extra_types),
        "input_delimiter": source.delimiter,
        "input_utf8_bom": source.utf8_bom,
    }


def _discard(ledger: Ledger) -> None:
    """Close and delete a ledger through which nothing was sent."""
    ledger.close()
    _remove_ledger(ledger.path)


def _remove_ledger(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".lock"):
        with suppress(FileNotFoundError):
            Path(str(path) + suffix).unlink()


class _NothingSent(Exception):
    """A run ended before its first request: its ledger goes, *error* is raised."""

    def __init__(self, error: BulkCancelError) -> None:
        super().__init__(str(error))
        self.error = error
