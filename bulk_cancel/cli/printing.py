"""What the command says: on stderr, plain lines or JSON events (:class:`Voice`); the end of a
run (:func:`tell`); a dry run's plan (:func:`print_plans`). Tables come from
:mod:`bulk_cancel.display`."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ExitCode

if TYPE_CHECKING:
    from ..api import Owner, RunResult
    from ..settings import RunSettings


@dataclass(slots=True)
class Voice:
    """How this invocation speaks on stderr: plain lines, or JSON events.

    ``run`` in JSON log mode (``--log-format json``, or ``auto`` off a terminal) writes nothing
    but JSON objects on stderr, its errors included (``run.error``), so that a crontab's
    ``2>>run.jsonl`` stays readable by ``jq``. Before the settings are resolved the mode is read
    from argv and ``BULK_CANCEL_LOG_FORMAT``; ``run`` corrects it once they are.
    """

    json: bool = False

    @classmethod
    def guess(cls, argv: Sequence[str]) -> Voice:
        """The mode from argv and the environment alone (a bad flag fails before the rest)."""
        if not argv or argv[0] != "run":
            return cls(json=False)
        fmt = os.environ.get("BULK_CANCEL_LOG_FORMAT") or "auto"
        for i, word in enumerate(argv):
            if word == "--log-format" and i + 1 < len(argv):
                fmt = argv[i + 1]
            elif word.startswith("--log-format="):
                fmt = word.split("=", 1)[1]
        return cls(json=json_mode(fmt))

    def error(self, message: str, *, exit_code: int, usage: str | None = None) -> None:
        """``bulk-cancel: error: …`` (after *usage*), or one ``run.error`` event."""
        if self.json:
            event = {"event": "run.error", "message": message, "exit_code": exit_code}
            if usage:
                event["usage"] = " ".join(usage.split())
            from ..logs import json_event

            json_event(event, level="error")
        else:
            if usage:
                sys.stderr.write(usage)
            print(f"bulk-cancel: error: {message}", file=sys.stderr)


def json_mode(fmt: str) -> bool:
    """Whether ``--log-format`` *fmt* means JSON on stderr."""
    return fmt == "json" or (fmt != "console" and not sys.stderr.isatty())


def tell(settings: RunSettings, result: RunResult, *, tty: bool, events: bool) -> None:
    """The end of one run: the summary table on a terminal, one line off it; in JSON mode,
    events (``run.summary``, ``run.stopped``, ``run.retry_hint``) and nothing else on stderr."""
    summary = result.summary
    retry = summary.retry_failed_command if result.message is None else None
    if events:
        import structlog

        log = structlog.get_logger("bulk_cancel")
        if result.nothing_to_do:
            log.info("run.nothing_to_do", message=result.message, exit_code=summary.exit_code)
            return
        log.info(
            "run.summary",
            counts={k: v for k, v in summary.counts.items() if v},
            unique=summary.unique,
            exit_code=summary.exit_code,
            results=str(settings.output),
            summary=str(result.summary_path),
        )
        if result.message:
            log.warning("run.stopped", message=result.message)
        if retry:
            log.info("run.retry_hint", message="to re-send the failures", command=retry)
        if tty and sys.stdout.isatty():  # --log-format json on a terminal: the table on stdout
            from ..display import summary_table

            summary_table(summary, sys.stdout, tty=True)
        return
    if result.nothing_to_do:
        print(f"bulk-cancel: {result.message}", file=sys.stderr)
        return
    if tty:
        from ..display import summary_table

        summary_table(summary, sys.stderr, tty=True)
    else:
        counts = ", ".join(f"{k} {v}" for k, v in summary.counts.items() if v)
        print(
            f"bulk-cancel: {summary.unique} unique rows ({counts or 'none'}); "
            f"results: {settings.output}; summary: {result.summary_path}",
            file=sys.stderr,
        )
    if result.message:
        print(f"bulk-cancel: {result.message}", file=sys.stderr)
    elif not tty and retry:
        # The table on a terminal shows it; a cron mail or a CI log gets the same command here.
        print(f"bulk-cancel: to re-send the failures: {retry}", file=sys.stderr)


def print_plans(runs: list[RunSettings], *, several: bool, owner: Owner) -> int:
    """``--dry-run``: one run's plan as before; a drop folder's or a glob's as a list."""
    from .. import api

    if len(runs) == 1 and not several:
        return print_plan(runs[0], owner=owner)
    plans = [{"input": s.input, "output": str(s.output), **api.plan(s, owner=owner)} for s in runs]
    print(json.dumps({"runs": plans}, indent=2))
    return int(ExitCode.OK)


def print_plan(settings: RunSettings, fmt: str = "json", *, owner: Owner) -> int:
    """A dry run's plan, as JSON or a table; *owner* stops the reading on a signal (exit
    130/143)."""
    from .. import api

    plan = api.plan(settings, owner=owner)
    if fmt == "table":
        from ..display import plan_table

        plan_table(plan, sys.stdout)
    else:
        print(json.dumps(plan, indent=2))
    return int(ExitCode.OK)
