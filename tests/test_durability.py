"""Durable runs: kill -9, SIGINT, SIGTERM, the run lock, resume refusals and --retry-failed."""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from e2e import (
    SimProcess,
    bulk_cancel,
    read_results,
    read_summary,
    run_printed,
    simulator,
    write_csv,
)
from helpers import API_KEY, umids

SUB = "acme_hq"


def start_run(src: Path, out: Path, sim: SimProcess, *extra: str) -> subprocess.Popen[str]:
    """Start the real command in the background, JSON logs to a pipe."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EIGHTX8_", "BULK_CANCEL_"))}
    env["EIGHTX8_API_KEY"] = API_KEY
    args = [
        "run",
        "--input",
        str(src),
        "--subaccount",
        SUB,
        "--output",
        str(out),
        "--base-url",
        sim.url,
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "bulk_cancel", *args, *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_requests(sim: SimProcess, at_least: int, timeout_s: float = 30) -> None:
    """Block until the simulator has seen *at_least* requests (the run is really sending)."""
    deadline = time.monotonic() + timeout_s
    while sim.state()["requests"] < at_least:
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.02)


def finish(proc: subprocess.Popen[str], timeout_s: float = 60) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, err


def test_kill_9_at_random_moments_then_resume_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL three times mid-run, resume to the end: one row per umid, nothing the API cancelled misreported."""
    ids = umids(2500, seed=11)
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in ids])
    out = tmp_path / "results.csv"
    concurrency = 16
    rng = random.Random(2026)
    kills = 0
    with simulator("--latency-ms", "5", "--repeat-cancel", "not_found") as sim:
        for attempt in range(3):
            extra = ["--rate", "800", "--concurrency", str(concurrency)] + (
                ["--resume"] if attempt else []
            )
            proc = start_run(src, out, sim, *extra)
            wait_for_requests(sim, sim.state()["requests"] + 50)
            time.sleep(rng.uniform(0.05, 0.6))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            finish(proc)
        proc = start_run(
            src, out, sim, "--rate", "800", "--concurrency", str(concurrency), "--resume"
        )
        code, err = finish(proc)
        state = sim.state(ids=True)
    assert code == 0, err
    assert kills >= 2
    rows = read_results(out)
    assert sorted(r["umid"] for r in rows) == sorted(ids)
    outcome = {r["umid"]: r["outcome"] for r in rows}
    applied = {key.rsplit("/", 1)[-1] for key in state["cancelled"]}
    assert applied == set(ids)
    assert {outcome[u] for u in applied} <= {"cancelled", "unconfirmed"}
    sent_twice = sum(1 for n in state["requests_per_id"].values() if n > 1)
    # Rows sent but not yet durably answered when killed: those in flight, plus at most one
    # feeder batch of answers waiting for their commit (pipeline batch = rate / 10 = 80).
    assert sent_twice <= kills * (concurrency + 80)
    assert Counter(outcome.values())["unconfirmed"] <= sent_twice
    summary = read_summary(out)
    assert sum(summary["counts"].values()) == len(ids)


def test_sigint_writes_results_and_says_how_to_resume(tmp_path: Path) -> None:
    """Ctrl-C: in-flight rows finish, results and summary are written, exit 130; --resume completes."""
    ids = umids(600, seed=12)
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in ids])
    out = tmp_path / "results.csv"
    with simulator() as sim:
        proc = start_run(src, out, sim, "--rate", "200")
        wait_for_requests(sim, 50)
        proc.send_signal(signal.SIGINT)
        code, err = finish(proc)
        assert code == 130, err
        assert "--resume" in err
        first = Counter(r["outcome"] for r in read_results(out))
        assert first["not_attempted"] > 0 and first["cancelled"] > 0
        assert set(first) <= {"cancelled", "not_attempted"}
        assert read_summary(out)["exit_code"] == 130
        ran = bulk_cancel(
            "run",
            "--input",
            src,
            "--subaccount",
            SUB,
            "--output",
            out,
            "--base-url",
            sim.url,
            "--rate",
            "2000",
            "--resume",
        )
        assert sim.state()["requests"] == len(ids)  # nothing was sent twice
    assert ran.code == 0, ran.stderr
    assert Counter(r["outcome"] for r in read_results(out)) == {"cancelled": len(ids)}


