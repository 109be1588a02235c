"""End to end: the real ``bulk-cancel`` command against the simulator on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from e2e import bulk_cancel, on_terminal, read_results, read_summary, simulator, write_csv
from helpers import API_KEY, umids
from openpyxl import Workbook

from bulk_cancel.errors import ExitCode

SUB = "acme_hq"


def run_args(input_: Path | str, out: Path, url: str, *extra: str) -> list[str]:
    return [
        "run",
        "--input",
        str(input_),
        "--subaccount",
        SUB,
        "--output",
        str(out),
        "--base-url",
        url,
        *extra,
    ]


def check_accounting(out: Path, unique: int) -> dict[str, int]:
    """Every unique row exactly once; the summary's counts equal the results'."""
    rows = read_results(out)
    keys = [(r["subaccount_id"], r["umid"]) for r in rows]
    assert len(keys) == len(set(keys)) == unique
    counts = Counter(r["outcome"] for r in rows)
    summary = read_summary(out)
    assert {k: v for k, v in summary["counts"].items() if v} == dict(counts)
    assert summary["unique"] == unique
    return dict(counts)


def test_run_cancels_every_row_and_accounts_for_each(tmp_path: Path) -> None:
    """A CSV with duplicates, junk and extra columns: one row per unique umid, matching what the API did."""
    ids = umids(300)
    rows = [[u, f"camp-{i % 3}", f"00{i}"] for i, u in enumerate(ids)]
    rows += [
        [ids[0], "dup", "x"],
        [f'  "{ids[1].upper()}" ', "dup-quoted", "y"],
        ["", "", ""],
        ["not-a-umid", "bad", "z"],
    ]
    src = write_csv(tmp_path / "in.csv", ["UMID", "campaign", "code"], rows)
    out = tmp_path / "results.csv"
    with simulator("--not-found-ratio", "0.1", "--already-sent-ratio", "0.1") as sim:
        ran = bulk_cancel(*run_args(src, out, sim.url))
        state = sim.state(ids=True)
    assert ran.code == 0, ran.stderr
    counts = check_accounting(out, 301)
    assert counts["invalid_umid"] == 1
    assert counts["cancelled"] + counts["not_found"] + counts["not_cancellable"] == 300
    assert 10 < counts["not_found"] < 60 and 10 < counts["not_cancellable"] < 60
    results = read_results(out)
    cancelled = {r["umid"] for r in results if r["outcome"] == "cancelled"}
    assert cancelled == {c.rsplit("/", 1)[-1] for c in state["cancelled"]} or cancelled == set(
        state["cancelled"]
    )
    by_umid = {r["umid"]: r for r in results}
    assert by_umid[ids[5]]["campaign"] == "camp-2" and by_umid[ids[5]]["code"] == "005"
    assert by_umid["not-a-umid"]["http_status"] == ""  # decided locally, never sent
    summary = read_summary(out)
    assert (summary["input_rows"], summary["duplicates"], summary["blank_rows"]) == (303, 2, 1)
    assert summary["requests"] == state["requests"] == 300


def _write_format(fmt: str, path: Path, ids: list[str]) -> Path:
    if fmt == "csv":
        return write_csv(path.with_suffix(".csv"), ["umid"], [[u] for u in ids])
    if fmt == "tsv":
        p = path.with_suffix(".tsv")
        p.write_text("message_id\tnote\n" + "".join(f"{u}\tn{i}\n" for i, u in enumerate(ids)))
        return p
    if fmt == "parquet":
        p = path.with_suffix(".parquet")
        pq.write_table(pa.table({"messageId": ids}), p)
        return p
    if fmt == "xlsx":
        p = path.with_suffix(".xlsx")
        wb = Workbook()
        ws = wb.active
        assert ws is not None
        ws.append(["Umid", "owner"])
        for u in ids:
            ws.append([u, "ops"])
        wb.save(p)
        return p
    p = path.with_suffix(".txt")
    p.write_text("\n".join(ids) + "\n\n")
    return p


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "xlsx", "txt", "stdin"])
def test_each_input_format(tmp_path: Path, fmt: str) -> None:
    """CSV, TSV, Parquet, Excel, text and stdin all cancel the same umids."""
    ids = umids(40, seed=3)
    out = tmp_path / "results.csv"
    with simulator() as sim:
        if fmt == "stdin":
            ran = bulk_cancel(*run_args("-", out, sim.url), stdin="umid\n" + "\n".join(ids) + "\n")
        else:
            ran = bulk_cancel(*run_args(_write_format(fmt, tmp_path / "in", ids), out, sim.url))
        assert sim.state()["requests"] == 40
    assert ran.code == 0, ran.stderr
    assert check_accounting(out, 40) == {"cancelled": 40}


def test_rejected_key_stops_at_once_with_exit_3(tmp_path: Path) -> None:
    """A wrong key: a handful of requests, one clear message, the rest not_attempted, exit 3."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(3000)])
    out = tmp_path / "results.csv"
    with simulator("--api-key", "the-right-key") as sim:
        ran = bulk_cancel(*run_args(src, out, sim.url, "--concurrency", "8"), key="a-wrong-key")
        sent = sim.state()["requests"]
    assert ran.code == 3
    assert "rejected the key" in ran.stderr
    assert "a-wrong-key" not in ran.stderr
    assert sent <= 8 + 2
    counts = check_accounting(out, 3000)
    assert counts["auth_failed"] == sent and counts["not_attempted"] == 3000 - sent


