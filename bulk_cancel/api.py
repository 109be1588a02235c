"""The library: cancel the umids of a DataFrame, a Series, a list or a file; get a DataFrame back.

::

    import bulk_cancel
    results = bulk_cancel.cancel(df, subaccount="acme_hq")                # blocking
    results = await bulk_cancel.cancel_async(ids, subaccount="acme_hq")   # in a running loop

The command (:mod:`bulk_cancel.cli`) runs on the same :class:`~bulk_cancel.runner.Runner`; this
module is what a notebook needs on top of it:

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
import difflib
import os
import signal
import tempfile
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .errors import AuthError, ConfigError, ExitCode, Interrupted, NetworkError
from .model import RESULT_COLUMNS, Summary

if TYPE_CHECKING:
    import pandas as pd

    from .runner import RunResult
    from .settings import RunSettings

__all__ = ["INT_COLUMNS", "LIBRARY_SETTINGS", "cancel", "cancel_async"]

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
    from .runner import NextSteps, Runner

    flags = _flags(subaccount, settings)
    key = _api_key(api_key)
    with ExitStack() as stack:
        scratch: list[Path] = []

        def temporary() -> Path:
            if not scratch:
                scratch.append(Path(stack.enter_context(tempfile.TemporaryDirectory())))
            return scratch[0]

        input_path = _input_path(ids, temporary)
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
        runner = Runner(
            run_settings,
            key,
            ledger=ledger_file,
            write_files=write_files,
            next_steps=NextSteps(resume=resume_hint, commands=False),
        )
        result = await _run_cancellably(runner)
        frame = results_frame(runner.ledger_path)
        frame.attrs["summary"] = result.summary
        _raise_for(result, result.summary, frame)
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
    from .client import header_safe
    from .settings import API_KEY_ENV

    key = (given if given is not None else os.environ.get(API_KEY_ENV, "")).strip()
    where = "api_key" if given is not None else API_KEY_ENV
    if not key:
        raise ConfigError(
            f"no API key: pass api_key=, or set {API_KEY_ENV} (your key from the 8x8 Connect "
            "portal)"
        )
    if not header_safe(key):
        raise ConfigError(
            f"{where} holds a line break, control or non-ASCII character; give the key alone"
        )
    return key


# ---------------------------------------------------------------------- input


def _input_path(ids: Ids, temporary: Any) -> str:
    """A path the command's readers take: a file as given, anything else as a Parquet file."""
    if isinstance(ids, str | os.PathLike):
        return os.fspath(ids)
    import pandas as pd

    if isinstance(ids, pd.Series):
        frame = ids.to_frame(name=ids.name if isinstance(ids.name, str) else "umid")
    elif isinstance(ids, pd.DataFrame):
        frame = ids
    elif isinstance(ids, Iterable):
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
    return str(path)


# ---------------------------------------------------------------------- running


async def _run_cancellably(runner: Any) -> RunResult:
    """Run; if this task is cancelled, stop as a first Ctrl-C stops the command (requests in
    flight finish, the ledger is committed), then raise the cancellation again. A second
    cancellation stops at once: rows in flight stay sent, and a resume asks again."""
    task = asyncio.ensure_future(runner.run())
    try:
        result: RunResult = await asyncio.shield(task)
        return result
    except asyncio.CancelledError:
        if task.done():
            raise
        runner.interrupt(signal.SIGINT, detail="cancelled")
        try:
            await task
        except asyncio.CancelledError:
            task.cancel()
            raise
        except Interrupted:
            pass  # stopped before its first request: nothing was sent, no ledger kept
        raise


def _raise_for(result: RunResult, summary: Summary, frame: pd.DataFrame) -> None:
    """A stop that makes the rest of the run pointless raises; a row's failure does not."""
    from .pipeline import StopReason

    if result.read_error is not None:
        raise result.read_error
    message = result.message or f"stopped: {summary.stop_detail}"
    if summary.stop_reason == StopReason.AUTH:
        raise AuthError(message, results=frame, summary=summary)
    if summary.exit_code == ExitCode.NETWORK:
        raise NetworkError(message, results=frame, summary=summary)