def test_sigterm_exits_143(tmp_path: Path) -> None:
    """SIGTERM (cron's or systemd's stop) ends like Ctrl-C, with exit code 143."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(500, seed=13)])
    out = tmp_path / "results.csv"
    with simulator() as sim:
        proc = start_run(src, out, sim, "--rate", "100")
        wait_for_requests(sim, 20)
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc)
    assert code == 143, err
    assert sum(read_summary(out)["counts"].values()) == 500


def test_second_run_on_the_same_ledger_is_locked_out(tmp_path: Path) -> None:
    """While a run holds the ledger, another run against it exits 2 and sends nothing."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(400, seed=14)])
    out = tmp_path / "results.csv"
    with simulator() as sim:
        proc = start_run(src, out, sim, "--rate", "100")
        wait_for_requests(sim, 10)
        ran = bulk_cancel(
            "run",
            "--input",
            src,
            "--subaccount",
            SUB,
            "--output",
            out,
            "--base-url",
            sim.url,
            "--resume",
        )
        proc.send_signal(signal.SIGINT)
        finish(proc)
    assert ran.code == 2
    assert "another bulk-cancel run" in ran.stderr


def test_without_resume_an_existing_ledger_is_refused(tmp_path: Path) -> None:
    """Running again onto the same output without --resume refuses and says what to do."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(5)])
    out = tmp_path / "results.csv"
    with simulator() as sim:
        assert (
            bulk_cancel(
                "run", "--input", src, "--subaccount", SUB, "--output", out, "--base-url", sim.url
            ).code
            == 0
        )
        ran = bulk_cancel(
            "run", "--input", src, "--subaccount", SUB, "--output", out, "--base-url", sim.url
        )
        assert sim.state()["requests"] == 5
    assert ran.code == 2
    assert "--resume" in ran.stderr and "--output" in ran.stderr


def test_resume_refuses_a_changed_input(tmp_path: Path) -> None:
    """--resume with a different input file (checksum) or subaccount is refused, exit 2."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(300, seed=15)])
    out = tmp_path / "results.csv"
    with simulator() as sim:
        proc = start_run(src, out, sim, "--rate", "100")
        wait_for_requests(sim, 10)
        proc.send_signal(signal.SIGINT)
        assert finish(proc)[0] == 130
        write_csv(src, ["umid"], [[u] for u in umids(300, seed=16)])
        changed = bulk_cancel(
            "run",
            "--input",
            src,
            "--subaccount",
            SUB,
            "--output",
            out,
            "--base-url",
            sim.url,
            "--resume",
        )
        other_sub = bulk_cancel(
            "run",
            "--input",
            src,
            "--subaccount",
            "other_sub",
            "--output",
            out,
            "--base-url",
            sim.url,
            "--resume",
        )
    assert changed.code == 2 and "checksum" in changed.stderr
    assert other_sub.code == 2


def test_retry_failed_resends_only_the_failures(tmp_path: Path) -> None:
    """--retry-failed re-sends failed rows only (no input needed) and leaves the answered ones alone."""
    ids = umids(30, seed=17)
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in ids])
    out = tmp_path / "results.csv"
    with simulator("--faults", "http_503=1.0") as sim:
        first = bulk_cancel(
            "run",
            "--input",
            src,
            "--subaccount",
            SUB,
            "--output",
            out,
            "--base-url",
            sim.url,
            "--max-attempts",
            "1",
            "--failure-threshold",
            "1",  # every row fails here: the threshold must not stop the run first
        )
    assert first.code == 1
    assert Counter(r["outcome"] for r in read_results(out)) == {"failed": 30}
    # The same host, healthy now (a retry to another host is refused, below).
    with simulator("--port", sim.url.rsplit(":", 1)[-1]) as sim:
        again = bulk_cancel("run", "--retry-failed", "--output", out, "--base-url", sim.url)
        assert sim.state()["requests"] == 30
        third = bulk_cancel("run", "--retry-failed", "--output", out, "--base-url", sim.url)
        assert sim.state()["requests"] == 30  # nothing left to retry
        # Typed by hand without --base-url, a retry would go to 8x8's production host: refused.
        elsewhere = bulk_cancel("run", "--retry-failed", "--output", out)
        assert elsewhere.code == 2 and f"--base-url {sim.url}" in elsewhere.stderr
        assert elsewhere.stderr.count("\n") == 1
    assert again.code == 0, again.stderr
    assert third.code == 0
    # A 503 may have been applied: "nothing to cancel" would be unconfirmed, but here the
    # simulator's 503 never applies, so the retry cancels each one.
    assert Counter(r["outcome"] for r in read_results(out)) == {"cancelled": 30}


