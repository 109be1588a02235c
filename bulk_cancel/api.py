"""The library: one run of settings to its end, for the command and for a notebook alike.

Two ways in, one core:

- :func:`run` takes resolved :class:`~bulk_cancel.settings.RunSettings` and an API key, and
  returns the typed :class:`~bulk_cancel.runner.RunResult` (its :class:`~bulk_cancel.model.Summary`
  included). What happens around the run in the process is its *owner*'s
  (:class:`Owner`): whether a stop comes from a signal or from the task's cancellation, whether
  to ask before sending, what progress to show. The command (``bulk-cancel run``,
  :mod:`bulk_cancel.cli`) is argument parsing, its own owner (signals, the prompt, the progress
  bar) and printing around :func:`run`; :func:`plan` is its dry run.
- :func:`cancel` / :func:`cancel_async` are :func:`run` with a DataFrame in and out::

    import bulk_cancel
    results = bulk_cancel.cancel(df, subaccount="acme_hq")                # blocking
    results = await bulk_cancel.cancel_async(ids, subaccount="acme_hq")   # in a running loop

What :func:`cancel_async` adds to the core, for a notebook:

- settings come from the keywords alone, by the command's names (``rate=900`` is ``--rate 900``)
  and checked by the same registry (:mod:`bulk_cancel.config`). A call is explicit: no
  ``BULK_CANCEL_*`` variable and no config file is read. Only ``EIGHTX8_API_KEY`` (when
  ``api_key`` is not given) and the proxy variables curl honours (``HTTPS_PROXY``, ``NO_PROXY``…)
  are taken from the environment, as the command takes them;
- a DataFrame or Series is written to a temporary Parquet file and read by the command's
  readers, so column detection, validation and the typed extra columns are the same. The frame
  is in memory already; the Parquet copy costs disk, not memory;
- the results come from the ledger as a DataFrame: the results columns, then the input's own;
- nothing of the process is touched: no signal handler, no exit, no logging configuration
  (events go to ``structlog.get_logger("bulk_cancel")`` as the caller configured it).
  Cancelling the task (or Ctrl-C in :func:`cancel`) stops sending as a first Ctrl-C stops the
  command: in-flight requests finish (10 s at most), the ledger is committed, and the
  cancellation is raised again; ``ledger=PATH`` with ``resume=True`` then finishes the run.

Exceptions: an unusable input, setting or ledger raises :class:`~bulk_cancel.errors.InputError`,
:class:`~bulk_cancel.errors.ConfigError` or :class:`~bulk_cancel.errors.LedgerError` before a
request is sent; a refused key raises :class:`~bulk_cancel.errors.AuthError`, a refused network
path :class:`~bulk_cancel.errors.NetworkError`, both with the results attached. A failure for one
umid is a value in the ``outcome`` column, never an exception.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import os
import signal
import tempfile
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, ExitStack, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import structlog

from .errors import (
    AuthError,
    BulkCancelError,
    ConfigError,
    ExitCode,
    Interrupted,
    NetworkError,
    UsageError,
)
from .model import RESULT_COLUMNS, Summary
from .normalize import header_safe
from .runner import LIBRARY_STEPS, NextSteps, Runner, RunResult

if TYPE_CHECKING:
    import pandas as pd

    from .pipeline import Progress
    from .settings import RunSettings

__all__ = [
    "INT_COLUMNS",
    "LIBRARY_SETTINGS",
    "Confirm",
    "NextSteps",
    "Owner",
    "RunControl",
    "RunResult",
    "TaskOwner",
    "cancel",
    "cancel_async",
    "checked_key",
    "plan",
    "run",
]

log = structlog.get_logger("bulk_cancel")

#: The command's settings a call takes as keywords (the rest describe a command line, a job
#: or a drop folder). ``ids``, ``api_key``, ``ledger``, ``resume`` and ``output`` are the
#: call's own.
LIBRARY_SETTINGS: Final = (
    "subaccount",
    "column",
    "subaccount_column",
    "sheet",
    "header_row",
    "encoding",
    "max_rows",
    "product",
    "region",
    "base_url",
    "rate",
    "ip_rate",
    "concurrency",
    "timeout",
    "max_attempts",
    "max_retry_time",
    "allow_insecure_http",
    "proxy",
    "ca_bundle",
    "failure_threshold",
    "failure_window",
    "split",
    "shard",
)

#: Results columns of whole numbers: nullable ``Int64`` in the DataFrame (blank stays ``<NA>``).
INT_COLUMNS: Final = ("http_status", "error_code", "cancelled_count", "attempts", "line")

_OWN: Final = ("api_key", "ledger", "resume", "output")

Ids = Any
"""A DataFrame, a Series, an iterable of strings, or a path (str or os.PathLike)."""


# ---------------------------------------------------------------------- the core

Confirm = Callable[[dict[str, Any]], bool]
"""Asked once, before anything is sent, with what is about to be (rows, subaccounts, where);
False sends nothing (:class:`~bulk_cancel.errors.UsageError`)."""


class RunControl(Protocol):
    """A run as its owner sees it (a :class:`~bulk_cancel.runner.Runner` is one): what it can
    watch, and how it can stop it."""

    @property
    def progress(self) -> Progress:
        """Live figures, updated in place while sending."""

    @property
    def sending(self) -> asyncio.Event:
        """Set once the input is read and confirmed, as the first requests are about to leave."""

    @property
    def noted_signal(self) -> int | None:
        """The first stop noted or acted on."""

    def note_signal(self, signum: int) -> None:
        """A stop while the input is read synchronously: reading ends at its next chunk and
        nothing is sent. Safe to call from a plain signal handler."""

    def interrupt(self, signum: int = signal.SIGINT, *, detail: str | None = None) -> None:
        """Stop as a first Ctrl-C does: requests in flight finish (the drain timeout at most),
        then the results are written and :meth:`run` returns. From the event loop's thread."""

    def commit(self) -> None:
        """Commit the ledger as it stands, before leaving at once."""

    async def run(self) -> RunResult:
        """Prepare, send and write the results."""


