"""The ``bulk-cancel`` command: argv and environment in, an exit code out.

The only part of the package that reads argv and the environment, configures logging, owns the
process (signal handlers, ``gc.freeze``, ``os._exit``, the prompt), starts the event loop and
exits. What it runs is the library's (:func:`bulk_cancel.api.run`), as sqlite-utils' command is
built on its ``Database``. One room each:

- :mod:`.parser`: the command line, one flag per entry of the settings registry;
- :mod:`.commands`: one function per command, glue from parsed arguments to the library;
- :mod:`.process`: the process around a run (:class:`~.process.ProcessOwner`), the event loop,
  a closed pipe;
- :mod:`.shell`: the resume and retry commands a stopped run prints;
- :mod:`.printing`: what the command says on stdout and stderr, plain or as JSON events.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from typing import Final

from ..errors import BulkCancelError, ExitCode
from .parser import BadUsage, Parser, build_parser
from .printing import Voice
from .process import leave_quietly_on_a_closed_pipe

__all__ = ["BadUsage", "build_parser", "main"]


#: Python's collector thresholds while a command runs. Reading a file builds millions of small
#: tuples, none of them in a reference cycle, and at the default (700, 10, 10) the collector
#: walks them over and over for nothing (measured, reading 2,000,000 rows: 56 full
#: collections, 3.2 µs a row; at this threshold 2, 2.7 µs).
GC_THRESHOLD: Final = (10_000, 10, 10)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bulk-cancel`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    gc.set_threshold(*GC_THRESHOLD)  # the command owns the process (the library never does)
    voice = Voice.guess(args)
    try:
        try:
            code = _main(args, voice)
        finally:
            # Output still buffered fails here, not in the interpreter's last flush.
            sys.stdout.flush()
    except BrokenPipeError:
        leave_quietly_on_a_closed_pipe()
    return code


def _main(args: list[str], voice: Voice) -> int:
    parser = build_parser()
    try:
        ns, extras = parser.parse_known_args(args)
        if extras:
            command: Parser = getattr(ns, "usage_parser", parser)
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
