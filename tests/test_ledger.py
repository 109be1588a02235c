"""The SQLite ledger: de-duplication, states, locking, refusal to overwrite, results order."""

from __future__ import annotations

import datetime as dt
import gc
import sqlite3
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from helpers import make_ledger, umids
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulk_cancel.errors import LedgerError
from bulk_cancel.ledger import Ledger, ledger_path
from bulk_cancel.model import RESULT_COLUMNS, Kind, Outcome, Result


def test_ledger_sits_beside_the_results() -> None:
    """results.csv gets results.ledger.sqlite in the same folder."""
    assert ledger_path(Path("out/results.csv")) == Path("out/results.ledger.sqlite")


def test_duplicates_are_counted_not_stored(ledger_path: Path) -> None:
    """The same (subaccount, kind, id) twice is one row; a different subaccount is another row."""
    u = umids(2)
    ledger = Ledger.create(ledger_path, {})
    dups = ledger.add(
        [
            (2, "a_sub", u[0], Kind.MESSAGE, None, None, None),
            (3, "a_sub", u[0], Kind.MESSAGE, None, None, None),
            (4, "b_sub", u[0], Kind.MESSAGE, None, None, None),
            (5, "a_sub", u[0], Kind.BATCH, None, None, None),
            (6, "a_sub", u[1], Kind.MESSAGE, None, None, None),
        ],
        "2026-01-01T00:00:00Z",
    )
    ledger.finish_ingest()
    assert dups == 1
    assert ledger.totals() == (4, 0)
    ledger.close()


def test_local_results_are_final_and_never_sent(ledger_path: Path) -> None:
    """A row rejected locally (invalid umid) is final at once and not offered to a lane."""
    ledger = Ledger.create(ledger_path, {})
    ledger.add(
        [
            (2, "a_sub", "../x", Kind.MESSAGE, None, Outcome.INVALID_UMID, "test"),
            (3, "a_sub", umids(1)[0], Kind.MESSAGE, None, None, None),
        ],
        "2026-01-01T00:00:00Z",
    )
    ledger.finish_ingest()
    assert ledger.lanes() == [("a_sub", 1)]
    assert ledger.counts() == {"invalid_umid": 1, "not_attempted": 1}
    ledger.close()


def test_existing_ledger_is_never_overwritten(ledger_path: Path) -> None:
    """Creating over an earlier run's ledger is refused with how to resume."""
    make_ledger(ledger_path, [("a_sub", umids(1)[0])]).close()
    with pytest.raises(LedgerError, match="--resume"):
        Ledger.create(ledger_path, {})


def test_second_writer_is_locked_out(ledger_path: Path) -> None:
    """While one run holds the ledger, another cannot open it."""
    first = make_ledger(ledger_path, [("a_sub", umids(1)[0])])
    with pytest.raises(LedgerError, match="another bulk-cancel run"):
        Ledger.open(ledger_path)
    first.close()
    Ledger.open(ledger_path).close()


def test_states_flow_and_results_keep_input_order(ledger_path: Path) -> None:
    """Rows go pending → sent → final; results come back in input order with reported outcomes."""
    u = umids(3)
    ledger = make_ledger(ledger_path, [("a_sub", x) for x in u])
    work = ledger.next_work("a_sub", 0, 2)
    assert [w.target_id for w in work] == u[:2]
    assert not any(w.ambiguous for w in work)
    ledger.record(
        [(work[0].seq, Result(outcome=Outcome.CANCELLED, cancelled_count=1, attempts=1), False)]
    )
    ledger.commit()
    rows = [r for chunk in ledger.iter_results() for r in chunk]
    assert [r[0] for r in rows] == u
    assert [r[3] for r in rows] == ["cancelled", "failed", "not_attempted"]
    ledger.close()


def test_reopen_failures_keeps_ambiguity(ledger_path: Path) -> None:
    """--retry-failed re-offers failed rows, still marked ambiguous if an answer was lost."""
    u = umids(2)
    ledger = make_ledger(ledger_path, [("a_sub", x) for x in u])
    work = ledger.next_work("a_sub", 0, 2)
    ledger.record(
        [
            (work[0].seq, Result(outcome=Outcome.FAILED, attempts=6), True),
            (work[1].seq, Result(outcome=Outcome.NOT_FOUND, attempts=1), False),
        ]
    )
    assert ledger.reopen_failures() == 1
    again = ledger.next_work("a_sub", 0, 10)
    assert [(w.target_id, w.ambiguous, w.attempts) for w in again] == [(u[0], True, 6)]
    ledger.close()