def test_second_ctrl_c_exits_at_once_and_the_ledger_stays_consistent(tmp_path: Path) -> None:
    """Two Ctrl-Cs: the process leaves without draining; --resume then finishes every row exactly once."""
    ids = umids(800, seed=18)
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in ids])
    out = tmp_path / "results.csv"
    with simulator("--latency-ms", "300") as sim:
        proc = start_run(src, out, sim, "--rate", "200")
        wait_for_requests(sim, 30)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        code, err = finish(proc)
        assert time.monotonic() - started < 2.0  # did not wait for the 300 ms answers to drain
        assert code == 130, err
        ran = bulk_cancel(
            "run",
            "--input",
            src,
            "--subaccount",
            SUB,
            "--output",
            out,
            "--base-url",
            sim.url,
            "--rate",
            "2000",
            "--resume",
        )
    assert ran.code == 0, ran.stderr
    rows = read_results(out)
    assert sorted(r["umid"] for r in rows) == sorted(ids)
    assert set(Counter(r["outcome"] for r in rows)) <= {"cancelled", "unconfirmed"}


def test_ctrl_c_while_reading_stops_without_sending(tmp_path: Path) -> None:
    """A signal before the first request (only invalid rows read so far): exit 130, nothing sent, no ledger left."""
    src = tmp_path / "in.csv"
    junk = [f"not-a-umid-{i}" for i in range(300_000)]  # read for seconds, never sent
    src.write_text("umid\n" + "\n".join(junk + umids(1000, seed=19)) + "\n")
    out = tmp_path / "results.csv"
    ledger = tmp_path / "results.ledger.sqlite"
    with simulator() as sim:
        proc = start_run(src, out, sim)
        deadline = time.monotonic() + 30
        while not ledger.exists():  # the ledger is created just before reading starts
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        code, err = finish(proc)
        assert sim.state()["requests"] == 0
    assert code == 130, err
    assert "nothing was sent" in err
    assert not ledger.exists() and not out.exists()


def _wrong_key_run(src: Path, out: Path, url: str) -> int:
    """A first run with a key the simulator refuses; how many requests it got in."""
    ran = bulk_cancel(
        "run", "--input", src, "--subaccount", SUB, "--output", out, "--base-url", url,
        "--concurrency", "8", key="a-wrong-key",
    )  # fmt: skip
    assert ran.code == 3, ran.stderr
    counts = Counter(r["outcome"] for r in read_results(out))
    assert counts["auth_failed"] > 0 and counts["not_attempted"] > 0
    return counts["auth_failed"]


def test_after_a_wrong_key_resume_with_the_right_one_sends_the_refused_rows(
    tmp_path: Path,
) -> None:
    """A 401 applied nothing: --resume with the fixed key re-sends the auth_failed rows too, and
    the summary speaks for both attempts (counts, requests and elapsed, each and in total)."""
    ids = umids(3000, seed=21)
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in ids])
    out = tmp_path / "results.csv"
    with simulator("--api-key", API_KEY) as sim:
        refused = _wrong_key_run(src, out, sim.url)
        first_requests = sim.state()["requests"]
        assert first_requests == refused
        resumed = bulk_cancel(
            "run", "--input", src, "--subaccount", SUB, "--output", out, "--base-url", sim.url,
            "--resume",
        )  # fmt: skip
        state = sim.state(ids=True)
    assert resumed.code == 0, resumed.stderr
    assert Counter(r["outcome"] for r in read_results(out)) == {"cancelled": 3000}
    assert len(state["cancelled"]) == 3000 and state["requests"] == first_requests + 3000
    summary = read_summary(out)
    first, second = summary["attempts"]
    assert (first["mode"], first["exit_code"], first["requests"]) == ("first", 3, refused)
    assert (second["mode"], second["exit_code"], second["requests"]) == ("resume", 0, 3000)
    assert summary["requests"] == refused + 3000
    assert summary["elapsed_s"] == round(first["elapsed_s"] + second["elapsed_s"], 3)
    assert second["elapsed_s"] > 0
    report = bulk_cancel("report", out, key=None)
    assert "over 2 attempts" in report.stdout and "2. resume at" in report.stdout


