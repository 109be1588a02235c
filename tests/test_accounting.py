"""Property: whatever the input and the answers, every unique row ends with exactly one outcome."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from helpers import ScriptedCanceller, umids
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulk_cancel.ledger import Ledger
from bulk_cancel.model import Exchange, Kind, Target
from bulk_cancel.pipeline import Pipeline, PipelineSettings
from bulk_cancel.policy import RetryPolicy

ANSWERS = [
    Exchange(status=200, cancelled_count=1),
    Exchange(status=200, cancelled_count=0),
    Exchange(status=404, code=1300),
    Exchange(status=400, code=1000),
    Exchange(status=503),
    Exchange(status=429, retry_after="0"),
    Exchange(transport_error="timeout"),
    Exchange(status=200, body_ok=False),
    Exchange(status=418),
]
IDS = umids(12, seed=9)
SUBS = ["sub_a", "sub_b", "sub_c"]

rows_strategy = st.lists(
    st.tuples(st.sampled_from(SUBS), st.integers(0, len(IDS) - 1)), min_size=0, max_size=40
)
script_strategy = st.dictionaries(
    st.integers(0, len(IDS) - 1), st.lists(st.integers(0, len(ANSWERS) - 1), min_size=1, max_size=4)
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows_strategy, script=script_strategy)
def test_outcomes_sum_to_unique_rows_and_duplicates_are_counted(
    rows: list[tuple[str, int]], script: dict[int, list[int]]
) -> None:
    """Outcomes sum to the unique rows, duplicates are counted not lost, each row reported once."""

    def answer(target: Target, n: int) -> Exchange:
        plan = script.get(IDS.index(target.id), [0])
        return ANSWERS[plan[min(n, len(plan)) - 1]]

    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger.create(Path(tmp) / "r.ledger.sqlite", {})
        duplicates = ledger.add(
            [(n, sub, IDS[i], Kind.MESSAGE, None, None, None) for n, (sub, i) in enumerate(rows)],
            "2026-01-01T00:00:00Z",
        )
        ledger.finish_ingest()
        unique = len(set(rows))
        assert duplicates == len(rows) - unique
        policy = RetryPolicy(
            max_attempts=3, max_elapsed_s=5, initial_backoff_s=0.0001, max_backoff_s=0.001
        )
        pipeline = Pipeline(
            ledger,
            ScriptedCanceller(answer),
            PipelineSettings(rate_per_s=1e6, concurrency=3, retry=policy, failure_threshold=1.0),
        )
        asyncio.run(pipeline.run())
        reported = [(r[1], r[0]) for chunk in ledger.iter_results() for r in chunk]
        assert sorted(reported) == sorted({(sub, IDS[i]) for sub, i in rows})
        assert sum(ledger.counts().values()) == unique
        assert "not_attempted" not in ledger.counts()
        ledger.close()