def test_reopen_sends_again_what_the_key_refused_but_not_what_is_final(
    ledger_path: Path,
) -> None:
    """A 401/403 and an API code 1001 applied nothing and depend on the key: reopened, their
    answer cleared; a subaccount refused locally and real answers stay final."""
    u = umids(6)
    ledger = make_ledger(ledger_path, [("a_sub", x) for x in u[:5]])
    ledger.add(
        [(7, "bad sub", u[5], Kind.MESSAGE, None, Outcome.SUBACCOUNT_REJECTED, None)],
        "2026-01-01T00:00:00Z",
    )
    work = ledger.next_work("a_sub", 0, 5)
    ledger.record(
        [
            (
                work[0].seq,
                Result(outcome=Outcome.AUTH_FAILED, http_status=401, error_code=1200, attempts=1),
                False,
            ),
            (
                work[1].seq,
                Result(
                    outcome=Outcome.SUBACCOUNT_REJECTED,
                    http_status=400,
                    error_code=1001,
                    attempts=1,
                ),
                False,
            ),
            (
                work[2].seq,
                Result(outcome=Outcome.CANCELLED, http_status=200, cancelled_count=1, attempts=1),
                False,
            ),
            (work[3].seq, Result(outcome=Outcome.NOT_FOUND, http_status=404, attempts=1), False),
        ]
    )
    ledger.release([work[4].seq])
    assert ledger.resendable() == {"auth_failed": 1, "subaccount_rejected": 1}
    assert ledger.reopen_failures() == 2
    assert ledger.resendable() == {}
    rows = {r[0]: r for chunk in ledger.iter_results() for r in chunk}
    assert rows[u[0]][3:6] == ("not_attempted", None, None)
    assert rows[u[1]][3] == "not_attempted" and rows[u[2]][3] == "cancelled"
    assert rows[u[5]][3] == "subaccount_rejected"
    again = ledger.next_work("a_sub", 0, 10)
    assert [w.target_id for w in again] == [u[0], u[1], u[4]]
    ledger.record_plain([("cancelled", 200, 1, 1, "2026-01-01T00:00:01Z", again[2].seq)])
    _assert_final_exactly_when_answered(ledger)
    rows = {r[0]: r for chunk in ledger.iter_results() for r in chunk}
    assert rows[u[4]][3:] == ("cancelled", 200, None, None, None, 1, 1, "2026-01-01T00:00:01Z", 6)
    ledger.close()


def _assert_final_exactly_when_answered(ledger: Ledger) -> None:
    """The work index keys on ``outcome IS NULL`` for "not final": the two must always agree."""
    pairs = ledger._conn.execute("SELECT state, outcome FROM rows").fetchall()
    assert pairs and all((state == 2) == (outcome is not None) for state, outcome in pairs)
    assert ledger._conn.execute(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'rows_open'"
    ).fetchone() == (1,)


def test_extra_columns_come_back_with_results(ledger_path: Path) -> None:
    """The input's other columns are stored per row and returned after the result columns."""
    ledger = Ledger.create(ledger_path, {"extra_columns": ["campaign", "note"]})
    ledger.add(
        [(2, "a_sub", umids(1)[0], Kind.MESSAGE, ("spring", "007"), None, None)],
        "2026-01-01T00:00:00Z",
    )
    ledger.finish_ingest()
    (row,) = next(iter(ledger.iter_results()))
    assert row[-2:] == ("spring", "007")
    ledger.close()


def test_the_wal_is_checkpointed_off_the_writer_and_the_thread_ends_with_the_ledger(
    ledger_path: Path,
) -> None:
    """Commits never checkpoint (no stall on the loop's thread), yet the thread's checkpoints
    let SQLite start the WAL afresh; the thread ends with the ledger."""
    import threading
    import time

    ledger = make_ledger(ledger_path, [("sub_1", u) for u in umids(2_000)])
    assert ledger._checkpointer is None  # reading the input: one transaction, nothing to do
    wal = ledger_path.with_name(ledger_path.name + "-wal")

    def salts() -> bytes:
        # SQLite's WAL header (file format, "WAL File Format"): the salts at bytes 16-23 change
        # each time a writer starts the WAL from the beginning, which it only does once every
        # frame was checkpointed. With wal_autocheckpoint 0 only the thread checkpoints.
        with wal.open("rb") as f:
            return f.read(24)[16:]

    items = ledger.next_work("sub_1", 0, 100)  # sending starts: so does the thread
    assert ledger._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    ledger.commit()
    first = salts()
    restarted = False
    deadline = time.monotonic() + 10
    while not restarted and time.monotonic() < deadline:
        ledger.record(
            [(i.seq, Result(outcome=Outcome.CANCELLED, attempts=1), False) for i in items[:1]]
        )
        ledger.commit()
        restarted = salts() != first
        time.sleep(0.02)
    ledger.close()
    assert restarted
    assert not [t for t in threading.enumerate() if t.name == "ledger-checkpoint"]


