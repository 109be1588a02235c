"""``bulk-cancel merge``: the results of N shards of one input as one results file and summary.

Each shard (``run --shard K/N``) leaves its results file, its summary JSON and its ledger side by
side. The merge reads every shard's ledger (the rows, with the input's own columns and types)
and summary (how the shard ended), checks that they are the N shards of one input, and writes
the rows in input order into one results file, in any output format, with one summary: counts
summed, every row once, the exit code the worst of the shards'.

It refuses, with one line and exit 2 and nothing written, shards of different inputs, the same
shard twice, a missing shard, and a shard that has not finished (no summary beside it).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from . import writers
from .errors import ExitCode, UsageError
from .ledger import Ledger, ledger_path
from .model import RESULT_COLUMNS, Outcome, Summary
from .shard import Shard, parse_shard

_LINE: Final = RESULT_COLUMNS.index("line")
_CHUNK_ROWS: Final = 20_000


@dataclass(frozen=True, slots=True)
class _Part:
    """One shard's results, as found on disk."""

    results: Path
    shard: Shard
    summary: Summary
    checksum: str | None
    extra_columns: tuple[str, ...]


def merge(output: Path, results: Sequence[Path]) -> Summary:
    """Merge the shards whose results files are *results* into *output*; return the summary.

    Raises :class:`~bulk_cancel.errors.UsageError` (exit 2) when they are not exactly the N
    shards of one input, each finished; nothing is written then.
    """
    writers.output_format(output)  # a bad extension is refused before anything is read
    parts = _check([_part(path) for path in results])
    summary = merged_summary(output, parts)
    data = summary.to_dict()
    columns = [*RESULT_COLUMNS, *parts[0].extra_columns]
    ledgers = [Ledger.read_only(ledger_path(p.results)) for p in parts]
    try:
        written = writers.write_results(
            output, columns, _chunks(_in_input_order(ledgers)), summary=data
        )
    finally:
        for ledger in ledgers:
            ledger.close()
    if written != summary.unique:  # the ledgers changed under us: say so, never half-true
        raise UsageError(
            f"{output}: wrote {written} rows, the shards' summaries say {summary.unique}"
        )
    writers.write_summary(writers.summary_path(output), data)
    return summary


def _part(results: Path) -> _Part:
    label = str(results)
    ledger_file = ledger_path(results)
    if not ledger_file.is_file():
        raise UsageError(
            f"{label}: no ledger beside it ({ledger_file.name}); give the results files that "
            "the shards wrote, with their .ledger.sqlite and .summary.json beside them"
        )
    summary_file = writers.summary_path(results)
    if not summary_file.is_file():
        raise UsageError(
            f"{label}: no summary beside it: this shard has not finished; run its command "
            "again (with --resume=auto it continues), then merge"
        )
    summary = Summary.from_dict(writers.read_summary(summary_file))
    ledger = Ledger.read_only(ledger_file)
    try:
        meta = ledger.meta()
    finally:
        ledger.close()
    spec = (meta.get("settings") or {}).get("shard")
    if not spec:
        raise UsageError(f"{label}: not a shard's results (its run had no --shard K/N)")
    if not meta.get("ingest_complete"):
        raise UsageError(
            f"{label}: this shard stopped before it read its whole input; run its command "
            "again (with --resume=auto it continues), then merge"
        )
    return _Part(
        results=results,
        shard=parse_shard(spec),
        summary=summary,
        checksum=meta.get("input_checksum"),
        extra_columns=tuple(meta.get("extra_columns", [])),
    )


def _check(parts: list[_Part]) -> list[_Part]:
    """The parts in shard order, or a UsageError saying why they are not one whole input."""
    if not parts:
        raise UsageError("merge: give the shards' results files")
    first = parts[0]
    for part in parts[1:]:
        if part.shard.count != first.shard.count:
            raise UsageError(
                f"{part.results}: shard {part.shard} is of {part.shard.count} shards, "
                f"{first.results} of {first.shard.count}: not one sharded run"
            )
        if part.checksum != first.checksum or part.extra_columns != first.extra_columns:
            raise UsageError(
                f"{part.results}: a shard of another input than {first.results} "
                "(the input checksums differ); merge the shards of one input only"
            )
    seen: dict[int, Path] = {}
    for part in parts:
        if part.shard.index in seen:
            raise UsageError(
                f"{part.results}: shard {part.shard} is given twice (also {seen[part.shard.index]})"
            )
        seen[part.shard.index] = part.results
    missing = [str(k) for k in range(first.shard.count) if k not in seen]
    if missing:
        raise UsageError(
            f"merge: shard(s) {', '.join(missing)} of {first.shard.count} missing; give every "
            "shard's results file"
        )
    return sorted(parts, key=lambda p: p.shard.index)


