"""Jobs: drop folders, resuming claimed files, the job lock, and the example jobs, on the simulator."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e import (
    SimProcess,
    bulk_cancel,
    read_results,
    read_summary,
    run_printed,
    simulator,
    start,
    wait_for_requests,
    write_csv,
)
from helpers import API_KEY, umids

from bulk_cancel.cli.process import prompting
from bulk_cancel.cli.shell import next_steps
from bulk_cancel.config import ResolvedSettings, resolve
from bulk_cancel.errors import ConfigError, ExitCode, Interrupted, LedgerError, UsageError
from bulk_cancel.jobs import SIDECAR_SUFFIX, DropFolder, job_lock, plan_runs, run_job
from bulk_cancel.runner import Runner, RunResult
from bulk_cancel.settings import RunSettings
from bulk_cancel.simulator import Faults, SimulatorConfig, running_simulator

ROOT = Path(__file__).resolve().parent.parent
LONG_AGO = time.time() - 3600


def drop(folder: Path, name: str, ids: list[str], sub: str = "acme_hq") -> Path:
    """A CSV in the drop folder, old enough to be taken (settle_time has passed)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = write_csv(folder / name, ["umid", "subaccount_id"], [[u, sub] for u in ids])
    os.utime(path, (LONG_AGO, LONG_AGO))
    return path


def nightly(tmp_path: Path, url: str, extra: str = "") -> ResolvedSettings:
    """A drop-folder job in tmp_path, pointed at the simulator."""
    job = tmp_path / "nightly.toml"
    job.write_text(
        'input = "incoming/*.csv"\narchive_dir = "archive"\n'
        'output = "results/{date}/{input_stem}.csv"\n' + extra
    )
    return resolve({"base_url": url}, {}, job, None)


class Runs:
    """A run_one that runs the real Runner and remembers the settings of each run."""

    def __init__(self, key: str = API_KEY, confirm: Callable[[Any], bool] | None = None) -> None:
        self.key = key
        self.confirm = confirm
        self.settings: list[RunSettings] = []

    async def __call__(self, settings: RunSettings) -> RunResult:
        self.settings.append(settings)
        return await Runner(
            settings, self.key, confirm=self.confirm, next_steps=next_steps(settings)
        ).run()


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


# ------------------------------------------------------------------------------ drop folders


async def test_each_dropped_file_is_processed_once_then_archived(tmp_path: Path) -> None:
    """Two files: each cancelled into its own results, archived; a second run sends nothing."""
    first, second = umids(30, seed=50), umids(20, seed=51)
    drop(tmp_path / "incoming", "a.csv", first)
    drop(tmp_path / "incoming", "b.csv", second, sub="acme_eu")
    async with running_simulator() as sim:
        job = nightly(tmp_path, sim.url)
        runs = Runs()
        assert await run_job(job, runs) is ExitCode.OK
        assert sim.state.requests == 50
        assert await run_job(job, runs) is ExitCode.OK
        assert sim.state.requests == 50 and len(runs.settings) == 2
    assert names(tmp_path / "archive") == ["a.csv", "b.csv"]
    assert names(tmp_path / "incoming") == [] and names(tmp_path / "processing") == []
    outputs = [s.output for s in runs.settings]
    assert [p.name for p in outputs] == ["a.csv", "b.csv"]  # {input_stem}: one results file each
    assert {r["umid"] for r in read_results(outputs[0])} == set(first)
    assert {r["outcome"] for r in read_results(outputs[1])} == {"cancelled"}
    manifest = (tmp_path / "archive" / ".bulk-cancel-processed.jsonl").read_text().splitlines()
    assert [json.loads(line)["archived_as"] for line in manifest] == ["a.csv", "b.csv"]


