"""Time to the first request (issue 15): from the command's start to the simulator's first
arrival, off a terminal, on inputs of millions of rows with an extra column.

Each run is the real command, stopped with SIGINT once the simulator has seen a few thousand
requests (bounded: a second SIGINT, then SIGKILL by PID if it lingers); its peak RSS is the
child's ``VmHWM``, read every 50 ms, as in :mod:`procs`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import inputs
import numpy as np
import procs

SUB = "bench_sub"


def write_csv_extra(path: Path, n: int, *, seed: int) -> Path:
    """A CSV ``umid,campaign`` of *n* distinct umids (the campaign is one of a few names)."""
    campaigns = np.array([b"spring-sale", b"winback-07", b"renewal-q3"], dtype="S11")
    rng = np.random.default_rng(seed + 1)
    with path.open("wb") as f:
        f.write(b"umid,campaign\n")
        for block in inputs._blocks(n, seed):
            names = campaigns[rng.integers(0, len(campaigns), size=len(block))]
            lines = [
                b"%s,%s\n" % (u, c) for u, c in zip(block.view("S36").ravel(), names, strict=True)
            ]
            f.write(b"".join(lines))
    return path


def write_parquet_extra(path: Path, n: int, *, seed: int) -> Path:
    """A Parquet file ``umid, campaign`` of *n* distinct umids, row groups of a million."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("umid", pa.string()), ("campaign", pa.string())])
    with pq.ParquetWriter(path, schema, compression="snappy") as writer:
        for block in inputs._blocks(n, seed):
            count = len(block)
            offsets = np.arange(0, 36 * (count + 1), 36, dtype=np.int32)
            umid = pa.Array.from_buffers(
                pa.string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(block.tobytes())]
            )
            campaign = pa.array(["spring-sale"] * count, pa.string())
            writer.write_table(pa.table({"umid": umid, "campaign": campaign}, schema=schema))
    return path


def first_request(
    input_path: Path,
    work: Path,
    *,
    stop_after: int = 3000,
    timeout_s: float = 120.0,
    cpu: int | None = procs.CLIENT_CPU,
) -> dict[str, Any]:
    """One run: seconds from the command's start to the first arrival, peak RSS, how it ended."""
    work.mkdir(parents=True, exist_ok=False)
    results = work / "results.csv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EIGHTX8_", "BULK_CANCEL_"))}
    env["EIGHTX8_API_KEY"] = procs.KEY
    with procs.simulator("--latency-ms", "100") as sim:
        cmd = [
            *procs.bulk_cancel_cmd(), "run", "--input", str(input_path), "--subaccount", SUB,
            "--output", str(results), "--base-url", sim.url, "--log-format", "json",
        ]  # fmt: skip
        with (work / "stderr.log").open("w") as stderr:
            started_at = time.time()
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env
            )
        procs._children[proc.pid] = proc
        procs._pin(proc.pid, cpu)
        peak = 0.0
        interrupted_at = None
        deadline = started_at + timeout_s
        state: dict[str, Any] = {}
        try:
            while proc.poll() is None and time.time() < deadline:
                hwm = procs._status_mb(proc.pid, "VmHWM")
                peak = max(peak, hwm or 0.0)
                if interrupted_at is None:
                    state = sim.state()
                    if state["requests"] >= stop_after:
                        proc.send_signal(signal.SIGINT)
                        interrupted_at = time.time()
                elif time.time() - interrupted_at > 60:
                    break
                time.sleep(0.05)
        finally:
            procs.stop(proc, grace_s=5.0)
        state = sim.state()
    first = state.get("first_request_at")
    summary: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        summary = json.loads(results.with_name("results.summary.json").read_text())
    return {
        "first_request_s": None if first is None else first - started_at,
        "peak_rss_mb": peak,
        "exit_code": proc.returncode,
        "requests": state.get("requests"),
        "input_rows_read": summary.get("input_rows"),
        "ingest_complete": summary.get("ingest_complete"),
        "elapsed_s": summary.get("elapsed_s"),
    }


