"""The pipeline against a scripted canceller and a real SQLite ledger: no network."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from pathlib import Path

from helpers import ScriptedCanceller, make_ledger, umids

from bulk_cancel.ledger import Ledger
from bulk_cancel.model import Exchange, Kind, Ready, Target
from bulk_cancel.pacing import RateGate
from bulk_cancel.pipeline import Pipeline, PipelineSettings, StopReason, _Stamp
from bulk_cancel.policy import RetryPolicy

FAST = RetryPolicy(max_attempts=4, max_elapsed_s=5, initial_backoff_s=0.001, max_backoff_s=0.01)
OK = Exchange(status=200, cancelled_count=1)
ZERO = Exchange(status=200, cancelled_count=0)
GONE = Exchange(status=404, code=1300, message="Message not found.")
BUSY = Exchange(status=503)


def settings(**kw: object) -> PipelineSettings:
    base: dict[str, object] = {"rate_per_s": 100_000, "concurrency": 8, "retry": FAST}
    base.update(kw)
    return PipelineSettings(**base)  # type: ignore[arg-type]


def outcomes(ledger: Ledger) -> dict[str, str]:
    return {row[0]: row[3] for chunk in ledger.iter_results() for row in chunk}


async def run(ledger: Ledger, canceller: ScriptedCanceller, **kw: object) -> Pipeline:
    pipeline = Pipeline(ledger, canceller, settings(**kw))
    await pipeline.run()
    return pipeline


async def test_every_row_gets_one_final_outcome(ledger_path: Path) -> None:
    """Each unique row is sent once and ends with exactly one outcome."""
    ids = umids(500)
    ledger = make_ledger(ledger_path, [("sub_a", u) for u in ids])
    fake = ScriptedCanceller(lambda t, n: OK)
    pipeline = await run(ledger, fake)
    assert sorted(t.id for t in fake.calls) == sorted(ids)
    assert ledger.counts() == {"cancelled": 500}
    assert pipeline.progress.requests == 500
    ledger.close()


async def test_transient_then_success_is_cancelled(ledger_path: Path) -> None:
    """A 503 followed by 200/1 is `cancelled` after two attempts."""
    ledger = make_ledger(ledger_path, [("sub_a", umids(1)[0])])
    fake = ScriptedCanceller(lambda t, n: BUSY if n == 1 else OK)
    pipeline = await run(ledger, fake)
    row = next(iter(ledger.iter_results()))[0]
    assert row[3] == "cancelled"
    assert row[9] == 2  # attempts
    assert pipeline.progress.retries == 1
    ledger.close()


async def test_lost_answer_then_nothing_to_cancel_is_unconfirmed(ledger_path: Path) -> None:
    """After a 5xx, a timeout or a dropped connection, a 200/0 or a 404 is `unconfirmed`."""
    ids = umids(5)
    ledger = make_ledger(ledger_path, [("sub_a", u) for u in ids])
    first = {
        ids[0]: BUSY,
        ids[1]: Exchange(transport_error="timeout"),
        ids[2]: Exchange(status=200, body_ok=False, message="{"),
        ids[3]: BUSY,
        ids[4]: Exchange(transport_error="connection closed before the answer"),
    }
    later = {ids[0]: ZERO, ids[1]: GONE, ids[2]: ZERO, ids[3]: OK, ids[4]: GONE}
    fake = ScriptedCanceller(lambda t, n: first[t.id] if n == 1 else later[t.id])
    await run(ledger, fake)
    assert outcomes(ledger) == {
        ids[0]: "unconfirmed",
        ids[1]: "unconfirmed",
        ids[2]: "unconfirmed",
        ids[3]: "cancelled",
        ids[4]: "unconfirmed",
    }
    ledger.close()


async def test_refusals_that_applied_nothing_keep_answers_confident(ledger_path: Path) -> None:
    """A 429 or a connection that was never made cannot have cancelled anything."""
    ids = umids(2)
    ledger = make_ledger(ledger_path, [("sub_a", u) for u in ids])
    first = {
        ids[0]: Exchange(status=429, retry_after="0"),
        ids[1]: Exchange(
            transport_error="cannot connect: ConnectionRefusedError", request_sent=False
        ),
    }
    fake = ScriptedCanceller(
        lambda t, n: first[t.id] if n == 1 else (ZERO if t.id == ids[0] else GONE)
    )
    await run(ledger, fake)
    assert outcomes(ledger) == {ids[0]: "not_cancellable", ids[1]: "not_found"}
    ledger.close()


async def test_retry_budget_exhausted_is_failed(ledger_path: Path) -> None:
    """Transient failures beyond max_attempts end as `failed`, with the last error kept."""
    ledger = make_ledger(ledger_path, [("sub_a", umids(1)[0])])
    fake = ScriptedCanceller(lambda t, n: Exchange(status=502, message="Bad gateway"))
    await run(ledger, fake, failure_window=10)
    row = next(iter(ledger.iter_results()))[0]
    assert row[3] == "failed"
    assert row[4] == 502
    assert row[9] == FAST.max_attempts
    assert "gave up after 4 attempts" in row[6]
    ledger.close()


async def test_rejected_key_stops_the_run(ledger_path: Path) -> None:
    """A 401 stops everything: few requests, the rest `not_attempted`, stop reason auth."""
    ids = umids(2000)
    ledger = make_ledger(ledger_path, [("sub_a", u) for u in ids])
    fake = ScriptedCanceller(lambda t, n: Exchange(status=401, code=1200, message="nope"))
    pipeline = await run(ledger, fake, concurrency=4)
    counts = ledger.counts()
    assert pipeline.report.stop_reason == StopReason.AUTH
    assert len(fake.calls) <= 4  # at most what was in flight when the first 401 came back
    assert counts["auth_failed"] == len(fake.calls)
    assert counts["not_attempted"] == 2000 - len(fake.calls)
    ledger.close()


async def test_rejected_subaccount_stops_only_its_lane(ledger_path: Path) -> None:
    """Code 1001 stops that subaccount's rows; other subaccounts finish."""
    good, bad = umids(300, seed=1), umids(300, seed=2)
    rows = [("good_sub", u) for u in good] + [("bad_sub", u) for u in bad]
    ledger = make_ledger(ledger_path, rows)

    def answer(t: Target, n: int) -> Exchange:
        return OK if t.subaccount == "good_sub" else Exchange(status=400, code=1001)

    fake = ScriptedCanceller(answer)
    pipeline = await run(ledger, fake, concurrency=2)
    got = outcomes(ledger)
    assert all(got[u] == "cancelled" for u in good)
    assert {got[u] for u in bad} == {"subaccount_rejected", "not_attempted"}
    assert sum(got[u] == "subaccount_rejected" for u in bad) <= 2
    assert pipeline.report.rejected_subaccounts == ["bad_sub"]
    ledger.close()


