"""How fast to send: the rate gate and the in-flight limit.

- :class:`RateGate` paces one subaccount, and the per-IP cap: one queue whose head takes slots
  at :func:`pace`'s rate, a small burst per loop turn, within a one-second window that counts
  each request where its answer says it may have arrived; the rate steps down on 429 and grows
  back slowly, and the whole subaccount pauses for Retry-After.
- :class:`Flight` is one request a gate let out, until its answer lands.
- :class:`Concurrency` sizes concurrency from rate × latency (Little's law), up to a cap.

What an answer means and when to retry it is :mod:`bulk_cancel.policy`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Final

Clock = Callable[[], float]


#: How far behind its slots a busy loop may fall and still catch up, a burst per turn. Measured
#: at 1,800/s: 10 ms keeps a counting server at or under 1,800 in every second; 20 ms gained no
#: rate and let 1,802 through, with one 429 in two runs; catching up 50 ms, 1,878.
CATCH_UP_S: Final = 0.010
#: How far a gate's steady pace stays under its ceiling: room for the few milliseconds by which
#: answers usually come back later than the fastest, which the gate counts as late arrivals.
PACE_HEADROOM: Final = 0.003
#: Added to the one-second window the gate keeps: the fastest recent round trip is an estimate (it
#: may still fall) and the clock ticks, so a request's arrival may be a little later than assumed.
WINDOW_MARGIN_S: Final = 0.002
#: How long past its one-second window a request without an answer yet still counts as arriving
#: "now": the longest delay on the way out that the gate protects against before answers tell.
UNANSWERED_HOLD_S: Final = 0.1
#: How much later than a request sent after it a request may reach the server: they travel on
#: different connections, and a server reads its ready sockets in any order. Measured against the
#: simulator on a busy two-core machine: arrivals shift against sends by 7 ms at the 99th
#: percentile, 13 ms at worst.
REORDER_S: Final = 0.015
#: How long the gate remembers a round trip when finding the fastest: answers that stay slower
#: for longer (a slower route, a busier API) are the new normal, not lateness to pay for.
RTT_MEMORY_S: Final = 5.0
#: The shortest sleep worth asking the event loop for: uvloop (libuv) keeps timers in whole
#: milliseconds and runs a delay under half of one at the next turn, so shorter waits for a slot
#: spin the loop instead of sleeping. A slot due within this is taken now.
TICK_S: Final = 0.001


def pace(ceiling_per_s: float) -> tuple[float, int]:
    """The steady rate and burst of a gate under *ceiling_per_s*.

    Slots opening at *rate* with a *burst* let at most ``rate × span + burst`` through in a span
    (shared MEASURED.md), so the rate keeps one second's worth under the ceiling, less one, with
    :data:`PACE_HEADROOM` to spare: 99.4 % of the ceiling at 1,800/s.
    """
    burst = max(1, min(50, round(ceiling_per_s * 0.0025)))
    rate = (ceiling_per_s - 1 - burst) / (1 + PACE_HEADROOM)
    return max(1.0, rate), burst


class Flight:
    """One request let out by a :class:`RateGate`, until :meth:`RateGate.landed` hears of it."""

    __slots__ = ("counted", "placed", "queued", "sent")

    def __init__(self, sent: float) -> None:
        self.sent = sent
        self.counted = True  # in the gate's count of requests that may be arriving now
        self.placed = False  # counted where it arrived at the latest, or known never sent
        self.queued = True  # in the gate's list of flights in the order they left


class RateGate:
    """Paces requests for one subaccount (or, as the per-IP cap, for all); shared by its workers.

    - Slots open at :func:`pace`'s rate, :data:`PACE_HEADROOM` under the ceiling; callers are let
      out first come, first served.
    - A slot opens only while fewer than ``ceiling - 1`` requests fall in the last second (plus
      :data:`WINDOW_MARGIN_S`), each counted where its answer says it may have arrived; every
      flight :meth:`acquire` returns must be reported to :meth:`landed`. How the count works, and
      why: docs/ARCHITECTURE.md, "Rate gate".
    - One timer per burst: the caller at the head of the queue (the *leader*) sleeps until the
      next slot is due (:data:`TICK_S` at least), lets out the slots due within a burst's span
      from then (a burst at most), and hands the lead on. Slots a stall made overdue go out a
      burst per loop turn, for :data:`CATCH_UP_S` at most.
    - On 429 (:meth:`throttled`) the whole subaccount pauses for Retry-After and the rate halves,
      once per pause; it then grows back by a twentieth of the target per second.
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
        self._next = 0.0  # when the next slot opens
        self._paused_until = 0.0
        self._last_adjust = 0.0
        self.throttles = 0
        self._waiters: deque[asyncio.Future[Flight | None]] = deque()
        self._leader = False
        self._span = 1.0 + WINDOW_MARGIN_S
        self._window_limit = max(1, math.ceil(ceiling_per_s) - 1)
        self._flights: deque[Flight] = deque()  # in the order they left, until placed
        self._unanswered = 0  # flights still counted as arriving now
        # (when, flight): flights let out before one answered at ``when - REORDER_S``, to be
        # placed at ``when`` unless their own answer comes first.
        self._bounds: deque[tuple[float, Flight]] = deque()
        self._bound: deque[float] = deque()  # flights placed by a later flight's answer
        # When answers came (a flight arrived by ``answered - min_rtt``, with the *current* fastest
        # round trip: the first answers of a run are slow, and the estimate must not keep that).
        self._answered: deque[float] = deque()
        self._lost: deque[float] = deque()  # when a flight ended without an answer
        # Recent round trips as (answered at, rtt), the fastest first, each later one slower.
        self._fastest: deque[tuple[float, float]] = deque()

    def _in_window(self, now: float) -> tuple[int, float]:
        """How many requests count in the window ending *now*, and when the first leaves it."""
        start = now - self._span
        bounds = self._bounds
        while bounds and bounds[0][0] <= now:
            when, flight = bounds.popleft()
            if not flight.placed:
                self._place(flight)
                self._bound.append(when)
        flights = self._flights
        expired = start - UNANSWERED_HOLD_S
        while flights and (flights[0].placed or flights[0].sent <= expired):
            flight = flights.popleft()
            flight.queued = False
            self._uncount(flight)
        self._forget_fastest(now)  # the newest answer always stays: the window may hold it
        fastest = self._fastest
        leaves = math.inf
        if fastest:
            arrived_by = start + fastest[0][1]
            for answers in (self._answered, self._bound):
                while answers and answers[0] <= arrived_by:
                    answers.popleft()
                if answers:
                    leaves = min(leaves, answers[0] - arrived_by)
        lost = self._lost
        while lost and lost[0] <= start:
            lost.popleft()
        if lost:
            leaves = min(leaves, lost[0] - start)
        if flights:
            leaves = min(leaves, flights[0].sent - expired)
        counted = self._unanswered + len(self._answered) + len(self._bound) + len(lost)
        return counted, leaves

    def _place(self, flight: Flight) -> None:
        flight.placed = True
        self._uncount(flight)

    def _uncount(self, flight: Flight) -> None:
        """No longer count *flight* as arriving now."""
        if flight.counted:
            flight.counted = False
            self._unanswered -= 1

    def _take(self, now: float, catch_up_s: float = 0.0, ahead_s: float = 0.0) -> Flight | float:
        """Take a slot at *now* if one is open, else return how long until one may be.

        Slots up to *catch_up_s* (at least a burst) in the past are still open; older ones are
        gone: nobody asked for them, or the loop stalled that long. A slot due within *ahead_s*
        is open already; the wait returned is until the slot is due.
        """
        if now < self._paused_until:
            return self._paused_until - now
        interval = 1.0 / self.rate_per_s
        earliest = now - max(catch_up_s, (self.burst - 1) * interval)
        if self._next < earliest:
            self._next = earliest
        if self._next > now + ahead_s:
            return self._next - now
        limit = self._window_limit
        # Everything the window may hold, before it forgets what left it: only near the limit is
        # the exact count worth taking.
        if self._unanswered + len(self._answered) + len(self._bound) + len(self._lost) >= limit:
            counted, leaves = self._in_window(now)
            if counted >= limit:
                # Only time frees a place, unless round trips outlast the window (an answer can
                # then land before it): look again within 5 ms at the latest.
                return min(leaves, 0.005)
        flight = Flight(now)
        self._flights.append(flight)
        self._unanswered += 1
        self._next += interval
        return flight

    def landed(self, flight: Flight, *, answered: bool, sent: bool = True) -> None:
        """*flight*'s exchange ended: with an answer (it arrived by ``now - min_rtt``), without
        one (it may have arrived just now), or before the request was *sent* at all."""
        if flight.placed:
            return  # reported already, or placed by the answer of a request sent after it
        self._place(flight)
        if not sent:
            return
        now = self._clock()
        if not answered:
            self._lost.append(now)
            return
        rtt = now - flight.sent
        fastest = self._fastest
        while fastest and fastest[-1][1] >= rtt:
            fastest.pop()
        fastest.append((now, rtt))
        self._answered.append(now)
        if not flight.queued:
            return  # it, and all that left before it, are placed or no longer counted
        # Whatever left before it and is still unplaced arrived by now + REORDER_S at the latest.
        bound = now + REORDER_S
        flights = self._flights
        while flights:
            earlier = flights.popleft()
            earlier.queued = False
            if earlier is flight:
                break
            if not earlier.placed:
                self._bounds.append((bound, earlier))

    @property
    def min_rtt_s(self) -> float:
        """The fastest round trip of the last :data:`RTT_MEMORY_S` seconds (``inf``: none yet)."""
        fastest = self._fastest
        self._forget_fastest(self._clock())
        return fastest[0][1] if fastest else math.inf

    def _forget_fastest(self, now: float) -> None:
        """Drop round trips older than :data:`RTT_MEMORY_S`, but never the newest."""
        fastest = self._fastest
        while len(fastest) > 1 and fastest[0][0] <= now - RTT_MEMORY_S:
            fastest.popleft()

    def _recover(self, now: float) -> None:
        if self.rate_per_s < self.target_per_s and now - self._last_adjust >= 1.0:
            self.rate_per_s = min(self.target_per_s, self.rate_per_s + self._recover_step)
            self._last_adjust = now

    @property
    def paused(self) -> bool:
        """A pause (Retry-After) is on: :meth:`settle` would wait."""
        return self._paused_until > self._clock()

    async def settle(self) -> None:
        """Wait out a pause (Retry-After), if one is on: before taking a connection to send."""
        delay = self._paused_until - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)

    def try_take(self) -> Flight | None:
        """The next slot if nobody waits for one and it is open now, else ``None`` (then
        :meth:`queue`): what :meth:`acquire` returns at once, without a coroutine."""
        if self._leader:
            return None
        now = self._clock()
        self._recover(now)
        first = self._take(now, 0.0, TICK_S)
        return first if isinstance(first, Flight) else None

    async def acquire(self) -> Flight:
        """Wait for this subaccount's next slot; report the flight to :meth:`landed` when done."""
        return self.try_take() or await self.queue()

    async def queue(self) -> Flight:
        """Wait in line for the next slot, once :meth:`try_take` found none open."""
        if self._leader:  # others queue: wait behind them
            waiter: asyncio.Future[Flight | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                flight = await waiter
                if flight is not None:
                    return flight  # let out by the leader
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    let_out = waiter.result()
                    if let_out is None:
                        self._leader = False  # made leader, then cancelled: pass the lead on
                        self._hand_over()
                    else:
                        self.landed(let_out, answered=False, sent=False)  # let out, cancelled
                elif not waiter.done():
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                raise
        # This caller leads: wait for the next slot, let out whoever else is due within the
        # burst (a late wake-up catches up over several turns, not at once), hand over.
        self._leader = True
        try:
            while True:
                turn = self._turn(self._clock(), 1 + self._live_waiters())
                if not isinstance(turn, float):
                    break
                await asyncio.sleep(turn)
            taken, *others = turn
            waiters = self._waiters
            for other in others:
                while waiters[0].done():
                    waiters.popleft()
                waiters.popleft().set_result(other)
        finally:
            self._leader = False
            self._hand_over()
        return taken

    def _live_waiters(self) -> int:
        """How many callers wait behind the leader (a burst's worth at most)."""
        live = 0
        for waiter in self._waiters:
            if not waiter.done():
                live += 1
                if live >= self.burst - 1:
                    break
        return live

    def _turn(self, now: float, wanted: int) -> list[Flight] | float:
        """The slots one wake-up at *now* lets out, for *wanted* callers at most, else how long
        to sleep first (:data:`TICK_S` at least).

        The first slot is open if due within :data:`TICK_S`; with it go the slots due within a
        burst's span from now, a burst at most: one wake-up per burst, not one per slot.
        """
        self._recover(now)
        first = self._take(now, CATCH_UP_S, TICK_S)
        if not isinstance(first, Flight):
            return max(first, TICK_S)
        flights = [first]
        ahead_s = max(TICK_S, (self.burst - 1) / self.rate_per_s)
        most = min(wanted, self.burst)
        while len(flights) < most:
            other = self._take(now, CATCH_UP_S, ahead_s)
            if not isinstance(other, Flight):
                break
            flights.append(other)
        return flights

    def _hand_over(self) -> None:
        """Make the first caller still waiting the leader."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._leader = True  # taken: callers arriving meanwhile must queue behind it
                return

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
        # Workers waiting for the limit to reach them, by number: a growth wakes only those it
        # lets through, not every parked worker to find most still above the limit.
        self._parked: dict[int, asyncio.Future[None]] = {}

    async def admit(self, worker: int) -> None:
        """Return when worker number *worker* may send."""
        while worker >= self.limit:
            parked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._parked[worker] = parked
            try:
                await parked
            finally:
                if self._parked.get(worker) is parked:
                    del self._parked[worker]

    def open_all(self) -> None:
        """Let every worker through, for good: the lane is ending and parked workers must leave."""
        self.auto = False  # no later observation may shrink the limit under a parked worker
        self.limit = self.cap
        parked, self._parked = self._parked, {}
        for waiting in parked.values():
            if not waiting.done():
                waiting.set_result(None)

    def observe(self, latency_s: float, rate_per_s: float) -> None:
        """Feed one request's latency (an exponential moving average) and resize when automatic."""
        self.latency_s = (
            latency_s if not self.latency_s else 0.95 * self.latency_s + 0.05 * latency_s
        )
        if not self.auto:
            return
        wanted = min(self.cap, max(2, math.ceil(rate_per_s * self.latency_s * 1.5) + 2))
        if wanted > self.limit:
            grown, self.limit = range(self.limit, wanted), wanted
            parked = self._parked
            if parked:
                for worker in grown:
                    waiting = parked.pop(worker, None)
                    if waiting is not None and not waiting.done():
                        waiting.set_result(None)
        elif wanted < self.limit:
            self.limit = wanted