async def test_a_file_dropped_again_is_never_processed_twice(tmp_path: Path) -> None:
    """The same content under the same or another name is archived without a request."""
    ids = umids(10, seed=53)
    drop(tmp_path / "incoming", "monday.csv", ids)
    async with running_simulator() as sim:
        job = nightly(tmp_path, sim.url)
        await run_job(job, Runs())
        shutil.copy(tmp_path / "archive" / "monday.csv", tmp_path / "incoming" / "monday.csv")
        shutil.copy(tmp_path / "archive" / "monday.csv", tmp_path / "incoming" / "tuesday.csv")
        for path in (tmp_path / "incoming").iterdir():
            os.utime(path, (LONG_AGO, LONG_AGO))
        runs = Runs()
        assert await run_job(job, runs) is ExitCode.OK
        assert sim.state.requests == 10 and runs.settings == []
    assert names(tmp_path / "incoming") == []
    assert names(tmp_path / "archive") == ["monday-2.csv", "monday.csv", "tuesday.csv"]


async def test_a_new_file_under_an_old_name_gets_its_own_results(tmp_path: Path) -> None:
    """Another a.csv on a later night: results a-2.csv and archive a-2.csv, nothing overwritten."""
    drop(tmp_path / "incoming", "a.csv", umids(3, seed=69))
    async with running_simulator() as sim:
        job = nightly(tmp_path, sim.url)
        runs = Runs()
        await run_job(job, runs)
        drop(tmp_path / "incoming", "a.csv", umids(4, seed=70))
        await run_job(job, runs)
        assert sim.state.requests == 7
    first, second = (s.output for s in runs.settings)
    assert (first.name, second.name) == ("a.csv", "a-2.csv") and len(read_results(first)) == 3
    assert names(tmp_path / "archive") == ["a-2.csv", "a.csv"]


async def test_a_bad_setting_strands_no_file(tmp_path: Path) -> None:
    """Settings are checked before any claim: an unusable output leaves the file where it was."""
    drop(tmp_path / "incoming", "b.csv", umids(2, seed=71))
    (tmp_path / "nightly.toml").write_text(
        'input = "incoming/*.csv"\narchive_dir = "archive"\noutput = "results/{input_stem}.txt"\n'
    )
    job = resolve({}, {}, tmp_path / "nightly.toml", None)
    with pytest.raises(ConfigError, match=r"\.txt"):
        await run_job(job, Runs())
    assert names(tmp_path / "incoming") == ["b.csv"]
    assert not (tmp_path / "processing").exists()


async def test_files_still_arriving_are_left_for_the_next_run(tmp_path: Path) -> None:
    """A file changed within settle_time, a *.part and a hidden file are not taken."""
    incoming = tmp_path / "incoming"
    drop(incoming, "ready.csv", umids(3, seed=54))
    write_csv(incoming / "fresh.csv", ["umid"], [[u] for u in umids(3, seed=55)])
    drop(incoming, "upload.csv.part", umids(3, seed=56))
    drop(incoming, ".hidden.csv", umids(3, seed=57))
    async with running_simulator() as sim:
        job = nightly(tmp_path, sim.url, 'subaccount = "acme_hq"\n')
        runs = Runs()
        await run_job(job, runs)
    assert [s.output.name for s in runs.settings] == ["ready.csv"]
    assert sorted(p.name for p in incoming.iterdir()) == [
        ".hidden.csv",
        "fresh.csv",
        "upload.csv.part",
    ]


async def test_a_file_left_in_processing_is_resumed_into_the_same_results(
    tmp_path: Path,
) -> None:
    """A run stopped early leaves its file claimed; the next run resumes it, then archives it."""
    ids = umids(40, seed=58)
    drop(tmp_path / "incoming", "c.csv", ids)
    async with running_simulator(SimulatorConfig(api_keys=frozenset({"another-key"}))) as sim:
        # Slowly, so that the refused key stops the run with most rows not yet sent.
        job = nightly(tmp_path, sim.url, "rate = 20\n")
        port = int(sim.url.rsplit(":", 1)[1])
        stopped = Runs()
        assert await run_job(job, stopped) is ExitCode.REJECTED
        state = sim.state
    assert names(tmp_path / "processing") == ["c.csv", "c.csv" + SIDECAR_SUFFIX]
    assert names(tmp_path / "archive") == []
    async with running_simulator(port=port, state=state) as sim:  # the key works again
        resumed = Runs()
        assert await run_job(nightly(tmp_path, sim.url), resumed) is ExitCode.OK
    (first,), (second,) = stopped.settings, resumed.settings
    assert (first.resume, second.resume) == (False, True)
    assert second.output == first.output and second.input == first.input
    counts: dict[str, int] = {}
    for row in read_results(second.output):
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    # The rows the refused key got a 401 for are sent again too: a 401 applied nothing.
    assert counts == {"cancelled": 40} and sim.state.applied_twice == 0
    assert names(tmp_path / "archive") == ["c.csv"] and names(tmp_path / "processing") == []


