"""Shards: ``run --shard K/N`` (one process per shard), ``--resume=auto`` and ``merge``."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import pytest
from e2e import (
    SimProcess,
    bulk_cancel,
    read_results,
    read_summary,
    simulator,
    start,
    wait_for_requests,
    write_csv,
)
from helpers import umids

from bulk_cancel.shard import Shard, owner, parse_shard

SUBS = ("acme_hq", "acme_eu")
SHARDS = 4


def _input(tmp_path: Path, n: int = 1200) -> tuple[Path, int]:
    """A two-subaccount CSV with a campaign column, duplicates and invalid ids; (path, unique)."""
    ids = umids(n, seed=17)
    rows = [[ids[i], SUBS[i % 2], f"c{i % 7}"] for i in range(n)]
    rows += [rows[5], rows[6], rows[n - 3]]  # duplicates, later in the file
    rows += [["not-a-uuid", "acme_hq", "bad"], ["../../etc", "acme_eu", "bad"]]
    path = write_csv(tmp_path / "in.csv", ["umid", "subaccount_id", "campaign"], rows)
    return path, n + 2


def _shard_args(src: Path, out: Path, sim: SimProcess, k: int, rate: int) -> list[str]:
    return [
        "run",
        "--input",
        str(src),
        "--output",
        str(out),
        "--base-url",
        sim.url,
        "--rate",
        str(rate),
        "--shard",
        f"{k}/{SHARDS}",
        "--resume=auto",
        "--log-format",
        "json",
    ]


def _outcomes(path: Path) -> dict[tuple[str, str], str]:
    return {(r["subaccount_id"], r["umid"]): r["outcome"] for r in read_results(path)}


def test_every_row_belongs_to_exactly_one_shard() -> None:
    """For any N, each (subaccount, id) is owned by one shard of N, and only that one."""
    ids = umids(2000, seed=3)
    for count in (1, 2, 3, 8):
        shards = [Shard(k, count) for k in range(count)]
        for sub in SUBS:
            for umid in ids:
                assert sum(s.owns(sub, umid) for s in shards) == 1
        spread = Counter(owner("acme_hq", u, count) for u in ids)
        assert len(spread) == count and min(spread.values()) > 2000 / count / 2


def test_the_shard_hash_is_fixed() -> None:
    """The owner of a row never changes between versions or processes (a restarted pod resumes)."""
    assert [owner("acme_hq", u, 8) for u in umids(6, seed=1)] == [0, 7, 4, 0, 2, 7]
    assert owner("acme_hq", "x", 8) == owner("acme_hq", "x", 8)


@pytest.mark.parametrize("text", ["4/4", "1", "-1/4", "a/b", "0/0", "1/2/3"])
def test_bad_shard_specs_are_refused(text: str) -> None:
    """A shard spec must be K/N with 0 <= K < N."""
    with pytest.raises(ValueError, match="K/N"):
        parse_shard(text)


def test_bad_shard_flag_exits_2_before_sending(tmp_path: Path) -> None:
    """--shard 4/4 is one clear line and exit 2, nothing read or sent."""
    src, _ = _input(tmp_path, 20)
    ran = bulk_cancel(
        "run", "--input", src, "--output", tmp_path / "r.csv", "--shard", "4/4", "--dry-run"
    )
    assert ran.code == 2
    assert "--shard" in ran.stderr and "K/N" in ran.stderr
    assert "Traceback" not in ran.stderr


def test_four_shards_at_once_match_one_process_and_respect_the_limit(tmp_path: Path) -> None:
    """Four shards side by side: every row answered once, no 429, the simulator never sees more
    than the subaccount's limit in a second, and the merged results equal one process's."""
    src, unique = _input(tmp_path)
    limit = 300
    sim_args = ("--rate", str(limit), "--not-found-ratio", "0.1", "--already-sent-ratio", "0.1")
    with simulator(*sim_args) as sim:
        procs = [
            start(*_shard_args(src, tmp_path / f"r{k}.csv", sim, k, limit)) for k in range(SHARDS)
        ]
        codes = [p.wait(timeout=120) for p in procs]
        for p in procs:
            assert p.stderr is not None
            p.stderr.close()
        state = sim.state(ids=True)
    assert codes == [0] * SHARDS
    assert state["throttled"] == 0
    assert all(n <= limit for n in state["max_per_s_by_subaccount"].values())
    assert state["applied_twice"] == 0 and state["stray"] == 0
    assert set(state["requests_per_id"].values()) == {1}

    merged = bulk_cancel(
        "merge", "--output", tmp_path / "all.csv", *(tmp_path / f"r{k}.csv" for k in range(SHARDS))
    )
    assert merged.code == 0, merged.stderr
    rows = read_results(tmp_path / "all.csv")
    assert len(rows) == unique
    assert [int(r["line"]) for r in rows] == sorted(int(r["line"]) for r in rows)
    assert {r["campaign"] for r in rows} >= {"c0", "bad"}
    summary = read_summary(tmp_path / "all.csv")
    assert summary["unique"] == unique and summary["duplicates"] == 3
    assert sum(summary["counts"].values()) == unique
    assert summary["input_rows"] == unique + 3

    with simulator(*sim_args) as sim:
        one = bulk_cancel(
            "run", "--input", src, "--output", tmp_path / "one.csv", "--base-url", sim.url,
            "--rate", str(limit),
        )  # fmt: skip
    assert one.code == 0, one.stderr
    assert _outcomes(tmp_path / "all.csv") == _outcomes(tmp_path / "one.csv")
    single = read_summary(tmp_path / "one.csv")
    assert summary["counts"] == single["counts"]
    for key in ("unique", "duplicates", "input_rows", "cancelled_total"):
        assert summary[key] == single[key], key


def test_a_killed_shard_resumes_with_the_same_command(tmp_path: Path) -> None:
    """kill -9 one shard mid-run; the same command line (--resume=auto) finishes it, once each."""
    src, _ = _input(tmp_path, 1600)
    with simulator("--rate", "400", "--latency-ms", "20") as sim:
        args = _shard_args(src, tmp_path / "r1.csv", sim, 1, 400)
        first = start(*args)
        wait_for_requests(sim, 40)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert first.stderr is not None
        first.stderr.close()
        assert (tmp_path / "r1.ledger.sqlite").exists()
        sent_before = sim.state()["requests"]
        again = bulk_cancel(*args)
        assert again.code == 0, again.stderr
        assert '"run.resume"' in again.stderr
        state = sim.state(ids=True)
    rows = read_results(tmp_path / "r1.csv")
    mine = Shard(1, SHARDS)
    assert all(mine.owns(r["subaccount_id"], r["umid"]) for r in rows)
    assert Counter(r["outcome"] for r in rows)["not_attempted"] == 0
    assert state["requests"] > sent_before
    # Rows in flight at the kill were re-sent as ambiguous: never a confident wrong answer.
    twice = {key for key, n in state["requests_per_id"].items() if n > 1}
    outcome = {f"{r['subaccount_id']}/{r['umid']}": r["outcome"] for r in rows}
    assert all(outcome[key] == "unconfirmed" for key in twice)
    assert len({(r["subaccount_id"], r["umid"]) for r in rows}) == len(rows)


def test_merge_refuses_missing_duplicate_and_foreign_shards(tmp_path: Path) -> None:
    """merge names a missing shard, a shard given twice, and a shard of another input; exit 2."""
    src, _ = _input(tmp_path, 80)
    other = write_csv(tmp_path / "other.csv", ["umid"], [[u] for u in umids(30, seed=99)])
    with simulator() as sim:
        for k in range(2):
            ran = bulk_cancel(*_shard_args(src, tmp_path / f"r{k}.csv", sim, k, 1000)[:-2])
            assert ran.code == 0, ran.stderr
        ran = bulk_cancel(
            "run", "--input", other, "--subaccount", "acme_hq", "--output", tmp_path / "o2.csv",
            "--base-url", sim.url, "--shard", f"2/{SHARDS}",
        )  # fmt: skip
        assert ran.code == 0, ran.stderr
    r0, r1, o2 = tmp_path / "r0.csv", tmp_path / "r1.csv", tmp_path / "o2.csv"
    cases = {
        "missing": ((r0, r1), "shard(s) 2, 3 of 4 missing"),
        "twice": ((r0, r1, r1), "given twice"),
        "foreign": ((r0, r1, o2), "another input"),
    }
    for name, (parts, message) in cases.items():
        out = tmp_path / f"{name}.csv"
        ran = bulk_cancel("merge", "--output", out, *parts)
        assert ran.code == 2, (name, ran.stderr)
        assert message in ran.stderr and ran.stderr.count("\n") == 1, ran.stderr
        assert not out.exists()


def test_resume_auto_starts_afresh_without_a_ledger(tmp_path: Path) -> None:
    """--resume=auto with no ledger starts a new run; given again, it resumes the finished one."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(20, seed=5)])
    out = tmp_path / "r.csv"
    with simulator() as sim:
        base = ("run", "--input", src, "--subaccount", "acme_hq", "--output", out)
        first = bulk_cancel(*base, "--base-url", sim.url, "--resume=auto")
        second = bulk_cancel(*base, "--base-url", sim.url, "--resume=auto")
        requests = sim.state()["requests"]
    assert first.code == 0 and second.code == 0, (first.stderr, second.stderr)
    assert requests == 20  # the second found every row answered and sent nothing
    assert read_summary(out)["counts"]["cancelled"] == 20