class Owner(Protocol):
    """Whoever owns the process around a run: where stops come from, whether to ask before
    sending, what progress to show. The library owns nothing (:class:`TaskOwner`); the command
    owns it all (:class:`bulk_cancel.cli.process.ProcessOwner`: signals, the collector, the
    ``[y/N]`` prompt, the progress bar)."""

    @property
    def confirm(self) -> Confirm | None:
        """Asks before anything is sent; None sends without asking."""

    def reading(self, run: RunControl) -> AbstractContextManager[object]:
        """Around a synchronous read (a dry run's :func:`plan`): stops go to
        :meth:`RunControl.note_signal`."""

    async def drive(self, run: RunControl) -> RunResult:
        """Await ``run.run()`` to its end, turning the owner's stops into
        :meth:`RunControl.interrupt`."""


class TaskOwner:
    """The library's owner: nothing of the process is touched (no signal handler, no exit, no
    prompt, no progress display). Cancelling the caller's task stops the run as a first Ctrl-C
    stops the command (requests in flight finish, the ledger is committed), then the
    cancellation is raised again; a second cancellation stops at once (rows in flight stay
    sent, and a resume asks again)."""

    confirm: Confirm | None = None

    def reading(self, run: RunControl) -> AbstractContextManager[object]:
        return nullcontext()

    async def drive(self, run: RunControl) -> RunResult:
        task = asyncio.ensure_future(run.run())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            run.interrupt(signal.SIGINT, detail="cancelled")
            try:
                await task
            except asyncio.CancelledError:
                task.cancel()
                raise
            except Interrupted:
                pass  # stopped before its first request: nothing was sent, no ledger kept
            raise


