"""Job files, drop folders, the job lock and the confirmation, against the simulator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import API_KEY, umids
from e2e import bulk_cancel, read_results, read_summary, simulator, write_csv

from bulk_cancel.errors import UsageError
from bulk_cancel.jobs import job_lock
from bulk_cancel.runner import Runner
from bulk_cancel.settings import RunSettings
from bulk_cancel.simulator import running_simulator

ROOT = Path(__file__).resolve().parent.parent


def test_demo_job_runs(tmp_path: Path) -> None:
    """jobs/demo.toml (what `make demo` runs) cancels its sample file; flags override the job."""
    out = tmp_path / "demo.csv"
    with simulator() as sim:
        ran = bulk_cancel(
            "run",
            ROOT / "jobs" / "demo.toml",
            "--base-url",
            sim.url,
            "--output",
            out,
            "--rate",
            "2000",
        )
    assert ran.code == 0, ran.stderr
    summary = read_summary(out)
    assert summary["unique"] == 1502 and summary["counts"]["invalid_umid"] == 2
    assert summary["settings"]["job"] == "demo"


def test_campaign_abort_example_runs(tmp_path: Path) -> None:
    """The campaign-abort example runs against the simulator with its Excel output and errors file."""
    job = tmp_path / "campaign-abort.toml"
    shutil.copy(ROOT / "jobs" / "campaign-abort.example.toml", job)
    write_csv(
        tmp_path / "umids.csv",
        ["umid", "owner"],
        [[u, "ops"] for u in umids(20)] + [["junk", "ops"]],
    )
    with simulator() as sim:
        ran = bulk_cancel("run", job, "--input", tmp_path / "umids.csv", "--base-url", sim.url)
    assert ran.code == 0, ran.stderr
    (results,) = (
        (tmp_path.parent / "out" / "campaign-abort").glob("*/results.xlsx")
        if False
        else (tmp_path / ".." / "out").glob("campaign-abort/*/results.xlsx")
    )
    summary = read_summary(results)
    assert summary["counts"]["cancelled"] == 20
    assert read_results(results.with_name("results.errors.csv"))[0]["umid"] == "junk"
    shutil.rmtree(tmp_path / ".." / "out")


def test_nightly_drop_folder_processes_each_file_once(tmp_path: Path) -> None:
    """Each file in the drop folder is cancelled once and archived; a second run finds nothing to do."""
    job = tmp_path / "nightly.toml"
    shutil.copy(ROOT / "jobs" / "nightly-cleanup.example.toml", job)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    first, second = umids(30, seed=50), umids(20, seed=51)
    write_csv(incoming / "a.csv", ["umid", "subaccount_id"], [[u, "sub_a"] for u in first])
    write_csv(incoming / "b.csv", ["umid", "subaccount_id"], [[u, "sub_b"] for u in second])
    with simulator() as sim:
        ran = bulk_cancel("run", job, "--base-url", sim.url)
        again = bulk_cancel("run", job, "--base-url", sim.url)
        assert sim.state()["requests"] == 50
    assert ran.code == 0, ran.stderr
    assert again.code == 0, again.stderr
    assert sorted(p.name for p in (tmp_path / "archive").iterdir()) == ["a.csv", "b.csv"]
    assert list(incoming.iterdir()) == [] and list((tmp_path / "processing").iterdir()) == []
    results = sorted((tmp_path / "results").glob("*/*.csv"))
    assert [p.name for p in results] == ["a.csv", "b.csv"]
    assert {r["outcome"] for r in read_results(results[0])} == {"cancelled"}
    assert (tmp_path / "results" / "bulk_cancel.prom").read_text().count("bulk_cancel_rows{") == 9
    assert all(
        json.loads(line)["event"] for line in ran.stderr.splitlines() if line.startswith("{")
    )


def test_a_claimed_file_left_by_a_crash_is_resumed(tmp_path: Path) -> None:
    """A file found in processing/ (the last run died) is resumed into the same results first."""
    job = tmp_path / "nightly.toml"
    shutil.copy(ROOT / "jobs" / "nightly-cleanup.example.toml", job)
    (tmp_path / "incoming").mkdir()
    processing = tmp_path / "processing"
    processing.mkdir()
    ids = umids(10, seed=52)
    write_csv(processing / "c.csv", ["umid", "subaccount_id"], [[u, "sub_c"] for u in ids])
    out = tmp_path / "results" / "crashed" / "c.csv"
    (processing / "c.csv.bulk-cancel.json").write_text(json.dumps({"output": str(out)}))
    with simulator() as sim:
        # The crashed run had created its ledger: make one the way that run did, then "die".
        first = bulk_cancel(
            "run",
            "--input",
            processing / "c.csv",
            "--output",
            out,
            "--base-url",
            sim.url,
            "--dry-run",
        )
        assert first.code == 0
        start = bulk_cancel(
            "run",
            "--input",
            processing / "c.csv",
            "--output",
            out,
            "--base-url",
            sim.url,
            "--max-attempts",
            "1",
        )
        assert start.code == 0
        ran = bulk_cancel("run", job, "--base-url", sim.url)
    assert ran.code == 0, ran.stderr
    assert (tmp_path / "archive" / "c.csv").exists()
    assert {r["outcome"] for r in read_results(out)} == {"cancelled"}


def test_overlapping_runs_of_a_job_are_refused(tmp_path: Path) -> None:
    """While a job holds its lock, a second run of it exits 2 and touches nothing."""
    job = tmp_path / "nightly.toml"
    shutil.copy(ROOT / "jobs" / "nightly-cleanup.example.toml", job)
    (tmp_path / "incoming").mkdir()
    write_csv(tmp_path / "incoming" / "a.csv", ["umid", "subaccount_id"], [[umids(1)[0], "sub_a"]])
    (tmp_path / "archive").mkdir()
    with job_lock("nightly", tmp_path / "archive"), simulator() as sim:
        ran = bulk_cancel("run", job, "--base-url", sim.url)
        assert sim.state()["requests"] == 0
    assert ran.code == 2
    assert "another run" in ran.stderr
    assert (tmp_path / "incoming" / "a.csv").exists()


async def test_declining_the_confirmation_sends_nothing(tmp_path: Path) -> None:
    """Answering no at the prompt: nothing sent, no ledger kept."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(5)])
    asked = []
    async with running_simulator() as sim:
        settings = RunSettings(
            input=str(src), output=tmp_path / "r.csv", subaccount="acme_hq", base_url=sim.url
        )
        runner = Runner(settings, API_KEY, confirm=lambda plan: asked.append(plan) or False)
        with pytest.raises(UsageError, match="nothing was sent"):
            await runner.run()
        assert sim.state.requests == 0
    assert asked == [{"to_send": 5, "per_subaccount": {"acme_hq": 5}, "base_url": sim.url}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]  # noqa: ASYNC240 - the run is over
