"""Which rows one shard of a run owns: ``--shard K/N``.

A row belongs to shard ``blake2b(subaccount NUL id) mod N``: a hash that is the same in every
process and on every machine (Python's own ``hash()`` is salted per process), so N processes
given the same input split it into N disjoint parts that cover it exactly. Two copies of a row
hash alike, so each shard de-duplicates its own rows exactly as one process would.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

_SPEC: Final = re.compile(r"\s*(\d{1,6})\s*/\s*(\d{1,6})\s*")


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard *index* of *count* (0 <= index < count), as Kubernetes numbers an Indexed Job's pods."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= K < N")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, subaccount: str, target_id: str) -> bool:
        """Whether the row (*subaccount*, *target_id*) is this shard's."""
        return owner(subaccount, target_id, self.count) == self.index


def owner(subaccount: str, target_id: str, count: int) -> int:
    """The shard, of *count*, that owns (*subaccount*, *target_id*)."""
    digest = hashlib.blake2b(
        subaccount.encode("utf-8", "surrogatepass")
        + b"\x00"
        + target_id.encode("utf-8", "surrogatepass"),
        digest_size=8,
    ).digest()
    return int.from_bytes(digest, "big") % count


def parse_shard(text: str) -> Shard:
    """``"K/N"`` as a :class:`Shard`; ValueError says what is wrong."""
    match = _SPEC.fullmatch(text)
    if match is None:
        raise ValueError("must be K/N, e.g. 0/4 (shard K of N, counted from 0)")
    index, count = int(match[1]), int(match[2])
    if count < 1 or index >= count:
        raise ValueError(f"must be K/N with 0 <= K < N, e.g. 0/{max(count, 1)}")
    return Shard(index, count)
