"""The run ledger: every (subaccount, target) with its state, in SQLite beside the results.

Why SQLite: 10 million rows with their state and extra columns must not live in memory, and a
kill -9 must not lose what was already sent. The ledger is the single source of truth; the
results file and summary are rebuilt from it. Only the ids already seen are kept in memory too
(:mod:`bulk_cancel.dedupe`, 16 bytes each), to find duplicates without an index on random text.

States: ``PENDING`` → ``SENT`` (committed before the request leaves) → ``FINAL`` (outcome known).
A row found ``SENT`` when a run starts was in flight when an earlier run died: its request may
have been applied, so it is *ambiguous* (see :func:`bulk_cancel.policy.judge`).

Writes are batched: WAL mode with ``synchronous=NORMAL`` survives the process being killed at any
moment (SQLite docs, "Write-Ahead Logging": a commit is durable once written to the WAL; only a
power loss can roll back the last commits).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import orjson

from . import locks
from .dedupe import UuidSet, uuid_halves
from .errors import LedgerError
from .model import RESULT_COLUMNS, RETRYABLE_OUTCOMES, Kind, Outcome, Result

SCHEMA_VERSION: Final = 2
_KINDS: Final = {kind.value: kind for kind in Kind}

PENDING: Final = 0
SENT: Final = 1
FINAL: Final = 2

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    seq INTEGER PRIMARY KEY,
    sub TEXT NOT NULL,
    tid TEXT NOT NULL,
    kind TEXT NOT NULL,
    line INTEGER,
    extra BLOB,
    state INTEGER NOT NULL DEFAULT 0,
    ambiguous INTEGER NOT NULL DEFAULT 0,
    outcome TEXT,
    http_status INTEGER,
    error_code INTEGER,
    error_message TEXT,
    error_id TEXT,
    cancelled_count INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    finished_at TEXT,
    refused INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS rows_refused ON rows (sub, kind, tid) WHERE refused = 1;
"""
# Duplicates: rows to send are told apart by their UUID, in memory (dedupe.UuidSet, per
# subaccount and kind), so the table needs no index on random ids; rows refused locally (any
# text, rare) by the partial unique index, which only they enter.
# Built after ingest (a bulk build is cheaper than growing it row by row); rows leave it as they
# become final, so a lane's query for work stays small however large the input was. "Not final"
# is said as `outcome IS NULL` (a row has an outcome exactly when its state is FINAL), not as
# `state < 2`: marking rows SENT then changes no column the index knows, so SQLite leaves the
# index alone (measured: 0.9 µs a row less for taking, recording and committing rows).
_TODO_INDEX: Final = "CREATE INDEX IF NOT EXISTS rows_open ON rows (sub, seq) WHERE outcome IS NULL"


NewRow = tuple[int, str, str, Kind, Sequence[object] | None, Outcome | None, str | None]
"""A row for :meth:`Ledger.add`: :class:`~bulk_cancel.readers.InputRow`'s fields, in its order."""


PlainResult = tuple[str, int | None, int | None, int, str | None, int]
"""A final result with no error and no doubt, for :meth:`Ledger.record_plain`: ``(outcome,
http_status, cancelled_count, attempts, finished_at, seq)``."""


class WorkItem(NamedTuple):
    """A row to send, as a lane's workers take it from the ledger (a tuple: one per request)."""

    seq: int
    subaccount: str
    target_id: str
    kind: Kind
    ambiguous: bool
    attempts: int