def time_to_count(path: Path) -> float:
    """Seconds a fresh process takes to open *path* and count its rows as the prompt does
    (imports included): what a person waits for the question on a terminal."""
    code = (
        "import sys, time; t = time.perf_counter(); "
        "from bulk_cancel import ingest, readers; "
        "c = ingest.count_rows(readers.open_input(sys.argv[1], default_subaccount='s')); "
        "print(time.perf_counter() - t, c.rows)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return float(done.stdout.split()[0])


def dry_run(path: Path, out: Path) -> dict[str, Any]:
    """A ``--dry-run`` of *path* (read, check, de-duplicate into a throw-away ledger): its wall
    time, peak RSS and the plan's count of rows to send."""
    out.mkdir(parents=True, exist_ok=True)
    ran = procs.run(
        [*procs.bulk_cancel_cmd(), "run", "--input", str(path), "--subaccount", SUB,
         "--output", str(out / "results.csv"), "--dry-run", "--log-format", "json"],
        timeout_s=900,
        env={**os.environ, "EIGHTX8_API_KEY": "bench-key-not-secret"},
    )  # fmt: skip
    if ran.code != 0 or ran.timed_out:
        raise RuntimeError(f"dry run of {path.name}: exit {ran.code}, timed out {ran.timed_out}")
    return {
        "wall_s": round(ran.wall_s, 2),
        "cpu_s": round(ran.cpu_s, 2),
        "peak_rss_mb": ran.peak_rss_mb,
        "to_send": json.loads(ran.stdout).get("to_send"),
    }


def section(tmp: Path, *, quick: bool) -> list[dict[str, Any]]:
    """The figures: first request for 2 M and 10 M rows CSV and 2 M Parquet (median of 3, one
    run each with ``quick``), the peak RSS of those runs, the rows read per second, and a dry
    run of each input (the reading alone, against ≤ 12 s for 2 M rows and ≤ 60 s for 10 M)."""
    small, big = (200_000, 1_000_000) if quick else (2_000_000, 10_000_000)
    repeats = 1 if quick else 3
    inputs_ = [
        ("CSV", small, lambda p: write_csv_extra(p, small, seed=21), "csv"),
        ("CSV", big, lambda p: write_csv_extra(p, big, seed=22), "csv"),
        ("Parquet", small, lambda p: write_parquet_extra(p, small, seed=23), "parquet"),
    ]
    figures: list[dict[str, Any]] = []
    peaks: list[float] = []
    read_rates: list[float] = []
    count_s: list[float] = []
    for fmt, n, write, suffix in inputs_:
        path = write(tmp / f"first-{n}.{suffix}")
        runs = [first_request(path, tmp / f"first-{n}-{suffix}-{i}") for i in range(repeats)]
        if n == big:
            count_s = [time_to_count(path) for _ in range(repeats)]
        dry = dry_run(path, tmp / f"dry-{n}-{suffix}")
        path.unlink()
        times = [r["first_request_s"] for r in runs if r["first_request_s"] is not None]
        median = sorted(times)[len(times) // 2] if len(times) == len(runs) else None
        peaks += [r["peak_rss_mb"] for r in runs]
        read_rates += [
            r["input_rows_read"] / r["elapsed_s"]
            for r in runs
            if r["input_rows_read"] and r["elapsed_s"]
        ]
        limit_s = 12.0 if n <= 2_000_000 else 60.0 * n / 10_000_000
        figures.append(
            {
                "name": f"15. dry run, {n / 1e6:g} M rows {fmt} + 1 column: time, peak RSS",
                "value": f"{dry['wall_s']:.1f} s, {dry['peak_rss_mb']:,.0f} MB",
                "goal": f"<= {limit_s:g} s, <= 300 MB",
                "passed": dry["wall_s"] <= limit_s
                and dry["peak_rss_mb"] <= 300
                and dry["to_send"] == n,
                "raw": {"rows": n, **dry},
            }
        )
        figures.append(
            {
                "name": f"15. first request, {n / 1e6:g} M rows {fmt}, median of {repeats}",
                "value": "never" if median is None else f"{median:.2f} s",
                "goal": "<= 3 s",
                "passed": median is not None and median <= 3.0,
                "raw": {"rows": n, "runs": runs},
            }
        )
    figures.append(
        {
            "name": "15. peak RSS of those runs (stopped at 3,000 requests)",
            "value": f"{max(peaks):,.0f} MB",
            "goal": "<= 300 MB",
            "passed": max(peaks) <= 300,
            "raw": {"peaks_mb": peaks},
        }
    )
    figures.append(
        {
            "name": f"15. terminal: open + count for the prompt, {big / 1e6:g} M rows CSV",
            "value": f"{sorted(count_s)[len(count_s) // 2]:.2f} s (median)",
            "goal": "a few s",
            "passed": sorted(count_s)[len(count_s) // 2] <= 3.0,
            "raw": {"runs_s": count_s},
        }
    )
    figures.append(
        {
            "name": "15. rows read per s while sending (paced to stay ahead)",
            "value": f"{sorted(read_rates)[len(read_rates) // 2]:,.0f} rows/s (median)",
            "goal": "informational",
            "passed": None,
            "raw": {"rows_per_s": read_rates},
        }
    )
    return figures
