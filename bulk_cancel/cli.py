"""The ``bulk-cancel`` command: argv and environment in, an exit code out.

The only module that reads argv and the environment, configures logging, starts the event loop
and exits. Everything else lives in the library; heavy imports (pandas, pyarrow, the HTTP
client) happen inside the commands so that ``--help`` stays quick.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import gc
import os
import shlex
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from . import __version__
from .errors import BulkCancelError, ConfigError, ExitCode, Interrupted

if TYPE_CHECKING:
    from .runner import NextSteps
    from .settings import RunSettings

T = TypeVar("T")

#: The young generation's collection threshold while sending (Python's default: 700).
_YOUNG_GC_THRESHOLD = 20_000


@contextmanager
def sending_gc() -> Iterator[None]:
    """Python's garbage collector, set for sending, for the block (the benchmark uses it too).

    Everything alive at the start (modules, settings, the ledger) lives until the run ends.
    Freezing it keeps Python's full collections from walking it all while sending: one stalls
    the loop for 10-30 ms, and requests due meanwhile leave together (measured: a server
    counting arrivals saw 1,834-1,846 in one second at a 1,791/s pace, 1,802 frozen). And the
    young generation is collected only once it has grown by thousands of objects, not every
    700: each request's objects live for its round trip, so at 3,000/s some 10,000 are alive at
    any time, and the default thresholds collected them (and promoted them, to collect them
    again) over 100 times a second, a sixth of the process's CPU (issue 13, BENCHMARKS.md).
    Objects freed as usual never count against it.
    """
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(_YOUNG_GC_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


_EXIT_CODES = """\
exit codes:
  0    every row got an answer
  1    some rows failed or were not attempted (see the results file), or the run stopped
       itself (failure threshold)
  2    bad flags, settings, key or input; the ledger refuses (exists: add --resume); a "no"
       at the confirmation; or the job is already running (its lock is held): nothing was sent
  3    stopped because the API rejected the key or a subaccount
  4    stopped because the network path refused: the proxy cannot be reached or refuses
       the credentials (407), or the API's certificate does not verify (--ca-bundle);
       nothing more was sent: fix it, then finish with the command it prints (--resume)
  130  interrupted by Ctrl-C (SIGINT); 143 by SIGTERM: finish with the command it prints
       (--resume); at the prompt or while reading, nothing was sent: run it again
  141  the reader of its output went away (| head): ended quietly by SIGPIPE

Flags are exact (no prefixes). In JSON log mode (--log-format json, or auto off a terminal)
every stderr line is a JSON object, errors included (run.error).
"""

_RUN_EXAMPLE = """\
examples:
  export EIGHTX8_API_KEY=...   # never a flag: keys in argv end up in shell history and ps
  bulk-cancel run --input umids.csv --subaccount acme_hq --output results.csv
  bulk-cancel run --input umids.csv --subaccount acme_hq --output results.csv --resume
  bulk-cancel run --input - --subaccount acme_hq --output results.csv < umids.csv
  bulk-cancel run jobs/nightly-cleanup.toml --rate 900   # a job file; flags override it

Every flag is also a key in a job or config file (--max-rows: max_rows) and an environment
variable (BULK_CANCEL_MAX_ROWS); flag > environment > job file > config file > default.
config.example.toml lists them all; `bulk-cancel config show` shows what a run would use.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


class BadUsage(Exception):
    """A command line argparse refuses: *parser* is the (sub)command whose usage to show."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    """Exact flags only (a prefix such as ``--dry`` is refused, not guessed: this tool cancels
    things), and errors raised to :func:`main`, which prints them plain or as a JSON event."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:  # argparse's hook; it must not return
        raise BadUsage(self, message)

    def unknown(self, extras: list[str]) -> BadUsage:
        """The error for flags this command does not have, with the closest ones it does."""
        options = [o for action in self._actions for o in action.option_strings]
        problems = []
        for word in extras:
            if not word.startswith("-"):
                problems.append(f"unexpected argument {word!r}")
                continue
            flag = word.split("=", 1)[0]
            close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else f" (see {self.prog} --help)"
            problems.append(f"unknown flag {flag}{hint}")
        return BadUsage(self, "; ".join(problems))


