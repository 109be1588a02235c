"""The shell commands a stopped run prints, and keeps in its summary, to finish it or to re-send
its failures: word for word as the shell takes them (``shlex``), so that they can be pasted."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..api import NextSteps
    from ..settings import RunSettings


def next_steps(settings: RunSettings) -> NextSteps:
    """The commands a stopped run prints (and keeps in its summary) to finish it or to re-send
    its failures, word for word as the shell takes them."""
    from ..api import NextSteps

    _, notes = settings.command_flags
    return NextSteps(
        resume=resume_command(settings),
        retry_failed=retry_failed_command(settings),
        notes=tuple(notes),
    )


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
    parts = ["bulk-cancel", "run"]
    if s.job_file is not None:
        parts.append(str(s.job_file))
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


def _what_is_sent(settings: RunSettings) -> list[str]:
    """The flags of every setting that shapes the traffic or decides what is read and where it
    is sent (the registry's ``in_commands``), whatever layer set it: the environment or config
    of the next shell cannot change them."""
    flags, _ = settings.command_flags
    return list(flags)