async def test_failure_threshold_stops_early(ledger_path: Path) -> None:
    """More than half of the first answers failing stops the run, leaving the rest unsent."""
    ids = umids(400)
    ledger = make_ledger(ledger_path, [("sub_a", u) for u in ids])
    fake = ScriptedCanceller(lambda t, n: Exchange(status=418))
    pipeline = await run(ledger, fake, failure_window=100, concurrency=2)
    counts = ledger.counts()
    assert pipeline.report.stop_reason == StopReason.THRESHOLD
    assert 50 < counts["failed"] <= 53
    assert counts["not_attempted"] == 400 - counts["failed"]
    ledger.close()


async def test_rows_in_flight_at_a_crash_resume_as_ambiguous(ledger_path: Path) -> None:
    """A row marked SENT by a run that died is re-sent, and a 404 then means `unconfirmed`."""
    ids = umids(3)
    ledger = make_ledger(ledger_path, [("sub_a", u) for u in ids])
    ledger.next_work("sub_a", 0, 2)  # marked SENT, then the process "died"
    ledger.commit()
    ledger.close()
    ledger = Ledger.open(ledger_path)
    fake = ScriptedCanceller(lambda t, n: GONE)
    await run(ledger, fake)
    assert outcomes(ledger) == {ids[0]: "unconfirmed", ids[1]: "unconfirmed", ids[2]: "not_found"}
    ledger.close()


async def test_stop_leaves_unsent_rows_pending(ledger_path: Path) -> None:
    """An interrupt stops taking rows; what was never sent stays pending for --resume."""
    ids = umids(1000)
    ledger = make_ledger(ledger_path, [("sub_a", u) for u in ids])
    holder: list[Pipeline] = []

    def answer(t: Target, n: int) -> Exchange:
        if len(fake.calls) == 50:
            holder[0].stop(StopReason.INTERRUPTED)
        return OK

    fake = ScriptedCanceller(answer)
    pipeline = Pipeline(ledger, fake, settings(concurrency=4))
    holder.append(pipeline)
    await pipeline.run()
    counts = ledger.counts()
    assert counts["cancelled"] == len(fake.calls)
    assert counts["not_attempted"] == 1000 - len(fake.calls)
    assert len(fake.calls) <= 50 + 4
    ledger.close()
    ledger = Ledger.open(ledger_path)
    assert ledger.lanes() == [("sub_a", 1000 - len(fake.calls))]
    ledger.close()