def attempt_totals(attempts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Seconds and requests summed over :meth:`Ledger.attempts` (a killed one counts 0 s)."""
    return {
        "elapsed_s": round(sum(a.get("elapsed_s") or 0.0 for a in attempts), 3),
        "requests": sum(a.get("requests") or 0 for a in attempts),
    }


def ledger_path(output: Path) -> Path:
    """``results.csv`` → ``results.ledger.sqlite`` beside it."""
    return output.with_name(output.stem + ".ledger.sqlite")


class Ledger:
    """One run's durable state. Not thread-safe; used from the event loop thread only."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock_fd: int) -> None:
        self.path = path
        self._conn = conn
        self._lock_fd = lock_fd
        # Once sending starts, the WAL is checkpointed from a thread (see _Checkpointer).
        self._checkpointer: _Checkpointer | None = None
        self._seq = self._scalar("SELECT COALESCE(MAX(seq), 0) FROM rows")
        # The ids of the rows to send, per (subaccount, kind): loaded from the rows on the first
        # add() of a resumed ledger, dropped by rollback().
        self._seen: dict[tuple[str, str], UuidSet] | None = None
        self._store_to_send = True
        self.added_to_send: dict[str, int] = {}
        """Rows to send that :meth:`add` inserted through this object, per subaccount."""
        self.added_refused: dict[str, int] = {}
        """Rows refused locally that :meth:`add` inserted through this object, per outcome."""

    # ---------------------------------------------------------------- opening and closing

    @classmethod
    def create(
        cls, path: Path, meta: dict[str, Any], *, durable: bool = True, plan: bool = False
    ) -> Ledger:
        """Start a new ledger at *path*; refuse if one exists (a finished or interrupted run).

        A ledger that is not *durable* keeps no journal and never syncs: a crash may leave it
        corrupt. A *plan*'s ledger (a dry run's, thrown away after it, so not durable either)
        checks and counts the rows to send (:attr:`added_to_send`) without storing them: a
        plan needs their number, not the rows (measured: 2.5-3 µs a row saved of about 7).
        """
        if path.exists():
            raise LedgerError(
                f"{path}: a ledger from an earlier run exists; add --resume to finish that run, "
                "--retry-failed to re-send its failures, or choose another --output"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock(path)
        try:
            conn = _connect(path, durable=durable and not plan)
            conn.executescript(_SCHEMA)
            ledger = cls(path, conn, lock_fd)
            ledger._store_to_send = not plan
            ledger.set_meta({"schema_version": SCHEMA_VERSION, **meta})
            ledger.commit()
        except BaseException:
            _unlock(lock_fd)
            raise
        return ledger

    @classmethod
    def open(cls, path: Path) -> Ledger:
        """Open an existing ledger to resume it; refuse if missing or locked by a running run."""
        if not path.is_file():
            raise LedgerError(
                f"{path}: no ledger to resume; run without --resume to start, "
                "or point --output at the earlier run's results file"
            )
        lock_fd = _lock(path)
        try:
            ledger = cls._checked(path, lambda: _connect(path), lock_fd)
        except BaseException:
            _unlock(lock_fd)
            raise
        ledger._renew_work_index()
        return ledger

    @classmethod
    def read_only(cls, path: Path) -> Ledger:
        """Open a ledger for reading (reports), without taking the run lock."""
        if not path.is_file():
            raise LedgerError(f"{path}: no such ledger")
        return cls._checked(
            path,
            lambda: sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None),
            -1,
        )

    @classmethod
    def _checked(
        cls, path: Path, connect: Callable[[], sqlite3.Connection], lock_fd: int
    ) -> Ledger:
        """Connect and check that *path* holds a ledger of this schema version."""
        conn = None
        try:
            conn = connect()
            version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if version is None or orjson.loads(version[0]) != SCHEMA_VERSION:
                raise LedgerError(f"{path}: not a bulk-cancel ledger of this version")
            return cls(path, conn, lock_fd)
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            raise LedgerError(
                f"{path}: not a readable bulk-cancel ledger ({exc}); "
                "point at a run's results file or its .ledger.sqlite"
            ) from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise

    def close(self) -> None:
        """Commit and release the lock."""
        try:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
            if self._conn.in_transaction:
                self._conn.commit()
            self._conn.close()
        finally:
            _unlock(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- metadata

    def meta(self) -> dict[str, Any]:
        """All run metadata."""
        return {k: orjson.loads(v) for k, v in self._conn.execute("SELECT key, value FROM meta")}

    def attempts(self) -> list[dict[str, Any]]:
        """Each run of this ledger so far (first, resumes, retries), oldest first: ``mode``,
        ``started_at``, ``finished_at``, ``elapsed_s``, ``requests``, ``retries``,
        ``exit_code``; a run that was killed keeps ``finished_at`` None."""
        attempts: list[dict[str, Any]] = self.meta().get("attempts", [])
        return attempts

    def begin_attempt(self, mode: str, started_at: str) -> int:
        """Record (and commit) that a run of *mode* started; return its index."""
        attempts = self.attempts()
        attempts.append(
            {
                "mode": mode,
                "started_at": started_at,
                "finished_at": None,
                "elapsed_s": None,
                "requests": None,
                "retries": None,
                "exit_code": None,
            }
        )
        self.set_meta({"attempts": attempts})
        self.commit()
        return len(attempts) - 1

    def end_attempt(self, index: int, values: dict[str, Any]) -> None:
        """Fill in how attempt *index* ended (committed with the next commit)."""
        attempts = self.attempts()
        attempts[index].update(values)
        self.set_meta({"attempts": attempts})

    def set_meta(self, values: dict[str, Any]) -> None:
        """Store metadata (committed with the next commit)."""
        self._begin()
        self._conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(k, orjson.dumps(v).decode()) for k, v in values.items()],
        )

    # ---------------------------------------------------------------- ingest

    def add(self, rows: Sequence[NewRow], finished_at: str) -> int:
        """Insert *rows*, shaped as :class:`~bulk_cancel.readers.InputRow` (``line, subaccount,
        target_id, kind, extra, problem, detail``); return how many were duplicates.

        A row whose (subaccount, kind, target) is already present, or came earlier in *rows*, is
        a duplicate: not inserted, counted. A row with a *problem* (found by a local check) is
        final at once with that outcome, *detail* as its message and *finished_at* as its time,
        and is never sent; its target is then the text as written, and it can only ever be a
        duplicate of another such row. A row to send has a canonical UUID as its target.
        *extra* holds the input's other values, typed as the input had them (see
        :func:`encode_extra`). Every row takes the next seq, so seqs follow the input's order.
        """
        if not rows:
            return 0
        try:
            return self._add(rows, finished_at)
        except BaseException:
            # The ids may be remembered without their rows (a full disk, an interrupt in an
            # executemany): forget them all; the next add() reads them back from the rows.
            self._seen = None
            raise

    def _add(self, rows: Sequence[NewRow], finished_at: str) -> int:
        first = self._seq + 1
        self._seq += len(rows)
        self._begin()
        lines, subs, tids, kinds, extras, problems, _ = zip(*rows, strict=True)
        if not any(problems):  # the common case: every row to send, column by column
            seqs = range(first, first + len(rows))
            inserted = self._insert_new(seqs, lines, subs, tids, kinds, extras)
        else:
            inserted = 0
            send = [i for i, problem in enumerate(problems) if problem is None]
            if send:
                inserted = self._insert_new(
                    [first + i for i in send],
                    [lines[i] for i in send],
                    [subs[i] for i in send],
                    [tids[i] for i in send],
                    [kinds[i] for i in send],
                    [extras[i] for i in send],
                )
            refused: dict[str, list[tuple[object, ...]]] = {}  # by outcome, to count each
            for i, (line, sub, tid, kind, extra, problem, detail) in enumerate(rows):
                if problem is not None:
                    refused.setdefault(problem.value, []).append(
                        (
                            first + i,
                            sub,
                            tid,
                            kind.value,
                            line,
                            _encoded(extra),
                            FINAL,
                            problem.value,
                            detail,
                            finished_at,
                        )
                    )
            for outcome, values in refused.items():
                before = self._conn.total_changes
                self._conn.executemany(_INSERT_REFUSED, values)
                n = self._conn.total_changes - before
                self.added_refused[outcome] = self.added_refused.get(outcome, 0) + n
                inserted += n
        return len(rows) - inserted

    def _insert_new(
        self,
        seqs: Sequence[int],
        lines: Sequence[int],
        subs: Sequence[str],
        tids: Sequence[str],
        kinds: Sequence[Kind],
        extras: Sequence[Sequence[object] | None],
    ) -> int:
        """Insert the rows to send whose (subaccount, kind, UUID) is neither in the ledger nor
        earlier among these; remember them; return how many."""
        seen = self._seen if self._seen is not None else self._load_seen()
        added = self.added_to_send
        n = len(tids)
        one_kind = kinds.count(kinds[0]) == n
        if one_kind and subs.count(subs[0]) == n:  # one subaccount and kind: the usual input
            new = self._lane(seen, subs[0], kinds[0]).add(*uuid_halves(tids))
            added[subs[0]] = added.get(subs[0], 0) + int(new.sum())
        else:
            lanes: dict[tuple[str, Kind], list[int]] = {}
            for i, lane in enumerate(zip(subs, kinds, strict=True)):
                lanes.setdefault(lane, []).append(i)
            new = np.zeros(len(tids), dtype=np.bool_)
            for (sub, kind), at in lanes.items():
                fresh = self._lane(seen, sub, kind).add(*uuid_halves([tids[i] for i in at]))
                new[at] = fresh
                added[sub] = added.get(sub, 0) + int(fresh.sum())
        keep = new.tolist()
        if not self._store_to_send:
            return sum(keep)
        self._conn.executemany(
            _INSERT_PLAIN,
            itertools.compress(
                zip(
                    seqs,
                    subs,
                    tids,
                    itertools.repeat(kinds[0].value, n)
                    if one_kind
                    else [kind.value for kind in kinds],
                    lines,
                    map(_encoded, extras),
                    strict=True,
                ),
                keep,
            ),
        )
        return sum(keep)

    @staticmethod
    def _lane(seen: dict[tuple[str, str], UuidSet], sub: str, kind: Kind) -> UuidSet:
        ids = seen.get((sub, kind.value))
        if ids is None:
            ids = seen[(sub, kind.value)] = UuidSet()
        return ids

    def _load_seen(self, chunk_rows: int = 100_000) -> dict[tuple[str, str], UuidSet]:
        """The ids of the rows to send already in the ledger (a resumed run reading on)."""
        seen: dict[tuple[str, str], UuidSet] = {}
        cur = self._conn.execute("SELECT sub, kind, tid FROM rows WHERE refused = 0")
        while batch := cur.fetchmany(chunk_rows):
            groups: dict[tuple[str, str], list[str]] = {}
            for sub, kind, tid in batch:
                groups.setdefault((sub, kind), []).append(tid)
            for key, ids in groups.items():
                group = seen.get(key)
                if group is None:
                    group = seen[key] = UuidSet()
                group.add(*uuid_halves(ids))
        self._seen = seen
        return seen

    def finish_ingest(self) -> None:
        """Build the work index and commit: from here on the ledger can be resumed without the
        input. A plan's ledger only commits: nothing will be sent from it."""
        if self._store_to_send:
            self._begin()
            self._conn.execute(_TODO_INDEX)
        self.commit()

    def _renew_work_index(self) -> None:
        """A ledger of an earlier build keeps its work index keyed on ``state`` (``rows_todo``):
        replace it, so that this build's queries find their rows by an index again."""
        old = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'rows_todo'"
        ).fetchone()
        if old:
            self._begin()
            self._conn.execute("DROP INDEX rows_todo")
            self._conn.execute(_TODO_INDEX)
            self.commit()

    def build_work_index(self) -> None:
        """Build the work index now and commit, for rows sent while more are being added.

        Its key is (sub, seq) and seq only grows, so each added row extends it at its end.
        """
        self.finish_ingest()

    # ---------------------------------------------------------------- sending

    def reopen_failures(self) -> int:
        """Make the rows a later run could still cancel pending again; return how many.

        Those are :data:`~bulk_cancel.model.RETRYABLE_OUTCOMES` (``failed``, ``not_attempted``,
        and ``auth_failed``: a 401/403 refused the request, nothing was applied, and a fixed key
        may well succeed) and ``subaccount_rejected`` rows the *API* refused (code 1001, "not in
        this key's account": another key may be). A subaccount id refused locally (not 8x8's
        pattern) stays final: no key changes it. The row's earlier answer is cleared; its
        attempts and ambiguity are kept (an answer lost before still makes "nothing to cancel"
        ``unconfirmed``).
        """
        self._begin()
        cur = self._conn.execute(
            "UPDATE rows SET state = 0, outcome = NULL, http_status = NULL, error_code = NULL, "
            "error_message = NULL, error_id = NULL, cancelled_count = NULL, finished_at = NULL "
            f"WHERE {_RESENDABLE}",
            _RESENDABLE_ARGS,
        )
        return cur.rowcount

    def resendable(self) -> dict[str, int]:
        """Rows :meth:`reopen_failures` would make pending again, by outcome, plus rows still
        ``SENT`` (reported ``failed``): what a run that stops here leaves undone."""
        counts: dict[str, int] = {}
        for outcome, n in self._conn.execute(
            f"SELECT outcome, COUNT(*) FROM rows WHERE {_RESENDABLE} GROUP BY 1",
            _RESENDABLE_ARGS,
        ):
            counts[outcome] = n
        sent = self._scalar(f"SELECT COUNT(*) FROM rows WHERE state = {SENT}")
        if sent:
            counts[Outcome.FAILED.value] = counts.get(Outcome.FAILED.value, 0) + sent
        return counts

    def rollback(self) -> None:
        """Undo what was not committed (a resume declined at the prompt: the rows it reopened)."""
        if self._conn.in_transaction:
            self._conn.rollback()
        self._seen = None  # it may hold ids of rows just undone

    def lanes(self) -> list[tuple[str, int]]:
        """Subaccounts with rows left to send, and how many, biggest first."""
        return [
            (sub, n)
            for sub, n in self._conn.execute(
                "SELECT sub, COUNT(*) FROM rows WHERE outcome IS NULL GROUP BY sub ORDER BY 2 DESC, 1"
            )
        ]

    def next_work(self, subaccount: str, after_seq: int, limit: int) -> list[WorkItem]:
        """The next rows of *subaccount* still to send, in input order, and mark them ``SENT``.

        The caller commits before any of them is sent (:meth:`commit`).
        """
        if self._checkpointer is None and self._lock_fd >= 0:
            # Sending starts: from here on no commit may stop the event loop to checkpoint.
            # (Not while reading the input: one long transaction, nothing to checkpoint.)
            self._conn.execute("PRAGMA wal_autocheckpoint = 0")
            self._checkpointer = _Checkpointer(self.path)
        rows = self._conn.execute(
            "SELECT seq, tid, kind, state, ambiguous, attempts FROM rows "
            "WHERE sub = ? AND outcome IS NULL AND seq > ? ORDER BY seq LIMIT ?",
            (subaccount, after_seq, limit),
        ).fetchall()
        if not rows:
            return []
        self._begin()
        # One range update instead of one per row: the same rows, by the same index.
        self._conn.execute(
            "UPDATE rows SET state = 1 WHERE sub = ? AND outcome IS NULL AND seq > ? AND seq <= ?",
            (subaccount, after_seq, rows[-1][0]),
        )
        kinds = _KINDS
        return [
            WorkItem(seq, subaccount, tid, kinds[kind], bool(amb) or state == SENT, attempts)
            for seq, tid, kind, state, amb, attempts in rows
        ]

    def record(self, results: Sequence[tuple[int, Result, bool]]) -> None:
        """Store final results ``(seq, result, ambiguous)`` (committed with the next commit)."""
        if not results:
            return
        # Most rows carry no error: they bind six values, not ten (a quarter cheaper per row).
        plain: list[PlainResult] = []
        full: list[tuple[object, ...]] = []
        for seq, r, amb in results:
            if r.error_code is None and r.error_message is None and r.error_id is None and not amb:
                plain.append(
                    (
                        r.outcome.value,
                        r.http_status,
                        r.cancelled_count,
                        r.attempts,
                        r.finished_at,
                        seq,
                    )
                )
            else:
                full.append(
                    (
                        r.outcome.value,
                        r.http_status,
                        r.error_code,
                        r.error_message,
                        r.error_id,
                        r.cancelled_count,
                        r.attempts,
                        r.finished_at,
                        int(amb),
                        seq,
                    )
                )
        self.record_plain(plain)
        if full:
            self._begin()
            self._conn.executemany(_RECORD_FULL, full)

    def record_plain(self, rows: Sequence[PlainResult]) -> None:
        """Store final results with no error and no doubt, given as ``(outcome, http_status,
        cancelled_count, attempts, finished_at, seq)``: what most rows end with, made by the
        pipeline without a :class:`Result` each."""
        if rows:
            self._begin()
            self._conn.executemany(_RECORD_PLAIN, rows)

    def release(self, seqs: Sequence[int]) -> None:
        """Put rows marked ``SENT`` that were never sent back to ``PENDING``."""
        if seqs:
            self._begin()
            self._conn.executemany(
                "UPDATE rows SET state = 0 WHERE seq = ? AND state = 1", [(s,) for s in seqs]
            )

    def commit(self) -> None:
        """Make everything so far durable against a crash of this process."""
        if self._conn.in_transaction:
            self._conn.commit()

    # ---------------------------------------------------------------- reading back

    def counts(self) -> dict[str, int]:
        """Rows by reported outcome (rows not final are ``not_attempted``, or ``failed`` if sent)."""
        counts: dict[str, int] = {}
        for outcome, n in self._conn.execute(
            "SELECT CASE WHEN state = 2 THEN outcome WHEN state = 1 THEN ? ELSE ? END, COUNT(*) "
            "FROM rows GROUP BY 1",
            (Outcome.FAILED.value, Outcome.NOT_ATTEMPTED.value),
        ):
            counts[outcome] = n
        return counts

    def breakdown(self, column: int | None = None) -> dict[str, dict[str, int]]:
        """Rows by reported outcome (as :meth:`counts`) per subaccount, or per value of the
        input's extra column number *column* (blank for a row without it), groups by name."""
        group = "sub" if column is None else "COALESCE(json_extract(CAST(extra AS TEXT), ?), '')"
        args: tuple[object, ...] = () if column is None else (f"$[{int(column)}]",)
        groups: dict[str, dict[str, int]] = {}
        for key, outcome, n in self._conn.execute(
            f"SELECT {group}, CASE WHEN state = 2 THEN outcome WHEN state = 1 THEN ? ELSE ? END, "
            "COUNT(*) FROM rows GROUP BY 1, 2 ORDER BY 1, 2",
            (*args, Outcome.FAILED.value, Outcome.NOT_ATTEMPTED.value),
        ):
            groups.setdefault(str(key), {})[outcome] = n
        return groups

    def examples(
        self, outcome: Outcome, limit: int = 5
    ) -> list[tuple[int | None, str, str | None]]:
        """The first rows with *outcome*: ``(line, id as given, detail)``, for ``validate``."""
        return [
            (line, tid, message)
            for line, tid, message in self._conn.execute(
                "SELECT line, tid, error_message FROM rows WHERE state = 2 AND outcome = ? "
                "ORDER BY seq LIMIT ?",
                (outcome.value, limit),
            )
        ]

    def totals(self) -> tuple[int, int]:
        """``(rows, sum of cancelled_count)``."""
        rows, cancelled = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(cancelled_count), 0) FROM rows"
        ).fetchone()
        return int(rows), int(cancelled)

    def iter_results(
        self, *, outcomes: frozenset[str] | None = None, chunk_rows: int = 20_000
    ) -> Iterator[list[tuple[object, ...]]]:
        """Results rows in input order, in chunks: :data:`RESULT_COLUMNS` then the extra columns.

        Rows never answered are reported ``not_attempted`` (never sent) or ``failed`` (sent, no
        answer before the run ended): a results file must not leave any row without an outcome.
        Both are re-sent by ``--resume``; a ``SENT`` row is re-sent as ambiguous.
        """
        cur = self._conn.execute(
            "SELECT tid, sub, kind, CASE WHEN state = 2 THEN outcome WHEN state = 1 THEN ? ELSE ? END,"
            " http_status, error_code, error_message, error_id, cancelled_count, attempts,"
            " finished_at, line, extra FROM rows ORDER BY seq",
            (Outcome.FAILED.value, Outcome.NOT_ATTEMPTED.value),
        )
        meta = self.meta()
        width = len(meta.get("extra_columns", []))
        empty = ("",) * width
        decode = decode_extra if _has_tags(meta.get("extra_types", ())) else _decode_plain
        while True:
            batch = cur.fetchmany(chunk_rows)
            if not batch:
                return
            out = []
            for row in batch:
                if outcomes is not None and row[3] not in outcomes:
                    continue
                extra = decode(row[-1]) if row[-1] else empty
                out.append(row[:-1] + extra)
            if out:
                yield out

    # ---------------------------------------------------------------- internals

    def _begin(self) -> None:
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN")

    def _scalar(self, sql: str) -> int:
        return int(self._conn.execute(sql).fetchone()[0])


