"""The values every part of bulk-cancel passes around: targets, outcomes and results.

Nothing here does I/O. A failure for one umid is a value (an :class:`Outcome`), never an exception.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.StrEnum):
    """The final word on one (subaccount, target) row of the results."""

    CANCELLED = "cancelled"
    """200 with ``cancelledCount`` >= 1."""
    NOT_CANCELLABLE = "not_cancellable"
    """200 with ``cancelledCount`` 0: already sent or already cancelled."""
    NOT_FOUND = "not_found"
    """404 / code 1300."""
    INVALID_UMID = "invalid_umid"
    """Not a UUID (checked locally, no request sent), or 400 / code 1000."""
    SUBACCOUNT_REJECTED = "subaccount_rejected"
    """Code 1001, or a subaccount id that fails the documented pattern (checked locally)."""
    AUTH_FAILED = "auth_failed"
    """401 / code 1200, or 403 / code 1201: the key was refused. Stops the run."""
    UNCONFIRMED = "unconfirmed"
    """An earlier attempt's answer was lost and a retry found nothing left to cancel: we may have cancelled it."""
    FAILED = "failed"
    """Transient failures outlasted the retry budget, or an answer nobody documented."""
    NOT_ATTEMPTED = "not_attempted"
    """The run stopped before this row was sent."""


#: Outcomes that ``--resume`` and ``--retry-failed`` send again: nothing was applied, or we
#: cannot tell (a 401/403 refused the request; a fixed key may succeed). The ledger also re-sends
#: ``subaccount_rejected`` rows the API refused (code 1001 depends on the key).
RETRYABLE_OUTCOMES = frozenset({Outcome.FAILED, Outcome.NOT_ATTEMPTED, Outcome.AUTH_FAILED})


class Kind(enum.StrEnum):
    """What a row cancels: one message by umid, or a whole batch by batchId."""

    MESSAGE = "message"
    BATCH = "batch"


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One thing to cancel."""

    subaccount: str
    id: str
    kind: Kind = Kind.MESSAGE


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """What happened to one target: the columns of its results row, less the input's own."""

    outcome: Outcome
    http_status: int | None = None
    error_code: int | None = None
    error_message: str | None = None
    error_id: str | None = None
    cancelled_count: int | None = None
    attempts: int = 0
    finished_at: str | None = None


#: The results columns bulk-cancel writes, in order; the input's other columns follow them.
RESULT_COLUMNS: tuple[str, ...] = (
    "umid",
    "subaccount_id",
    "kind",
    "outcome",
    "http_status",
    "error_code",
    "error_message",
    "error_id",
    "cancelled_count",
    "attempts",
    "finished_at",
    "line",
)