async def run(
    settings: RunSettings,
    api_key: str,
    *,
    owner: Owner | None = None,
    next_steps: NextSteps = LIBRARY_STEPS,
    ledger: Path | None = None,
    write_files: bool = True,
    input_name: str | None = None,
) -> RunResult:
    """Run *settings* to its end: read the input into the ledger, send, write the results.

    The one way a run is made, by the command and by :func:`cancel_async`. *owner* owns the
    process around it (:class:`TaskOwner` when not given). *next_steps* words what the messages
    and the summary tell the user to do next (the command: shell commands). *ledger* overrides
    the ledger's place (beside the output by default); *write_files* False keeps the results in
    the ledger only. *input_name* is how the summary and the ledger name the input (the
    library's ``<DataFrame>`` instead of the temporary file it reads).

    A failure for one row is a value in the ledger; a run that stops itself (a refused key, the
    failure threshold, a signal) returns, with its exit code in the summary. Raises
    :class:`~bulk_cancel.errors.UsageError` (bad input, settings or ledger, a no at the prompt)
    or :class:`~bulk_cancel.errors.Interrupted` before anything is sent.
    """
    for note in settings.warnings():
        log.warning("settings.warning", message=note)
    owner = owner or TaskOwner()
    runner = Runner(
        settings,
        api_key,
        confirm=owner.confirm,
        ledger=ledger,
        write_files=write_files,
        next_steps=next_steps,
        input_name=input_name,
    )
    return await owner.drive(runner)


def plan(settings: RunSettings, *, owner: Owner | None = None) -> dict[str, Any]:
    """A dry run: read, validate and de-duplicate the input of *settings*; send nothing.

    What would be sent, per subaccount, how long it would take, and which rows are refused
    locally (with examples). *owner* may stop the reading (:meth:`Owner.reading`).
    """
    runner = Runner(settings, "")
    with (owner or TaskOwner()).reading(runner):
        return runner.plan()


def checked_key(key: str, *, missing: str, unsafe: str) -> str:
    """*key* without surrounding blanks, or a :class:`~bulk_cancel.errors.ConfigError`: *missing*
    when it is empty, *unsafe* when it holds a character no HTTP header may carry (the client's
    own rule, checked before any file is written)."""
    key = key.strip()
    if not key:
        raise ConfigError(missing)
    if not header_safe(key):
        raise ConfigError(unsafe)
    return key


# ---------------------------------------------------------------------- DataFrames in and out