assert RESULT_COLUMNS[:3] == ("umid", "subaccount_id", "kind")  # iter_results' column order


class _Checkpointer:
    """Copies the WAL back into the database from a thread, so that no commit waits for it.

    SQLite checkpoints inside whichever commit crosses ``wal_autocheckpoint`` pages, and that
    commit then writes and syncs the database file: on the event loop's thread, 10-27 ms during
    which no request leaves (measured at 1,800/s: the longest stalls of a run). A passive
    checkpoint from a second connection never blocks the writer, and SQLite releases the GIL
    while it does I/O. Durability is unchanged: commits are durable once in the WAL.
    """

    def __init__(self, path: Path, every_s: float = 0.5) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(path, every_s), name="ledger-checkpoint", daemon=True
        )
        self._thread.start()

    def _run(self, path: Path, every_s: float) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            while not self._stop.wait(every_s):
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


#: The rows a later run could still cancel (see :meth:`Ledger.reopen_failures`).
_RESENDABLE: Final = (
    f"state = 2 AND (outcome IN ({', '.join('?' * len(RETRYABLE_OUTCOMES))}) "
    "OR (outcome = ? AND http_status IS NOT NULL))"
)
_RESENDABLE_ARGS: Final = (
    *sorted(o.value for o in RETRYABLE_OUTCOMES),
    Outcome.SUBACCOUNT_REJECTED.value,
)

