"""What the SQLite ledger costs the pipeline: rows per second with it and with an in-memory stand-in.

No network: the canceller answers ``cancelledCount: 1`` at once (after one trip through the event
loop, as a real request would need), so the figure is the pipeline's own ceiling — lanes, workers,
rate gate, judging, recording — with the ledger's share isolated by swapping it out.

Run alone: ``python bench/ledger_cost.py [ROWS]`` prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop

from bulk_cancel.ledger import FINAL, PENDING, SENT, Ledger, PlainResult, WorkItem
from bulk_cancel.model import Exchange, Kind, Ready, Result, Target
from bulk_cancel.pipeline import Pipeline, PipelineSettings

SUB = "bench_sub"
_OK = Exchange(status=200, cancelled_count=1)


class InstantCanceller:
    """Answers every DELETE with ``cancelledCount: 1`` after yielding to the loop once."""

    def __init__(self) -> None:
        self.calls = 0

    async def cancel(self, target: Target, ready: Ready = None) -> Exchange:
        if ready is not None:
            await ready()
        self.calls += 1
        await asyncio.sleep(0)
        return _OK


class MemoryLedger:
    """The part of :class:`~bulk_cancel.ledger.Ledger` the pipeline uses, held in Python lists."""

    def __init__(self, ids: Sequence[str]) -> None:
        self._tid = list(ids)
        self._state = [PENDING] * len(ids)
        self._results: dict[int, tuple[Result | PlainResult, bool]] = {}

    def lanes(self) -> list[tuple[str, int]]:
        return [(SUB, sum(1 for s in self._state if s < FINAL))]

    def next_work(self, subaccount: str, after_seq: int, limit: int) -> list[WorkItem]:
        items: list[WorkItem] = []
        seq = after_seq  # seq is 1-based, index = seq - 1
        while len(items) < limit and seq < len(self._tid):
            if self._state[seq] < FINAL:
                items.append(WorkItem(seq + 1, subaccount, self._tid[seq], Kind.MESSAGE, False, 0))
                self._state[seq] = SENT
            seq += 1
        return items

    def record(self, results: Sequence[tuple[int, Result, bool]]) -> None:
        for seq, result, ambiguous in results:
            self._state[seq - 1] = FINAL
            self._results[seq] = (result, ambiguous)

    def record_plain(self, rows: Sequence[PlainResult]) -> None:
        for row in rows:
            seq = row[-1]
            self._state[seq - 1] = FINAL
            self._results[seq] = (row, False)

    def release(self, seqs: Sequence[int]) -> None:
        for seq in seqs:
            if self._state[seq - 1] == SENT:
                self._state[seq - 1] = PENDING

    def commit(self) -> None:
        pass


def _ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=i + 1, version=4)) for i in range(n)]


def _settings() -> PipelineSettings:
    # Rates far above what the pipeline can reach, so the gates never wait: only the cost shows.
    return PipelineSettings(rate_per_s=1e9, ip_rate_per_s=1e9, concurrency=64)


async def _drive(ledger: Any) -> tuple[float, int]:
    canceller = InstantCanceller()
    pipeline = Pipeline(ledger, canceller, _settings())
    started = time.perf_counter()
    await pipeline.run()
    elapsed = time.perf_counter() - started
    assert pipeline.progress.done == canceller.calls, "every row answered once"
    return elapsed, pipeline.progress.done


def sqlite_rows_per_s(ids: Sequence[str], tmp: Path) -> float:
    """The pipeline over the real ledger (a file in WAL mode, batched commits)."""
    ledger = Ledger.create(tmp / f"bench-{time.monotonic_ns()}.ledger.sqlite", {"settings": {}})
    try:
        ledger.add(
            [(i + 2, SUB, u, Kind.MESSAGE, None, None, None) for i, u in enumerate(ids)],
            "2026-01-01T00:00:00Z",
        )
        ledger.set_meta({"ingest_complete": True})
        ledger.finish_ingest()
        elapsed, done = uvloop.run(_drive(ledger))
        assert done == len(ids)
        assert ledger.counts() == {"cancelled": len(ids)}
    finally:
        ledger.close()
    return done / elapsed


def memory_rows_per_s(ids: Sequence[str]) -> float:
    """The pipeline over the in-memory stand-in."""
    elapsed, done = uvloop.run(_drive(MemoryLedger(ids)))
    assert done == len(ids)
    return done / elapsed


def measure(rows: int = 100_000, repeats: int = 3) -> dict[str, Any]:
    """Median rows/s of *repeats* runs each way, alternating so drift hits both alike."""
    ids = _ids(rows)
    sqlite_runs: list[float] = []
    memory_runs: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bulk-cancel-bench-") as tmp:
        for _ in range(repeats):
            sqlite_runs.append(sqlite_rows_per_s(ids, Path(tmp)))
            memory_runs.append(memory_rows_per_s(ids))
    sqlite_median = sorted(sqlite_runs)[len(sqlite_runs) // 2]
    memory_median = sorted(memory_runs)[len(memory_runs) // 2]
    return {
        "rows": rows,
        "sqlite_rows_per_s": round(sqlite_median),
        "memory_rows_per_s": round(memory_median),
        "sqlite_runs": [round(r) for r in sqlite_runs],
        "memory_runs": [round(r) for r in memory_runs],
        # Per row: what the ledger adds on top of everything else the pipeline does.
        "ledger_us_per_row": round(1e6 / sqlite_median - 1e6 / memory_median, 2),
    }


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)))