def test_the_first_of_two_duplicates_is_kept_among_rows_final_and_to_send(
    ledger_path: Path,
) -> None:
    """Duplicates are found among rows to send and among rows refused locally, in one add()
    or across several; the first of each is kept, and rows stay in input order."""
    a, b = umids(2)
    ledger = Ledger.create(ledger_path, {})
    dups = ledger.add(
        [
            (2, "s_1", "not-a-uuid", Kind.MESSAGE, None, Outcome.INVALID_UMID, "test"),
            (3, "s_1", a, Kind.MESSAGE, None, None, None),
            (4, "s_1", b, Kind.MESSAGE, ["x"], None, None),
            (5, "s_1", "not-a-uuid", Kind.MESSAGE, ["y"], Outcome.INVALID_UMID, "test"),
            (6, "s_1", a, Kind.MESSAGE, ["z"], None, None),
        ],
        "2026-01-01T00:00:00Z",
    )
    dups += ledger.add(
        [
            (7, "s_1", b, Kind.MESSAGE, None, None, None),
            (8, "s_1", "not-a-uuid", Kind.MESSAGE, None, Outcome.INVALID_UMID, "test"),
            (9, "s_2", b, Kind.MESSAGE, None, None, None),  # another subaccount: not a duplicate
            (10, "s_1", b, Kind.BATCH, None, None, None),  # another kind: not a duplicate
        ],
        "2026-01-01T00:00:00Z",
    )
    ledger.set_meta({"extra_columns": ["owner"]})
    ledger.finish_ingest()
    assert dups == 4
    rows = [r for chunk in ledger.iter_results() for r in chunk]
    assert [(r[0], r[1], r[3], r[-2], r[-1]) for r in rows] == [
        ("not-a-uuid", "s_1", "invalid_umid", 2, ""),
        (a, "s_1", "not_attempted", 3, ""),
        (b, "s_1", "not_attempted", 4, "x"),
        (b, "s_2", "not_attempted", 9, ""),
        (b, "s_1", "not_attempted", 10, ""),
    ]
    ledger.close()


def test_a_resumed_ledger_still_knows_its_ids(ledger_path: Path) -> None:
    """Ids added before the ledger was closed (a run killed mid-read) are duplicates after it
    is opened again; an add() rolled back is forgotten."""
    a, b, c = umids(3)
    ledger = Ledger.create(ledger_path, {})
    assert ledger.add([(2, "s_1", a, Kind.MESSAGE, None, None, None)], "2026-01-01T00:00:00Z") == 0
    ledger.commit()
    ledger.close()
    ledger = Ledger.open(ledger_path)
    assert ledger.add([(3, "s_1", b, Kind.MESSAGE, None, None, None)], "2026-01-01T00:00:00Z") == 0
    ledger.rollback()
    assert (
        ledger.add(
            [
                (4, "s_1", a, Kind.MESSAGE, None, None, None),
                (5, "s_1", b, Kind.MESSAGE, None, None, None),
            ],
            "2026-01-01T00:00:00Z",
        )
        == 1
    )
    assert ledger.add([(6, "s_1", c, Kind.MESSAGE, None, None, None)], "2026-01-01T00:00:00Z") == 0
    ledger.commit()
    assert ledger.totals()[0] == 3
    ledger.close()


def test_typed_extra_values_come_back_with_their_types(ledger_path: Path) -> None:
    """Numbers, booleans, dates and times given to add() come back from iter_results typed."""
    values = (
        "0.05",
        0.05,
        7,
        True,
        None,
        dt.datetime(2026, 3, 1, 10, 30, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 1, 10, 30, 15, 250_000),
        dt.date(2026, 3, 1),
        dt.time(9, 15),
        dt.timedelta(hours=1, minutes=30),
    )
    names = [f"c{i}" for i in range(len(values))]
    ledger = Ledger.create(ledger_path, {"extra_columns": names, "extra_types": ["cell"] * 10})
    ledger.add(
        [(2, "a_sub", umids(1)[0], Kind.MESSAGE, values, None, None)], "2026-01-01T00:00:00Z"
    )
    ledger.finish_ingest()
    (row,) = next(iter(ledger.iter_results()))
    extra = row[len(RESULT_COLUMNS) :]
    assert extra == values
    assert [type(v) for v in extra] == [type(v) for v in values]
    ledger.close()


