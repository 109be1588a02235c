"""The ``bulk-cancel`` command line: argparse, one flag per entry of the settings registry.

Flags are exact (a prefix such as ``--dry`` is refused, not guessed: this tool cancels things),
and every error is raised to :func:`bulk_cancel.cli.main`, which prints it plain or as a JSON
event. Building the parser imports nothing heavy.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__
from . import commands

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


class Parser(argparse.ArgumentParser):
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


def build_parser() -> Parser:
    """The whole command line, cheap to build (nothing heavy is imported)."""
    parser = Parser(
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
    run.set_defaults(handler=commands.run, usage_parser=run)

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
    show.set_defaults(handler=commands.config_show, usage_parser=show)

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
    validate.set_defaults(handler=commands.validate, usage_parser=validate)

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
    report.set_defaults(handler=commands.report, usage_parser=report)

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
    merge.set_defaults(handler=commands.merge)

    simulate = sub.add_parser(
        "simulate",
        help="serve a local stand-in of 8x8's cancel API",
        description="Serve a local stand-in of 8x8's cancel endpoints on 127.0.0.1, with rate limits and faults, for rehearsals and tests.",
        epilog="example:\n  bulk-cancel simulate --port 8088 --faults http_503=0.05,drop_after=0.01\n"
        "  EIGHTX8_API_KEY=test bulk-cancel run --base-url http://127.0.0.1:8088 --input jobs/demo-umids.csv --subaccount demo_sub --output out/demo.csv",
        formatter_class=_Formatter,
    )
    from .. import simulator  # light: aiohttp is imported inside it only when serving

    simulator.add_arguments(simulate)
    simulate.set_defaults(handler=commands.simulate, usage_parser=simulate)
    return parser


def _add_input_arguments(p: argparse.ArgumentParser, *, layered: bool = False) -> None:
    """The flags that say how to read the input (``validate`` shares them with ``run``)."""
    from ..config import INPUT_GROUP, SETTINGS

    group = p.add_argument_group(INPUT_GROUP)
    for setting in SETTINGS:
        if setting.group == INPUT_GROUP:
            _add_flag(group, setting, layered=layered)


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """``run`` (and ``config show``): a job file, a config file, and a flag per setting.

    Flags default to "not given" (``argparse.SUPPRESS``) so that precedence can tell a flag from
    a default; the help shows the registry's default instead.
    """
    from ..config import INPUT_GROUP, SETTINGS, TARGET_GROUP

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
    from ..config import ValueKind as Kind

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
