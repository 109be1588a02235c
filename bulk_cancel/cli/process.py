"""The command owns the process around a run; the library never does.

:class:`ProcessOwner` is the command's :class:`~bulk_cancel.api.Owner`: SIGINT and SIGTERM (a
plain handler while the input is read, the event loop's while sending, ``os._exit`` on a
second one), the collector while sending (:func:`sending_gc`), the ``[y/N]`` prompt and a signal during it, and the
progress display. Beside it: the event loop (uvloop) and a closed pipe (SIGPIPE, quietly).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from ..errors import Interrupted

if TYPE_CHECKING:
    from ..api import Confirm, RunControl, RunResult

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


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessOwner:
    """The command's owner of a run (:class:`~bulk_cancel.api.Owner`).

    *progress_bar*: a live rich bar (on a terminal), else ``run.progress`` events; shown only
    once sending starts, so a "no" at the prompt or bad input leaves no empty bar behind.
    *confirm*: asks before sending (:func:`ask` on a terminal), or None.
    """

    progress_bar: bool = False
    confirm: Confirm | None = None

    def reading(self, run: RunControl) -> AbstractContextManager[object]:
        """A signal while the input is read (a dry run) stops it at the next chunk."""
        return handling_signals(lambda signum, frame: run.note_signal(signum))

    async def drive(self, run: RunControl) -> RunResult:
        """Run it to its end with the progress display, the process's signals its stops."""
        from ..display import live_progress

        async with live_progress(run.progress, tty=self.progress_bar, sending=run.sending):
            return await owning_signals(run)


async def owning_signals(run: RunControl) -> RunResult:
    """Run *run* to its end as the process's owner.

    While the input is read (synchronously: the loop cannot run its handlers) a SIGINT/SIGTERM
    is only noted, in a plain handler, and the reading stops at its next chunk, nothing sent.
    Once sending, the loop's handlers take over: a first signal stops taking rows and lets
    requests in flight finish for up to the drain timeout, then results are written (exit 130 or
    143); a second one commits the ledger and leaves at once. Every handler is put back as it
    was when the run ends.
    """
    loop = asyncio.get_running_loop()

    def note(signum: int, frame: object) -> None:
        run.note_signal(signum)

    def on_signal(signum: int) -> None:
        if run.noted_signal is not None:
            # Second signal: leave at once. Every SQLite statement is atomic, so the ledger
            # is consistent as it stands; rows in flight stay SENT and resume as ambiguous.
            run.commit()
            os._exit(128 + signum)
        run.interrupt(signum)

    installed: list[int] = []
    with handling_signals(note):
        task = asyncio.ensure_future(run.run())
        sending = asyncio.ensure_future(run.sending.wait())
        try:
            await asyncio.wait({task, sending}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            for signum in (signal.SIGINT, signal.SIGTERM):
                with suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(signum, on_signal, signum)
                    installed.append(signum)
            if run.noted_signal is not None:  # noted as the sending began
                run.interrupt(run.noted_signal)
            with sending_gc():
                return await task
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


def prompting(confirm: Confirm) -> Confirm:
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

    def asking(plan: dict[str, Any]) -> bool:
        with handling_signals(interrupt):
            return confirm(plan)

    return asking


def _ask_on_the_terminal(plan: dict[str, Any]) -> bool:
    """On a terminal, say what is about to be cancelled and ask; anything but y/yes is no."""
    from ..display import confirmation_question

    try:
        answer = input(confirmation_question(plan))
    except EOFError:
        return False
    return answer.strip().lower() in {"y", "yes"}


ask = prompting(_ask_on_the_terminal)
"""The command's question before sending, on a terminal: a signal while asking sends nothing."""


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on uvloop when available (measurably faster on these machines)."""
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(factory())


def leave_quietly_on_a_closed_pipe() -> NoReturn:
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