def build_parser() -> _Parser:
    """The whole command line, cheap to build (nothing heavy is imported)."""
    parser = _Parser(
        prog="bulk-cancel",
        description="Cancel scheduled 8x8 messages in bulk: rate-limited, retried, accounted for row by row.",
        epilog=_RUN_EXAMPLE + "\n" + _EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bulk-cancel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="cancel every umid in a file",
        description="Cancel every umid (or batch id) listed in a file, and write one results row per unique id.",
        epilog=_RUN_EXAMPLE + "\n" + _EXIT_CODES,
        formatter_class=_Formatter,
    )
    _add_run_arguments(run)
    run.set_defaults(handler=_cmd_run, usage_parser=run)

    config = sub.add_parser(
        "config",
        help="show the effective settings and where each comes from",
        description="Show the settings a run would use (flag > environment > job file > config file > default), the key masked.",
        epilog="example:\n  bulk-cancel config show jobs/nightly-cleanup.example.toml --rate 900",
        formatter_class=_Formatter,
    )
    config_sub = config.add_subparsers(dest="config_command", metavar="show", required=True)
    show = config_sub.add_parser(
        "show",
        help="print the effective settings",
        description="Print the effective settings of a run and where each comes from; the key is never shown.",
        epilog="example:\n  bulk-cancel config show jobs/demo.toml",
        formatter_class=_Formatter,
    )
    _add_run_arguments(show)
    show.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    show.set_defaults(handler=_cmd_config_show, usage_parser=show)

    validate = sub.add_parser(
        "validate",
        help="check a file without sending anything",
        description="Read, validate and de-duplicate a file; print what a run would send. Nothing is sent.",
        epilog="example:\n  bulk-cancel validate umids.csv --subaccount acme_hq",
        formatter_class=_Formatter,
    )
    validate.add_argument(
        "input",
        metavar="FILE",
        help="the file to check (.csv .tsv .parquet .xlsx .txt, or - for stdin)",
    )
    _add_input_arguments(validate)
    validate.add_argument(
        "--format", choices=("table", "json"), default="table", help="output format"
    )
    validate.set_defaults(handler=_cmd_validate, usage_parser=validate)

    report = sub.add_parser(
        "report",
        help="show a past run's summary",
        description="Print the summary of a past run, from its results file, summary JSON or ledger.",
        epilog="examples:\n  bulk-cancel report out/results.csv --format json\n"
        "  bulk-cancel report out/results.csv --by subaccount\n"
        "  bulk-cancel report out/results.csv --by campaign   # a column of the input file",
        formatter_class=_Formatter,
    )
    report.add_argument(
        "path",
        metavar="RESULTS_OR_LEDGER",
        type=Path,
        help="results file, .summary.json or .ledger.sqlite",
    )
    report.add_argument(
        "--format", choices=("table", "json"), default="table", help="output format"
    )
    report.add_argument(
        "--by",
        metavar="subaccount|COLUMN",
        help="also break the rows down by outcome per subaccount, or per value of one of the "
        "input's own columns (kept in the ledger), e.g. --by campaign",
    )
    report.set_defaults(handler=_cmd_report, usage_parser=report)

    merge = sub.add_parser(
        "merge",
        help="merge the results of a run's shards into one",
        description="Merge the results of the N shards of one input (run --shard K/N) into one "
        "results file and one summary: every row once, in input order, counts summed, the exit "
        "code the worst of the shards'. Each shard's .ledger.sqlite and .summary.json must be "
        "beside its results file.",
        epilog="example:\n  bulk-cancel merge --output all.csv r0.csv r1.csv r2.csv r3.csv",
        formatter_class=_Formatter,
    )
    merge.add_argument(
        "results",
        metavar="SHARD_RESULTS",
        nargs="+",
        type=Path,
        help="each shard's results file",
    )
    merge.add_argument(
        "--output",
        metavar="PATH",
        type=Path,
        required=True,
        help="the merged results (.csv .parquet .xlsx); the summary goes beside it",
    )
    merge.add_argument(
        "--format", choices=("table", "json"), default="table", help="how to print the summary"
    )
    merge.set_defaults(handler=_cmd_merge)

    simulate = sub.add_parser(
        "simulate",
        help="serve a local stand-in of 8x8's cancel API",
        description="Serve a local stand-in of 8x8's cancel endpoints on 127.0.0.1, with rate limits and faults, for rehearsals and tests.",
        epilog="example:\n  bulk-cancel simulate --port 8088 --faults http_503=0.05,drop_after=0.01\n"
        "  EIGHTX8_API_KEY=test bulk-cancel run --base-url http://127.0.0.1:8088 --input jobs/demo-umids.csv --subaccount demo_sub --output out/demo.csv",
        formatter_class=_Formatter,
    )
    from . import simulator  # light: aiohttp is imported inside it only when serving

    simulator.add_arguments(simulate)
    simulate.set_defaults(handler=_cmd_simulate, usage_parser=simulate)
    return parser