def _in_input_order(ledgers: Sequence[Ledger]) -> Iterator[tuple[object, ...]]:
    """Every shard's rows, merged back into input order by line (each shard is in that order)."""
    streams = [(row for chunk in ledger.iter_results() for row in chunk) for ledger in ledgers]
    return heapq.merge(*streams, key=_line)


def _line(row: tuple[object, ...]) -> int:
    line = row[_LINE]
    return line if isinstance(line, int) else 0


def _chunks(rows: Iterable[tuple[object, ...]]) -> Iterator[list[tuple[object, ...]]]:
    chunk: list[tuple[object, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= _CHUNK_ROWS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def merged_summary(output: Path, parts: Sequence[_Part]) -> Summary:
    """The shards' summaries as one, with one run's keys: rows and requests summed (each
    shard's rows are its own), the input's own figures once (every shard reads it whole), the
    span from the first start to the last finish, the worst exit code. The settings are those
    every shard shared; each shard's own account is under ``shards``."""
    summaries = [p.summary for p in parts]
    first = summaries[0]
    started = min((s.started_at for s in summaries if s.started_at), default=None)
    finished = max((s.finished_at for s in summaries if s.finished_at), default=None)
    elapsed_s = _span_s(started, finished)
    requests_this_run = sum(s.requests_this_run for s in summaries)
    stopped = next((s for s in summaries if s.stop_reason), None)
    rejected = dict.fromkeys(sub for s in summaries for sub in s.rejected_subaccounts)
    return Summary(
        counts={o.value: sum(int(s.counts.get(o.value, 0)) for s in summaries) for o in Outcome},
        cancelled_total=sum(s.cancelled_total for s in summaries),
        input_rows=max(s.input_rows for s in summaries),
        unique=sum(s.unique for s in summaries),
        duplicates=sum(s.duplicates for s in summaries),
        blank_rows=max(s.blank_rows for s in summaries),
        requests=sum(s.requests for s in summaries),
        retries=sum(s.retries for s in summaries),
        requests_this_run=requests_this_run,
        retries_this_run=sum(s.retries_this_run for s in summaries),
        throttled_this_run=sum(s.throttled_this_run for s in summaries),
        started_at=started,
        finished_at=finished,
        elapsed_s=elapsed_s,
        achieved_rate_per_s=round(requests_this_run / elapsed_s, 1) if elapsed_s else 0.0,
        exit_code=int(max(ExitCode(s.exit_code) for s in summaries)),
        stop_reason=None if stopped is None else stopped.stop_reason,
        stop_detail=None if stopped is None else stopped.stop_detail,
        rejected_subaccounts=tuple(rejected),
        results=str(output),
        input_checksum=parts[0].checksum,
        settings={
            k: v
            for k, v in first.settings.items()
            if all(s.settings.get(k) == v for s in summaries)
        },
        # Each shard read the whole input (a shard that did not is refused): say so if they did.
        ingest_complete=True if all(s.ingest_complete for s in summaries) else None,
        other={
            "shards": [
                {
                    "shard": str(p.shard),
                    "results": str(p.results),
                    "exit_code": p.summary.exit_code,
                    "stop_reason": p.summary.stop_reason,
                    "elapsed_s": p.summary.elapsed_s,
                    **(
                        {}
                        if p.summary.resume_command is None
                        else {"resume_command": p.summary.resume_command}
                    ),
                }
                for p in parts
            ]
        },
    )


def _span_s(started: str | None, finished: str | None) -> float:
    if not started or not finished:
        return 0.0
    span = datetime.fromisoformat(finished) - datetime.fromisoformat(started)
    return round(max(span.total_seconds(), 0.0), 3)
