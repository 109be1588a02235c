"""Moves rows from the ledger to the API and their outcomes back, within the rate limits.

One *lane* per subaccount: its workers take rows from a small buffer, and the worker that finds
it empty takes the next batch from the ledger, marks it ``SENT`` and commits *before* any of it
is sent, so a kill -9 never loses a request that left. Workers take the lane's rate slot from
:class:`~bulk_cancel.pacing.RateGate` (and the global per-IP cap) once their connection is open,
send, judge the answer, retry within the :class:`~bulk_cancel.policy.RetryPolicy`, and record the
final result. A failure for one row is a value; only the stop conditions
(key refused, subaccount refused, failure threshold, an interrupt) end lanes early.

The pipeline depends on the :class:`~bulk_cancel.model.Canceller` protocol only, so it is
tested with a scripted fake as well as against the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from .ledger import Ledger, PlainResult, WorkItem
from .model import Canceller, Exchange, Outcome, Result, Target
from .pacing import Concurrency, Flight, RateGate
from .policy import RetryPolicy, Stop, Verdict, judge

#: Most subaccount lanes running at once (a file can name thousands of subaccounts).
MAX_ACTIVE_LANES: Final = 16
#: How often buffered outcomes are committed even when no new rows are being taken.
_FLUSH_INTERVAL_S: Final = 0.1
#: How long before its first rate slot could come a worker starts (and opens its connection).
_WORKER_LEAD_S: Final = 0.02
#: Workers start in waves this far apart (or in at most :data:`_MAX_WAVES`), one timer per wave
#: rather than one per worker.
_WAVE_S: Final = 0.005
_MAX_WAVES: Final = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineSettings:
    """How fast and how persistently to send."""

    rate_per_s: float = 1500.0
    """Most requests per second per subaccount, never exceeded in any one-second window."""
    ip_rate_per_s: float = 3000.0
    """Most requests per second over all subaccounts (8x8's per-IP limit)."""
    concurrency: int | None = None
    """Most requests in flight per lane; ``None`` sizes it from rate × latency (up to 512)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    failure_threshold: float = 0.5
    """Stop when more than this share of the first *failure_window* answered rows ``failed``."""
    failure_window: int = 1000
    drain_timeout_s: float = 10.0
    """On an interrupt, how long in-flight requests may take to finish."""


class StopReason(enum.StrEnum):
    """Why a run ended early; each is a string, so it serialises into the summary as it is."""

    AUTH = "auth_failed"
    SUBACCOUNT = "subaccount_rejected"
    THRESHOLD = "failure_threshold"
    INTERRUPTED = "interrupted"
    FATAL = "fatal_answer"
    NETWORK = "network_refused"
    """A proxy that cannot be reached or refuses us, or a certificate that does not verify."""
    INPUT = "input_error"
    """A row further into the input could not be read (rows are sent while it is read)."""


@dataclass(slots=True)
class Progress:
    """Live figures, read by progress displays; updated in place by the pipeline."""

    total: int = 0
    done: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    rate_per_s: float = 0.0
    target_rate_per_s: float = 0.0
    in_flight_limit: int = 0
    started: float = field(default_factory=time.monotonic)
    read: int = 0
    """Input rows read into the ledger so far (all runs of this ledger)."""
    read_total: int | None = None
    """Input rows in all: counted or estimated before reading, exact once reading ends."""
    read_total_exact: bool = False
    reading: bool = False
    """The input is still being read: ``total`` may grow."""


@dataclass(slots=True)
class RunReport:
    """How the sending phase ended."""

    stop_reason: StopReason | None = None
    stop_detail: str | None = None
    rejected_subaccounts: list[str] = field(default_factory=list)


class Feed:
    """Rows arriving in the ledger while the pipeline runs: the input is still being read.

    The reader adds a slice of rows, then calls :meth:`publish` with the subaccounts it saw
    for the first time; lanes whose rows ran out wait for the next publish instead of ending,
    and end once :meth:`close` says no more rows will come.
    """

    def __init__(self, *, lanes_hint: int = MAX_ACTIVE_LANES) -> None:
        self.lanes_hint = lanes_hint
        """How many subaccounts the input may name (1 when every row has the default one)."""
        self.subaccounts: list[str] = []
        """Subaccounts in the order they first appeared."""
        self.generation = 0
        """Counts publishes: a lane that found nothing at one generation need not look again."""
        self.done = False
        self._changed = asyncio.Event()

    def publish(self, new_subaccounts: Iterable[str] = ()) -> None:
        """Rows were committed: wake whoever waits for rows."""
        self.subaccounts.extend(new_subaccounts)
        self.generation += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        """No more rows will come (the input is read, or reading stopped)."""
        self.done = True
        self.publish()

    async def wait(self) -> None:
        """Until the next :meth:`publish` or :meth:`close`."""
        if not self.done:
            await self._changed.wait()


class _Slot:
    """One worker's *ready* for the client: its subaccount's rate slot, then the per-IP cap's.

    The client awaits it with the connection open, just before writing the request; it notes
    when it let the request go, so the latency that sizes concurrency excludes the wait, and
    keeps each gate's :class:`~bulk_cancel.pacing.Flight` until the answer lands.
    """

    __slots__ = ("_clock", "_flight", "_gate", "_ip", "_ip_flight", "at")

    def __init__(self, gate: RateGate, ip: RateGate | None, clock: Callable[[], float]) -> None:
        self._gate = gate
        self._ip = ip
        self._clock = clock
        self.at = 0.0
        # Taken for the request about to leave, until its answer lands.
        self._flight: Flight | None = None
        self._ip_flight: Flight | None = None

    async def __call__(self) -> None:
        gate, ip = self._gate, self._ip
        # Most slots are open when asked for: taken without a coroutine each (try_take).
        flight = self._flight = gate.try_take() or await gate.queue()
        if ip is not None:
            ip_flight = self._ip_flight = ip.try_take() or await ip.queue()
            self.at = flight.sent = ip_flight.sent = self._clock()
        else:
            self.at = flight.sent = self._clock()

    def land(self, exchange: Exchange) -> None:
        """Tell the gates how the request they let out ended (if they let one out)."""
        answered, sent = exchange.status is not None, exchange.request_sent
        if self._flight is not None:
            self._gate.landed(self._flight, answered=answered, sent=sent)
            self._flight = None
        if self._ip_flight is not None:
            assert self._ip is not None
            self._ip.landed(self._ip_flight, answered=answered, sent=sent)
            self._ip_flight = None


class _Stamp:
    """The current UTC time as ISO 8601 to the millisecond, formatted at most once a millisecond.

    The date and time up to the second are formatted once a second; only the milliseconds
    change in between (at 3,000 requests a second, nearly every call is a new millisecond).
    """

    __slots__ = ("_ms", "_now", "_second", "_seconds", "_text")

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._ms = -1
        self._second = -1
        self._seconds = ""
        self._text = ""

    def __call__(self) -> str:
        ms = int(self._now() * 1000)
        if ms != self._ms:
            self._ms = ms
            second, milli = divmod(ms, 1000)
            if second != self._second:
                self._second = second
                text = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")
                self._seconds = text.removesuffix("+00:00")
            self._text = f"{self._seconds}.{milli:03d}+00:00"
        return self._text


_now_iso = _Stamp()


class _Recorder:
    """Buffers final results and commits them with each batch taken for sending, and at the
    latest 100 ms after the last commit."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._buffer: list[tuple[int, Result, bool]] = []
        self._plain: list[PlainResult] = []
        self._flushed_at = time.monotonic()

    def add(self, seq: int, result: Result, ambiguous: bool) -> None:
        self._buffer.append((seq, result, ambiguous))

    def add_plain(self, row: PlainResult) -> None:
        """A result with no error and no doubt, as :meth:`Ledger.record_plain` stores it."""
        self._plain.append(row)

    def flush(self) -> None:
        if self._buffer:
            self.ledger.record(self._buffer)
            self._buffer = []
        if self._plain:
            self.ledger.record_plain(self._plain)
            self._plain = []
        self.ledger.commit()
        self._flushed_at = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # A lane taking its next batch commits too: no commit of our own until 100 ms
            # after the last, whoever made it.
            wait = self._flushed_at + _FLUSH_INTERVAL_S - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                continue
            self.flush()


class Pipeline:
    """Sends every row the ledger still has to send. Use :meth:`run` once."""

    def __init__(
        self,
        ledger: Ledger,
        canceller: Canceller,
        settings: PipelineSettings,
        *,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        feed: Feed | None = None,
    ) -> None:
        self._ledger = ledger
        self._feed = feed
        self._canceller = canceller
        self._settings = settings
        self.progress = progress or Progress()
        self._clock = clock
        self._rng = rng or random.Random()
        self._recorder = _Recorder(ledger)
        self._stopping = asyncio.Event()  # stop taking new rows (all lanes)
        self.report = RunReport()
        self._first_answers = 0
        self._first_failures = 0
        self._last_failure: str | None = None
        self._gates: dict[str, RateGate] = {}
        # The per-IP cap is a gate of its own, shared by every lane and counting arrivals the
        # same way; nothing calls its throttled(): a 429 slows the subaccount that drew it.
        self._ip_gate = RateGate(settings.ip_rate_per_s)

    # ------------------------------------------------------------------ control

    def stop(self, reason: StopReason, detail: str | None = None) -> None:
        """Stop taking new rows; in-flight requests finish; the rest stay ``not_attempted``."""
        if self.report.stop_reason is None:
            self.report.stop_reason = reason
            self.report.stop_detail = detail
        self._stopping.set()
        if self._feed is not None:
            self._feed.publish()  # lanes waiting for rows look again, and see the stop

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # ------------------------------------------------------------------ running

    async def run(self) -> RunReport:
        """Send everything still to send (with a feed: also what arrives until it closes)."""
        lanes = self._ledger.lanes()
        feed = self._feed
        if feed is None:
            self.progress.total = sum(n for _, n in lanes)
        self.progress.target_rate_per_s = self._settings.rate_per_s
        # The per-IP cap costs a second limiter per request: skip it when the lanes cannot
        # exceed it anyway (one subaccount at a rate under the cap, the common case).
        expected_lanes = max(len(lanes), 0 if feed is None else feed.lanes_hint)
        self._ip_limited = self._settings.ip_rate_per_s < self._settings.rate_per_s * min(
            expected_lanes, MAX_ACTIVE_LANES
        )
        window = self._settings.failure_window
        if feed is None or feed.done:
            window = min(window, max(1, self.progress.total))
        self._window = window
        flusher_stop = asyncio.Event()
        flusher = asyncio.create_task(self._recorder.run(flusher_stop))
        try:
            slots = asyncio.Semaphore(MAX_ACTIVE_LANES)

            async def one_lane(sub: str) -> None:
                async with slots:
                    if not self.stopping:
                        await self._lane(sub)

            async with asyncio.TaskGroup() as group:
                started: set[str] = set()
                for sub in [sub for sub, _ in lanes] + ([] if feed is None else feed.subaccounts):
                    if sub not in started:
                        started.add(sub)
                        group.create_task(one_lane(sub))
                if feed is not None:
                    await self._follow(feed, started, lambda sub: group.create_task(one_lane(sub)))
        finally:
            flusher_stop.set()
            await flusher
            self._recorder.flush()
        return self.report

    async def _follow(self, feed: Feed, started: set[str], start: Callable[[str], object]) -> None:
        """Start a lane for each subaccount the feed names for the first time, until it closes."""
        seen = 0
        while True:
            for sub in feed.subaccounts[seen:]:
                if sub not in started:
                    started.add(sub)
                    start(sub)
            seen = len(feed.subaccounts)
            if feed.done:
                # The whole input is known: the failure window is at most what it holds.
                self._window = min(self._window, max(1, self.progress.total))
                self._check_threshold()
                return
            if self.stopping:
                return
            await feed.wait()

    async def _lane(self, sub: str) -> None:
        s = self._settings
        gate = RateGate(s.rate_per_s)
        self._gates[sub] = gate
        # Automatic sizing starts from a guess of 100 ms per answer (8x8 from most places), with
        # the same headroom as Concurrency.observe, until answers say otherwise: starting small
        # would spend the first round trips at a fraction of the rate, and workers beyond need
        # only wait for their slots.
        concurrency = Concurrency(
            s.concurrency or 512,
            auto=s.concurrency is None,
            initial=max(8, math.ceil(s.rate_per_s * 0.1 * 1.5)),
        )
        workers = concurrency.cap
        ip = self._ip_gate if self._ip_limited else None
        # A tenth of a second's rows per batch: each batch costs a query and a commit (a
        # twentieth cost 2.5 µs more per request at the ceilings); a kill -9 leaves at most one
        # batch marked SENT but never sent, resumed as ambiguous.
        batch = max(8, min(256, round(s.rate_per_s / 10)))
        # Rows marked SENT (and committed) but not yet taken by a worker: at most one batch.
        # Workers take from it without awaiting; the one that finds it empty fetches the next
        # batch itself. Ledger calls are synchronous, so no two workers ever fetch at once.
        buffer: deque[WorkItem] = deque()
        after = 0
        exhausted = False
        lane_stop = asyncio.Event()
        no_more = asyncio.Event()  # no row left to take, or stopping: workers yet to start needn't

        def halted() -> bool:
            return self.stopping or lane_stop.is_set()

        def give_back() -> None:
            """Rows taken from the ledger but not yet sent go back as never sent."""
            if buffer:
                self._ledger.release([item.seq for item in buffer])
                buffer.clear()

        feed = self._feed
        looked_at = -1  # the feed generation at which the ledger last had nothing for this lane

        def refill() -> bool:
            nonlocal after, exhausted, looked_at
            if exhausted or (feed is not None and looked_at == feed.generation):
                return False
            items = self._ledger.next_work(sub, after, batch)
            self._recorder.flush()  # the SENT marks are durable before any request leaves
            if not items:
                if feed is not None and not feed.done:
                    looked_at = feed.generation  # more rows may come: wait for the next slice
                    return False
                exhausted = True
                no_more.set()
                concurrency.open_all()  # workers parked above the automatic limit must leave too
                return False
            after = items[-1].seq
            buffer.extend(items)
            return True

        # While the input is still read, a lane can run out of rows: its idle workers park, and
        # a lookout task wakes one per row taken at each slice of the feed (rather than all of
        # them at every slice), or all of them once the feed closes or the lane stops.
        idle: deque[asyncio.Future[None]] = deque()

        def wake(n: int) -> None:
            while n > 0 and idle:
                parked = idle.popleft()
                if not parked.done():
                    parked.set_result(None)
                    n -= 1

        async def wait_for_rows() -> None:
            parked = asyncio.get_running_loop().create_future()
            idle.append(parked)
            await parked

        async def look_out(feed: Feed) -> None:
            while True:
                await feed.wait()  # stop() publishes too
                if halted() or feed.done:
                    wake(len(idle))
                    return
                if idle and (buffer or refill()):
                    wake(len(buffer))

        # Worker i's first slot comes i/rate seconds in at the earliest: it starts then, less a
        # lead to open its connection. Started together, hundreds of workers open their
        # connections at once, and the first request waited 40-60 ms behind them (measured at
        # 1,800/s: 270 connects), as did the server's accepts. They start in waves, each let go
        # by one timer (a timer and a task per worker crowded the loop the first connections
        # needed), all at once when no row is left to take or the lane stops.
        span_s = (workers - 1) / s.rate_per_s - _WORKER_LEAD_S
        wave_s = max(_WAVE_S, span_s / _MAX_WAVES)
        waves = [asyncio.Event() for _ in range(max(0, math.ceil(span_s / wave_s)) + 1)]
        waves[0].set()

        def wave_of(index: int) -> asyncio.Event:
            due_s = index / s.rate_per_s - _WORKER_LEAD_S
            return waves[min(len(waves) - 1, max(0, math.ceil(due_s / wave_s)))]

        async def let_go() -> None:
            loop = asyncio.get_running_loop()
            started = loop.time()
            for k, wave in enumerate(waves):
                delay = started + k * wave_s - loop.time()
                if delay > 0 and not no_more.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(no_more.wait(), delay)
                wave.set()

        async def work(index: int) -> None:
            slot = _Slot(gate, ip, self._clock)
            wave = wave_of(index)
            if not wave.is_set():
                await wave.wait()
            while True:
                if index >= concurrency.limit:
                    await concurrency.admit(index)
                if halted() or (not buffer and not refill()):
                    if halted() or exhausted or feed is None:
                        return
                    await wait_for_rows()
                    continue
                if idle and len(buffer) > 1:
                    wake(len(buffer) - 1)
                verdict = await self._process(buffer.popleft(), gate, concurrency, slot)
                if (
                    verdict is not None
                    and verdict.stop is Stop.SUBACCOUNT
                    and not lane_stop.is_set()
                ):
                    lane_stop.set()
                    self.report.rejected_subaccounts.append(sub)

        async def watch() -> None:
            stop_wait = asyncio.ensure_future(self._stopping.wait())
            lane_wait = asyncio.ensure_future(lane_stop.wait())
            try:
                await asyncio.wait({stop_wait, lane_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_wait.cancel()
                lane_wait.cancel()
            give_back()
            no_more.set()
            concurrency.open_all()

        watcher = asyncio.create_task(watch())
        starter = asyncio.create_task(let_go())
        helpers = [watcher, starter] + (
            [] if feed is None else [asyncio.create_task(look_out(feed))]
        )
        try:
            await asyncio.gather(*(work(i) for i in range(workers)))
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            give_back()  # a worker failed: whatever it left was never sent
            self._gates.pop(sub, None)

    # ------------------------------------------------------------------ one row

    async def _process(
        self, item: WorkItem, gate: RateGate, concurrency: Concurrency, slot: _Slot
    ) -> Verdict | None:
        """Send *item* until it has a final outcome, the budget is spent, or the run stops."""
        policy = self._settings.retry
        target = Target(subaccount=item.subaccount, id=item.target_id, kind=item.kind)
        ambiguous = item.ambiguous
        attempts = 0
        started = self._clock()
        progress = self.progress
        while True:
            if gate.paused:
                await gate.settle()  # a Retry-After pause is waited out before taking a connection
            slot.at = self._clock()
            exchange = await self._canceller.cancel(target, slot)
            slot.land(exchange)
            attempts += 1
            progress.requests += 1
            concurrency.observe(self._clock() - slot.at, gate.rate_per_s)
            progress.rate_per_s = gate.rate_per_s
            progress.in_flight_limit = concurrency.limit
            verdict = judge(exchange, was_ambiguous=ambiguous)
            ambiguous = ambiguous or verdict.ambiguous
            if verdict.throttled:
                progress.throttled += 1
                gate.throttled(verdict.retry_after_s)
            outcome = verdict.outcome
            if outcome is not None:
                if (
                    outcome is not Outcome.FAILED
                    and outcome is not Outcome.UNCONFIRMED
                    and not ambiguous
                    and exchange.message is None
                    and exchange.code is None
                    and exchange.error_id is None
                ):
                    # The common answer (cancelled, nothing to cancel): no error to keep, and
                    # no Result to build for it (2 µs a row).
                    self._recorder.add_plain(
                        (
                            outcome.value,
                            exchange.status,
                            exchange.cancelled_count,
                            attempts,
                            _now_iso(),
                            item.seq,
                        )
                    )
                    self._count_final(outcome, None)
                else:
                    self._finish(item, _result(verdict, exchange, attempts), ambiguous)
                if verdict.stop is Stop.RUN:
                    reason = (
                        StopReason.AUTH
                        if verdict.outcome is Outcome.AUTH_FAILED
                        else StopReason.FATAL
                    )
                    self.stop(reason, _describe(exchange, verdict))
                return verdict
            if verdict.stop is Stop.RUN:
                # The way to the API refused and nothing was sent: stop the run; this row goes
                # back to not_attempted below, as do the rows no worker took.
                self.stop(StopReason.NETWORK, verdict.detail)
                break
            wait = 0.0 if verdict.throttled else policy.backoff_s(attempts, None, self._rng)
            budget_wait = (
                verdict.retry_after_s if verdict.throttled and verdict.retry_after_s else wait
            )
            if policy.gives_up(attempts, self._clock() - started, budget_wait):
                message = f"gave up after {attempts} attempts: {_describe(exchange, verdict)}"
                self._finish(item, _failed(exchange, attempts, message), ambiguous)
                return verdict
            progress.retries += 1
            if self.stopping:
                break
            if wait:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), wait)
            if self.stopping:
                break
        # Stopped between attempts. A row whose attempts certainly changed nothing goes back to
        # PENDING (not_attempted); one that may have been cancelled is `failed`, kept ambiguous,
        # so that --resume or --retry-failed re-sends it and judges "nothing to cancel" honestly.
        if ambiguous:
            message = f"the run stopped before a final answer (may have been cancelled): {_describe(exchange, Verdict(None))}"
            self._recorder.add(item.seq, _failed(exchange, attempts, message), True)
            self.progress.counts[Outcome.FAILED.value] += 1
        else:
            self._ledger.release([item.seq])
        return None

    def _finish(self, item: WorkItem, result: Result, ambiguous: bool) -> None:
        self._recorder.add(item.seq, result, ambiguous)
        self._count_final(result.outcome, result.error_message)

    def _count_final(self, outcome: Outcome, message: str | None) -> None:
        progress = self.progress
        progress.done += 1
        progress.counts[outcome.value] += 1
        if self._first_answers < self._window:
            self._first_answers += 1
            if outcome is Outcome.FAILED:
                self._first_failures += 1
                self._last_failure = message
                self._check_threshold()

    def _check_threshold(self) -> None:
        if self._first_failures > self._settings.failure_threshold * self._window:
            self.stop(
                StopReason.THRESHOLD,
                f"more than {self._settings.failure_threshold:.0%} of the first "
                f"{self._window} answered rows failed (last: {self._last_failure})",
            )


def _failed(exchange: Exchange, attempts: int, message: str) -> Result:
    """A ``failed`` row keeping the last answer's details (errorId for 8x8 support)."""
    return Result(
        outcome=Outcome.FAILED,
        http_status=exchange.status,
        error_code=exchange.code,
        error_message=message,
        error_id=exchange.error_id,
        attempts=attempts,
        finished_at=_now_iso(),
    )


def _result(verdict: Verdict, exchange: Exchange, attempts: int) -> Result:
    outcome = verdict.outcome
    assert outcome is not None
    message = exchange.message
    if outcome is Outcome.UNCONFIRMED:
        message = "an earlier attempt's answer was lost; this one found nothing left to cancel"
    elif verdict.detail and outcome is Outcome.FAILED:
        message = verdict.detail if not message else f"{verdict.detail}: {message}"
    return Result(
        outcome=outcome,
        http_status=exchange.status,
        error_code=exchange.code,
        error_message=message,
        error_id=exchange.error_id,
        cancelled_count=exchange.cancelled_count,
        attempts=attempts,
        finished_at=_now_iso(),
    )


def _describe(exchange: Exchange, verdict: Verdict) -> str:
    if exchange.status is None:
        return exchange.transport_error or "no answer"
    parts = [f"HTTP {exchange.status}"]
    if exchange.code is not None:
        parts.append(f"code {exchange.code}")
    if exchange.message:
        parts.append(exchange.message)
    elif verdict.detail:
        parts.append(verdict.detail)
    return " ".join(parts)
