"""Benchmark inputs: millions of distinct random umids as CSV or Parquet, written in seconds.

The umids are built as bytes with numpy (random hex, dashes, version 4 and RFC 4122 variant
nibbles), a million at a time, so generating 10,000,000 costs a few seconds and little memory.
``write_csv(..., export=True)`` adds the columns a real export carries beside the umid
(``campaign``, ``phone``, ``scheduled_at``), which the ledger keeps for the results.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_CHUNK = 1_000_000
#: Where the dashes go in 8-4-4-4-12.
_DASHES = (8, 13, 18, 23)


def umid_block(n: int, rng: np.random.Generator) -> np.ndarray:
    """*n* random lowercase UUIDv4 strings as an ``(n, 36)`` uint8 array."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # variant 10xx
    digits = np.empty((n, 32), dtype=np.uint8)
    digits[:, 0::2] = _HEX[raw >> 4]
    digits[:, 1::2] = _HEX[raw & 0x0F]
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    out[:, 0:8] = digits[:, 0:8]
    out[:, 9:13] = digits[:, 8:12]
    out[:, 14:18] = digits[:, 12:16]
    out[:, 19:23] = digits[:, 16:20]
    out[:, 24:36] = digits[:, 20:32]
    return out


def _blocks(n: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    left = n
    while left > 0:
        size = min(_CHUNK, left)
        yield umid_block(size, rng)
        left -= size


_CAMPAIGNS = (b"Spring sale", b"Spring campaign abort list", b"Renewals Q2", b"Win-back")


def _export_lines(block: np.ndarray, start: int) -> bytes:
    """Rows ``umid,campaign,phone,scheduled_at`` for *block*, row numbers from *start*."""
    rows = []
    for i, umid in enumerate(block.view("S36").ravel(), start=start):
        rows.append(
            b"%s,%s,+4477009%05d,2026-03-%02dT%02d:%02d:00Z\n"
            % (umid, _CAMPAIGNS[i % 4], i % 100_000, 1 + i % 28, i % 24, i % 60)
        )
    return b"".join(rows)


def write_csv(
    path: Path, n: int, *, seed: int = 1, subaccounts: Sequence[str] = (), export: bool = False
) -> Path:
    """A CSV with a ``umid`` column (and ``subaccount_id``, round-robin, when *subaccounts*).

    With *export*, the columns are ``umid,campaign,phone,scheduled_at``: shaped like a real
    export, whose extra columns the ledger stores per row (peak RSS depends on them).
    """
    with path.open("wb") as f:
        if export:
            f.write(b"umid,campaign,phone,scheduled_at\n")
            start = 0
            for block in _blocks(n, seed):
                f.write(_export_lines(block, start))
                start += len(block)
        elif not subaccounts:
            f.write(b"umid\n")
            for block in _blocks(n, seed):
                lines = np.empty((len(block), 37), dtype=np.uint8)
                lines[:, :36] = block
                lines[:, 36] = ord("\n")
                f.write(lines.tobytes())
        else:
            f.write(b"subaccount_id,umid\n")
            i = 0
            for block in _blocks(n, seed):
                rows = []
                for umid in block.view("S36").ravel():
                    rows.append(b"%s,%s\n" % (subaccounts[i % len(subaccounts)].encode(), umid))
                    i += 1
                f.write(b"".join(rows))
    return path


def write_parquet(path: Path, n: int, *, seed: int = 1) -> Path:
    """A Parquet file with one string column ``umid``, in row groups of a million rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("umid", pa.string())])
    with pq.ParquetWriter(path, schema, use_dictionary=False, compression="snappy") as writer:
        for block in _blocks(n, seed):
            count = len(block)
            offsets = np.arange(0, 36 * (count + 1), 36, dtype=np.int32)
            array = pa.Array.from_buffers(
                pa.string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(block.tobytes())]
            )
            writer.write_table(pa.table({"umid": array}, schema=schema))
    return path


def read_ids(path: Path) -> list[str]:
    """The umid column of a CSV written by :func:`write_csv` (for the bench's own checks)."""
    import csv

    with path.open(newline="") as f:
        return [row["umid"] for row in csv.DictReader(f)]