_RECORD_PLAIN: Final = (
    "UPDATE rows SET state = 2, outcome = ?, http_status = ?, error_code = NULL, "
    "error_message = NULL, error_id = NULL, cancelled_count = ?, attempts = attempts + ?, "
    "finished_at = ?, ambiguous = 0 WHERE seq = ?"
)
_RECORD_FULL: Final = (
    "UPDATE rows SET state = 2, outcome = ?, http_status = ?, error_code = ?, "
    "error_message = ?, error_id = ?, cancelled_count = ?, attempts = attempts + ?, "
    "finished_at = ?, ambiguous = ? WHERE seq = ?"
)
# ---------------------------------------------------------------------------- extra values

# A row's extra values are one JSON array per row, as text. JSON keeps str, int, float, bool and
# null apart; dates and times, which it cannot hold, go as one-key objects tagged by kind.
# Text, not orjson's bytes: orjson makes every bytes object with a 4 KiB buffer (measured: 4,097
# bytes held per row against 126 for the decoded text), and a chunk of rows is held until its
# executemany: 195 MiB at 50,000 rows, most of the peak RSS of a run with extra columns.
_TAG_DATETIME: Final = "T"
_TAG_DATE: Final = "D"
_TAG_TIME: Final = "H"
_TAG_DURATION: Final = "S"
_TEMPORAL_TYPES: Final = ("cell", "timestamp", "date", "time", "duration")