async def test_automatic_concurrency_lane_finishes(ledger_path: Path) -> None:
    """With concurrency sized automatically, workers parked above the limit still leave at the end."""
    ids = umids(300)
    ledger = make_ledger(ledger_path, [("sub_a", u) for u in ids])
    fake = ScriptedCanceller(lambda t, n: OK)
    pipeline = Pipeline(ledger, fake, PipelineSettings(rate_per_s=1500, retry=FAST))
    await asyncio.wait_for(pipeline.run(), 30)
    assert ledger.counts() == {"cancelled": 300}
    ledger.close()


async def test_each_request_lands_on_its_gates(ledger_path: Path) -> None:
    """The gates (the subaccount's and the per-IP cap's) hear how every request they let out
    ended, answered or not, so their windows count answered requests where they arrived and none
    stays counted as still on its way."""
    ledger = make_ledger(ledger_path, [(sub, u) for u in umids(300) for sub in ("sub_a", "sub_b")])
    unanswered: list[tuple[int, int]] = []
    gates: dict[str, RateGate] = {}

    class Watching(ScriptedCanceller):
        async def cancel(self, target: Target, ready: Ready = None) -> Exchange:
            exchange = await super().cancel(target, ready)
            gate, ip = ready._gate, ready._ip  # type: ignore[union-attr]
            unanswered.append((gate._unanswered, ip._unanswered))
            gates[target.subaccount], gates["ip"] = gate, ip
            await asyncio.sleep(0.001)
            return exchange

    # Every third first attempt loses its answer: it counts from then, not as still on its way.
    calls = itertools.count()

    def answer(target: Target, attempt: int) -> Exchange:
        lost = attempt == 1 and next(calls) % 3 == 0
        return Exchange(transport_error="timeout") if lost else OK

    # Two lanes that could go at 100,000/s each: the per-IP cap of 150,000/s is in the way.
    await run(ledger, Watching(answer), ip_rate_per_s=150_000)
    assert len(unanswered) > 600
    # At most the requests in flight (8 per lane); without landing, up to 400 and 800.
    assert max(sub for sub, _ in unanswered) <= 8
    assert max(ip for _, ip in unanswered) <= 16
    assert sorted(gates) == ["ip", "sub_a", "sub_b"]
    for gate in gates.values():
        assert gate._unanswered == 0
        assert 0.001 <= gate.min_rtt_s < 0.5
    ledger.close()


async def test_workers_start_staggered_but_a_short_lane_never_waits_for_them(
    ledger_path: Path,
) -> None:
    """Workers start near their first slot (no connection storm), yet a lane with fewer rows than
    workers ends when its rows do: at 10/s the 64th worker would otherwise start 6.3 s in."""
    ledger = make_ledger(ledger_path, [("sub_a", u) for u in umids(3)])
    fake = ScriptedCanceller(lambda t, n: OK)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await run(ledger, fake, rate_per_s=10, concurrency=64)
    assert ledger.counts() == {"cancelled": 3}
    assert loop.time() - started < 2.0
    ledger.close()


async def test_rows_fed_while_sending_are_all_sent_and_the_run_waits_for_the_close(
    ledger_path: Path,
) -> None:
    """With a feed, requests leave before the last rows are added, and lanes end only at close."""
    from bulk_cancel.pipeline import Feed

    ids = umids(300)
    ledger = Ledger.create(ledger_path, {"settings": {}})
    ledger.build_work_index()
    feed = Feed(lanes_hint=2)
    fake = ScriptedCanceller(lambda t, n: OK)
    pipeline = Pipeline(ledger, fake, settings(), feed=feed)
    task = asyncio.create_task(pipeline.run())
    sent_before_last_slice = 0
    for start in range(0, 300, 50):
        sub = "sub_a" if start < 150 else "sub_b"  # a second subaccount appears mid-way
        rows = ids[start : start + 50]
        ledger.add(
            [(start + i + 2, sub, u, Kind.MESSAGE, None, None, None) for i, u in enumerate(rows)],
            "2026-01-01T00:00:00Z",
        )
        ledger.commit()
        feed.publish([sub] if start in (0, 150) else [])
        if start == 250:
            sent_before_last_slice = len(fake.calls)
        for _ in range(20):
            await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    assert not task.done()  # the feed is still open: lanes wait for more rows
    feed.close()
    await asyncio.wait_for(task, 10)
    assert 0 < sent_before_last_slice < 300
    assert sorted(t.id for t in fake.calls) == sorted(ids)  # each exactly once
    assert {t.subaccount for t in fake.calls} == {"sub_a", "sub_b"}
    assert ledger.counts() == {"cancelled": 300}
    ledger.close()