def test_after_a_wrong_key_retry_failed_sends_the_refused_and_unsent_rows(
    tmp_path: Path,
) -> None:
    """--retry-failed after a refused key re-sends auth_failed and not_attempted rows, and a
    retry with nothing left to send says so instead of recording an empty run."""
    ids = umids(400, seed=22)
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in ids])
    out = tmp_path / "results.csv"
    with simulator("--api-key", API_KEY) as sim:
        _wrong_key_run(src, out, sim.url)
        retried = bulk_cancel("run", "--retry-failed", "--output", out, "--base-url", sim.url)
        assert retried.code == 0, retried.stderr
        assert Counter(r["outcome"] for r in read_results(out)) == {"cancelled": 400}
        before = read_summary(out)
        empty = bulk_cancel("run", "--retry-failed", "--output", out, "--base-url", sim.url)
        assert sim.state()["requests"] == before["requests"]  # nothing sent
    assert empty.code == 0, empty.stderr
    events = [json.loads(line) for line in empty.stderr.splitlines()]
    (note,) = [e for e in events if e["event"] == "run.nothing_to_do"]
    assert note["message"].startswith("nothing to re-send")
    assert not {"run.started", "run.finished"} & {e["event"] for e in events}
    after = read_summary(out)
    assert [a["mode"] for a in after["attempts"]] == ["first", "retry"]
    assert after["elapsed_s"] == before["elapsed_s"] > 0


