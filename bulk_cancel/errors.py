"""The exceptions bulk-cancel raises, and the exit codes the command maps them to.

Only conditions that make the whole run pointless raise; a failure for one umid is an
:class:`~bulk_cancel.model.Outcome`, never an exception.

::

    BulkCancelError                 exit 1 unless a subclass says otherwise
    ├── UsageError                  exit 2: bad flags, config, job file or input, or a no at the
    │                               prompt; nothing was sent
    │   ├── InputError              the input file cannot be read or has no usable column
    │   ├── ConfigError             a setting, config file or job file is wrong
    │   └── LedgerError             the ledger refuses (exists already, different input, locked),
    │                               or the job's lock is held by another run
    ├── Interrupted                 exit 130 / 143: SIGINT or SIGTERM before anything was sent
    │                               (reading the input, or at the confirmation prompt)
    └── RunStopped                  the library only: the run stopped itself; ``results`` (the
        │                           DataFrame, every row) and ``summary`` are attached
        ├── AuthError               exit 3: the API refused the key
        └── NetworkError            exit 4: the proxy or the certificate refused

For the command, a refused key or subaccount (exit 3) and a refused network path (exit 4: a
proxy that cannot be reached or refuses the credentials, a certificate that does not verify)
are not exceptions: the run stops itself, still writes one row per umid and its summary, and
the exit code comes from the summary's counts. The library (:mod:`bulk_cancel.api`) raises
:class:`AuthError` and :class:`NetworkError` for them, with the results attached; a refused
subaccount stays a value (``subaccount_rejected`` rows), as every other row's failure.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Documented exit codes of the ``bulk-cancel`` command."""

    OK = 0
    """Every row got an answer."""
    INCOMPLETE = 1
    """Some rows ``failed`` or were ``not_attempted``, or the run stopped itself."""
    USAGE = 2
    """The run could not start as asked (bad usage, config or input, a ledger or job lock that
    refuses, a "no" at the prompt): one line says what, nothing was sent."""
    REJECTED = 3
    """Stopped because the key or a subaccount was rejected."""
    NETWORK = 4
    """Stopped because the way to the API refused: the proxy cannot be reached or refuses (407),
    or the API's certificate does not verify. Nothing more was sent; rows without an answer are
    ``not_attempted`` and ``--resume`` finishes them once the network is fixed."""
    SIGINT = 130
    """Stopped by Ctrl-C (SIGINT): ``--resume`` finishes it, or, if nothing was sent yet, the
    same command again."""
    SIGTERM = 143
    """Stopped by SIGTERM; as for SIGINT."""


class BulkCancelError(Exception):
    """Base of every error bulk-cancel raises on purpose."""

    exit_code: ExitCode = ExitCode.INCOMPLETE


class UsageError(BulkCancelError):
    """The run cannot start as asked; the message says what to change."""

    exit_code = ExitCode.USAGE


class InputError(UsageError):
    """The input file cannot be used. The message names the file, the problem and the fix."""


class ConfigError(UsageError):
    """A flag, environment variable, config file or job file is wrong."""


class LedgerError(UsageError):
    """The run ledger refuses this run (exists already, other input, locked by another run)."""


class Interrupted(BulkCancelError):
    """A signal arrived before anything was sent (reading the input, or at the prompt)."""

    def __init__(self, message: str, *, sigterm: bool) -> None:
        super().__init__(message)
        self.exit_code = ExitCode.SIGTERM if sigterm else ExitCode.SIGINT


class RunStopped(BulkCancelError):
    """The library's run stopped itself; every row is accounted for in :attr:`results`.

    *results* is the results DataFrame (as :func:`bulk_cancel.cancel` would have returned it)
    and *summary* the run's :class:`~bulk_cancel.model.Summary`.
    """

    def __init__(self, message: str, *, results: Any, summary: Any) -> None:
        super().__init__(message)
        self.results = results
        self.summary = summary


class AuthError(RunStopped):
    """The API refused the key (401/403): nothing more was sent. A resume with the right key
    (``ledger=``, ``resume=True``) sends the rest."""

    exit_code = ExitCode.REJECTED


class NetworkError(RunStopped):
    """The way to the API refused (a proxy that cannot be reached or refuses, a certificate
    that does not verify): nothing more was sent; rows without an answer are
    ``not_attempted``."""

    exit_code = ExitCode.NETWORK