def _tag(value: object) -> object:
    if isinstance(value, dt.datetime):
        return {_TAG_DATETIME: value.isoformat()}
    if isinstance(value, dt.date):
        return {_TAG_DATE: value.isoformat()}
    if isinstance(value, dt.time):
        return {_TAG_TIME: value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {_TAG_DURATION: value.total_seconds()}
    return str(value)  # anything else (a Decimal) as its text


def encode_extra(values: Sequence[object]) -> str:
    """*values* (str, int, float, bool, None, datetime, date, time, timedelta) as compact text.

    :func:`decode_extra` gives them back with their types; anything else comes back as its text.
    """
    listed = values if isinstance(values, tuple | list) else list(values)
    return orjson.dumps(listed, default=_tag, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()


def _encoded(values: Sequence[object] | None) -> str | None:
    return encode_extra(values) if values else None


def _untag(value: dict[str, Any]) -> object:
    ((tag, text),) = value.items()
    if tag == _TAG_DATETIME:
        return dt.datetime.fromisoformat(text)
    if tag == _TAG_DATE:
        return dt.date.fromisoformat(text)
    if tag == _TAG_TIME:
        return dt.time.fromisoformat(text)
    return dt.timedelta(seconds=text)


def decode_extra(blob: str | bytes) -> tuple[object, ...]:
    """The values :func:`encode_extra` stored, with their types."""
    return tuple(_untag(v) if type(v) is dict else v for v in orjson.loads(blob))


def _decode_plain(blob: str | bytes) -> tuple[object, ...]:
    return tuple(orjson.loads(blob))


def _has_tags(types: Iterable[str]) -> bool:
    """Whether columns of these types (``InputSource.extra_types``) may hold tagged values."""
    return any(t.startswith(_TEMPORAL_TYPES) for t in types)


_INSERT_PLAIN: Final = (
    "INSERT INTO rows (seq, sub, tid, kind, line, extra) VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_REFUSED: Final = (
    "INSERT OR IGNORE INTO rows (seq, sub, tid, kind, line, extra, state, outcome, "
    "error_message, finished_at, refused) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)"
)


def _connect(path: Path, *, durable: bool = True) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    conn.execute(f"PRAGMA journal_mode = {'WAL' if durable else 'OFF'}")
    conn.execute(f"PRAGMA synchronous = {'NORMAL' if durable else 'OFF'}")
    conn.execute("PRAGMA cache_size = -8192")  # 8 MiB: rows are appended, no index on random keys
    conn.execute("PRAGMA temp_store = FILE")
    return conn


def _lock(path: Path) -> int:
    """Take the run lock beside the ledger, so overlapping runs (cron) cannot collide."""
    taken = locks.take(path.with_name(path.name + ".lock"))
    if isinstance(taken, str):
        raise LedgerError(
            f"{path}: another bulk-cancel run (pid {taken}) is using this ledger; "
            "wait for it to finish or choose another --output"
        )
    return taken


def _unlock(fd: int) -> None:
    if fd >= 0:
        locks.release(fd)
