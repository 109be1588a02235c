"""The values every part of bulk-cancel passes around: targets, exchanges, outcomes and results.

Also the :class:`Canceller` protocol the pipeline sends through: the client satisfies it, and a
scripted fake does in tests, so neither the policy nor the pipeline imports the HTTP client.

Nothing here does I/O. A failure for one umid is a value (an :class:`Outcome`), never an exception.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple, Protocol


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


class Target(NamedTuple):
    """One thing to cancel (immutable; a tuple, made once per row sent: a frozen dataclass cost
    three times as much to build)."""

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Exchange:
    """What one HTTP exchange produced, before any judgement."""

    status: int | None = None
    """HTTP status, or ``None`` when no answer arrived."""
    code: int | None = None
    message: str | None = None
    error_id: str | None = None
    cancelled_count: int | None = None
    body_ok: bool = True
    """False when a 200 body could not be read as ``{"cancelledCount": n}``."""
    retry_after: str | None = None
    """The raw ``Retry-After`` header, if any."""
    transport_error: str | None = None
    """The kind of transport failure, e.g. ``timeout`` or ``connection closed before the answer``."""
    request_sent: bool = True
    """False only when the request certainly never left (no connection could be made)."""
    blocked_by: str | None = None
    """Set when the way to the API itself refused (a proxy that cannot be reached or refuses
    us, a certificate that does not verify): no request can get through as things are set up.
    One line, naming the proxy with its password masked."""


#: Awaited by the client once per request, with the connection in hand, just before the request
#: is written: the pipeline's rate slot. ``None`` sends at once.
Ready = Callable[[], Awaitable[None]] | None


class Canceller(Protocol):
    """What the pipeline needs of a client; a scripted fake satisfies it in tests.

    *ready* is awaited once per request, as late as possible: once a connection is open, so the
    time spent opening one falls before the rate slot and requests leave when their slots say,
    not bunched behind a slow connect.
    """

    async def cancel(self, target: Target, ready: Ready = None) -> Exchange: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """The account of a whole run (every attempt on its ledger), as its summary JSON has it.

    :meth:`to_dict` writes the JSON's keys exactly (``report`` and ``merge`` read them back with
    :meth:`from_dict`); the optional keys (the commands, ``ingest_complete``) are left out when
    they are ``None``, as before. Keys this class does not name are kept in ``other``.
    """

    counts: Mapping[str, int]
    """Rows per :class:`Outcome` value, every outcome present."""
    cancelled_total: int = 0
    """Messages cancelled (a batch id counts its messages)."""
    input_rows: int = 0
    unique: int = 0
    duplicates: int = 0
    blank_rows: int = 0
    requests: int = 0
    retries: int = 0
    requests_this_run: int = 0
    retries_this_run: int = 0
    throttled_this_run: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    elapsed_s: float = 0.0
    achieved_rate_per_s: float = 0.0
    attempts: tuple[Mapping[str, Any], ...] = ()
    """Each attempt on the ledger: the first run, resumes, retries."""
    exit_code: int = 0
    stop_reason: str | None = None
    """A :class:`~bulk_cancel.pipeline.StopReason` value, or None if the run ended by itself."""
    stop_detail: str | None = None
    rejected_subaccounts: tuple[str, ...] = ()
    results: str | None = None
    """The results file; None when the library kept the results in a DataFrame only."""
    ledger: str | None = None
    input_checksum: str | None = None
    shard: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    resume_command: str | None = None
    retry_failed_command: str | None = None
    command_notes: tuple[str, ...] | None = None
    ingest_complete: bool | None = None
    other: Mapping[str, Any] = field(default_factory=dict)
    """Keys of a summary this class does not name (a merged summary's ``shards``…)."""

    @property
    def ok(self) -> bool:
        """Whether every row got its final answer (exit code 0)."""
        return self.exit_code == 0

    def to_dict(self) -> dict[str, Any]:
        """The summary JSON's object: the same keys, in the same order, as ever."""
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "other":
                continue
            if f.name in _OPTIONAL_KEYS and value is None:
                continue
            if isinstance(value, tuple):
                value = [dict(v) if isinstance(v, Mapping) else v for v in value]
            elif isinstance(value, Mapping):
                value = dict(value)
            data[f.name] = value
        data.update(self.other)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Summary:
        """A summary JSON's object (today's or an earlier version's) as a :class:`Summary`."""
        names = {f.name for f in fields(cls)} - {"other"}
        known: dict[str, Any] = {k: v for k, v in data.items() if k in names}
        for key in ("attempts", "rejected_subaccounts", "command_notes"):
            if known.get(key) is not None:
                known[key] = tuple(known[key])
        if "counts" not in known:
            known["counts"] = {}
        stop = known.get("stop_reason")
        if stop is not None:
            known["stop_reason"] = str(stop)
        other = {k: v for k, v in data.items() if k not in names}
        return cls(**known, other=other)


_OPTIONAL_KEYS = frozenset(
    {"resume_command", "retry_failed_command", "command_notes", "ingest_complete"}
)