def test_add_holds_little_memory_per_row_with_extra_columns(ledger_path: Path) -> None:
    """Storing a chunk of rows with three extra values holds well under 1 KiB per row (issue 14)."""
    n = 20_000
    rows = [
        (
            i + 2,
            "a_sub",
            u,
            Kind.MESSAGE,
            ("Spring sale", f"+4477009{i:05d}", "2026-03-01T10:00Z"),
            None,
            None,
        )
        for i, u in enumerate(umids(n))
    ]
    ledger = Ledger.create(ledger_path, {"extra_columns": ["campaign", "phone", "scheduled_at"]})
    gc.collect()
    tracemalloc.start()
    try:
        ledger.add(rows, "2026-01-01T00:00:00Z")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    ledger.finish_ingest()
    ledger.close()
    assert peak < n * 1024, f"{peak / n:,.0f} bytes per row"


_POOL = umids(6, seed=91)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chunks=st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(["a_sub", "b_sub", "bad sub"]),
                st.sampled_from([*_POOL, "junk", "also junk"]),
                st.sampled_from([Kind.MESSAGE, Kind.BATCH]),
            ),
            max_size=12,
        ),
        max_size=5,
    )
)
def test_a_plans_counts_equal_what_a_run_stores(
    tmp_path_factory: pytest.TempPathFactory, chunks: list[list[tuple[str, str, Kind]]]
) -> None:
    """A dry run's ledger counts what it does not store: per subaccount to send, per outcome
    refused, and duplicates, exactly as a run's ledger holds the same rows."""
    folder = tmp_path_factory.mktemp("plan")
    run = Ledger.create(folder / "run.sqlite", {})
    plan = Ledger.create(folder / "plan.sqlite", {}, plan=True)
    line = 1
    duplicates = {"run": 0, "plan": 0}
    for chunk in chunks:
        rows = []
        for sub, tid, kind in chunk:
            line += 1
            problem = (
                Outcome.SUBACCOUNT_REJECTED
                if sub == "bad sub"
                else Outcome.INVALID_UMID
                if "junk" in tid
                else None
            )
            rows.append((line, sub, tid, kind, None, problem, None if problem is None else "x"))
        duplicates["run"] += run.add(rows, "2026-01-01T00:00:00Z")
        duplicates["plan"] += plan.add(rows, "2026-01-01T00:00:00Z")
    run.finish_ingest()
    counts = run.counts()
    assert {sub: n for sub, n in plan.added_to_send.items() if n} == dict(run.lanes())
    assert {k: v for k, v in plan.added_refused.items() if v} == {
        k: v for k, v in counts.items() if k != Outcome.NOT_ATTEMPTED
    }
    assert duplicates["plan"] == duplicates["run"]
    assert plan.totals()[0] == sum(plan.added_refused.values())  # only the refused are stored
    run.close()
    plan.close()


def test_an_add_that_fails_part_way_remembers_no_id_without_its_row(ledger_path: Path) -> None:
    """An add() that fails after some rows went in (here a value SQLite cannot bind) leaves no
    id remembered without its row: adding the same rows again inserts the missing one."""
    a, b = umids(2)
    ledger = Ledger.create(ledger_path, {})
    unbindable: Any = ["not", "a", "line"]
    with pytest.raises(sqlite3.Error):
        ledger.add(
            [
                (2, "s_1", a, Kind.MESSAGE, None, None, None),
                (unbindable, "s_1", b, Kind.MESSAGE, None, None, None),
            ],
            "2026-01-01T00:00:00Z",
        )
    again = [
        (4, "s_1", a, Kind.MESSAGE, None, None, None),
        (5, "s_1", b, Kind.MESSAGE, None, None, None),
    ]
    assert ledger.add(again, "2026-01-01T00:00:00Z") == 1  # a went in the first time; b now
    ledger.commit()
    assert sorted(r[0] for chunk in ledger.iter_results() for r in chunk) == sorted([a, b])
    ledger.close()


def test_a_ledger_of_the_previous_build_gets_this_builds_work_index(ledger_path: Path) -> None:
    """The previous build keyed its work index on ``state`` (``rows_todo``), which this build's
    queries cannot use: resuming such a ledger replaces it."""
    u = umids(3)
    ledger = make_ledger(ledger_path, [("a_sub", x) for x in u])
    ledger._conn.execute("DROP INDEX rows_open")
    ledger._conn.execute("CREATE INDEX rows_todo ON rows (sub, seq) WHERE state < 2")
    ledger.close()
    ledger = Ledger.open(ledger_path)
    names = {
        n for (n,) in ledger._conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
    }
    assert "rows_open" in names and "rows_todo" not in names
    plan = ledger._conn.execute(
        "EXPLAIN QUERY PLAN SELECT seq FROM rows WHERE sub = 'a_sub' AND outcome IS NULL "
        "AND seq > 0 ORDER BY seq LIMIT 10"
    ).fetchall()
    assert any("rows_open" in str(step) for step in plan)
    assert [w.target_id for w in ledger.next_work("a_sub", 0, 10)] == u
    ledger.close()