def test_a_key_with_a_line_break_is_refused_before_any_request(tmp_path: Path) -> None:
    """A pasted key with a line break could add headers: one line, exit 2, nothing sent, key unseen."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(5)])
    with simulator() as sim:
        ran = bulk_cancel(
            *run_args(src, tmp_path / "r.csv", sim.url), key="secret-part\r\nX-Evil: 1"
        )
        assert sim.state()["requests"] == 0
    assert ran.code == 2
    assert "EIGHTX8_API_KEY holds a line break" in ran.stderr
    assert "secret-part" not in ran.stderr and "Traceback" not in ran.stderr


def test_rejected_subaccount_exits_3(tmp_path: Path) -> None:
    """Code 1001 stops that subaccount: exit 3, its rows subaccount_rejected or not_attempted."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(200)])
    out = tmp_path / "results.csv"
    with simulator("--rejected-subaccount", SUB) as sim:
        ran = bulk_cancel(*run_args(src, out, sim.url, "--concurrency", "4"))
    assert ran.code == 3
    counts = check_accounting(out, 200)
    assert set(counts) == {"subaccount_rejected", "not_attempted"}


def test_429_with_retry_after_is_honoured(tmp_path: Path) -> None:
    """Asking more than the server allows: 429s are retried after Retry-After and every row ends cancelled."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(120)])
    out = tmp_path / "results.csv"
    with simulator("--rate", "50") as sim:
        ran = bulk_cancel(*run_args(src, out, sim.url, "--rate", "400"))
        state = sim.state()
    assert ran.code == 0, ran.stderr
    assert check_accounting(out, 120) == {"cancelled": 120}
    assert state["throttled"] > 0
    summary = read_summary(out)
    assert summary["retries"] == state["throttled"]  # each 429 was retried, nothing else was


def test_lost_answers_are_unconfirmed_never_wrong(tmp_path: Path) -> None:
    """Dropped connections after the cancel applied: every umid the API cancelled is cancelled or unconfirmed."""
    ids = umids(400, seed=5)
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in ids])
    out = tmp_path / "results.csv"
    with simulator("--faults", "drop_after=0.2,http_500_applied=0.05", "--seed", "3") as sim:
        # A quarter of all sends lose their answer, and each is a counted attempt (the client never
        # re-sends by itself): six attempts would leave a row failed one run in ten.
        ran = bulk_cancel(*run_args(src, out, sim.url, "--timeout", "5", "--max-attempts", "12"))
        state = sim.state(ids=True)
    assert ran.code == 0, ran.stderr
    counts = check_accounting(out, 400)
    assert counts.get("unconfirmed", 0) > 0
    outcome = {r["umid"]: r["outcome"] for r in read_results(out)}
    applied = {key.rsplit("/", 1)[-1] for key in state["cancelled"]}
    assert applied == set(ids)  # the simulator cancelled every one of them
    assert {outcome[u] for u in applied} <= {"cancelled", "unconfirmed"}


def test_exhausted_retries_fail_with_exit_1(tmp_path: Path) -> None:
    """A server that only answers 503: rows end failed after the budget, exit 1, resume command printed."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(5)])
    out = tmp_path / "results.csv"
    with simulator("--faults", "http_503=1.0") as sim:
        ran = bulk_cancel(
            *run_args(src, out, sim.url, "--max-attempts", "2", "--failure-threshold", "1")
        )
    assert ran.code == 1
    assert check_accounting(out, 5) == {"failed": 5}
    summary = read_summary(out)
    assert "--resume" in summary["resume_command"]
    # Off a terminal (cron mail, CI log) the command to re-send the failures is on stderr too,
    # as JSON events like every other line there.
    retry = summary["retry_failed_command"]
    events = {e["event"]: e for e in map(json.loads, ran.stderr.splitlines())}
    assert events["run.retry_hint"]["command"] == retry
    assert events["run.finished"]["retry_failed_command"] == retry