async def test_a_claim_that_died_before_its_run_starts_afresh(tmp_path: Path) -> None:
    """Killed between the claim and the run: the next run takes the file with the same results."""
    drop(tmp_path / "incoming", "d.csv", umids(5, seed=59))
    seen: list[RunSettings] = []

    async def crash(settings: RunSettings) -> RunResult:
        seen.append(settings)
        raise RuntimeError("killed")

    async with running_simulator() as sim:
        job = nightly(tmp_path, sim.url)
        with pytest.raises(RuntimeError):
            await run_job(job, crash)
        runs = Runs()
        assert await run_job(job, runs) is ExitCode.OK
    assert runs.settings[0].output == seen[0].output and not runs.settings[0].resume
    assert names(tmp_path / "archive") == ["d.csv"]


async def test_an_unreadable_file_is_set_aside_and_the_others_go_on(tmp_path: Path) -> None:
    """A file without an id column goes to rejected/ with the reason; the next file still runs."""
    incoming = tmp_path / "incoming"
    drop(incoming, "b-good.csv", umids(5, seed=60))
    bad = write_csv(incoming / "a-bad.csv", ["name"], [["x"]])
    os.utime(bad, (LONG_AGO, LONG_AGO))
    async with running_simulator() as sim:
        assert await run_job(nightly(tmp_path, sim.url), Runs()) is ExitCode.USAGE
    assert names(tmp_path / "rejected") == ["a-bad.csv", "a-bad.csv.error.txt"]
    assert "a-bad.csv" in (tmp_path / "rejected" / "a-bad.csv.error.txt").read_text()
    assert names(tmp_path / "archive") == ["b-good.csv"]


async def test_a_no_at_the_prompt_puts_the_file_back(tmp_path: Path) -> None:
    """Declining the confirmation sends nothing and returns the file to the drop folder."""
    drop(tmp_path / "incoming", "e.csv", umids(5, seed=61))
    asked: list[dict[str, Any]] = []

    def no(plan: dict[str, Any]) -> bool:
        asked.append(plan)
        return False

    async with running_simulator() as sim:
        with pytest.raises(UsageError, match="not confirmed"):
            await run_job(nightly(tmp_path, sim.url), Runs(confirm=no))
        assert sim.state.requests == 0
    assert (asked[0]["rows"], asked[0]["rows_exact"]) == (5, True)  # counted before reading
    assert names(tmp_path / "incoming") == ["e.csv"] and names(tmp_path / "processing") == []


async def test_ctrl_c_at_the_prompt_puts_the_file_back(tmp_path: Path) -> None:
    """An interrupt at the confirmation sends nothing and returns the file to the drop folder,
    rather than leaving it in processing/ for a run that has nothing to resume."""
    drop(tmp_path / "incoming", "e.csv", umids(5, seed=63))

    def ctrl_c(plan: dict[str, Any]) -> bool:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # blocked at the prompt as in input(): the signal handler raises here
        return True

    async with running_simulator() as sim:
        with pytest.raises(Interrupted, match="interrupted at the confirmation"):
            await run_job(nightly(tmp_path, sim.url), Runs(confirm=prompting(ctrl_c)))
        assert sim.state.requests == 0
    assert names(tmp_path / "incoming") == ["e.csv"] and names(tmp_path / "processing") == []