async def test_a_stop_wakes_lanes_waiting_for_rows(ledger_path: Path) -> None:
    """A stop while lanes wait on an open feed ends the run without waiting for the close."""
    from bulk_cancel.pipeline import Feed

    ledger = Ledger.create(ledger_path, {"settings": {}})
    ledger.build_work_index()
    feed = Feed(lanes_hint=1)
    fake = ScriptedCanceller(lambda t, n: OK)
    pipeline = Pipeline(ledger, fake, settings(), feed=feed)
    task = asyncio.create_task(pipeline.run())
    ledger.add(
        [(i + 2, "sub_a", u, Kind.MESSAGE, None, None, None) for i, u in enumerate(umids(10))],
        "2026-01-01T00:00:00Z",
    )
    ledger.commit()
    feed.publish(["sub_a"])
    for _ in range(50):
        await asyncio.sleep(0)
    pipeline.stop(StopReason.INTERRUPTED, "SIGINT")
    report = await asyncio.wait_for(task, 10)
    assert report.stop_reason == StopReason.INTERRUPTED
    assert len(fake.calls) == 10 and not feed.done
    ledger.close()


async def test_parked_workers_wake_for_rows_fed_one_at_a_time(ledger_path: Path) -> None:
    """Hundreds of workers (automatic concurrency), rows arriving a few per slice: every row is
    sent once and the run ends at the feed's close, with no worker left parked."""
    from bulk_cancel.pipeline import Feed

    ids = umids(90)
    ledger = Ledger.create(ledger_path, {"settings": {}})
    ledger.build_work_index()
    feed = Feed(lanes_hint=1)
    fake = ScriptedCanceller(lambda t, n: OK)
    pipeline = Pipeline(ledger, fake, settings(rate_per_s=2000, concurrency=None), feed=feed)
    task = asyncio.create_task(pipeline.run())
    for start in range(0, 90, 3):
        rows = ids[start : start + 3]
        ledger.add(
            [
                (start + i + 2, "sub_a", u, Kind.MESSAGE, None, None, None)
                for i, u in enumerate(rows)
            ],
            "2026-01-01T00:00:00Z",
        )
        ledger.commit()
        feed.publish(["sub_a"] if start == 0 else [])
        await asyncio.sleep(0.005)
    feed.close()
    await asyncio.wait_for(task, 20)
    assert sorted(t.id for t in fake.calls) == sorted(ids)
    assert ledger.counts() == {"cancelled": 90}
    ledger.close()


def test_finished_at_stamps_match_datetimes_own_formatting_across_seconds() -> None:
    """finished_at is ISO 8601 UTC to the millisecond, exact across second and day boundaries."""
    times = [1764469025.0, 1764469025.1234, 1764469025.999, 1764469026.0004, 1764547199.9995,
             1764547200.0, 0.5, 1764469025.1234]  # fmt: skip
    it = iter(times)
    stamp = _Stamp(lambda: next(it))
    for t in times:
        ms = int(t * 1000)
        expected = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)
        assert stamp() == expected.isoformat(timespec="milliseconds")


async def test_a_slow_lane_with_few_rows_ends_without_waiting_for_its_later_workers(
    ledger_path: Path,
) -> None:
    """Workers due to start seconds later (64 at 5/s: the last after 12.6 s) start at once when no row is left."""
    ids = umids(3)
    ledger = make_ledger(ledger_path, [("sub_a", u) for u in ids])
    fake = ScriptedCanceller(lambda t, n: OK)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await run(ledger, fake, rate_per_s=5, concurrency=64)
    assert loop.time() - started < 6.0  # 3 slots at 5/s; the waves span 12.6 s
    assert ledger.counts() == {"cancelled": 3}
    ledger.close()