def test_resume_flag_takes_only_auto(tmp_path: Path) -> None:
    """--resume=yes is refused with one line (only --resume or --resume=auto)."""
    ran = bulk_cancel("run", "--input", "x.csv", "--output", tmp_path / "r.csv", "--resume=yes")
    assert ran.code == 2 and "auto" in ran.stderr


def test_shards_pace_each_subaccount_at_rate_over_n(tmp_path: Path) -> None:
    """A shard's plan paces each subaccount at rate / N."""
    src, _ = _input(tmp_path, 40)
    ran = bulk_cancel(
        "run", "--input", src, "--output", tmp_path / "r.csv", "--rate", "1800",
        "--shard", "1/4", "--dry-run",
    )  # fmt: skip
    assert ran.code == 0, ran.stderr
    assert '"rate_per_s": 450.0' in ran.stdout and '"shard": "1/4"' in ran.stdout


def test_the_merged_summary_has_one_runs_keys(tmp_path: Path) -> None:
    """merge's summary has the keys of one run's summary (plus `shards`): requests and retries
    summed over the shards, the input's figures once, the settings the shards shared."""
    src, unique = _input(tmp_path, 200)
    with simulator("--faults", "http_503=0.1") as sim:  # 6 attempts: a row fails 1 in 10⁶
        for k in range(2):
            ran = bulk_cancel(
                "run", "--input", src, "--output", tmp_path / f"r{k}.csv", "--base-url", sim.url,
                "--shard", f"{k}/2", "--rate", "1000",
            )  # fmt: skip
            assert ran.code == 0, ran.stderr
    merged = bulk_cancel(
        "merge", "--output", tmp_path / "all.csv", tmp_path / "r0.csv", tmp_path / "r1.csv",
        "--format", "json",
    )  # fmt: skip
    assert merged.code == 0, merged.stderr
    parts = [read_summary(tmp_path / f"r{k}.csv") for k in range(2)]
    summary = read_summary(tmp_path / "all.csv")
    assert json.loads(merged.stdout) == summary
    assert list(summary) == [*parts[0], "shards"]  # the same keys, in the same order
    for key in ("requests", "retries", "requests_this_run", "retries_this_run", "unique"):
        assert summary[key] == parts[0][key] + parts[1][key], key
    assert summary["retries_this_run"] > 0  # the 503s were retried: a sum that means something
    assert (summary["unique"], summary["input_rows"]) == (unique, parts[0]["input_rows"])
    assert summary["settings"]["input"] == str(src)
    assert "shard" not in summary["settings"] and "output" not in summary["settings"]
    assert [s["shard"] for s in summary["shards"]] == ["0/2", "1/2"]