def metrics(path: Path) -> dict[str, float]:
    """A textfile-collector file as {'name{labels}': value}."""
    samples = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def test_metrics_cover_every_file_an_invocation_runs(tmp_path: Path) -> None:
    """Drop-folder metrics sum rows, requests and retries over all its files, not the last one."""
    drop(tmp_path / "incoming", "a.csv", umids(30, seed=75))
    drop(tmp_path / "incoming", "b.csv", umids(20, seed=76), sub="acme_eu")
    prom = tmp_path / "bulk_cancel.prom"
    config = SimulatorConfig(faults=Faults(http_503=0.2), seed=3)
    async with running_simulator(config) as sim:
        job = nightly(tmp_path, sim.url, f'metrics_file = "{prom.name}"\nmax_attempts = 10\n')
        runs = Runs()
        assert await run_job(job, runs) is ExitCode.OK
        requests = sim.state.requests
    first, second = (read_summary(s.output) for s in runs.settings)
    got = metrics(prom)
    assert got['bulk_cancel_rows{job="nightly",outcome="cancelled"}'] == 50
    assert got['bulk_cancel_requests{job="nightly"}'] == requests
    assert requests == first["requests"] + second["requests"]
    retries = first["retries"] + second["retries"]
    assert retries > 0 and got['bulk_cancel_retries{job="nightly"}'] == retries
    assert got['bulk_cancel_cancelled_messages{job="nightly"}'] == 50
    assert got['bulk_cancel_runs{job="nightly"}'] == 2
    assert got['bulk_cancel_duration_seconds{job="nightly"}'] >= (
        first["elapsed_s"] + second["elapsed_s"] - 0.01
    )
    assert got['bulk_cancel_exit_code{job="nightly"}'] == 0
    success = got['bulk_cancel_last_success_timestamp_seconds{job="nightly"}']
    assert success >= time.time() - 60

    async with running_simulator() as sim:  # the next night: nothing new
        assert (
            await run_job(nightly(tmp_path, sim.url, f'metrics_file = "{prom.name}"\n'), Runs())
            is ExitCode.OK
        )
    idle = metrics(prom)
    assert idle['bulk_cancel_runs{job="nightly"}'] == 0
    assert idle['bulk_cancel_rows{job="nightly",outcome="cancelled"}'] == 0
    assert idle['bulk_cancel_requests{job="nightly"}'] == 0
    assert idle['bulk_cancel_last_success_timestamp_seconds{job="nightly"}'] >= success


async def test_metrics_say_how_an_invocation_ended(tmp_path: Path) -> None:
    """A file set aside makes the invocation exit 2: its metrics say 2, keep the last success,
    and still count the file that ran; an invocation stopped before any run leaves them be."""
    prom = tmp_path / "bulk_cancel.prom"
    drop(tmp_path / "incoming", "a.csv", umids(5, seed=77))
    async with running_simulator() as sim:
        job = nightly(tmp_path, sim.url, f'metrics_file = "{prom.name}"\n')
        assert await run_job(job, Runs()) is ExitCode.OK
        success = metrics(prom)['bulk_cancel_last_success_timestamp_seconds{job="nightly"}']
        drop(tmp_path / "incoming", "b.csv", umids(4, seed=78))
        bad = write_csv(tmp_path / "incoming" / "c.csv", ["name"], [["x"]])
        os.utime(bad, (LONG_AGO, LONG_AGO))
        assert await run_job(job, Runs()) is ExitCode.USAGE
        got = metrics(prom)
        assert got['bulk_cancel_exit_code{job="nightly"}'] == 2
        assert got['bulk_cancel_last_success_timestamp_seconds{job="nightly"}'] == success
        assert got['bulk_cancel_runs{job="nightly"}'] == 1
        assert got['bulk_cancel_rows{job="nightly",outcome="cancelled"}'] == 4
        before = prom.read_text()
        drop(tmp_path / "incoming", "d.csv", umids(3, seed=79))
        with pytest.raises(UsageError, match="not confirmed"):
            await run_job(job, Runs(confirm=lambda plan: False))
    assert prom.read_text() == before