def cancel(
    ids: Ids,
    *,
    subaccount: str | None = None,
    api_key: str | None = None,
    ledger: str | os.PathLike[str] | None = None,
    resume: bool = False,
    output: str | os.PathLike[str] | None = None,
    **settings: Any,
) -> pd.DataFrame:
    """Cancel every umid in *ids* and return one results row per unique umid.

    Blocks until the run ends, on a new event loop in this thread (as :func:`asyncio.run`,
    which also turns a Ctrl-C into a clean stop, then raises KeyboardInterrupt). In a running
    loop (a notebook cell), ``await cancel_async(...)`` instead. The arguments are
    :func:`cancel_async`'s.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "bulk_cancel.cancel() blocks, and an event loop is already running in this thread "
            "(a notebook?): use `await bulk_cancel.cancel_async(...)` instead"
        )
    with asyncio.Runner() as runner:
        return runner.run(
            cancel_async(
                ids,
                subaccount=subaccount,
                api_key=api_key,
                ledger=ledger,
                resume=resume,
                output=output,
                **settings,
            )
        )


async def cancel_async(
    ids: Ids,
    *,
    subaccount: str | None = None,
    api_key: str | None = None,
    ledger: str | os.PathLike[str] | None = None,
    resume: bool = False,
    output: str | os.PathLike[str] | None = None,
    **settings: Any,
) -> pd.DataFrame:
    """Cancel every umid in *ids* and return one results row per unique umid.

    *ids*: a pandas DataFrame (the id and subaccount columns are found as the command finds
    them, or named by ``column=`` and ``subaccount_column=``; its other columns come back in the
    results), a Series, any iterable of strings, or the path of a file in any format the command
    reads. *subaccount* is the subaccount of rows without their own.

    *api_key* defaults to ``EIGHTX8_API_KEY``. *ledger*: a path makes the run durable, and
    ``resume=True`` finishes it after a stop; without it the ledger is a temporary file.
    *output*: also write the results file (``.csv``, ``.parquet``, ``.xlsx``), its summary JSON
    and (without *ledger*) its ledger beside it, as ``bulk-cancel run --output`` does. Other
    keywords are the command's settings by name (:data:`LIBRARY_SETTINGS`): ``base_url``,
    ``rate``, ``ip_rate``, ``concurrency``, ``proxy``, ``max_attempts``…; an unknown one is a
    TypeError.

    Returns a DataFrame of the results columns, then the input's own columns; whole-number
    columns are ``Int64``. ``results.attrs["summary"]`` is the run's :class:`Summary`.
    """
    flags = _flags(subaccount, settings)
    key = _api_key(api_key)
    with ExitStack() as stack:
        scratch: list[Path] = []

        def temporary() -> Path:
            if not scratch:
                scratch.append(Path(stack.enter_context(tempfile.TemporaryDirectory())))
            return scratch[0]

        input_path, input_name = _input_path(ids, temporary)
        ledger_file = None if ledger is None else Path(ledger)
        if output is None:
            out, write_files = temporary() / "results.parquet", False
            if ledger_file is None:
                ledger_file = out.with_name("results.ledger.sqlite")
        else:
            out, write_files = Path(output), True
        run_settings = _run_settings(flags, input_path, out, resume=resume)
        if ledger is None and output is None:
            resume_hint = (
                "call again with ledger=PATH to keep a ledger that resume=True finishes; "
                "rows without an answer are not_attempted in the results"
            )
        else:
            kept = ledger_file if ledger_file is not None else f"the ledger beside {out}"
            resume_hint = f"call again with resume=True ({kept})"
        try:
            result = await run(
                run_settings,
                key,
                ledger=ledger_file,
                write_files=write_files,
                next_steps=NextSteps(resume=resume_hint, commands=False),
                input_name=input_name,
            )
        except UsageError as exc:
            renamed = _renamed(exc, input_path, input_name)
            if renamed is exc:
                raise
            raise renamed from None
        summary = result.summary
        if ledger is None and output is None:  # a temporary ledger, gone when this returns
            summary = dataclasses.replace(summary, ledger=None)
        assert result.ledger is not None  # every run that returns has its ledger
        frame = results_frame(result.ledger)
        frame.attrs["summary"] = summary
        _raise_for(result, summary, frame, lambda e: _renamed(e, input_path, input_name))
        return frame


def results_frame(ledger: Path) -> pd.DataFrame:
    """The results of the run in *ledger* as a DataFrame, in input order: the results columns
    (:data:`~bulk_cancel.model.RESULT_COLUMNS`), then the input's own columns."""
    import pandas as pd

    from .ledger import Ledger

    book = Ledger.open(ledger)
    try:
        extra = list(book.meta().get("extra_columns", []))
        columns = [*RESULT_COLUMNS, *extra]
        chunks = [pd.DataFrame(rows, columns=columns) for rows in book.iter_results()]
    finally:
        book.close()
    frame = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=columns)
    for name in INT_COLUMNS:
        frame[name] = frame[name].astype("Int64")
    if extra:
        frame[extra] = frame[extra].infer_objects()
    return frame


# ---------------------------------------------------------------------- settings


