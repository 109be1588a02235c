"""The command line itself: exact flags, errors, JSON-only stderr, and closed pipes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from e2e import bulk_cancel, simulator, write_csv
from helpers import umids

from bulk_cancel import cli

SUB = "acme_hq"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the developer's environment or ~/.config."""
    for var in list(os.environ):
        if var.startswith(("BULK_CANCEL_", "EIGHTX8_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def json_lines(stderr: str) -> list[dict[str, object]]:
    """Every stderr line as a JSON object (fails on any line that is not one)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]
    assert all(isinstance(e, dict) for e in events), stderr
    return events


# ------------------------------------------------------------------------------ flags


def test_a_mistyped_flag_gets_the_commands_usage_and_a_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --subacount`: exit 2 with `run`'s usage (not the top level's) and "did you mean"."""
    argv = ["run", "--input", "in.csv", "--subacount", SUB, "--output", "r.csv"]
    code = cli.main([*argv, "--log-format", "console"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("usage: bulk-cancel run ")
    assert err.splitlines()[-1] == (
        "bulk-cancel: error: unknown flag --subacount (did you mean --subaccount?)"
    )


def test_a_prefix_of_a_flag_is_refused_not_guessed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--dry` is not taken for `--dry-run` (nor `--form` for `--format`): only exact flags."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(3)])
    out = tmp_path / "r.csv"
    argv = ["run", "--input", str(src), "--subaccount", SUB, "--output", str(out)]
    code = cli.main([*argv, "--dry", "--log-format", "console"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert "unknown flag --dry (did you mean --dry-run?)" in captured.err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "xdg") == ["in.csv"]
    assert cli.main(["report", str(out), "--form", "json"]) == 2
    assert "unknown flag --form (did you mean --format?)" in capsys.readouterr().err


# ------------------------------------------------------------------------------ JSON on stderr


def test_in_json_mode_every_stderr_line_is_a_json_object(tmp_path: Path) -> None:
    """Off a terminal (JSON logs), stderr holds JSON objects only: summaries, hints and errors."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(40, seed=91)])
    out = tmp_path / "results.csv"
    base = ["run", "--input", src, "--subaccount", SUB, "--output", out]
    with simulator("--faults", "http_503=1.0") as sim:
        failing = bulk_cancel(
            *base, "--base-url", sim.url, "--max-attempts", "1", "--failure-threshold", "1"
        )
    assert failing.code == 1
    events = json_lines(failing.stderr)
    names = [e["event"] for e in events]
    assert {"run.started", "run.finished", "run.summary", "run.retry_hint"} <= set(names)
    with simulator("--api-key", "the-right-key") as sim:
        refused = bulk_cancel(
            *base[:-1], tmp_path / "r2.csv", "--base-url", sim.url, key="a-wrong-key"
        )
    assert refused.code == 3
    stopped = [e for e in json_lines(refused.stderr) if e["event"] == "run.stopped"]
    assert stopped and "rejected the key" in str(stopped[0]["message"])
    # Exit 2 paths: a ledger that refuses, a bad flag, bad input; explicitly JSON, too.
    for args in (
        [*base, "--base-url", "http://127.0.0.1:9"],
        [*base, "--subacount", SUB],
        ["run", "--input", tmp_path / "missing.csv", "--output", tmp_path / "r3.csv"],
        [*base, "--rate", "-1", "--log-format", "json"],
    ):
        ran = bulk_cancel(*args)
        assert ran.code == 2, ran.stderr
        (error,) = json_lines(ran.stderr)
        assert error["event"] == "run.error" and error["exit_code"] == 2
        assert error["level"] == "error" and error["message"]


def test_console_logs_off_a_terminal_stay_plain_lines(tmp_path: Path) -> None:
    """`--log-format console` keeps the human lines on stderr, for people reading a CI log."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(5, seed=92)])
    out = tmp_path / "results.csv"
    with simulator() as sim:
        ran = bulk_cancel(
            "run", "--input", src, "--subaccount", SUB, "--output", out,
            "--base-url", sim.url, "--log-format", "console",
        )  # fmt: skip
    assert ran.code == 0, ran.stderr
    assert f"bulk-cancel: 5 unique rows (cancelled 5); results: {out}" in ran.stderr
    missing = bulk_cancel("run", "--input", "nope.csv", "--output", out, "--log-format", "console")
    assert missing.code == 2 and missing.stderr.startswith("bulk-cancel: error: ")


# ------------------------------------------------------------------------------ closed pipes


def closed_pipe_run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the command with stdout a pipe whose reader has already gone (`| true`)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EIGHTX8_", "BULK_CANCEL_"))}
    try:
        return subprocess.run(
            [sys.executable, "-m", "bulk_cancel", *map(str, args)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)


def test_every_command_leaves_quietly_when_its_reader_goes_away(tmp_path: Path) -> None:
    """`bulk-cancel … | true`: nothing on stderr (no traceback); it dies of SIGPIPE, as cat does."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(30, seed=93)])
    out = tmp_path / "results.csv"
    with simulator() as sim:
        ran = bulk_cancel(
            "run", "--input", src, "--subaccount", SUB, "--output", out, "--base-url", sim.url
        )
    assert ran.code == 0, ran.stderr
    for args in (
        ["report", out, "--format", "json"],
        ["report", out],
        ["validate", src, "--subaccount", SUB],
        ["config", "show"],
        ["run", "--input", src, "--subaccount", SUB, "--output", tmp_path / "d.csv", "--dry-run"],
    ):
        done = closed_pipe_run(*args)
        assert done.returncode == -signal.SIGPIPE, (args, done.stderr)
        assert all(e["event"] == "ingest.done" for e in json_lines(done.stderr)), args
    for args in (["run", "--help"], ["--version"]):
        done = closed_pipe_run(*args)  # argparse drops what it cannot write, and exits 0
        assert done.returncode in (0, -signal.SIGPIPE) and done.stderr == "", args