def test_a_dry_run_plans_without_claiming(tmp_path: Path) -> None:
    """plan_runs lists what the drop folder would run, and moves nothing."""
    drop(tmp_path / "incoming", "f.csv", umids(2, seed=62))
    planned = plan_runs(nightly(tmp_path, "http://127.0.0.1:9"))
    assert [Path(str(s.input)).name for s in planned] == ["f.csv"]
    assert names(tmp_path / "incoming") == ["f.csv"]
    assert not (tmp_path / "processing").exists()


# ------------------------------------------------------------------------------ globs and locks


async def test_a_glob_without_archive_runs_each_file_into_its_own_results(tmp_path: Path) -> None:
    """Without archive_dir a glob runs every match; output must then hold {input_stem}."""
    drop(tmp_path / "in", "x.csv", umids(3, seed=63))
    drop(tmp_path / "in", "y.csv", umids(4, seed=64))
    job = tmp_path / "j.toml"
    job.write_text('input = "in/*.csv"\noutput = "out/{input_stem}.csv"\n')
    async with running_simulator() as sim:
        runs = Runs()
        assert await run_job(resolve({"base_url": sim.url}, {}, job, None), runs) is ExitCode.OK
        assert sim.state.requests == 7
    assert [s.output for s in runs.settings] == [tmp_path / "out" / "x.csv", tmp_path / "out/y.csv"]
    job.write_text('input = "in/*.csv"\noutput = "out/results.csv"\n')
    with pytest.raises(ConfigError, match=r"matches 2 files: output must hold \{input_stem\}"):
        await run_job(resolve({}, {}, job, None), Runs())


async def test_a_second_run_of_a_job_is_refused_while_the_first_holds_its_lock(
    tmp_path: Path,
) -> None:
    """While the job's lock is held, another run of it changes nothing and says so."""
    drop(tmp_path / "incoming", "g.csv", umids(2, seed=65))
    job = nightly(tmp_path, "http://127.0.0.1:9")
    folder = DropFolder(str(tmp_path / "incoming/*.csv"), tmp_path / "archive", job="x", settle_s=0)
    lock = tmp_path / "processing" / ".nightly.lock"
    assert folder.processing_dir == lock.parent
    with job_lock(lock, "nightly"), pytest.raises(LedgerError, match="'nightly' is already"):
        await run_job(job, Runs())
    assert names(tmp_path / "incoming") == ["g.csv"]
    # A single-input job file locks in its results folder.
    single = tmp_path / "one.toml"
    single.write_text('input = "incoming/g.csv"\noutput = "out/{date}/r.csv"\n')
    with job_lock(tmp_path / "out" / ".one.lock", "one"), pytest.raises(LedgerError):
        await run_job(resolve({}, {}, single, None), Runs())
    # The printed resume command pins that night's output: it must take the same lock as
    # tonight's run of the job, or the two could send to the same subaccount side by side.
    pinned = {"output": str(tmp_path / "out" / "2026-11-28" / "r.csv"), "resume": True}
    with (
        job_lock(tmp_path / "out" / ".one.lock", "one"),
        pytest.raises(LedgerError, match="'one' is already running"),
    ):
        await run_job(resolve(pinned, {}, single, None), Runs())


def test_overlapping_cron_runs_exit_2_and_touch_nothing(tmp_path: Path) -> None:
    """The command run while the job is running: exit 2, one line, the drop folder untouched."""
    job = shutil.copy(ROOT / "jobs" / "nightly-cleanup.example.toml", tmp_path / "nightly.toml")
    drop(tmp_path / "incoming", "h.csv", umids(2, seed=66))
    with job_lock(tmp_path / "processing" / ".nightly.lock", "nightly"):
        ran = bulk_cancel("run", job, "--base-url", "http://127.0.0.1:9")
    assert ran.code == 2, ran.stderr
    (error,) = [json.loads(line) for line in ran.stderr.splitlines()]  # off a terminal: JSON
    assert error["event"] == "run.error" and error["exit_code"] == 2
    assert error["message"].startswith("job 'nightly' is already running")
    assert names(tmp_path / "incoming") == ["h.csv"]


