"""What an answer means, and when to try again.

- :func:`judge` turns one :class:`~bulk_cancel.model.Exchange` into a :class:`Verdict`.
- :class:`RetryPolicy` bounds retries in attempts *and* elapsed time, Retry-After first.

How fast to send (the rate gate, the in-flight limit) is :mod:`bulk_cancel.pacing`'s.
"""

from __future__ import annotations

import enum
import math
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final

from .model import Exchange, Outcome

#: 8x8's documented default limit per subaccount (requests per second).
DOCUMENTED_RATE_PER_S: Final = 1800.0
#: 8x8's documented limit per source IP (requests per second).
DOCUMENTED_IP_RATE_PER_S: Final = 3000.0

#: Statuses that say "try again later": the request was refused or the answer was lost.
_TRANSIENT_STATUSES: Final = frozenset({429, 500, 502, 503, 504})


class Stop(enum.Enum):
    """How far a fatal answer reaches."""

    RUN = "run"
    """The key, or the way to the API (a proxy), is refused: every further request would fail
    the same way."""
    SUBACCOUNT = "subaccount"
    """The subaccount is refused: its remaining rows would fail the same way."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one exchange means for its row."""

    outcome: Outcome | None
    """The final outcome, or ``None`` to try again."""
    ambiguous: bool = False
    """This attempt may have cancelled the message although its answer says otherwise or was lost."""
    retry_after_s: float | None = None
    throttled: bool = False
    """The API answered 429: the whole subaccount should slow down and pause."""
    stop: Stop | None = None
    detail: str | None = None


#: The verdict of each final outcome with nothing more to say, made once (verdicts are frozen).
_FINAL: Final = {outcome: Verdict(outcome) for outcome in Outcome}


def judge(exchange: Exchange, *, was_ambiguous: bool, now: float | None = None) -> Verdict:
    """Classify one exchange; *was_ambiguous* says an earlier attempt's answer was lost.

    By ``code`` when the body has one, by status otherwise (REFERENCE.md, "Answers").
    A "nothing to cancel" answer (200 with 0, or 404) after an ambiguous attempt is
    ``unconfirmed``: the earlier attempt may well have cancelled the message.
    """
    if exchange.blocked_by is not None:
        # The way to the API refused (a proxy, a certificate): nothing was sent, and no
        # request can get through until someone changes the set-up.
        return Verdict(None, stop=Stop.RUN, detail=exchange.blocked_by)
    if exchange.status is None:
        # No answer: a connection that was never made cannot have applied the DELETE.
        return Verdict(None, ambiguous=exchange.request_sent, detail=exchange.transport_error)
    status, code = exchange.status, exchange.code
    if status == 200:
        if not exchange.body_ok:
            return Verdict(None, ambiguous=True, detail="unreadable 200 body")
        if exchange.cancelled_count:
            return _FINAL[Outcome.CANCELLED]
        return _FINAL[Outcome.UNCONFIRMED if was_ambiguous else Outcome.NOT_CANCELLABLE]
    if code == 1001:
        return Verdict(Outcome.SUBACCOUNT_REJECTED, stop=Stop.SUBACCOUNT)
    if code == 1300 or (status == 404 and code is None):
        return _FINAL[Outcome.UNCONFIRMED if was_ambiguous else Outcome.NOT_FOUND]
    if code == 1000 or (status == 400 and code is None):
        return _FINAL[Outcome.INVALID_UMID]
    if status in (401, 403) or code in (1200, 1201):
        return Verdict(Outcome.AUTH_FAILED, stop=Stop.RUN)
    if status == 426:
        return Verdict(Outcome.FAILED, stop=Stop.RUN, detail="the host requires TLS 1.3")
    if status in _TRANSIENT_STATUSES:
        throttled = status == 429
        return Verdict(
            None,
            ambiguous=not throttled,
            throttled=throttled,
            retry_after_s=parse_retry_after(exchange.retry_after, now=now),
        )
    return Verdict(Outcome.FAILED, detail=f"unexpected HTTP {status}")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Bounded retries: at most *max_attempts* sends and *max_elapsed_s* seconds per row.

    Backoff is exponential with jitter (half fixed, half random, so retries of many rows spread
    out) unless the API said how long to wait with Retry-After, which always wins.
    """

    max_attempts: int = 6
    max_elapsed_s: float = 120.0
    initial_backoff_s: float = 0.25
    max_backoff_s: float = 20.0

    def backoff_s(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        """How long to wait after failed attempt number *attempt* (1-based)."""
        if retry_after_s is not None:
            return retry_after_s
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * 2 ** (attempt - 1))
        return float(ceiling / 2 + rng.random() * ceiling / 2)

    def gives_up(self, attempts: int, elapsed_s: float, next_wait_s: float) -> bool:
        """True when another attempt would exceed the attempt or time budget."""
        return attempts >= self.max_attempts or elapsed_s + next_wait_s > self.max_elapsed_s