def _add_input_arguments(p: argparse.ArgumentParser, *, layered: bool = False) -> None:
    """The flags that say how to read the input (``validate`` shares them with ``run``)."""
    from .config import INPUT_GROUP, SETTINGS

    group = p.add_argument_group(INPUT_GROUP)
    for setting in SETTINGS:
        if setting.group == INPUT_GROUP:
            _add_flag(group, setting, layered=layered)


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """``run`` (and ``config show``): a job file, a config file, and a flag per setting.

    Flags default to "not given" (``argparse.SUPPRESS``) so that precedence can tell a flag from
    a default; the help shows the registry's default instead.
    """
    from .config import INPUT_GROUP, SETTINGS, TARGET_GROUP

    p.add_argument(
        "job",
        nargs="?",
        metavar="JOB",
        default=argparse.SUPPRESS,  # no type=: argparse would convert SUPPRESS itself
        help="a job file (TOML) whose keys are these flags' names in snake_case; flags override it",
    )
    p.add_argument(
        "--config",
        metavar="PATH",
        type=Path,
        default=argparse.SUPPRESS,
        help="config file (default: $BULK_CANCEL_CONFIG, else ~/.config/bulk-cancel/config.toml "
        "if it exists)",
    )
    for setting in SETTINGS:
        if setting.group == TARGET_GROUP:
            _add_flag(p, setting, layered=True)
    _add_input_arguments(p, layered=True)
    groups: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.group not in (TARGET_GROUP, INPUT_GROUP):
            if setting.group not in groups:
                groups[setting.group] = p.add_argument_group(setting.group)
            _add_flag(groups[setting.group], setting, layered=True)


def _add_flag(group: Any, setting: Any, *, layered: bool) -> None:
    """One flag from its registry entry; *layered*: not given means ``argparse.SUPPRESS``."""
    from .config import ValueKind as Kind

    kwargs: dict[str, Any] = {"dest": setting.name, "help": setting.help}
    if layered:
        kwargs["default"] = argparse.SUPPRESS
        shown = setting.default_text()
        if shown is not None:
            kwargs["help"] += f" (default: {shown})"
    if setting.kind is Kind.BOOL and setting.optional_value is not None:
        # --resume alone, or --resume=auto: one more word, and nothing else.
        kwargs.update(nargs="?", const=True, metavar=setting.optional_value.upper())
        kwargs["type"] = _one_word(setting.optional_value)
    elif setting.kind is Kind.BOOL:
        # A bool a file can set true needs a way back: --split / --no-split.
        kwargs["action"] = argparse.BooleanOptionalAction if setting.in_files else "store_true"
    elif setting.choices:
        kwargs["choices"] = setting.choices
    else:
        kwargs["metavar"] = setting.metavar
        kwargs["type"] = _flag_type(setting)
    group.add_argument(setting.flag, **kwargs)


def _one_word(word: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text != word:
            raise argparse.ArgumentTypeError(f"{text!r}: give the flag alone, or ={word}")
        return word

    parse.__name__ = word
    return parse


def _flag_type(setting: Any) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return setting.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} {exc}") from None

    parse.__name__ = setting.name  # argparse names the type in some errors
    return parse


# ---------------------------------------------------------------------- commands


def _settings_from_args(ns: argparse.Namespace) -> Any:
    """The effective settings (a ``config.ResolvedSettings``) of ``run`` or ``config show``."""
    from . import config

    flags = {s.name: getattr(ns, s.name) for s in config.SETTINGS if hasattr(ns, s.name)}
    config_file = getattr(ns, "config", None) or config.default_config_file(os.environ)
    job = Path(ns.job) if hasattr(ns, "job") else None
    return config.resolve(flags, os.environ, job, config_file)