# ------------------------------------------------------------------------------ resuming a job


def interrupted(proc: subprocess.Popen[str], sim: SimProcess, sig: int) -> tuple[int, str]:
    """Signal a run once it is really sending; its exit code and the command it printed."""
    wait_for_requests(sim, 20)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    # Off a terminal stderr is JSON only: the message comes as the run.stopped event.
    stopped = [e for e in map(json.loads, err.splitlines()) if e["event"] == "run.stopped"]
    assert stopped, err
    printed = re.search(r"^interrupted; nothing is lost\. To finish: (.+)$", stopped[-1]["message"])
    assert printed, stopped
    return proc.returncode, printed.group(1)


@pytest.mark.parametrize("command", ["resume", "retry_failed"])
def test_the_command_printed_by_an_interrupted_job_finishes_it(
    tmp_path: Path, command: str
) -> None:
    """Ctrl-C a job-file run; its printed resume (or retry) command, pasted as is, ends the job."""
    ids = umids(300, seed=72)
    write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in ids])
    (tmp_path / "j.toml").write_text(
        'input = "in.csv"\noutput = "out/{date}/results.csv"\nsubaccount = "acme_hq"\n'
        'metrics_file = "out/bulk_cancel.prom"\n'
    )
    with simulator() as sim:
        # Slowly, so that the signal lands mid-run; the printed commands keep this rate.
        proc = start("run", "j.toml", "--base-url", sim.url, "--rate", "50", cwd=tmp_path)
        code, resume = interrupted(proc, sim, signal.SIGINT)
        assert code == 130
        (results,) = (tmp_path / "out").glob("*/results.csv")
        summary = read_summary(results)
        assert summary["resume_command"] == resume
        printed = resume if command == "resume" else summary["retry_failed_command"]
        assert shlex.split(printed)[2] == "j.toml", printed
        ran = run_printed(printed, cwd=tmp_path)
        assert sim.state()["requests"] == len(ids)  # nothing sent twice
    assert ran.code == 0, ran.stderr
    assert Counter(r["outcome"] for r in read_results(results)) == {"cancelled": len(ids)}
    summary = read_summary(results)
    # The printed command repeats the rate given on the command line (it used to drop it).
    assert summary["settings"]["job"] == "j" and summary["settings"]["rate_per_s"] == 50
    assert 'bulk_cancel_exit_code{job="j"} 0' in (tmp_path / "out/bulk_cancel.prom").read_text()


def test_the_command_printed_by_an_interrupted_drop_folder_finishes_it(tmp_path: Path) -> None:
    """SIGTERM a drop folder mid-file; the printed command resumes that file, then takes the rest."""
    first, second = umids(150, seed=73), umids(100, seed=74)
    drop(tmp_path / "incoming", "a.csv", first)
    drop(tmp_path / "incoming", "b.csv", second)
    (tmp_path / "nightly.toml").write_text(
        'input = "incoming/*.csv"\narchive_dir = "archive"\noutput = "results/{input_stem}.csv"\n'
    )
    with simulator() as sim:
        proc = start("run", "nightly.toml", "--base-url", sim.url, "--rate", "50", cwd=tmp_path)
        code, printed = interrupted(proc, sim, signal.SIGTERM)
        assert code == 143
        assert names(tmp_path / "processing") == ["a.csv", "a.csv" + SIDECAR_SUFFIX]
        assert printed == shlex.join(
            ["bulk-cancel", "run", "nightly.toml", "--base-url", sim.url, "--rate", "50"]
        )
        ran = run_printed(printed, cwd=tmp_path)
        assert sim.state()["requests"] == 250
    assert ran.code == 0, ran.stderr
    assert (
        names(tmp_path / "archive") == ["a.csv", "b.csv"] and names(tmp_path / "processing") == []
    )
    for name, ids in (("a.csv", first), ("b.csv", second)):
        rows = read_results(tmp_path / "results" / name)
        assert sorted(r["umid"] for r in rows) == sorted(ids)
        assert {r["outcome"] for r in rows} == {"cancelled"}


