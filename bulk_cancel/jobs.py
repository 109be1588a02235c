"""Drop folders for scheduled jobs: each file that lands is processed once, then archived.

A file is *claimed* first by an atomic rename into ``processing/`` beside the archive folder,
with a small sidecar JSON naming its results file. Only then is it run; when the run ends it
moves to the archive. A crash leaves it in ``processing/``, and the next run of the job resumes
it (same results file, ``--resume``) before taking new files. One lock per job keeps
overlapping cron runs apart.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from . import locks
from .errors import BulkCancelError, ConfigError, ExitCode, LedgerError

log = structlog.get_logger("bulk_cancel")

#: Exit codes after which a file is done with (archived); others leave it to be resumed.
_FINISHED = frozenset({ExitCode.OK, ExitCode.INCOMPLETE, ExitCode.REJECTED})

RunOne = Callable[[Path, Path | None, bool], int]
"""Run one claimed file: (path, results path or None to render one, resume) → exit code."""


@contextmanager
def job_lock(job: str, anchor: Path) -> Iterator[None]:
    """Hold the job's lock (a file in the temp folder, keyed by the job and its folder)."""
    digest = hashlib.sha256(str(anchor.resolve()).encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"bulk-cancel-{job}-{digest}.lock"
    taken = locks.take(path)
    if isinstance(taken, str):
        raise LedgerError(
            f"job {job!r}: another run (pid {taken}) is still going; this one does nothing. "
            "If runs overlap often, schedule them further apart"
        )
    try:
        yield
    finally:
        locks.release(taken)


@dataclass(frozen=True, slots=True)
class DropFolder:
    """The files matching *pattern*, each processed once and moved to *archive_dir*."""

    pattern: str
    archive_dir: Path | None
    job: str

    @property
    def processing_dir(self) -> Path:
        assert self.archive_dir is not None
        return self.archive_dir.parent / "processing"

    def run(self, one: RunOne, *, render: Callable[[Path], Path]) -> int:
        """Resume claimed files, then claim and run new ones; return the worst exit code."""
        if self.archive_dir is None:
            raise ConfigError(
                f"input {self.pattern!r} is a glob (a drop folder): set archive_dir so that "
                "each file is processed once and then moved out of the way"
            )
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        self.processing_dir.mkdir(parents=True, exist_ok=True)
        worst = ExitCode.OK
        with job_lock(self.job, self.archive_dir):
            for claimed, output in self._claimed():
                code = self._run(one, claimed, output, resume=True)
                worst = max(worst, code)
                if code not in _FINISHED:
                    return worst
            for path in self._new_files():
                claimed = self.processing_dir / path.name
                if claimed.exists():
                    log.warning(
                        "drop_folder.skipped",
                        file=str(path),
                        reason="a file of this name is being processed",
                    )
                    continue
                os.replace(path, claimed)  # the claim: atomic within one file system
                output = render(path)
                _sidecar(claimed).write_text(json.dumps({"output": str(output)}))
                log.info("drop_folder.claimed", file=str(path), results=str(output))
                code = self._run(one, claimed, output, resume=False)
                worst = max(worst, code)
                if code not in _FINISHED:
                    return worst
        return worst

    def _run(self, one: RunOne, claimed: Path, output: Path, *, resume: bool) -> ExitCode:
        assert self.archive_dir is not None
        try:
            code = ExitCode(one(claimed, output, resume))
        except BulkCancelError as exc:
            if exc.exit_code != ExitCode.USAGE:
                raise
            # A file that cannot be read never will be: set it aside, keep the rest going.
            rejected = self.archive_dir / "rejected"
            rejected.mkdir(exist_ok=True)
            os.replace(claimed, rejected / claimed.name)
            _sidecar(claimed).unlink(missing_ok=True)
            log.error(
                "drop_folder.rejected", file=claimed.name, error=str(exc), moved_to=str(rejected)
            )
            return ExitCode.USAGE
        if code in _FINISHED:
            os.replace(claimed, self.archive_dir / claimed.name)
            _sidecar(claimed).unlink(missing_ok=True)
            log.info("drop_folder.archived", file=claimed.name, exit_code=int(code))
        return code

    def _claimed(self) -> Iterator[tuple[Path, Path]]:
        for sidecar in sorted(self.processing_dir.glob("*.bulk-cancel.json")):
            claimed = sidecar.with_name(sidecar.name.removesuffix(".bulk-cancel.json"))
            if claimed.is_file():
                yield claimed, Path(json.loads(sidecar.read_text())["output"])

    def _new_files(self) -> list[Path]:
        return [Path(p) for p in sorted(glob.glob(self.pattern)) if Path(p).is_file()]


def _sidecar(claimed: Path) -> Path:
    return claimed.with_name(claimed.name + ".bulk-cancel.json")