def _flags(subaccount: str | None, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The keywords as the flag layer of :func:`bulk_cancel.config.resolve`, each checked by
    its registry entry; an unknown name is a TypeError, as for any function."""
    from .config import SETTINGS

    by_name = {s.name: s for s in SETTINGS if s.name in LIBRARY_SETTINGS}
    given = {"subaccount": subaccount, **settings}
    flags: dict[str, Any] = {}
    for name, value in given.items():
        entry = by_name.get(name)
        if entry is None:
            close = difflib.get_close_matches(name, [*LIBRARY_SETTINGS, *_OWN], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"bulk_cancel.cancel() got an unexpected keyword {name!r}{hint}")
        if value is None:
            continue
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        try:
            flags[name] = entry.check(value)
        except ValueError as exc:
            raise ConfigError(f"{name}={value!r}: {exc}") from None
    return flags


def _run_settings(
    flags: dict[str, Any], input_path: str, output: Path, *, resume: bool
) -> RunSettings:
    from . import config

    # Only what curl would read for the proxy: no BULK_CANCEL_* variable, no config file.
    environ = {k: v for k, v in os.environ.items() if not k.startswith(config.ENV_PREFIX)}
    resolved = config.resolve(flags, environ, None, None)
    return config.to_run_settings(resolved, input=input_path, output=output, resume=resume)


def _api_key(given: str | None) -> str:
    from .settings import API_KEY_ENV

    where = "api_key" if given is not None else API_KEY_ENV
    return checked_key(
        given if given is not None else os.environ.get(API_KEY_ENV, ""),
        missing=f"no API key: pass api_key=, or set {API_KEY_ENV} (your key from the 8x8 "
        "Connect portal)",
        unsafe=f"{where} holds a line break, control or non-ASCII character; give the key alone",
    )


# ---------------------------------------------------------------------- input


def _input_path(ids: Ids, temporary: Any) -> tuple[str, str | None]:
    """A path the command's readers take: a file as given, anything else as a Parquet file;
    and, for such a file, what the caller gave (``<DataFrame>``, ``<Series>``, ``<iterable>``),
    the name the summary, the ledger and the errors use instead of a temporary path."""
    if isinstance(ids, str | os.PathLike):
        return os.fspath(ids), None
    import pandas as pd

    if isinstance(ids, pd.Series):
        frame = ids.to_frame(name=ids.name if isinstance(ids.name, str) else "umid")
        name = "<Series>"
    elif isinstance(ids, pd.DataFrame):
        frame, name = ids, "<DataFrame>"
    elif isinstance(ids, Iterable):
        name = "<iterable>"
        values = list(ids)
        wrong = next((v for v in values if not isinstance(v, str)), None)
        if wrong is not None:
            raise TypeError(
                f"ids: an iterable of strings, a Series, a DataFrame or a path; got a "
                f"{type(wrong).__name__} ({wrong!r:.40}) among the values"
            )
        frame = pd.DataFrame({"umid": pd.Series(values, dtype=object)})
    else:
        raise TypeError(
            f"ids: an iterable of strings, a Series, a DataFrame or a path; got a "
            f"{type(ids).__name__}"
        )
    path: Path = temporary() / "input.parquet"
    frame = frame.reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    frame.to_parquet(path, index=False)
    return str(path), name


# ---------------------------------------------------------------------- errors


def _renamed(error: BulkCancelError, path: str, name: str | None) -> BulkCancelError:
    """*error*, its message naming the caller's *name* for the temporary file at *path*."""
    text = str(error)
    if name is None or path not in text or not isinstance(error, UsageError):
        return error
    return type(error)(text.replace(path, name))


def _raise_for(
    result: RunResult,
    summary: Summary,
    frame: pd.DataFrame,
    renamed: Callable[[BulkCancelError], BulkCancelError],
) -> None:
    """A stop that makes the rest of the run pointless raises; a row's failure does not."""
    from .pipeline import StopReason

    if result.read_error is not None:
        raise renamed(result.read_error)
    message = result.message or f"stopped: {summary.stop_detail}"
    if summary.stop_reason == StopReason.AUTH:
        raise AuthError(message, results=frame, summary=summary)
    if summary.exit_code == ExitCode.NETWORK:
        raise NetworkError(message, results=frame, summary=summary)