def _api_key() -> str:
    from .client import header_safe
    from .settings import API_KEY_ENV

    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise ConfigError(
            f"no API key: export {API_KEY_ENV}=<your key from the 8x8 Connect portal>"
        )
    if not header_safe(key):  # the client's own rule, checked before any file is written
        raise ConfigError(
            f"{API_KEY_ENV} holds a line break, control or non-ASCII character; "
            "set it to the key alone"
        )
    return key


def _cmd_run(ns: argparse.Namespace) -> int:
    from . import logs
    from .jobs import plan_runs, run_job

    job = _settings_from_args(ns)
    voice: Voice = ns.voice
    voice.json = _json_mode(job["log_format"])  # a job or config file may have set it
    json_logs = _json_logs_value(job["log_format"])
    if job["dry_run"]:
        logs.configure(json=json_logs)
        return _print_plans(plan_runs(job), several=job["archive_dir"] is not None)
    from .settings import url_secrets

    key = _api_key()
    tty = sys.stderr.isatty()
    # On a terminal the progress bar and the summary table tell the story; logs only warn.
    # In JSON mode stderr carries JSON alone: progress and the summary come as events.
    logs.configure(
        secrets=[key, *url_secrets(job["proxy"])],  # the proxy's password is as secret
        json=json_logs,
        level="warning" if tty and job["log_format"] == "auto" else "info",
    )
    import structlog

    from .runner import Runner

    log = structlog.get_logger("bulk_cancel")
    # Ask only a person: stdin and stderr both on a terminal; cron and pipes are never asked.
    confirm = _ask if tty and sys.stdin.isatty() and not job["yes"] else None

    async def run_one(settings: Any) -> Any:
        for note in settings.warnings():
            log.warning("settings.warning", message=note)
        runner = Runner(settings, key, confirm=confirm, next_steps=next_steps(settings))
        result = await _with_progress(runner, tty=tty and not voice.json)
        _tell(settings, result, tty=tty, json=voice.json)
        return result

    return int(_run_async(lambda: run_job(job, run_one)))


def _tell(settings: Any, result: Any, *, tty: bool, json: bool) -> None:
    """The end of one run: the summary table on a terminal, one line off it; in JSON mode,
    events (``run.summary``, ``run.stopped``, ``run.retry_hint``) and nothing else on stderr."""
    summary = result.summary
    retry = summary.retry_failed_command if result.message is None else None
    if json:
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
            from .display import summary_table

            summary_table(summary, sys.stdout, tty=True)
        return
    if result.nothing_to_do:
        print(f"bulk-cancel: {result.message}", file=sys.stderr)
        return
    if tty:
        from .display import summary_table

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


def next_steps(settings: RunSettings) -> NextSteps:
    """The commands a stopped run prints (and keeps in its summary) to finish it or to re-send
    its failures, word for word as the shell takes them."""
    from .runner import NextSteps

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


async def _with_progress(runner: Any, *, tty: bool) -> Any:
    """Run with a live progress bar on a terminal, ``run.progress`` events otherwise; shown only
    once sending starts, so a "no" at the prompt or bad input leaves no empty bar behind."""
    from .display import live_progress

    async with live_progress(runner.progress, tty=tty, sending=runner.sending):
        return await owning_signals(runner)


async def owning_signals(runner: Any) -> Any:
    """Run *runner* (a :class:`~bulk_cancel.runner.Runner`) as the process's owner.

    While the input is read (synchronously: the loop cannot run its handlers) a SIGINT/SIGTERM
    is only noted, in a plain handler, and the reading stops at its next chunk, nothing sent.
    Once sending, the loop's handlers take over: a first signal stops taking rows and lets
    requests in flight finish for up to the drain timeout, then results are written (exit 130 or
    143); a second one commits the ledger and leaves at once. Every handler is put back as it
    was when the run ends.
    """
    loop = asyncio.get_running_loop()

    def note(signum: int, frame: object) -> None:
        runner.note_signal(signum)

    def on_signal(signum: int) -> None:
        if runner.noted_signal is not None:
            # Second signal: leave at once. Every SQLite statement is atomic, so the ledger
            # is consistent as it stands; rows in flight stay SENT and resume as ambiguous.
            runner.commit()
            os._exit(128 + signum)
        runner.interrupt(signum)

    installed: list[int] = []
    with handling_signals(note):
        run = asyncio.ensure_future(runner.run())
        sending = asyncio.ensure_future(runner.sending.wait())
        try:
            await asyncio.wait({run, sending}, return_when=asyncio.FIRST_COMPLETED)
            if run.done():
                return run.result()
            for signum in (signal.SIGINT, signal.SIGTERM):
                with suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(signum, on_signal, signum)
                    installed.append(signum)
            if runner.noted_signal is not None:  # noted as the sending began
                runner.interrupt(runner.noted_signal)
            with sending_gc():
                return await run
        finally:
            sending.cancel()
            for number in installed:
                loop.remove_signal_handler(number)


