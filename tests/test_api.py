"""The library face: bulk_cancel.cancel / cancel_async against the simulator on 127.0.0.1."""

from __future__ import annotations

import asyncio
import csv
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from e2e import bulk_cancel as run_command
from e2e import read_results, read_summary, simulator, wait_for_requests, write_csv
from helpers import API_KEY, umids

import bulk_cancel
from bulk_cancel import AuthError, InputError, Summary
from bulk_cancel.model import RESULT_COLUMNS, Outcome
from bulk_cancel.simulator import SimulatorConfig, running_simulator


def test_every_exported_name_exists() -> None:
    """Each name in bulk_cancel.__all__ is there, and nothing public is missing from it."""
    for name in bulk_cancel.__all__:
        assert getattr(bulk_cancel, name) is not None, name
    assert {"cancel", "cancel_async", "Summary", "Outcome", "AuthError"} <= set(bulk_cancel.__all__)
    # The three lists a lazy package needs (``__all__``, the TYPE_CHECKING imports that static
    # tools read, the loader's table) stay literal for those tools; they must name the same.
    assert set(bulk_cancel.__all__) == set(bulk_cancel._WHERE) | {"__version__"}
    with pytest.raises(AttributeError):
        bulk_cancel.no_such_name  # noqa: B018


def test_importing_the_package_loads_neither_pandas_nor_aiohttp() -> None:
    """`import bulk_cancel` stays light: the library's heavy parts load on first use."""
    code = (
        "import sys, bulk_cancel; "
        "print(sorted(m for m in ('pandas', 'aiohttp', 'pyarrow') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_a_frame_gives_the_same_rows_as_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cancel(DataFrame) returns, per umid, the command's outcome and the input's own columns."""
    ids = umids(60, seed=301)
    frame = pd.DataFrame(
        {"umid": [*ids, ids[0]], "campaign": [f"c{i % 3}" for i in range(61)], "n": range(61)}
    )
    source = tmp_path / "in.csv"
    frame.to_csv(source, index=False)
    sim_args = ("--not-found-ratio", "0.2", "--already-sent-ratio", "0.2")
    with simulator(*sim_args) as sim:
        ran = run_command(
            "run",
            "--input",
            source,
            "--subaccount",
            "acme_hq",
            "--output",
            tmp_path / "cli.csv",
            "--base-url",
            sim.url,
            "--allow-insecure-http",
        )
        assert ran.code == 0, ran.stderr
    with (tmp_path / "cli.csv").open(newline="") as f:
        cli_rows = {row["umid"]: row for row in csv.DictReader(f)}
    monkeypatch.setenv("EIGHTX8_API_KEY", API_KEY)
    with simulator(*sim_args) as sim:  # a fresh one: each umid's fate is the same
        results = bulk_cancel.cancel(
            frame, subaccount="acme_hq", base_url=sim.url, allow_insecure_http=True
        )
    assert list(results.columns) == [*RESULT_COLUMNS, "campaign", "n"]
    assert len(results) == len(cli_rows) == 60
    for row in results.itertuples(index=False):
        cli = cli_rows[row.umid]
        assert (row.outcome, row.campaign, str(row.n)) == (
            cli["outcome"],
            cli["campaign"],
            cli["n"],
        )
    assert {"cancelled", "not_found", "not_cancellable"} <= set(results["outcome"])
    assert str(results["http_status"].dtype) == "Int64"
    assert results["n"].dtype.kind == "i"  # the input's types come back through Parquet
    summary = results.attrs["summary"]
    assert isinstance(summary, Summary)
    assert (summary.unique, summary.duplicates, summary.exit_code) == (60, 1, 0)
    assert summary.results is None  # no results file was asked for


async def test_a_list_inside_a_running_loop(tmp_path: Path) -> None:
    """await cancel_async(list) cancels each umid once and says so row by row."""
    ids = umids(40, seed=302)
    async with running_simulator() as sim:
        results = await bulk_cancel.cancel_async(
            ids, subaccount="acme_hq", api_key=API_KEY, base_url=sim.url, allow_insecure_http=True
        )
        assert sim.state.cancelled == {f"acme_hq/{u}" for u in ids}
        assert max(sim.state.requests_per_id.values()) == 1
    assert sorted(results["umid"]) == sorted(ids)
    assert set(results["outcome"]) == {Outcome.CANCELLED.value}
    assert results.attrs["summary"].counts["cancelled"] == 40


async def test_the_blocking_call_refuses_a_running_loop() -> None:
    """cancel() inside a running loop says to await cancel_async instead, and sends nothing."""
    with pytest.raises(RuntimeError, match=r"await bulk_cancel\.cancel_async"):
        bulk_cancel.cancel(["x"], subaccount="acme_hq", api_key=API_KEY)


def test_the_callers_signal_handlers_are_left_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SIGINT and SIGTERM handlers are the caller's own objects before and after a call."""

    def mine(signum: int, frame: object) -> None:
        raise AssertionError("no signal is expected")

    before = {s: signal.signal(s, mine) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with simulator() as sim:
            results = bulk_cancel.cancel(
                umids(10, seed=303),
                subaccount="acme_hq",
                api_key=API_KEY,
                base_url=sim.url,
                allow_insecure_http=True,
            )
        assert signal.getsignal(signal.SIGINT) is mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    assert set(results["outcome"]) == {"cancelled"}


async def test_cancelling_the_task_leaves_a_ledger_that_resume_finishes(tmp_path: Path) -> None:
    """A cancelled task stops sending cleanly; resume=True then finishes: every row once."""
    ids = umids(300, seed=304)
    ledger = tmp_path / "run.ledger.sqlite"
    config = SimulatorConfig(latency_s=0.02)
    settings: dict[str, Any] = {
        "subaccount": "acme_hq",
        "api_key": API_KEY,
        "ledger": ledger,
        "allow_insecure_http": True,
        "rate": 100.0,
    }
    async with running_simulator(config) as sim:
        task = asyncio.ensure_future(bulk_cancel.cancel_async(ids, base_url=sim.url, **settings))
        for _ in range(3000):  # until some requests went out (30 s at most)
            if sim.state.requests >= 20:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        sent_first = sim.state.requests
        assert 20 <= sent_first < 300
        assert ledger.exists()
        results = await bulk_cancel.cancel_async(
            ids, base_url=sim.url, resume=True, **{**settings, "rate": 1000.0}
        )
        assert sim.state.cancelled == {f"acme_hq/{u}" for u in ids}
        assert sim.state.applied_twice == 0
    assert sorted(results["umid"]) == sorted(ids)
    assert set(results["outcome"]) <= {"cancelled", "unconfirmed", "not_cancellable"}
    assert "not_attempted" not in set(results["outcome"])
    summary = results.attrs["summary"]
    assert len(summary.attempts) == 2 and summary.exit_code == 0


async def test_a_refused_key_raises_auth_error_with_the_results(tmp_path: Path) -> None:
    """A refused key raises AuthError carrying every row; nothing more was sent."""
    ids = umids(30, seed=305)
    async with running_simulator(SimulatorConfig(api_keys=frozenset({"the-right-key"}))) as sim:
        with pytest.raises(AuthError) as caught:
            await bulk_cancel.cancel_async(
                ids,
                subaccount="acme_hq",
                api_key="a-wrong-key",
                base_url=sim.url,
                allow_insecure_http=True,
            )
        assert sim.state.cancelled == set()
    results = caught.value.results
    assert sorted(results["umid"]) == sorted(ids)
    assert set(results["outcome"]) <= {"auth_failed", "not_attempted"}
    assert caught.value.summary.stop_reason == bulk_cancel.StopReason.AUTH
    assert "a-wrong-key" not in str(caught.value)


async def test_bad_input_raises_input_error_and_sends_nothing(tmp_path: Path) -> None:
    """A frame without an id column raises InputError naming the problem; nothing is sent."""
    async with running_simulator() as sim:
        with pytest.raises(InputError, match="umid"):
            await bulk_cancel.cancel_async(
                pd.DataFrame({"colour": ["red", "blue"]}),
                subaccount="acme_hq",
                api_key=API_KEY,
                base_url=sim.url,
                allow_insecure_http=True,
            )
        assert sim.state.requests == 0


async def test_an_unknown_keyword_is_a_type_error_with_the_closest_name() -> None:
    """A misspelt setting is refused before anything is read, with a did-you-mean."""
    with pytest.raises(TypeError, match="did you mean 'max_attempts'"):
        await bulk_cancel.cancel_async(["x"], subaccount="acme_hq", max_attempt=3)


def test_summary_round_trips_the_summary_json(tmp_path: Path) -> None:
    """Summary.from_dict(d).to_dict() == d for a summary the command wrote."""
    ids = umids(5, seed=306)
    source = tmp_path / "in.txt"
    source.write_text("\n".join(ids) + "\n")
    with simulator() as sim:
        ran = run_command(
            "run",
            "--input",
            source,
            "--subaccount",
            "acme_hq",
            "--output",
            tmp_path / "r.csv",
            "--base-url",
            sim.url,
            "--allow-insecure-http",
        )
    assert ran.code == 0, ran.stderr
    import json

    data = json.loads((tmp_path / "r.summary.json").read_text())
    assert Summary.from_dict(data).to_dict() == data
    assert list(Summary.from_dict(data).to_dict()) == list(data)


def test_ctrl_c_in_the_blocking_call_stops_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    """Ctrl-C during cancel() drains, keeps the ledger and raises KeyboardInterrupt; resume ends it."""
    # 20 s of work at rate=100, so that the signal lands mid-run however busy the machine is.
    ids = umids(2000, seed=307)
    ledger = tmp_path / "run.ledger.sqlite"
    with simulator("--latency-ms", "20") as sim:
        script = textwrap.dedent(
            f"""
            import bulk_cancel
            try:
                bulk_cancel.cancel({ids!r}, subaccount="acme_hq", api_key={API_KEY!r},
                                   base_url={sim.url!r}, allow_insecure_http=True, rate=100.0,
                                   ledger={str(ledger)!r})
            except KeyboardInterrupt:
                print("KeyboardInterrupt")
            """
        )
        child = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for_requests(sim, 20)
            child.send_signal(signal.SIGINT)
            out, err = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == 0, err
        assert out.strip().splitlines()[-1] == "KeyboardInterrupt"  # structlog's lines before it
        assert "run.interrupted" in out and "run.finished" in out  # drained, results kept
        assert "Traceback" not in err
        assert ledger.exists()
        sent_first = sim.state()["requests"]
        assert 20 <= sent_first < len(ids)
        results = bulk_cancel.cancel(
            ids,
            subaccount="acme_hq",
            api_key=API_KEY,
            base_url=sim.url,
            allow_insecure_http=True,
            ledger=ledger,
            resume=True,
        )
        state = sim.state(ids=True)
    assert sorted(results["umid"]) == sorted(ids)
    assert "not_attempted" not in set(results["outcome"])
    assert state["applied_twice"] == 0
    assert len(results.attrs["summary"].attempts) == 2


async def test_a_series_with_output_writes_the_commands_files(tmp_path: Path) -> None:
    """A Series with output= also writes the results, the summary JSON and the ledger beside."""
    ids = umids(12, seed=308)
    out = tmp_path / "out" / "results.csv"
    out.parent.mkdir()
    async with running_simulator() as sim:
        results = await bulk_cancel.cancel_async(
            pd.Series(ids, name="message_id"),
            subaccount="acme_hq",
            api_key=API_KEY,
            base_url=sim.url,
            allow_insecure_http=True,
            output=out,
        )
    with out.open(newline="") as f:
        written = {row["umid"]: row["outcome"] for row in csv.DictReader(f)}
    assert written == dict(zip(results["umid"], results["outcome"], strict=True))
    import json

    summary = json.loads((tmp_path / "out" / "results.summary.json").read_text())
    assert summary == json.loads(json.dumps(results.attrs["summary"].to_dict(), default=str))
    assert summary["results"] == str(out) and summary["unique"] == 12
    assert (tmp_path / "out" / "results.ledger.sqlite").exists()


async def test_a_dead_proxy_raises_network_error_with_every_row(tmp_path: Path) -> None:
    """A proxy that cannot be reached raises NetworkError; every row is there, none answered."""
    import socket

    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ids = umids(8, seed=309)
    async with running_simulator() as sim:
        with pytest.raises(bulk_cancel.NetworkError) as caught:
            await bulk_cancel.cancel_async(
                ids,
                subaccount="acme_hq",
                api_key=API_KEY,
                base_url=sim.url,
                allow_insecure_http=True,
                proxy=f"http://ops:secret-pw@127.0.0.1:{port}",
            )
        assert sim.state.requests == 0
    assert set(caught.value.results["outcome"]) == {"not_attempted"}
    assert len(caught.value.results) == 8
    assert "secret-pw" not in str(caught.value)


def test_the_command_and_the_library_give_the_same_rows_and_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bulk-cancel run` and cancel(path) of one file (two subaccounts, a duplicate, an invalid
    umid, an extra column) write the same results rows, every column but the time and the
    simulator's error ids (fresh per answer), and the same summary figures: the command runs
    through the library's core."""
    ids = umids(40, seed=310)
    rows = [[u, "acme_hq" if i % 2 else "acme_eu", f"c{i % 3}"] for i, u in enumerate(ids)]
    rows += [
        [ids[3], "acme_eu" if 3 % 2 == 0 else "acme_hq", "again"],
        ["not-a-umid", "acme_hq", "x"],
    ]
    source = write_csv(tmp_path / "in.csv", ["umid", "subaccount_id", "campaign"], rows)
    sim_args = ("--not-found-ratio", "0.2", "--already-sent-ratio", "0.2")
    with simulator(*sim_args) as sim:
        ran = run_command(
            "run", "--input", source, "--output", tmp_path / "cli.csv", "--base-url", sim.url,
            "--allow-insecure-http",
        )  # fmt: skip
        assert ran.code == 0, ran.stderr
    monkeypatch.setenv("EIGHTX8_API_KEY", API_KEY)
    with simulator(*sim_args) as sim:  # a fresh one: each umid's fate is the same
        frame = bulk_cancel.cancel(
            source, base_url=sim.url, allow_insecure_http=True, output=tmp_path / "lib.csv"
        )

    def timeless(path: Path) -> list[dict[str, str]]:
        fresh = ("finished_at", "error_id")
        return [{k: v for k, v in row.items() if k not in fresh} for row in read_results(path)]

    assert timeless(tmp_path / "lib.csv") == timeless(tmp_path / "cli.csv")
    assert len(frame) == 41 and {"cancelled", "not_found", "invalid_umid"} <= set(frame["outcome"])
    by_cli, by_lib = read_summary(tmp_path / "cli.csv"), read_summary(tmp_path / "lib.csv")
    figures = ("counts", "unique", "duplicates", "input_rows", "blank_rows", "cancelled_total")
    for key in (*figures, "requests", "exit_code", "stop_reason", "input_checksum"):
        assert by_lib[key] == by_cli[key], key
    assert by_lib["settings"]["input"] == by_cli["settings"]["input"] == str(source)
    assert frame.attrs["summary"].counts == by_cli["counts"]


async def test_a_frame_is_named_as_given_never_by_its_temporary_file(tmp_path: Path) -> None:
    """A DataFrame's summary (and its summary JSON) say `<DataFrame>` for the input, and an
    input error names `<DataFrame>`, never the temporary Parquet file read in its place."""
    out = tmp_path / "out.csv"
    async with running_simulator() as sim:
        results = await bulk_cancel.cancel_async(
            pd.DataFrame({"umid": umids(5, seed=311)}),
            subaccount="acme_hq",
            api_key=API_KEY,
            base_url=sim.url,
            allow_insecure_http=True,
            output=out,
        )
        with pytest.raises(InputError) as caught:
            await bulk_cancel.cancel_async(
                pd.DataFrame({"colour": ["red"]}),
                subaccount="acme_hq",
                api_key=API_KEY,
                base_url=sim.url,
                allow_insecure_http=True,
            )
        plain = await bulk_cancel.cancel_async(
            umids(3, seed=312),
            subaccount="acme_hq",
            api_key=API_KEY,
            base_url=sim.url,
            allow_insecure_http=True,
        )
    summary = results.attrs["summary"]
    assert summary.settings["input"] == "<DataFrame>"
    assert summary.settings["output"] == str(out)
    written = (tmp_path / "out.summary.json").read_text()
    assert '"input": "<DataFrame>"' in written and "input.parquet" not in written
    assert str(caught.value).startswith("<DataFrame>: ") and ".parquet" not in str(caught.value)
    quiet = plain.attrs["summary"]  # no file asked for: no temporary path to point at
    assert quiet.settings["input"] == "<iterable>"
    assert (quiet.settings["output"], quiet.results, quiet.ledger) == (None, None, None)
