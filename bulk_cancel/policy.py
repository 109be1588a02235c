"""What an answer means, when to try again, and how fast to send.

- :func:`judge` turns one :class:`~bulk_cancel.client.Exchange` into a :class:`Verdict`.
- :class:`RetryPolicy` bounds retries in attempts *and* elapsed time, Retry-After first.
- :class:`RateGate` paces one subaccount: a token bucket whose rate steps down on 429 and grows
  back slowly, and which pauses the whole subaccount for Retry-After.
- :class:`InFlightLimit` sizes concurrency from rate × latency (Little's law), up to a cap.
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final

from .client import Exchange
from .model import Outcome

#: 8x8's documented default limit per subaccount (requests per second).
DOCUMENTED_RATE_PER_S: Final = 1800.0
#: 8x8's documented limit per source IP (requests per second).
DOCUMENTED_IP_RATE_PER_S: Final = 3000.0

#: Statuses that say "try again later": the request was refused or the answer was lost.
_TRANSIENT_STATUSES: Final = frozenset({429, 500, 502, 503, 504})


class Stop(enum.Enum):
    """How far a fatal answer reaches."""

    RUN = "run"
    """The key is refused: every further request would fail the same way."""
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


def judge(exchange: Exchange, *, was_ambiguous: bool, now: float | None = None) -> Verdict:
    """Classify one exchange; *was_ambiguous* says an earlier attempt's answer was lost.

    By ``code`` when the body has one, by status otherwise (REFERENCE.md, "Answers").
    A "nothing to cancel" answer (200 with 0, or 404) after an ambiguous attempt is
    ``unconfirmed``: the earlier attempt may well have cancelled the message.
    """
    ambiguous_now = exchange.resent
    if exchange.status is None:
        # No answer: a connection that was never made cannot have applied the DELETE.
        return Verdict(
            None,
            ambiguous=exchange.request_sent or ambiguous_now,
            detail=exchange.transport_error,
        )
    status, code = exchange.status, exchange.code
    earlier = was_ambiguous or ambiguous_now
    if status == 200:
        if not exchange.body_ok:
            return Verdict(None, ambiguous=True, detail="unreadable 200 body")
        if exchange.cancelled_count:
            return Verdict(Outcome.CANCELLED)
        return Verdict(Outcome.UNCONFIRMED if earlier else Outcome.NOT_CANCELLABLE)
    if code == 1001:
        return Verdict(Outcome.SUBACCOUNT_REJECTED, stop=Stop.SUBACCOUNT)
    if code == 1300 or (status == 404 and code is None):
        return Verdict(Outcome.UNCONFIRMED if earlier else Outcome.NOT_FOUND)
    if code == 1000 or (status == 400 and code is None):
        return Verdict(Outcome.INVALID_UMID)
    if status in (401, 403) or code in (1200, 1201):
        return Verdict(Outcome.AUTH_FAILED, stop=Stop.RUN)
    if status == 426:
        return Verdict(Outcome.FAILED, stop=Stop.RUN, detail="the host requires TLS 1.3")
    if status in _TRANSIENT_STATUSES:
        throttled = status == 429
        return Verdict(
            None,
            ambiguous=ambiguous_now or not throttled,
            throttled=throttled,
            retry_after_s=parse_retry_after(exchange.retry_after, now=now),
        )
    return Verdict(Outcome.FAILED, ambiguous=ambiguous_now, detail=f"unexpected HTTP {status}")


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


Clock = Callable[[], float]


def pace(ceiling_per_s: float) -> tuple[float, int]:
    """The steady rate and burst that keep every one-second window at or under *ceiling_per_s*.

    A bucket of *burst* tokens refilled at *rate* lets ``rate + burst`` through in the worst
    second (shared MEASURED.md), so the rate is the ceiling less the burst, less a margin for
    arrival jitter: requests sent one second apart can arrive a few milliseconds closer together,
    and the server counts arrivals. Half a per cent each way keeps 99 % of the ceiling.
    """
    burst = max(1, min(50, round(ceiling_per_s * 0.005)))
    margin = ceiling_per_s * 0.005 + 1.0
    return max(1.0, ceiling_per_s - burst - margin), burst


class RateGate:
    """Paces requests for one subaccount; shared by all of its workers.

    A token bucket with a small burst, scheduled by reservation (the "virtual scheduling" form of
    GCRA, ITU-T I.371): each caller books the next free slot and sleeps until it. In any window
    of one second at most ``rate + burst`` requests pass, so the gate runs at :func:`pace` to
    promise "never more than *ceiling* in any second" (see shared MEASURED.md: aiolimiter's
    bucket starts full and lets a whole second's worth through at once).

    On 429 the whole subaccount pauses for Retry-After and the rate halves (once per pause, not
    once per 429: many in-flight requests are refused together); it then grows back by a twentieth
    of the target per second. Booked slots made before a 429 are re-booked.
    """

    def __init__(
        self,
        ceiling_per_s: float,
        *,
        clock: Clock = time.monotonic,
        floor_per_s: float = 1.0,
        recover_per_s: float | None = None,
    ) -> None:
        rate, self.burst = pace(ceiling_per_s)
        self.target_per_s = max(min(floor_per_s, ceiling_per_s), rate)
        self.rate_per_s = self.target_per_s
        self._floor = min(floor_per_s, self.target_per_s)
        self._recover_step = recover_per_s or max(1.0, self.target_per_s / 20)
        self._clock = clock
        self._tat = 0.0  # theoretical arrival time of the next request
        self._paused_until = 0.0
        self._last_adjust = 0.0
        self._epoch = 0
        self.throttles = 0
        self._window_limit = max(1, math.floor(self.target_per_s + self.burst))
        self._released: deque[float] = deque()

    def _book(self, now: float) -> float:
        interval = 1.0 / self.rate_per_s
        tolerance = (self.burst - 1) * interval
        start = max(now, self._tat - tolerance, self._paused_until)
        self._tat = max(self._tat, start) + interval
        return start

    def _recover(self, now: float) -> None:
        if self.rate_per_s < self.target_per_s and now - self._last_adjust >= 1.0:
            self.rate_per_s = min(self.target_per_s, self.rate_per_s + self._recover_step)
            self._last_adjust = now

    async def acquire(self) -> None:
        """Wait for this subaccount's next slot."""
        while True:
            now = self._clock()
            self._recover(now)
            epoch = self._epoch
            start = self._book(now)
            if start > now:
                await asyncio.sleep(start - now)
            if epoch != self._epoch:
                continue  # a 429 arrived while we slept: our slot was booked at the old pace
            now = await self._window_room()
            if epoch == self._epoch:
                self._released.append(now)
                return

    async def _window_room(self) -> float:
        """Wait until fewer than ``rate + burst`` callers were let through in the last second.

        The bucket keeps the *booked* slots under that bound, but a caller can wake after its
        slot: when the event loop was busy for a few milliseconds, every caller due meanwhile
        wakes at once, together with the next ones on time, and the server, counting arrivals,
        sees them bunched (measured at 1,800/s with 50 ms stalls: 1,871 callers let through in
        one second; 1,806 without stalls, from timer lateness alone; 1,791 with this log).
        This log of real release times holds the bound where it matters; it costs a deque
        append and, once a second's worth has passed, a popleft per caller.
        """
        log = self._released
        while True:
            now = self._clock()
            while log and log[0] <= now - 1.0:
                log.popleft()
            if len(log) < self._window_limit:
                return now
            await asyncio.sleep(log[0] + 1.0 - now)

    def throttled(self, retry_after_s: float | None) -> None:
        """The API answered 429: pause everyone for Retry-After and step the rate down."""
        now = self._clock()
        self.throttles += 1
        if now < self._paused_until:
            return  # already reacting to this burst of refusals
        pause = 1.0 if retry_after_s is None else min(retry_after_s, 60.0)
        self._paused_until = now + pause
        self.rate_per_s = max(self._floor, self.rate_per_s / 2)
        self._last_adjust = self._paused_until
        self._tat = self._paused_until
        self._epoch += 1


class Concurrency:
    """How many workers may have a request in flight: fixed, or sized from rate × latency.

    Workers are numbered; worker *i* works only while ``i < limit``. Sizing follows Little's law
    (in flight = rate × latency) with headroom: enough to keep the rate at the latency we observe,
    and no more, since a large pool only adds contention (shared MEASURED.md: 256 in flight is
    slower than 64 on two cores). Checking costs one comparison per request.
    """

    def __init__(self, cap: int, *, auto: bool, initial: int = 8) -> None:
        self.cap = cap
        self.auto = auto
        self.limit = min(cap, initial) if auto else cap
        self.latency_s = 0.0
        self._grown = asyncio.Event()

    async def admit(self, worker: int) -> None:
        """Return when worker number *worker* may send."""
        while worker >= self.limit:
            await self._grown.wait()

    def open_all(self) -> None:
        """Let every worker through, for good: the lane is ending and parked workers must leave."""
        self.auto = False  # no later observation may shrink the limit under a parked worker
        self.limit = self.cap
        grown, self._grown = self._grown, asyncio.Event()
        grown.set()

    def observe(self, latency_s: float, rate_per_s: float) -> None:
        """Feed one request's latency (an exponential moving average) and resize when automatic."""
        self.latency_s = (
            latency_s if not self.latency_s else 0.95 * self.latency_s + 0.05 * latency_s
        )
        if not self.auto:
            return
        wanted = min(self.cap, max(2, math.ceil(rate_per_s * self.latency_s * 1.5) + 2))
        if wanted > self.limit:
            self.limit = wanted
            grown, self._grown = self._grown, asyncio.Event()
            grown.set()
        elif wanted < self.limit:
            self.limit = wanted