@contextmanager
def handling_signals(handler: Callable[[int, object], None]) -> Iterator[None]:
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


def prompting(confirm: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool]:
    """*confirm* with a signal during it raising :class:`~bulk_cancel.errors.Interrupted`.

    The prompt blocks in ``input()``: only an exception raised by a handler ends the wait. The
    event loop's own SIGINT handler would merely cancel the task, which ``input()`` never sees,
    so a first Ctrl-C would do nothing at all. The runner says what was kept.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted(
            "interrupted at the confirmation; nothing was sent and no ledger was kept",
            sigterm=signum == signal.SIGTERM,
        )

    def ask(plan: dict[str, Any]) -> bool:
        with handling_signals(interrupt):
            return confirm(plan)

    return ask


def _ask_input(plan: dict[str, Any]) -> bool:
    """On a terminal, say what is about to be cancelled and ask; anything but y/yes is no."""
    from .display import confirmation_question

    try:
        answer = input(confirmation_question(plan))
    except EOFError:
        return False
    return answer.strip().lower() in {"y", "yes"}


_ask = prompting(_ask_input)


def _print_plans(runs: list[Any], *, several: bool) -> int:
    """``--dry-run``: one run's plan as before; a drop folder's or a glob's as a list."""
    import json

    from .runner import Runner

    if len(runs) == 1 and not several:
        return _print_plan(runs[0])
    plans = [{"input": s.input, "output": str(s.output), **_plan(Runner(s, ""))} for s in runs]
    print(json.dumps({"runs": plans}, indent=2))
    return int(ExitCode.OK)


def _cmd_config_show(ns: argparse.Namespace) -> int:
    """Each effective setting, its value and where it came from; the key only as set or not."""
    import json

    from .config import mask_key, show_data, show_rows
    from .settings import API_KEY_ENV

    job = _settings_from_args(ns)
    key = os.environ.get(API_KEY_ENV, "").strip()
    key_row = (API_KEY_ENV, mask_key(key), f"env {API_KEY_ENV}")
    if ns.format == "json":
        data = show_data(job)
        data[API_KEY_ENV] = {"value": key_row[1], "source": key_row[2]}
        print(json.dumps(data, indent=2))
        return int(ExitCode.OK)
    rows = [*show_rows(job), key_row]
    print(f"# config file: {job.config_file or 'none'}")
    print(f"# job file: {job.job_file or 'none'}")
    width = max(len(name) for name, _, _ in rows)
    value_width = min(48, max(len(v) for _, v, _ in rows))
    for name, value, source in rows:
        print(f"{name:<{width}}  {value:<{value_width}}  {source}")
    return int(ExitCode.OK)


def _json_logs_value(fmt: str) -> bool | None:
    return {"auto": None, "json": True, "console": False}[fmt]


def _print_plan(settings: Any, fmt: str = "json") -> int:
    import json

    from .runner import Runner

    plan = _plan(Runner(settings, ""))
    if fmt == "table":
        from .display import plan_table

        plan_table(plan, sys.stdout)
    else:
        print(json.dumps(plan, indent=2))
    return int(ExitCode.OK)


def _plan(runner: Any) -> dict[str, Any]:
    """A dry run's plan; a signal while reading stops at the next chunk (exit 130/143)."""
    with handling_signals(lambda signum, frame: runner.note_signal(signum)):
        plan: dict[str, Any] = runner.plan()
    return plan


