"""The pipeline's own CPU per request at the per-IP ceiling, with no network.

Two subaccounts at ``--rate 1800`` under the 3,000/s per-IP cap, as in the bench's per-IP
scenario, but the canceller takes its rate slot and then answers ``cancelledCount: 1`` 100 ms
later, without a socket: what is left is everything that is ours per request — the rate gates,
the lane's workers, judging, the ledger's batches and commits, progress. The process's CPU
(user + system, ``getrusage``) is read over the sending phase only (the ledger is filled before),
with the garbage collector set as the command sets it while sending (``cli.process.sending_gc``).

    python bench/pipeline_cpu.py [ROWS] [--latency-ms 100] [--floor]

Prints one JSON line: requests, seconds, the rate, cores used, and µs of CPU per request.
Run it pinned to one core (``taskset -c 0``) as the bench does. ``--floor`` measures what the
same requests cost with nothing of ours (a slot clock and a sleep per request): the difference is
the pipeline's share.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import uvloop

from bulk_cancel.cli.process import sending_gc
from bulk_cancel.ledger import Ledger
from bulk_cancel.model import Exchange, Kind, Ready, Target
from bulk_cancel.pipeline import Pipeline, PipelineSettings

SUBS = ("bench_a", "bench_b")
_OK = Exchange(status=200, cancelled_count=1)


class SleepingCanceller:
    """Awaits the rate slot, then answers ``cancelledCount: 1`` *latency_s* later."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.calls = 0
        self.sent: list[float] = []  # when each request would have left

    async def cancel(self, target: Target, ready: Ready = None) -> Exchange:
        if ready is not None:
            await ready()
        self.sent.append(time.monotonic())
        self.calls += 1
        await asyncio.sleep(self.latency_s)
        return _OK


_NONE3 = (None, None, None)  # extra, problem, detail: a row to send without extras


def _most_in_a_second(times: list[float]) -> int:
    """The most of *times* (in order) in any window (t - 1 s, t]."""
    worst = j = 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        worst = max(worst, i - j + 1)
    return worst


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _drive(ledger: Ledger, latency_s: float) -> dict[str, Any]:
    canceller = SleepingCanceller(latency_s)
    pipeline = Pipeline(ledger, canceller, PipelineSettings(rate_per_s=1800, ip_rate_per_s=3000))
    cpu0, t0 = _cpu_s(), time.monotonic()
    await pipeline.run()
    wall_s, cpu_s = time.monotonic() - t0, _cpu_s() - cpu0
    requests = pipeline.progress.requests
    assert pipeline.progress.done == canceller.calls == requests, "every row answered once"
    sent = canceller.sent
    return {
        "requests": requests,
        "wall_s": round(wall_s, 3),
        "rate_per_s": round(requests / wall_s, 1),
        "first_sent_s": round(sent[0] - t0, 4),
        "sending_per_s": round((len(sent) - 1) / (sent[-1] - sent[0]), 1),
        "most_in_1s": _most_in_a_second(sent),
        "cores": round(cpu_s / wall_s, 3),
        "cpu_us_per_request": round(cpu_s / requests * 1e6, 1),
    }


def measure(rows: int = 24_000, latency_s: float = 0.1) -> dict[str, Any]:
    """One run over *rows* umids split between two subaccounts, in a fresh SQLite ledger."""
    with tempfile.TemporaryDirectory(prefix="bulk-cancel-bench-") as tmp:
        ledger = Ledger.create(Path(tmp) / "cpu.ledger.sqlite", {"settings": {}})
        try:
            ledger.add(
                [
                    (
                        i + 2,
                        SUBS[i % 2],
                        str(uuid.UUID(int=i + 1, version=4)),
                        Kind.MESSAGE,
                        *_NONE3,
                    )
                    for i in range(rows)
                ],
                "2026-01-01T00:00:00Z",
            )
            ledger.set_meta({"ingest_complete": True})
            ledger.finish_ingest()
            with sending_gc():  # as the command sends
                result = uvloop.run(_drive(ledger, latency_s))
            assert ledger.counts() == {"cancelled": rows}
        finally:
            ledger.close()
    return result


async def _floor(
    requests: int, latency_s: float, rate_per_s: float, workers: int
) -> dict[str, Any]:
    counter = itertools.count()
    start = time.monotonic() + 0.01

    async def worker() -> None:
        for k in counter:
            if k >= requests:
                return
            wait = start + k / rate_per_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await asyncio.sleep(latency_s)

    cpu0, t0 = _cpu_s(), time.monotonic()
    await asyncio.gather(*(worker() for _ in range(workers)))
    wall_s, cpu_s = time.monotonic() - t0, _cpu_s() - cpu0
    return {
        "requests": requests,
        "wall_s": round(wall_s, 3),
        "rate_per_s": round(requests / wall_s, 1),
        "cores": round(cpu_s / wall_s, 3),
        "cpu_us_per_request": round(cpu_s / requests * 1e6, 1),
    }


def floor(requests: int = 24_000, latency_s: float = 0.1) -> dict[str, Any]:
    """The same requests with nothing of ours: each of 544 workers sleeps until its slot on a
    plain slot clock (one timer per request, at 2,990/s), then *latency_s* for its answer."""
    with sending_gc():
        return uvloop.run(_floor(requests, latency_s, 2990.0, 544))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", type=int, nargs="?", default=24_000)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--floor", action="store_true", help="measure the floor instead")
    ns = parser.parse_args()
    run = floor if ns.floor else measure
    print(json.dumps(run(ns.rows, ns.latency_ms / 1000)))


if __name__ == "__main__":
    main()