# ------------------------------------------------------------------------------ example jobs


def test_demo_job_runs_against_the_simulator(tmp_path: Path) -> None:
    """jobs/demo.toml (what `make demo` runs) cancels its sample file; flags override the job."""
    out = tmp_path / "demo.csv"
    with simulator() as sim:
        # The job's rate of 300/s shows the demo's pace; a flag overrides it to keep the test quick.
        ran = bulk_cancel(
            "run", ROOT / "jobs" / "demo.toml", "--base-url", sim.url, "--output", out,
            "--rate", "1500",
        )  # fmt: skip
        requests = sim.state()["requests"]
    assert ran.code == 0, ran.stderr
    summary = read_summary(out)
    assert summary["unique"] == 1502 and summary["counts"]["invalid_umid"] == 2
    assert summary["settings"]["job"] == "demo" and summary["settings"]["rate_per_s"] == 1500
    assert summary["settings"]["subaccount"] == "demo_sub"  # from the job file
    assert requests == summary["requests"] == 1500


def test_campaign_abort_example_runs_against_the_simulator(tmp_path: Path) -> None:
    """The campaign-abort example, given a small input: a dry run, then Excel results and errors."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    job = shutil.copy(ROOT / "jobs" / "campaign-abort.example.toml", jobs / "campaign-abort.toml")
    src = write_csv(tmp_path / "ids.csv", ["umid", "owner"], [[u, "ops"] for u in umids(20)])
    with open(src, "a") as f:
        f.write("junk,ops\n")
    with simulator() as sim:
        args = ("run", job, "--input", src, "--base-url", sim.url)
        planned = bulk_cancel(*args, "--dry-run")
        assert planned.code == 0, planned.stderr
        assert json.loads(planned.stdout)["to_send"] == 20 and sim.state()["requests"] == 0
        ran = bulk_cancel(*args)
    assert ran.code == 0, ran.stderr
    (results,) = (tmp_path / "out" / "campaign-abort").glob("*/results.xlsx")
    summary = read_summary(results)
    assert summary["counts"]["cancelled"] == 20 and summary["counts"]["invalid_umid"] == 1
    assert read_results(results.with_name("results.errors.csv"))[0]["umid"] == "junk"


def test_nightly_cleanup_example_runs_against_the_simulator(tmp_path: Path) -> None:
    """The drop-folder example: both files cancelled and archived, JSON logs, metrics; then idle."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    job = shutil.copy(ROOT / "jobs" / "nightly-cleanup.example.toml", jobs / "nightly.toml")
    drop(jobs / "incoming", "a.csv", umids(30, seed=67), sub="sub_a")
    drop(jobs / "incoming", "b.csv", umids(20, seed=68), sub="sub_b")
    with simulator() as sim:
        ran = bulk_cancel("run", job, "--base-url", sim.url)
        again = bulk_cancel("run", job, "--base-url", sim.url)
        assert sim.state()["requests"] == 50
    assert ran.code == 0 and again.code == 0, ran.stderr + again.stderr
    assert names(jobs / "archive") == ["a.csv", "b.csv"] and names(jobs / "incoming") == []
    (day,) = [p for p in (jobs / "results").iterdir() if p.is_dir()]
    assert {p.name for p in day.glob("*.csv")} == {"a.csv", "b.csv"}
    assert "bulk_cancel_" in (jobs / "results" / "bulk_cancel.prom").read_text()
    events = [json.loads(line)["event"] for line in ran.stderr.splitlines() if line[:1] == "{"]
    assert events.count("job.archived") == 2 and events[-1] == "job.finished"
    assert "job.nothing_to_do" in again.stderr