def test_bad_input_exits_2_with_one_line_and_sends_nothing(tmp_path: Path) -> None:
    """A file with no usable column: exit 2, one line naming the file, no request, no ledger."""
    src = write_csv(tmp_path / "in.csv", ["foo", "bar"], [["1", "2"]])
    out = tmp_path / "results.csv"
    with simulator() as sim:
        ran = bulk_cancel(*run_args(src, out, sim.url))
        assert sim.state()["requests"] == 0
    assert ran.code == 2
    lines = [line for line in ran.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "in.csv" in lines[0] and "Traceback" not in ran.stderr
    assert not out.exists() and not (tmp_path / "results.ledger.sqlite").exists()


def test_hostile_values_never_leave_the_documented_path(tmp_path: Path) -> None:
    """Path tricks in umids and subaccounts are reported locally; no stray request reaches the server."""
    hostile = [
        "../../admin",
        "%2F..%2Fx",
        "a/b",
        "x?y=1",
        "x#y",
        "with space",
        "ünï",
        "ctl\x01",
        "x" * 10_000,
    ]
    rows = [[h, SUB] for h in hostile] + [[umids(1)[0], h] for h in hostile] + [[umids(2)[1], SUB]]
    src = write_csv(tmp_path / "in.csv", ["umid", "subaccount_id"], rows)
    out = tmp_path / "results.csv"
    with simulator() as sim:
        ran = bulk_cancel("run", "--input", src, "--output", out, "--base-url", sim.url)
        state = sim.state()
    assert ran.code == 0, ran.stderr
    assert state["stray"] == 0 and state["requests"] == 1
    counts = check_accounting(out, len(rows))
    assert counts == {"invalid_umid": 9, "subaccount_rejected": 9, "cancelled": 1}


def test_the_key_appears_nowhere(tmp_path: Path) -> None:
    """The API key is in no results, summary, ledger, log line or error."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(50)] + [["bad"]])
    out = tmp_path / "results.csv"
    with simulator("--faults", "http_503=0.2,http_500=0.1") as sim:
        ran = bulk_cancel(*run_args(src, out, sim.url, "--log-format", "json"))
    assert ran.code == 0, ran.stderr
    for path in tmp_path.iterdir():
        assert API_KEY.encode() not in path.read_bytes(), path
    assert API_KEY not in ran.stderr + ran.stdout
    with sqlite3.connect(tmp_path / "results.ledger.sqlite") as conn:
        dump = "\n".join(conn.iterdump())
    assert API_KEY not in dump


def test_help_has_examples_and_no_secrets() -> None:
    """`run --help` ends with runnable examples and the exit codes, and never shows a key."""
    ran = bulk_cancel("run", "--help")
    assert ran.code == 0
    assert "bulk-cancel run --input umids.csv" in ran.stdout
    assert "exit codes" in ran.stdout
    assert API_KEY not in ran.stdout


def test_every_exit_code_is_documented_in_the_readme_and_the_help() -> None:
    """The README's "Exit codes" and `run --help` name every code the command can return."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    table = {line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ")}
    listed = {part.strip() for cell in table for part in cell.split("/")}
    help_codes = bulk_cancel("run", "--help").stdout.split("exit codes:", 1)[1]
    for code in ExitCode:
        assert str(code.value) in listed, code
        assert f"**{code.value}" in section or f"{code.value}**" in section, code
        assert f" {code.value} " in help_codes, code


def test_the_architecture_notes_list_every_module() -> None:
    """docs/ARCHITECTURE.md's module table has one row for each module (and sub-package) of the
    package, no more."""
    root = Path(__file__).resolve().parent.parent
    text = (root / "docs" / "ARCHITECTURE.md").read_text()
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| `")]
    package = root / "bulk_cancel"
    modules = [p.stem for p in package.glob("*.py")]
    modules += [f"{p.parent.name}/" for p in package.glob("*/__init__.py")]  # sub-packages
    assert sorted(row.strip("`") for row in rows) == sorted(modules)


def test_validate_reports_problems_with_line_numbers_and_sends_nothing(tmp_path: Path) -> None:
    """`validate` counts rows, duplicates and invalid values with their lines; no request, no ledger."""
    ids = umids(4)
    src = write_csv(
        tmp_path / "in.csv",
        ["umid", "subaccount_id"],
        [[ids[0], "a_sub"], [ids[0], "a_sub"], ["junk", "a_sub"], [ids[1], "b_sub"]],
    )
    ran = bulk_cancel("validate", src, "--format", "json", key=None)
    assert ran.code == 0, ran.stderr
    plan = json.loads(ran.stdout)
    assert (plan["input_rows"], plan["unique"], plan["duplicates"], plan["to_send"]) == (4, 3, 1, 2)
    assert plan["per_subaccount"] == {"a_sub": 1, "b_sub": 1}
    assert plan["examples"]["invalid_umid"] == [
        {"line": 4, "value": "junk", "problem": "not a UUID (local check)"}
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
    table = bulk_cancel("validate", src, key=None)
    assert "line 4: 'junk'" in table.stdout and "nothing was sent" in table.stdout


def test_report_reprints_a_past_run(tmp_path: Path) -> None:
    """`report` shows a finished run's summary as a table or as JSON."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(7)])
    out = tmp_path / "results.csv"
    with simulator() as sim:
        assert bulk_cancel(*run_args(src, out, sim.url)).code == 0
    table = bulk_cancel("report", out, key=None)
    assert table.code == 0 and "cancelled" in table.stdout and "100.0%" in table.stdout
    as_json = json.loads(bulk_cancel("report", out, "--format", "json", key=None).stdout)
    assert as_json["counts"]["cancelled"] == 7
    missing = bulk_cancel("report", tmp_path / "nothing.csv", key=None)
    assert missing.code == 2 and "no summary found" in missing.stderr
    garbage = tmp_path / "garbage.ledger.sqlite"
    garbage.write_bytes(bytes(range(256)) * 20)
    corrupt = bulk_cancel("report", garbage, key=None)
    assert corrupt.code == 2 and "Traceback" not in corrupt.stderr
    assert corrupt.stderr.count("\n") == 1 and "not a readable bulk-cancel ledger" in corrupt.stderr


def test_excel_output_and_split_errors_file(tmp_path: Path) -> None:
    """--output .xlsx gives results and summary sheets; --split writes the rows to fix, original columns kept."""
    from openpyxl import load_workbook

    ids = umids(6)
    src = write_csv(
        tmp_path / "in.csv",
        ["umid", "owner"],
        [[u, f"team-{i}"] for i, u in enumerate(ids)] + [["=HYPERLINK(1)", "evil"]],
    )
    out = tmp_path / "results.xlsx"
    with simulator("--not-found-ratio", "0.5") as sim:
        ran = bulk_cancel(*run_args(src, out, sim.url, "--split"))
    assert ran.code == 0, ran.stderr
    wb = load_workbook(out)  # not read_only: the cells' data types are needed
    assert wb.sheetnames == ["results", "summary"]
    rows = list(wb["results"].iter_rows(values_only=True))
    assert rows[0][:4] == ("umid", "subaccount_id", "kind", "outcome") and rows[0][-1] == "owner"
    assert len(rows) == 8
    cell = next(r[0] for r in wb["results"].iter_rows(min_row=2) if r[0].value == "=HYPERLINK(1)")
    assert cell.data_type == "s" and cell.quotePrefix  # the exact text, never a formula
    wb.close()
    errors = read_results(tmp_path / "results.errors.csv")
    assert [e["outcome"] for e in errors] == ["invalid_umid"]
    assert errors[0]["owner"] == "evil"


def test_batch_ids_cancel_whole_batches(tmp_path: Path) -> None:
    """A batch_id column (or --batch-id) sends DELETE .../messages/batch/{id}, reported per batch."""
    batches = umids(3, seed=30)
    src = write_csv(
        tmp_path / "in.csv",
        ["batch_id", "subaccount_id"],
        [[b, SUB] for b in batches] + [[batches[0], SUB]],
    )
    out = tmp_path / "results.csv"
    with simulator("--batch-size", "4") as sim:
        ran = bulk_cancel("run", "--input", src, "--output", out, "--base-url", sim.url)
        one = bulk_cancel(
            "run",
            "--batch-id",
            batches[0].upper(),
            "--subaccount",
            SUB,
            "--output",
            tmp_path / "one.csv",
            "--base-url",
            sim.url,
        )
        bad = bulk_cancel(
            "run",
            "--batch-id",
            "../x",
            "--subaccount",
            SUB,
            "--output",
            tmp_path / "bad.csv",
            "--base-url",
            sim.url,
        )
        state = sim.state(ids=True)
    assert ran.code == 0, ran.stderr
    rows = read_results(out)
    assert [(r["kind"], r["outcome"], r["cancelled_count"]) for r in rows] == [
        ("batch", "cancelled", "4")
    ] * 3
    assert read_summary(out)["cancelled_total"] == 12
    assert one.code == 0 and read_results(tmp_path / "one.csv")[0]["outcome"] == "not_cancellable"
    assert bad.code == 0 and read_results(tmp_path / "bad.csv")[0]["outcome"] == "invalid_umid"
    assert len(state["cancelled_batches"]) == 3 and state["stray"] == 0 and state["requests"] == 4


def test_several_subaccounts_keep_their_own_limits_and_the_ip_cap(tmp_path: Path) -> None:
    """Per-row subaccounts: each stays under --rate in any second, all together under --ip-rate; no 429."""
    subs = ["sub_one", "sub_two", "sub_three"]
    rows = [[u, sub] for sub in subs for u in umids(150, seed=40 + len(sub))]
    src = write_csv(tmp_path / "in.csv", ["umid", "subaccount_id"], rows)
    out = tmp_path / "results.csv"
    with simulator("--rate", "100", "--ip-rate", "200") as sim:
        ran = bulk_cancel(
            "run",
            "--input",
            src,
            "--output",
            out,
            "--base-url",
            sim.url,
            "--rate",
            "100",
            "--ip-rate",
            "200",
        )
        state = sim.state()
    assert ran.code == 0, ran.stderr
    assert check_accounting(out, 450) == {"cancelled": 450}
    assert state["throttled"] == 0, (state["max_per_s_by_subaccount"], state["max_ip_per_s"])
    assert set(state["max_per_s_by_subaccount"]) == set(subs)
    assert all(n <= 100 for n in state["max_per_s_by_subaccount"].values())
    assert 150 <= state["max_ip_per_s"] <= 200  # the cap binds, and holds


# ------------------------------------------------------------------------------ on a terminal


def test_on_a_terminal_yes_at_the_prompt_cancels(tmp_path: Path) -> None:
    """On a terminal the command asks first; y sends every row and shows the progress bar."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(20, seed=80)])
    out = tmp_path / "results.csv"
    with simulator() as sim:
        ran = on_terminal(*run_args(src, out, sim.url), answer="y")
        assert sim.state()["requests"] == 20
    assert ran.code == 0, ran.stdout
    assert "Cancel the scheduled messages of 20 rows (lines in the file) in subaccount acme_hq" in (
        ran.stdout
    )
    assert "cancelling" in ran.stdout and "bulk-cancel summary" in ran.stdout


def test_on_a_terminal_no_at_the_prompt_shows_no_progress(tmp_path: Path) -> None:
    """n at the prompt: exit 2, one line, nothing sent, no ledger, and not a frame of the bar."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(20, seed=82)])
    out = tmp_path / "results.csv"
    with simulator() as sim:
        ran = on_terminal(*run_args(src, out, sim.url), answer="n")
        assert sim.state()["requests"] == 0
    assert ran.code == 2, ran.stdout
    after_prompt = ran.stdout.split("[y/N] ", 1)[1]
    assert " ".join(after_prompt.split()) == "n bulk-cancel: error: not confirmed: nothing was sent"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"]
)
def test_a_signal_at_the_prompt_stops_at_once_and_leaves_nothing(
    tmp_path: Path, sig: int, code: int
) -> None:
    """Ctrl-C (or SIGTERM) at the prompt ends it at once: 130/143, nothing sent, no ledger kept."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(20, seed=81)])
    out = tmp_path / "results.csv"
    with simulator() as sim:
        ran = on_terminal(*run_args(src, out, sim.url), signal_at_prompt=sig, timeout=30)
        assert sim.state()["requests"] == 0
        assert ran.code == code, ran.stdout
        assert "interrupted at the confirmation; nothing was sent" in ran.stdout
        assert "Traceback" not in ran.stdout
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
        again = bulk_cancel(*run_args(src, out, sim.url))  # the same command simply runs again
    assert again.code == 0, again.stderr
    assert check_accounting(out, 20) == {"cancelled": 20}


def test_on_a_terminal_a_resume_asks_first_and_a_no_leaves_the_ledger_as_it_was(
    tmp_path: Path,
) -> None:
    """--resume on a terminal asks as the first run did: n sends nothing and keeps the ledger."""
    src = write_csv(tmp_path / "in.csv", ["umid"], [[u] for u in umids(200, seed=83)])
    out = tmp_path / "results.csv"
    with simulator("--api-key", API_KEY) as sim:
        first = bulk_cancel(*run_args(src, out, sim.url, "--concurrency", "4"), key="wrong-key")
        assert first.code == 3
        sent = sim.state()["requests"]
        ledger = (tmp_path / "results.ledger.sqlite").read_bytes()
        declined = on_terminal(*run_args(src, out, sim.url, "--resume"), answer="n")
        assert sim.state()["requests"] == sent
        assert declined.code == 2, declined.stdout
        assert "Resume the run: cancel 200 scheduled messages in subaccount(s) acme_hq (200)" in (
            declined.stdout
        )
        assert (tmp_path / "results.ledger.sqlite").read_bytes() == ledger
        accepted = on_terminal(*run_args(src, out, sim.url, "--resume"), answer="y")
        assert sim.state()["requests"] == sent + 200
    assert accepted.code == 0, accepted.stdout
    assert check_accounting(out, 200) == {"cancelled": 200}


def test_report_breaks_the_rows_down_by_subaccount_or_an_input_column(tmp_path: Path) -> None:
    """`report --by subaccount` / `--by campaign`: rows by outcome per group, equal to the results,
    from the ledger, or from the results CSV once the ledger is gone; a wrong column says which."""
    ids = umids(120, seed=84)
    rows = [[u, ("sub_one", "sub_two")[i % 2], f"spring-{i % 3}"] for i, u in enumerate(ids)]
    rows.append(["junk", "sub_one", "spring-0"])
    src = write_csv(tmp_path / "in.csv", ["umid", "subaccount_id", "Campaign"], rows)
    out = tmp_path / "results.csv"
    with simulator("--not-found-ratio", "0.3", "--seed", "5") as sim:
        ran = bulk_cancel("run", "--input", src, "--output", out, "--base-url", sim.url)
    assert ran.code == 0, ran.stderr
    results = read_results(out)

    def expected(column: str) -> dict[str, dict[str, int]]:
        tallies: dict[str, Counter[str]] = {}
        for r in results:
            tallies.setdefault(r[column], Counter())[r["outcome"]] += 1
        return {k: dict(v) for k, v in sorted(tallies.items())}

    by_sub = json.loads(bulk_cancel("report", out, "--by", "subaccount", "--format", "json").stdout)
    assert by_sub["breakdown"] == {"by": "subaccount", "groups": expected("subaccount_id")}
    assert len(by_sub["breakdown"]["groups"]["sub_one"]) >= 2  # outcomes differ within a group
    by_campaign = json.loads(
        bulk_cancel("report", out, "--by", "campaign", "--format", "json").stdout
    )
    assert by_campaign["breakdown"] == {"by": "Campaign", "groups": expected("Campaign")}
    table = bulk_cancel("report", out, "--by", "Campaign")
    assert table.code == 0 and "by Campaign" in table.stdout and "spring-2" in table.stdout
    wrong = bulk_cancel("report", out, "--by", "campain")
    assert wrong.code == 2 and "did you mean 'Campaign'?" in wrong.stderr
    (tmp_path / "results.ledger.sqlite").unlink()
    from_csv = json.loads(
        bulk_cancel("report", out, "--by", "subaccount", "--format", "json").stdout
    )
    assert from_csv["breakdown"]["groups"] == expected("subaccount_id")


def test_titled_sheet_with_column_and_sheet_keeps_numbers_and_dates(tmp_path: Path) -> None:
    """A sheet with a title and a blank row above 'Message ID | Cost | Campaign' runs with
    --column "Message ID" --sheet (issue 14); the Excel results keep Cost a number, dates dates."""
    import datetime as dt

    from openpyxl import load_workbook

    ids = umids(3, seed=41)
    when = dt.datetime(2026, 3, 1, 9, 30)
    wb = Workbook()
    ws = wb.active
    ws.title = "Abort list"
    ws.append(["Spring campaign abort list (exported 2026-03-01)"])
    ws.append([])
    ws.append(["Message ID", "Cost", "Campaign", "Send at"])
    for u, cost in zip(ids, (0.05, 0.1, 0.15), strict=True):
        ws.append([u, cost, "Spring", when])
    src = tmp_path / "abort.xlsx"
    wb.save(src)
    out = tmp_path / "results.xlsx"
    with simulator() as sim:
        ran = bulk_cancel(
            *run_args(src, out, sim.url, "--column", "Message ID", "--sheet", "Abort list")
        )
    assert ran.code == 0, ran.stderr
    book = load_workbook(out, read_only=True)
    rows = list(book["results"].iter_rows(values_only=True))
    book.close()
    header = list(rows[0])
    at = {name: header.index(name) for name in ("line", "outcome", "Cost", "Send at")}
    assert [
        (r[at["line"]], r[at["outcome"]], r[at["Cost"]], r[at["Send at"]]) for r in rows[1:]
    ] == [
        (4, "cancelled", 0.05, when),
        (5, "cancelled", 0.1, when),
        (6, "cancelled", 0.15, when),
    ]


def test_parquet_results_keep_the_input_columns_types(tmp_path: Path) -> None:
    """A Parquet input's int64, double, bool and timestamp columns come back with those types."""
    import datetime as dt

    ids = umids(2, seed=42)
    when = dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.UTC)
    table = pa.table(
        {
            "umid": ids,
            "count": pa.array([1, 2], pa.int64()),
            "cost": pa.array([0.05, 0.07], pa.float64()),
            "paid": pa.array([True, False]),
            "at": pa.array([when, None], pa.timestamp("ms", tz="UTC")),
            "phone": ["07700900123", None],
        }
    )
    src = tmp_path / "in.parquet"
    pq.write_table(table, src)
    out = tmp_path / "results.parquet"
    with simulator() as sim:
        ran = bulk_cancel(*run_args(src, out, sim.url))
    assert ran.code == 0, ran.stderr
    results = pq.read_table(out)
    for name in ("count", "cost", "paid", "at", "phone"):
        assert results.schema.field(name).type == table.schema.field(name).type, name
    assert (
        results.select(["count", "cost", "paid", "at", "phone"]).to_pylist()
        == table.select(["count", "cost", "paid", "at", "phone"]).to_pylist()
    )


def test_semicolon_csv_with_bom_gets_results_in_its_style(tmp_path: Path) -> None:
    """A ';' CSV with a UTF-8 BOM (European Excel) gets ';' results and errors with a BOM."""
    ids = umids(2, seed=43)
    src = tmp_path / "in.csv"
    lines = ["umid;Cost;phone", f"{ids[0]};0,05;07700900123", f"{ids[1]};0,07;", "junk;1;2"]
    src.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    out = tmp_path / "results.csv"
    with simulator() as sim:
        ran = bulk_cancel(*run_args(src, out, sim.url, "--split"))
    assert ran.code == 0, ran.stderr
    for path in (out, tmp_path / "results.errors.csv"):
        data = path.read_bytes()
        assert data.startswith(b"\xef\xbb\xbfumid;subaccount_id;kind;"), data[:40]
    text = out.read_bytes().decode("utf-8-sig").splitlines()
    assert text[1].endswith(";0,05;07700900123") and text[2].endswith(";0,07;")