def test_a_resume_that_leaves_refused_rows_unsent_never_exits_0(tmp_path: Path) -> None:
    """Still the wrong key on --resume: the refused rows (first in line) are sent again, and the
    exit is 3 while refused rows wait."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(300, seed=23)])
    out = tmp_path / "results.csv"
    with simulator("--api-key", API_KEY) as sim:
        _wrong_key_run(src, out, sim.url)
        before = sim.state()["requests"]
        again = bulk_cancel(
            "run", "--input", src, "--subaccount", SUB, "--output", out, "--base-url", sim.url,
            "--resume", "--concurrency", "8", key="still-wrong-key",
        )  # fmt: skip
        assert sim.state()["requests"] > before  # the refused rows were sent again
    assert again.code == 3
    assert read_summary(out)["exit_code"] == 3
    twice = [r for r in read_results(out) if r["attempts"] == "2"]
    assert twice and {r["outcome"] for r in twice} == {"auth_failed"}


def test_the_printed_commands_keep_the_traffic_settings_from_every_layer(tmp_path: Path) -> None:
    """Rate from a flag, attempts from the environment, timeout from the config file: the printed
    resume and retry commands repeat them, so pasted into a clean shell they send the same way."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(20, seed=24)])
    out = tmp_path / "results.csv"
    cfg = tmp_path / "config.toml"
    cfg.write_text("timeout = 7.5\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EIGHTX8_", "BULK_CANCEL_"))}
    env |= {
        "EIGHTX8_API_KEY": API_KEY,
        "BULK_CANCEL_MAX_ATTEMPTS": "2",
        "BULK_CANCEL_CONFIG": str(cfg),
    }
    with simulator("--faults", "http_503=1.0") as sim:
        first = subprocess.run(
            [
                sys.executable, "-m", "bulk_cancel", "run", "--input", str(src), "--subaccount",
                SUB, "--output", str(out), "--base-url", sim.url, "--rate", "150",
                "--concurrency", "4", "--failure-threshold", "1",
            ],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert first.returncode == 1, first.stderr
    summary = read_summary(out)
    for command in (summary["resume_command"], summary["retry_failed_command"]):
        words = shlex.split(command)
        for flag, value in (
            ("--rate", "150"),
            ("--concurrency", "4"),
            ("--max-attempts", "2"),
            ("--timeout", "7.5"),
            ("--failure-threshold", "1"),
            ("--base-url", sim.url),
        ):
            assert words[words.index(flag) + 1] == value, (flag, command)
    with simulator("--port", sim.url.rsplit(":", 1)[-1]):
        again = run_printed(summary["resume_command"])  # a clean environment, no config
    assert again.code == 0, again.stderr
    used = read_summary(out)["settings"]
    assert (used["rate_per_s"], used["concurrency"], used["timeout_s"]) == (150, 4, 7.5)
    assert used["retry"]["max_attempts"] == 2


# ------------------------------------------------------------------ reading while sending


def campaign_csv(path: Path, rows: int, unique: int, *, seed: int) -> tuple[Path, list[str]]:
    """*rows* rows holding *unique* umids spread over the file, the rest duplicates of earlier
    ones, and an invalid id every 5,000 rows: reading takes seconds, sending little."""
    ids = umids(unique, seed=seed)
    rng = random.Random(seed)
    every = rows // unique
    lines = []
    for i in range(rows):
        if i % every == 0 and i // every < unique:
            lines.append(ids[i // every])
        elif i % 5000 == 4999:
            lines.append(f"junk-{i}")
        else:
            lines.append(ids[rng.randrange(min(unique, i // every + 1))])
    path.write_text("umid,campaign\n" + "".join(f"{u},spring\n" for u in lines))
    return path, ids


def ingest_complete(out: Path) -> bool:
    """Whether the run's ledger says its whole input was read (read-only, beside a live run)."""
    import sqlite3

    ledger = out.with_name(out.stem + ".ledger.sqlite")
    conn = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'ingest_complete'").fetchone()
    finally:
        conn.close()
    return row is not None and row[0] == "true"


def test_kill_9_while_reading_and_sending_then_resume_accounts_for_every_row_once(
    tmp_path: Path,
) -> None:
    """SIGKILL while the input is still being read and rows are being sent; --resume reads on:
    every unique umid ends with one row, no duplicate counted twice, none sent twice beyond those in flight."""
    src, ids = campaign_csv(tmp_path / "in.csv", 150_000, 1500, seed=31)
    out = tmp_path / "results.csv"
    kills = 0
    with simulator("--latency-ms", "5") as sim:
        for attempt in range(2):
            proc = start_run(src, out, sim, "--rate", "300", *(["--resume"] if attempt else []))
            wait_for_requests(sim, sim.state()["requests"] + 50)
            assert not ingest_complete(out)  # sending before the reading has ended
            proc.send_signal(signal.SIGKILL)
            kills += 1
            finish(proc)
        proc = start_run(src, out, sim, "--rate", "2000", "--resume")
        code, err = finish(proc, timeout_s=180)
        state = sim.state(ids=True)
    assert code == 0, err
    rows = read_results(out)
    valid = [r for r in rows if r["outcome"] != "invalid_umid"]
    assert sorted(r["umid"] for r in valid) == sorted(ids)
    assert {r["outcome"] for r in valid} <= {"cancelled", "unconfirmed"}
    assert len(rows) - len(valid) == 150_000 // 5000  # each invalid row once, never sent
    summary = read_summary(out)
    assert summary["input_rows"] == 150_000
    assert summary["duplicates"] == 150_000 - len(rows)
    assert summary["ingest_complete"] is True
    # Each umid sent, nothing else; sent again only if in flight (or sent, its answer awaiting
    # the batch's commit: rate / 10 rows) at a kill. One in flight at both kills goes 3 times.
    assert sorted(state["requests_per_id"]) == sorted(f"{SUB}/{u}" for u in ids)
    sent_again = sum(n - 1 for n in state["requests_per_id"].values())
    assert sent_again <= kills * (256 + 300 // 10)
    assert state["requests"] == len(ids) + sent_again


def test_ctrl_c_while_reading_and_sending_prints_the_resume_command(tmp_path: Path) -> None:
    """Ctrl-C while reading and sending: 130, results for the rows read, ingest_complete false;
    the printed resume command reads the rest and sends each umid once."""
    src, ids = campaign_csv(tmp_path / "in.csv", 150_000, 1500, seed=32)
    out = tmp_path / "results.csv"
    with simulator() as sim:
        proc = start_run(src, out, sim, "--rate", "300")
        wait_for_requests(sim, 50)
        assert not ingest_complete(out)
        proc.send_signal(signal.SIGINT)
        code, err = finish(proc)
        assert code == 130, err
        summary = read_summary(out)
        assert summary["ingest_complete"] is False and summary["exit_code"] == 130
        assert 0 < summary["input_rows"] < 150_000
        assert len(read_results(out)) == summary["unique"] < 1500 + 30
        command = summary["resume_command"]
        assert "--resume" in command and command in err
        ran = run_printed(command)
        state = sim.state(ids=True)
    assert ran.code == 0, ran.stderr
    assert set(state["requests_per_id"].values()) == {1}  # no duplicate sent twice, ever
    assert sorted(key.rsplit("/", 1)[-1] for key in state["requests_per_id"]) == sorted(ids)
    summary = read_summary(out)
    assert summary["ingest_complete"] is True and summary["input_rows"] == 150_000


def test_resume_mid_read_refuses_a_changed_file(tmp_path: Path) -> None:
    """A run stopped mid-read is resumed only with the same file: another one is refused, exit 2."""
    src, _ = campaign_csv(tmp_path / "in.csv", 150_000, 1500, seed=33)
    out = tmp_path / "results.csv"
    with simulator() as sim:
        proc = start_run(src, out, sim, "--rate", "300")
        wait_for_requests(sim, 20)
        assert not ingest_complete(out)
        proc.send_signal(signal.SIGINT)
        assert finish(proc)[0] == 130
        before = sim.state()["requests"]
        campaign_csv(src, 150_000, 1500, seed=34)
        changed = bulk_cancel(
            "run", "--input", src, "--subaccount", SUB, "--output", out,
            "--base-url", sim.url, "--resume",
        )  # fmt: skip
        assert sim.state()["requests"] == before
    assert changed.code == 2 and "checksum" in changed.stderr, changed.stderr


def test_a_bad_row_found_while_sending_stops_both_with_exit_2(tmp_path: Path) -> None:
    """A row that cannot be read, found after requests left: reading and sending stop, results
    hold the rows read, the one-line error names the line, exit 2 (nothing read is lost)."""
    src, _ = campaign_csv(tmp_path / "in.csv", 150_000, 1500, seed=35)
    with src.open("ab") as f:
        f.write(b"\xff\xfe not text,x\n")
    out = tmp_path / "results.csv"
    with simulator() as sim:
        proc = start_run(src, out, sim, "--rate", "300")
        code, err = finish(proc, timeout_s=180)
        sent = sim.state()["requests"]
    assert code == 2, err
    assert sent > 0
    assert "line 150002" in err and "The rows before it were sent" in err
    assert "Traceback" not in err
    summary = read_summary(out)
    assert summary["ingest_complete"] is False and summary["exit_code"] == 2
    rows = read_results(out)
    assert len(rows) == summary["unique"] and sum(summary["counts"].values()) == len(rows)
    assert summary["counts"]["cancelled"] == sent


def test_a_run_from_stdin_resumes_with_the_same_stdin_and_refuses_another(
    tmp_path: Path,
) -> None:
    """Ctrl-C a run reading stdin; its printed command, fed the same stdin, finishes it; other
    data on stdin is refused with exit 2 and one line, and nothing more is sent."""
    ids = umids(400, seed=41)
    data = "umid\n" + "\n".join(ids) + "\n"
    out = tmp_path / "results.csv"
    piped = tmp_path / "piped.csv"  # what the shell pipes in (`export | bulk-cancel run --input -`)
    piped.write_text(data)
    with simulator() as sim, piped.open("rb") as stdin:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bulk_cancel", "run", "--input", "-", "--subaccount", SUB,
             "--output", str(out), "--base-url", sim.url, "--rate", "100"],
            env={**os.environ, "EIGHTX8_API_KEY": API_KEY},
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        wait_for_requests(sim, 20)
        proc.send_signal(signal.SIGINT)
        code, err = finish(proc)
        assert code == 130, err
        # Off a terminal stderr is JSON only: the command comes in the run.stopped event.
        (stopped,) = [e for e in map(json.loads, err.splitlines()) if e["event"] == "run.stopped"]
        command = shlex.split(stopped["message"].split("To finish: ", 1)[1])
        assert command[:4] == ["bulk-cancel", "run", "--input", "-"], command
        sent = sim.state()["requests"]
        other = bulk_cancel(*command[1:], stdin="umid\n" + "\n".join(umids(3, seed=42)) + "\n")
        assert other.code == 2, other.stderr
        assert "checksum differs" in other.stderr and "Traceback" not in other.stderr
        assert sim.state()["requests"] == sent
        ran = bulk_cancel(*command[1:], stdin=data)
        assert ran.code == 0, ran.stderr
        assert sim.state()["requests"] == len(ids)  # nothing was sent twice
    assert Counter(r["outcome"] for r in read_results(out)) == {"cancelled": len(ids)}
