"""Running a job: one input, every file a glob matches, or a drop folder; one lock per job.

What runs is decided by the resolved settings (:mod:`bulk_cancel.config`):

- ``input`` a path: one run. ``output`` may hold ``{job}``, ``{date}``, ``{time}``,
  ``{input_stem}``, filled in when the job starts (local time).
- ``input`` a glob, no ``archive_dir``: one run per matching file, in name order; ``output``
  must then hold ``{input_stem}`` so that each file gets its own results and ledger.
- ``archive_dir`` set: a **drop folder**. Each matching file is processed once:

  1. *claim*: a sidecar ``<name>.claim.json`` naming its results file is written into
     ``processing/`` (beside ``archive_dir``), then the file is renamed into ``processing/``.
     The rename is atomic, so a file is claimed by one run only; the sidecar makes its results
     path reproducible.
  2. *run* it, with ``--resume`` semantics if its ledger exists already.
  3. *archive*: its SHA-256 is appended to ``archive_dir/.bulk-cancel-processed.jsonl``, then it
     is renamed into ``archive_dir``. A file whose content was processed before is archived
     straight away (``job.duplicate``), so it is never cancelled twice, whatever its name.

  A file found in ``processing/`` when the job starts (a run that crashed, was killed or was
  stopped) is resumed first, into the results file its sidecar names. A run that stopped early
  (interrupted, key refused, failure threshold) leaves its file in ``processing/`` and ends the
  job; a file that cannot be read (:class:`~bulk_cancel.errors.InputError`) is moved to
  ``rejected/`` with a ``.error.txt`` beside it, and the job goes on with the next file. A run
  that ends before anything was sent (declined or interrupted at the prompt, or while reading)
  puts its file back where it was claimed from.
  Files modified in the last ``settle_time`` seconds are left for the next run (they may still
  be being copied in); so are hidden files and ``*.tmp`` / ``*.part``.

A job run from a job file, and every drop folder, holds a lock (``fcntl.flock``) on
``.<job>.lock`` in ``processing/`` (drop folders) or in the results folder, so overlapping
runs (cron) cannot collide: the second one exits with code 2 and changes nothing.

``metrics_file`` describes the whole invocation, whatever number of files it ran: rows by outcome,
requests and retries summed over their summaries, its duration and exit code. It is written when
the invocation ends, and not at all by one that stopped before running anything (a bad setting,
the lock held, a "no" at the prompt): the file keeps the last invocation that did something.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog

from . import locks, writers
from .config import (
    Layer,
    ResolvedSettings,
    has_placeholders,
    load_file,
    render_output,
    to_run_settings,
)
from .errors import (
    BulkCancelError,
    ConfigError,
    ExitCode,
    InputError,
    Interrupted,
    LedgerError,
    UsageError,
)
from .model import Outcome, Summary

if TYPE_CHECKING:
    from .runner import RunResult
    from .settings import RunSettings

__all__ = ["Claim", "DropFolder", "RunOne", "is_glob", "job_lock", "plan_runs", "run_job"]

log = structlog.get_logger("bulk_cancel")

RunOne = Callable[["RunSettings"], Awaitable["RunResult"]]
"""Runs one input to the end (the CLI adds the progress display and the confirmation)."""

SIDECAR_SUFFIX: Final = ".claim.json"
MANIFEST_NAME: Final = ".bulk-cancel-processed.jsonl"
#: Names a drop folder never takes: partial uploads and editor droppings.
_PARTIAL_SUFFIXES: Final = (".tmp", ".part", ".partial", ".crdownload", ".swp", SIDECAR_SUFFIX)
#: Stop reasons after which a file is done with; any other leaves it in processing/.
_WENT_THROUGH: Final = frozenset({None, "subaccount_rejected"})  # StopReason values


def is_glob(text: str) -> bool:
    """A pattern rather than a path: it has ``*``, ``?`` or ``[`` and names no existing file."""
    return text != "-" and any(c in text for c in "*?[") and not os.path.exists(text)


@contextmanager
def job_lock(path: Path, job: str) -> Iterator[None]:
    """Hold the job's lock at *path* for the block; if another process holds it, LedgerError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    taken = locks.take(path)
    if isinstance(taken, str):
        raise LedgerError(
            f"job {job!r} is already running (pid {taken}, lock {path}); this run did nothing. "
            "Overlapping runs are skipped this way: the next run picks up what is left"
        )
    try:
        yield
    finally:
        locks.release(taken)


# ------------------------------------------------------------------------------ drop folder


@dataclass(frozen=True, slots=True)
class Claim:
    """A file this job took: where it is now, where it came from, where its results go."""

    path: Path
    source: Path
    output: Path


class DropFolder:
    """Files matching *pattern*, each processed once, then moved to *archive_dir*."""

    def __init__(
        self,
        pattern: str,
        archive_dir: Path,
        *,
        job: str,
        settle_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pattern = pattern
        self.archive_dir = archive_dir
        self.processing_dir = archive_dir.parent / "processing"
        self.rejected_dir = archive_dir.parent / "rejected"
        self.manifest = archive_dir / MANIFEST_NAME
        self.job = job
        self.settle_s = settle_s
        self._clock = clock
        self._processed: dict[str, str] | None = None

    @property
    def lock_path(self) -> Path:
        return self.processing_dir / f".{_safe(self.job)}.lock"

    def prepare(self) -> None:
        """Create the folders the claims move through."""
        for folder in (self.archive_dir, self.processing_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def leftovers(self, *, tidy: bool = True) -> list[Claim]:
        """Files this job claimed earlier and did not finish, by name; *tidy* drops stale sidecars."""
        claims: list[Claim] = []
        if not self.processing_dir.is_dir():
            return claims
        for sidecar in sorted(self.processing_dir.glob("*" + SIDECAR_SUFFIX)):
            try:
                data = json.loads(sidecar.read_text(encoding="utf-8"))
                owner, source, output = data["job"], Path(data["source"]), Path(data["output"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{sidecar}: unreadable claim ({exc}); move it away") from None
            if owner != self.job:
                continue  # another job sharing this processing/ folder
            claimed = sidecar.with_name(sidecar.name.removesuffix(SIDECAR_SUFFIX))
            if not claimed.is_file():
                # Died between writing the sidecar and the rename: the file was never taken.
                if tidy:
                    sidecar.unlink()
                continue
            claims.append(Claim(claimed, source, output))
        return claims

    def pending(self) -> list[Path]:
        """Files the pattern matches that are ready to take, in name order."""
        ours = [d.resolve() for d in (self.archive_dir, self.processing_dir, self.rejected_dir)]
        ready = []
        for name in sorted(glob.glob(self.pattern, recursive=True)):
            path = Path(name)
            if path.name.startswith(".") or path.name.endswith(_PARTIAL_SUFFIXES):
                continue
            if any(folder in path.resolve().parents for folder in ours):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if not path.is_file():
                continue
            age_s = self._clock() - st.st_mtime
            if age_s < self.settle_s:
                log.info("job.waiting", file=str(path), age_s=round(age_s, 1))
                continue
            ready.append(path)
        return ready

    def claim(self, source: Path, output: Path) -> Claim | None:
        """Take *source* into processing/ (atomic rename); None if it is gone or a duplicate."""
        claimed = _free_name(self.processing_dir / source.name)
        sidecar = _sidecar(claimed)
        _write_atomic(
            sidecar,
            json.dumps(
                {
                    "job": self.job,
                    "source": str(source.resolve()),
                    "output": str(output.resolve()),
                    "claimed_at": _now(),
                    "pid": os.getpid(),
                },
                indent=2,
            ),
        )
        try:
            os.rename(source, claimed)
        except FileNotFoundError:
            sidecar.unlink()
            return None  # someone moved it away between the listing and now
        except OSError as exc:
            sidecar.unlink()
            if exc.errno == errno.EXDEV:
                raise ConfigError(
                    f"{source}: archive_dir ({self.archive_dir}) must be on the same file system "
                    "as the input folder: files are claimed by an atomic rename"
                ) from None
            raise
        claim = Claim(claimed, source, output)
        digest = _sha256(claimed)
        earlier = self._seen().get(digest)
        if earlier is not None:
            archived = self._archive(claim, digest, {"duplicate_of": earlier})
            log.warning(
                "job.duplicate", file=str(source), same_as=earlier, archived_as=str(archived)
            )
            return None
        log.info("job.claimed", file=str(source), claimed_as=str(claimed), results=str(output))
        return claim

    def archive(self, claim: Claim, result: RunResult) -> Path:
        """The file is done: record its checksum, then move it into the archive."""
        archived = self._archive(
            claim,
            _sha256(claim.path),
            {"results": str(claim.output), "exit_code": int(result.exit_code)},
        )
        log.info(
            "job.archived",
            file=str(claim.source),
            archived_as=str(archived),
            exit_code=int(result.exit_code),
        )
        return archived

    def reject(self, claim: Claim, error: str) -> Path:
        """The file cannot be used: move it to rejected/ with the reason beside it."""
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        target = _free_name(self.rejected_dir / claim.source.name)
        _write_atomic(target.with_name(target.name + ".error.txt"), error + "\n")
        os.rename(claim.path, target)
        _sidecar(claim.path).unlink(missing_ok=True)
        log.error("job.rejected", file=str(claim.source), error=error, moved_to=str(target))
        return target

    def release(self, claim: Claim) -> None:
        """Nothing was sent and it was not the file's fault: put it back where it was found."""
        if not claim.source.exists():
            os.rename(claim.path, claim.source)
            _sidecar(claim.path).unlink(missing_ok=True)
            log.info("job.released", file=str(claim.source))

    def _archive(self, claim: Claim, digest: str, extra: dict[str, Any]) -> Path:
        target = _free_name(self.archive_dir / claim.source.name)
        record = {
            "sha256": digest,
            "file": str(claim.source),
            "archived_as": target.name,
            "finished_at": _now(),
            "job": self.job,
            **extra,
        }
        # The record first: a crash before the rename leaves the file to be resumed (a no-op
        # for a finished ledger), never a processed file without its record.
        with self.manifest.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._seen().setdefault(digest, target.name)
        os.rename(claim.path, target)
        _sidecar(claim.path).unlink(missing_ok=True)
        return target

    def _seen(self) -> dict[str, str]:
        """Checksums of the files processed so far → the name each was archived as."""
        if self._processed is None:
            self._processed = {}
            if self.manifest.is_file():
                for line in self.manifest.read_text(encoding="utf-8").splitlines():
                    with suppress(ValueError, KeyError, TypeError):
                        record = json.loads(line)
                        self._processed.setdefault(record["sha256"], record["archived_as"])
        return self._processed


# ------------------------------------------------------------------------------ running


async def run_job(
    job: ResolvedSettings, run_one: RunOne, *, now: datetime | None = None
) -> ExitCode:
    """Run everything *job* names; the exit code is the highest of its runs'."""
    now = now or datetime.now()
    v = job.values
    name = v["job_name"]
    if v["archive_dir"] is not None:
        folder = _drop_folder(job)
        folder.prepare()
        with job_lock(folder.lock_path, name):
            return await _metered(job, lambda run: _run_drop_folder(job, folder, run, now), run_one)
    runs = _runs(job, now)
    lock = _lock_path(job, runs)
    if lock is None:
        return await _metered(job, lambda run: _run_each(runs, run), run_one)
    with job_lock(lock, name):
        return await _metered(job, lambda run: _run_each(runs, run), run_one)


@dataclass(slots=True)
class _Invocation:
    """What one invocation did over all its runs: the figures of its metrics file."""

    started_s: float = field(default_factory=time.monotonic)
    runs: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {o.value: 0 for o in Outcome})
    requests: int = 0
    retries: int = 0
    cancelled_total: int = 0

    def add(self, summary: Summary) -> None:
        self.runs += 1
        for outcome, n in summary.counts.items():
            self.counts[outcome] = self.counts.get(outcome, 0) + int(n)
        # This invocation's own sends: a resumed file's summary totals all its attempts.
        self.requests += summary.requests_this_run
        self.retries += summary.retries_this_run
        self.cancelled_total += summary.cancelled_total

    def summary(self, exit_code: ExitCode) -> Summary:
        """The invocation's sums, read by :func:`~bulk_cancel.writers.write_metrics`."""
        return Summary(
            counts=dict(self.counts),
            requests=self.requests,
            retries=self.retries,
            cancelled_total=self.cancelled_total,
            elapsed_s=round(time.monotonic() - self.started_s, 3),
            finished_at=_now(),
            exit_code=int(exit_code),
            other={"runs": self.runs},
        )


async def _metered(
    job: ResolvedSettings, body: Callable[[RunOne], Awaitable[ExitCode]], run_one: RunOne
) -> ExitCode:
    """Run *body* with a *run_one* that tallies each run, then write the invocation's metrics."""
    metrics_file = job.values["metrics_file"]
    tally = _Invocation()

    async def counted(settings: RunSettings) -> RunResult:
        result = await run_one(settings)
        tally.add(result.summary)
        return result

    def write(code: ExitCode) -> None:
        if metrics_file is not None:
            writers.write_metrics(
                metrics_file, tally.summary(code).to_dict(), job=job.values["job_name"]
            )

    try:
        code = await body(counted)
    except BulkCancelError as exc:
        if tally.runs:  # files were run before this stopped the job: the metrics must say so
            write(exc.exit_code)
        raise
    write(code)
    return code


def plan_runs(job: ResolvedSettings, *, now: datetime | None = None) -> list[RunSettings]:
    """What the job would run now, changing nothing (``--dry-run``): one settings per input."""
    now = now or datetime.now()
    v = job.values
    if v["archive_dir"] is None:
        return _runs(job, now)
    folder = _drop_folder(job)
    planned = [
        to_run_settings(job, input=str(c.path), output=c.output, resume=False)
        for c in folder.leftovers(tidy=False)
    ]
    for source in folder.pending():
        output = _render(job, str(source), now)
        planned.append(to_run_settings(job, input=str(source), output=output, resume=False))
    return planned


def _drop_folder(job: ResolvedSettings) -> DropFolder:
    v = job.values
    if v["input"] is None or v["input"] == "-":
        raise ConfigError(
            "archive_dir is for drop folders: set input to a glob of the files to take, "
            'e.g. input = "incoming/*.csv"'
        )
    if v["retry_failed"]:
        raise ConfigError(
            "--retry-failed re-sends one earlier run: name it with --output, without archive_dir"
        )
    if v["output"] is None:
        raise ConfigError('a drop folder needs output, e.g. "results/{date}/{input_stem}.csv"')
    # Check the settings before any file is claimed, so a bad one cannot strand a file.
    sample = _render(job, v["input"], datetime.now())
    to_run_settings(job, input=v["input"], output=sample, resume=False)
    return DropFolder(
        v["input"], Path(v["archive_dir"]), job=v["job_name"], settle_s=v["settle_time"]
    )


async def _run_drop_folder(
    job: ResolvedSettings, folder: DropFolder, run_one: RunOne, now: datetime
) -> ExitCode:
    worst = ExitCode.OK
    runs = 0
    log.info("job.started", job=folder.job, input=folder.pattern, archive=str(folder.archive_dir))
    for claim in folder.leftovers():
        log.warning("job.resumed", file=str(claim.source), results=str(claim.output))
        code, go_on = await _run_claim(job, folder, claim, run_one)
        worst, runs = max(worst, code), runs + 1
        if not go_on:
            return _finished(folder.job, runs, worst)
    for source in folder.pending():
        output = _free_output(_render(job, str(source), now))
        taken = folder.claim(source, output)
        if taken is None:
            continue
        code, go_on = await _run_claim(job, folder, taken, run_one)
        worst, runs = max(worst, code), runs + 1
        if not go_on:
            break
    return _finished(folder.job, runs, worst)


async def _run_claim(
    job: ResolvedSettings, folder: DropFolder, claim: Claim, run_one: RunOne
) -> tuple[ExitCode, bool]:
    """Run one claimed file; (exit code, whether the job may go on with the next file)."""
    from .ledger import ledger_path
    from .pipeline import StopReason

    ledger = ledger_path(claim.output)
    settings = to_run_settings(
        job, input=str(claim.path), output=claim.output, resume=ledger.exists()
    )
    try:
        result = await run_one(settings)
    except InputError as exc:
        folder.reject(claim, str(exc))
        return ExitCode.USAGE, True
    except (UsageError, Interrupted):
        # Without a ledger nothing was sent (declined or interrupted at the prompt, a signal
        # while reading, a bad setting): not the file's fault, and not a run to resume.
        if not ledger.exists():
            folder.release(claim)
        raise
    stop = result.summary.stop_reason
    if stop == StopReason.INPUT:  # a bad row found while sending: resuming would stop there again
        folder.reject(claim, str(result.summary.stop_detail))
        return result.exit_code, True
    if stop in _WENT_THROUGH:
        folder.archive(claim, result)
        return result.exit_code, True
    log.warning(
        "job.left_in_processing",
        file=str(claim.path),
        stop_reason=stop,
        detail="the next run of this job resumes it",
    )
    return result.exit_code, False


def _runs(job: ResolvedSettings, now: datetime) -> list[RunSettings]:
    """The runs of a job without a drop folder: one input, or each file a glob matches."""
    v = job.values
    input_ = v["input"]
    if input_ is None or not is_glob(input_):
        output = _render(job, input_, now) if v["output"] is not None else None
        return [to_run_settings(job, input=input_, output=output, resume=v["resume"])]
    matches = sorted(p for p in glob.glob(input_, recursive=True) if os.path.isfile(p))
    if not matches:
        raise InputError(
            f"{input_}: no file matches this pattern (give a path, or set archive_dir for a "
            "drop folder that may be empty)"
        )
    if len(matches) > 1 and (v["output"] is None or "{input_stem}" not in str(v["output"])):
        raise ConfigError(
            f"input {input_!r} matches {len(matches)} files: output must hold {{input_stem}} so "
            'that each gets its own results, e.g. "results/{input_stem}.csv"'
        )
    return [
        to_run_settings(job, input=m, output=_render(job, m, now), resume=v["resume"])
        for m in matches
    ]


async def _run_each(runs: list[RunSettings], run_one: RunOne) -> ExitCode:
    worst = ExitCode.OK
    for settings in runs:
        result = await run_one(settings)
        worst = max(worst, result.exit_code)
        if result.summary.stop_reason not in _WENT_THROUGH:
            break
    return worst


def _lock_path(job: ResolvedSettings, runs: list[RunSettings]) -> Path | None:
    """A job file's lock lives in the results folder (the part of output without placeholders).

    The folder comes from the job file's own ``output`` when it has one: the printed command
    that resumes a run pins that run's output (``out/2026-11-28/…``), and its lock must be the
    one tonight's run of the same job takes, or the two could send side by side.
    """
    if job.job_file is None or not runs:
        return None
    template = load_file(job.job_file, Layer.JOB).get("output", job.values["output"])
    folder = _stable_dir(Path(template)) if template is not None else runs[0].output.parent
    return folder / f".{_safe(job.values['job_name'])}.lock"


def _render(job: ResolvedSettings, input_: str | None, now: datetime) -> Path:
    template = Path(job.values["output"])
    return render_output(template, job=job.values["job_name"], input_path=input_, now=now)


def _finished(job: str, runs: int, worst: ExitCode) -> ExitCode:
    if runs == 0:
        log.info("job.nothing_to_do", job=job)
    log.info("job.finished", job=job, runs=runs, exit_code=int(worst))
    return worst


def _stable_dir(template: Path) -> Path:
    if not has_placeholders(template):
        return template.parent
    stable: list[str] = []
    for part in template.parts[:-1]:
        if "{" in part:
            break
        stable.append(part)
    return Path(*stable) if stable else Path()


def _free_output(output: Path) -> Path:
    """*output*, or ``<stem>-2<suffix>``… when an earlier run's results or ledger are there."""
    from .ledger import ledger_path

    candidate, n = output, 1
    while candidate.exists() or ledger_path(candidate).exists():
        n += 1
        candidate = output.with_name(f"{output.stem}-{n}{output.suffix}")
    return candidate


def _free_name(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists() or _sidecar(candidate).exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def _sidecar(claimed: Path) -> Path:
    return claimed.with_name(claimed.name + SIDECAR_SUFFIX)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "job"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
