"""The exact UUID set behind the ledger's de-duplication (bulk_cancel.dedupe)."""

from __future__ import annotations

import uuid

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bulk_cancel.dedupe import UuidSet, _mix, uuid_halves

_U64 = st.integers(min_value=0, max_value=2**64 - 1)


def _arrays(values: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.array([hi for hi, _ in values], dtype=np.uint64),
        np.array([lo for _, lo in values], dtype=np.uint64),
    )


def _same_key(hi: int, lo: int, other_lo: int) -> tuple[int, int]:
    """Another value with the same sort key as (hi, lo): the slow path's case."""
    mixed = _mix(np.array([lo, other_lo], dtype=np.uint64))
    return int(np.uint64(hi) ^ mixed[0] ^ mixed[1]), other_lo


def test_uuid_halves_are_the_uuid_bytes() -> None:
    """A canonical UUID string becomes its 16 bytes, as two big-endian halves."""
    ids = [str(uuid.uuid4()) for _ in range(3)]
    hi, lo = uuid_halves(ids)
    for text, high, low in zip(ids, hi.tolist(), lo.tolist(), strict=True):
        assert (high << 64) | low == uuid.UUID(text).int


@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(st.lists(st.tuples(_U64, _U64), max_size=40), min_size=1, max_size=12),
    twins=st.lists(st.tuples(_U64, _U64, _U64), max_size=10),
    cap=st.sampled_from([2, 5, 64, 1 << 20]),
)
def test_add_answers_as_a_python_set_would(
    batches: list[list[tuple[int, int]]], twins: list[tuple[int, int, int]], cap: int
) -> None:
    """Whatever the batches, repeats and values sharing a sort key, add() says "new" exactly
    for the first of each value ever given, as a Python set would."""
    # Values sharing a key with another, and their copies, spread over the batches.
    extra = [v for hi, lo, other in twins for v in ((hi, lo), _same_key(hi, lo, other))]
    for i, value in enumerate(extra + extra[:3]):
        batches[i % len(batches)].append(value)
    ids = UuidSet(run_cap=cap)
    seen: set[tuple[int, int]] = set()
    for batch in batches:
        got = ids.add(*_arrays(batch)).tolist()
        want = []
        for value in batch:
            want.append(value not in seen)
            seen.add(value)
        assert got == want
    assert len(ids) == len(seen)


def test_many_values_in_many_runs_stay_exact() -> None:
    """A hundred thousand values in runs capped small: every repeat found, every new one kept."""
    rng = np.random.default_rng(7)
    ids = UuidSet(run_cap=4096)
    hi = rng.integers(0, 2**63, size=100_000, dtype=np.uint64)
    lo = rng.integers(0, 2**63, size=100_000, dtype=np.uint64)
    for start in range(0, 100_000, 10_000):
        assert ids.add(hi[start : start + 10_000], lo[start : start + 10_000]).all()
    again = rng.permutation(100_000)[:5_000]
    assert not ids.add(hi[again], lo[again]).any()
    assert len(ids) == 100_000