def _cmd_report(ns: argparse.Namespace) -> int:
    import json

    from .display import breakdown_table, load_breakdown, load_summary, summary_table

    summary = load_summary(ns.path)
    breakdown = load_breakdown(ns.path, ns.by) if ns.by else None
    if ns.format == "json":
        data = summary.to_dict()
        print(json.dumps(data if breakdown is None else {**data, "breakdown": breakdown}, indent=2))
    else:
        summary_table(summary, sys.stdout, tty=sys.stdout.isatty())
        if breakdown is not None:
            breakdown_table(breakdown, sys.stdout)
    return int(ExitCode.OK)


def _cmd_merge(ns: argparse.Namespace) -> int:
    import json

    from .display import summary_table
    from .merge import merge
    from .model import Summary

    summary = merge(ns.output, ns.results)
    if ns.format == "json":
        print(json.dumps(summary, indent=2))
    else:
        summary_table(Summary.from_dict(summary), sys.stdout, tty=sys.stdout.isatty())
    return int(summary["exit_code"])


def _cmd_validate(ns: argparse.Namespace) -> int:
    from . import logs
    from .settings import RunSettings, check_subaccount

    if ns.subaccount is not None:
        check_subaccount(ns.subaccount)
    logs.configure(json=None, level="warning")
    settings = RunSettings(
        input=ns.input,
        output=Path("validate.csv"),
        subaccount=ns.subaccount,
        column=ns.column,
        subaccount_column=ns.subaccount_column,
        sheet=ns.sheet,
        header_row=ns.header_row,
        encoding=ns.encoding,
        max_rows=ns.max_rows,
    )
    return _print_plan(settings, ns.format)


def _cmd_simulate(ns: argparse.Namespace) -> int:
    from . import simulator

    config = simulator.config_from_args(ns)
    _run_async(
        lambda: simulator.serve(config, host=ns.host, port=ns.port, state_file=ns.state_file)
    )
    return 0


def _run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on uvloop when available (measurably faster on these machines)."""
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(factory())


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
        return cls(json=_json_mode(fmt))

    def error(self, message: str, *, exit_code: int, usage: str | None = None) -> None:
        """``bulk-cancel: error: …`` (after *usage*), or one ``run.error`` event."""
        if self.json:
            event = {"event": "run.error", "message": message, "exit_code": exit_code}
            if usage:
                event["usage"] = " ".join(usage.split())
            from .logs import json_event

            json_event(event, level="error")
        else:
            if usage:
                sys.stderr.write(usage)
            print(f"bulk-cancel: error: {message}", file=sys.stderr)


def _json_mode(fmt: str) -> bool:
    """Whether ``--log-format`` *fmt* means JSON on stderr."""
    return fmt == "json" or (fmt != "console" and not sys.stderr.isatty())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bulk-cancel`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    voice = Voice.guess(args)
    try:
        try:
            code = _main(args, voice)
        finally:
            # Output still buffered fails here, not in the interpreter's last flush.
            sys.stdout.flush()
    except BrokenPipeError:
        _leave_quietly_on_a_closed_pipe()
    return code


def _main(args: list[str], voice: Voice) -> int:
    parser = build_parser()
    try:
        ns, extras = parser.parse_known_args(args)
        if extras:
            command: _Parser = getattr(ns, "usage_parser", parser)
            raise command.unknown(extras)
    except BadUsage as exc:
        voice.error(str(exc), exit_code=int(ExitCode.USAGE), usage=exc.parser.format_usage())
        return int(ExitCode.USAGE)
    ns.voice = voice
    try:
        code: int = ns.handler(ns)
    except BulkCancelError as exc:
        voice.error(str(exc), exit_code=int(exc.exit_code))
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.SIGINT)
    return code


def _leave_quietly_on_a_closed_pipe() -> NoReturn:
    """The reader of stdout (or stderr) went away (``| head``, ``| true``): end as Unix tools do,
    by SIGPIPE, without a traceback. Python ignores SIGPIPE and raises BrokenPipeError instead;
    both streams point at /dev/null first so that no last flush can raise again (the recipe in
    Python's docs, signal module, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            os.dup2(devnull, stream.fileno())
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)
    os._exit(1)  # pragma: no cover - no SIGPIPE (Windows)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
