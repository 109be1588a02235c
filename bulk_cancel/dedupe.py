"""An exact set of UUIDs in sorted numpy runs: how the ledger tells a duplicate umid, fast.

The ledger used to find duplicates with a unique index on ``(subaccount, kind, id)`` as text. An
index on random ids touches a random page per row: measured, 2,000,000 rows took 22 s of a 48 s
dry run in that index, and 10,000,000 took over six minutes, since its pages outgrow any cache.

Every id that is sent is a canonical UUID (:func:`~bulk_cancel.normalize.canonical_uuid`), so it
*is* 16 bytes, and a set of 16-byte values can be exact without text. :class:`UuidSet` keeps them
as two ``uint64`` arrays, sorted, in a few runs that merge like a binary counter (each value is
moved about log₂ n times in all, in C, each merge in linear time): 16 bytes a value, 160 MB for
10 million. The sort key is ``hi ^ mix(lo)``, not ``hi``: ids that share their first half
(time-based GUIDs share a node id in the second half, sequential ones a prefix) still spread
evenly, and since ``hi`` can be recovered from the key and ``lo``, the pair ``(key, lo)`` is the
whole id, so a match is exact. Distinct ids that share a key are found and told apart (rare: a
slow path in Python).

The set lives in memory beside the ledger, which stays the truth: a resumed run rebuilds it from
the ledger's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
Mask = npt.NDArray[np.bool_]

#: Runs grow by merging up to this many values; above it they stay apart (a lookup searches each),
#: so a merge never holds more than this in new arrays (8 MiB, and a mask of 512 KiB): measured at
#: 10 M ids, a cap of 1 M held 7 MB more at the peak, for no speed.
RUN_CAP: Final = 1 << 19

_M1: Final = np.uint64(0xBF58476D1CE4E5B9)
_M2: Final = np.uint64(0x94D049BB133111EB)
_S30: Final = np.uint64(30)
_S27: Final = np.uint64(27)
_S31: Final = np.uint64(31)


def _mix(x: U64) -> U64:
    """SplitMix64's finaliser: a bijection of uint64 that spreads nearby values apart."""
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


def uuid_halves(ids: Sequence[str]) -> tuple[U64, U64]:
    """Canonical UUID strings (``8-4-4-4-12`` hex) as their two big-endian 64-bit halves."""
    raw = bytes.fromhex("".join(ids).replace("-", ""))
    pairs = np.frombuffer(raw, dtype=">u8").reshape(-1, 2).astype(np.uint64)
    return np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])


class UuidSet:
    """An exact set of 128-bit values given as ``(hi, lo)`` uint64 halves."""

    __slots__ = ("_cap", "_keys", "_los")

    def __init__(self, *, run_cap: int = RUN_CAP) -> None:
        self._cap = run_cap
        self._keys: list[U64] = []  # each run sorted by key
        self._los: list[U64] = []  # the same run's low halves, in key order

    def __len__(self) -> int:
        return sum(len(k) for k in self._keys)

    def add(self, hi: U64, lo: U64) -> Mask:
        """Add the values; return which were new: True for the first of each value not yet in
        the set, False for one already in it or repeated earlier in this call."""
        n = len(hi)
        if n == 0:
            return np.zeros(0, dtype=np.bool_)
        key = hi ^ _mix(lo)
        # Within the call: sort by key, stable, so equal values sit together in input order and
        # all but the first of each are repeats. Distinct values sharing a key (rare) may
        # interleave; then sort by (key, lo) to bring each value's copies together.
        order = np.argsort(key, kind="stable")
        skey, slo = key[order], lo[order]
        same_key = skey[1:] == skey[:-1]
        new_sorted = np.ones(n, dtype=np.bool_)
        new_sorted[1:] = ~same_key | (slo[1:] != slo[:-1])
        if (same_key & new_sorted[1:]).any():
            order = np.lexsort((lo, key))
            skey, slo = key[order], lo[order]
            new_sorted[1:] = (skey[1:] != skey[:-1]) | (slo[1:] != slo[:-1])
        for run_key, run_lo in zip(self._keys, self._los, strict=True):
            new_sorted &= ~_contains(run_key, run_lo, skey, slo)
        new = np.empty(n, dtype=np.bool_)
        new[order] = new_sorted
        if new_sorted.any():
            self._push(skey[new_sorted], slo[new_sorted])
        return new

    def _push(self, key: U64, lo: U64) -> None:
        """Add a sorted run, merging it with the last runs while they are no more than twice
        its size and the merged run stays within the cap."""
        keys, los = self._keys, self._los
        while keys and len(keys[-1]) <= 2 * len(key) and len(keys[-1]) + len(key) <= self._cap:
            key, lo = _merge(keys.pop(), los.pop(), key, lo)
        keys.append(key)
        los.append(lo)


def _merge(key_a: U64, lo_a: U64, key_b: U64, lo_b: U64) -> tuple[U64, U64]:
    """Two sorted runs as one, in linear time: each of *b*'s values goes after the values of
    *a* not greater than it and after *b*'s own earlier ones (no sort, no index array of n)."""
    size = len(key_a) + len(key_b)
    at_b = np.searchsorted(key_a, key_b, side="right") + np.arange(len(key_b))
    of_a = np.ones(size, dtype=np.bool_)
    of_a[at_b] = False
    key = np.empty(size, dtype=np.uint64)
    lo = np.empty(size, dtype=np.uint64)
    key[at_b], lo[at_b] = key_b, lo_b
    key[of_a], lo[of_a] = key_a, lo_a
    return key, lo


def _contains(run_key: U64, run_lo: U64, key: U64, lo: U64) -> Mask:
    """Which of the sorted queries ``(key, lo)`` the run holds."""
    size = len(run_key)
    at = np.searchsorted(run_key, key)  # sorted queries: numpy narrows each search by the last
    # A query above every key lands past the end: the last key, smaller than it, cannot match.
    np.minimum(at, size - 1, out=at)
    same_key = run_key[at] == key
    found: Mask = same_key & (run_lo[at] == lo)
    if np.array_equal(same_key, found):
        return found
    # Distinct values sharing a key sit side by side; the first compared is not always the one.
    for i in np.flatnonzero(same_key & ~found):
        j = int(at[i]) + 1
        while j < size and run_key[j] == key[i]:
            if run_lo[j] == lo[i]:
                found[i] = True
                break
            j += 1
    return found
