"""``make bench``: the figures of issues 5 and 13 and the ledger's cost, each next to its goal.

Everything runs against ``bulk-cancel simulate`` on 127.0.0.1, started here as a child process
(pinned to the other core from the client when there are two) and stopped here by its PID.
``bulk-cancel`` itself is run as the real command, in a child process, the way a user runs it.
Every wait is bounded; the whole run takes a few minutes and stops by itself. Inputs are
generated into a temporary directory that is deleted at the end.

    python bench/run.py [--only ip,rate,...] [--quick]

Prints each figure as it is measured, a table at the end, and writes the raw numbers to
``out/bench/results.json`` (BENCHMARKS.md is written from them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import first_request
import inputs
import procs
from procs import CLIENT_CPU, KEY, Simulator, bulk_cancel_cmd

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "bench"
SUB = "bench_sub"
#: The whole benchmark stops starting new sections after this many seconds.
BUDGET_S = 1500.0


@dataclass
class Figure:
    """One measured figure against its goal."""

    section: str
    name: str
    value: str
    goal: str
    passed: bool | None
    """None: informational, no goal."""
    raw: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        mark = {True: "PASS", False: "FAIL", None: "    "}[self.passed]
        return f"  {mark}  {self.name:<46} {self.value:>28}   goal {self.goal}"


@dataclass
class Context:
    tmp: Path
    quick: bool
    figures: list[Figure] = field(default_factory=list)

    def report(self, figure: Figure) -> None:
        self.figures.append(figure)
        print(figure.line(), flush=True)


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _summary(results: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(results.with_name(results.stem + ".summary.json").read_text())
    return data


def _run_bulk_cancel(
    ctx: Context,
    name: str,
    input_path: Path,
    url: str,
    extra: Sequence[str],
    *,
    timeout_s: float,
    cpu: int | None = CLIENT_CPU,
    subaccount: str | None = SUB,
    sample: Callable[[], dict[str, Any]] | None = None,
    sample_every_s: float = 0.5,
    rss_every_s: float | None = None,
    sample_cpu: bool = False,
) -> tuple[procs.Ran, dict[str, Any], Path]:
    """``bulk-cancel run`` on *input_path* against *url*; the run's summary and results path."""
    work = ctx.tmp / name
    work.mkdir(parents=True, exist_ok=False)
    results = work / "results.csv"
    cmd = [
        *bulk_cancel_cmd(),
        "run",
        "--input",
        str(input_path),
        "--output",
        str(results),
        "--base-url",
        url,
        "--log-format",
        "json",
        *(["--subaccount", subaccount] if subaccount else []),
        *extra,
    ]
    ran = procs.run(
        cmd,
        timeout_s=timeout_s,
        cpu=cpu,
        stderr_path=work / "stderr.log",
        sample=sample,
        sample_every_s=sample_every_s,
        rss_every_s=rss_every_s,
        sample_cpu=sample_cpu,
    )
    if ran.timed_out:
        raise RuntimeError(f"{name}: bulk-cancel run did not finish in {timeout_s:.0f} s")
    try:
        summary = _summary(results)
    except OSError:
        tail = (work / "stderr.log").read_text()[-2000:]
        raise RuntimeError(f"{name}: no summary (exit {ran.code}): {tail}") from None
    return ran, summary, results


def _send_phase_s(ran: procs.Ran) -> float | None:
    """Seconds from ``run.started`` (ledger ready) to ``run.finished`` (results written)."""
    events = procs.log_events(ran.stderr_path)
    start = procs.event_time(events.get("run.started"))
    end = procs.event_time(events.get("run.finished"))
    return end - start if start and end else None


# ------------------------------------------------------------------------------- 1. overhead


def overhead(ctx: Context) -> None:
    """bulk-cancel vs a bare aiohttp loop, same file, same simulator, rate limits out of the way."""
    n = 20_000 if ctx.quick else 100_000
    runs = 1 if ctx.quick else 3
    csv_path = inputs.write_csv(ctx.tmp / "overhead.csv", n, seed=11)
    bare_rates: list[float] = []
    tool_rates: list[float] = []
    tool_send_rates: list[float] = []
    bare_cmd = [sys.executable, str(Path(__file__).with_name("bare_loop.py"))]
    with procs.simulator("--rate", "0", "--ip-rate", "0") as sim:
        for i in range(runs):
            # Alternate, so that drift on a shared machine hits both alike.
            sim.reset()
            bare = procs.run(
                [*bare_cmd, sim.url, str(csv_path), SUB, KEY, "--workers", "64"],
                timeout_s=180,
                cpu=CLIENT_CPU,
            )
            answered = json.loads(bare.stdout)["statuses"].get("200", 0)
            if bare.code != 0 or answered != n:
                raise RuntimeError(f"bare loop: exit {bare.code}, {answered} of {n} answered 200")
            bare_rates.append(n / bare.wall_s)
            sim.reset()
            ran, summary, _ = _run_bulk_cancel(
                ctx,
                f"overhead-{i}",
                csv_path,
                sim.url,
                ["--rate", "1000000", "--ip-rate", "1000000", "--concurrency", "64"],
                timeout_s=240,
            )
            if ran.code != 0 or summary["counts"]["cancelled"] != n:
                raise RuntimeError(f"bulk-cancel: exit {ran.code}, counts {summary['counts']}")
            tool_rates.append(n / ran.wall_s)
            send = _send_phase_s(ran)
            if send:
                tool_send_rates.append(n / send)
            print(
                f"        run {i + 1}: bare {bare_rates[-1]:,.0f}/s ({bare.wall_s:.1f} s), "
                f"bulk-cancel {tool_rates[-1]:,.0f}/s ({ran.wall_s:.1f} s"
                + (f"; send phase {send:.1f} s" if send else "")
                + f"; peak RSS {ran.peak_rss_mb:.0f} MB)",
                flush=True,
            )
    bare_rate, tool_rate = _median(bare_rates), _median(tool_rates)
    ratio = tool_rate / bare_rate
    raw = {
        "umids": n,
        "runs": runs,
        "bare_per_s": bare_rates,
        "bulk_cancel_per_s": tool_rates,
        "bulk_cancel_send_phase_per_s": tool_send_rates,
    }
    ctx.report(
        Figure(
            "overhead",
            "bare aiohttp loop, 64 in flight (same session)",
            f"{bare_rate:,.0f} umids/s",
            "-",
            None,
            raw,
        )
    )
    ctx.report(
        Figure("overhead", "bulk-cancel run, end to end", f"{tool_rate:,.0f} umids/s", "-", None)
    )
    if tool_send_rates:
        send_rate = _median(tool_send_rates)
        ctx.report(
            Figure(
                "overhead",
                "bulk-cancel send phase (+ results writing)",
                f"{send_rate:,.0f} umids/s ({send_rate / bare_rate:.0%})",
                "-",
                None,
            )
        )
    ctx.report(
        Figure(
            "overhead",
            "1. overhead: bulk-cancel / bare loop",
            f"{ratio:.1%}",
            ">= 65 %",
            ratio >= 0.65,
        )
    )


# ------------------------------------------------------------------------------- 2. rate accuracy


def _sim_sampler(sim: Simulator) -> Callable[[], dict[str, Any]]:
    def sample() -> dict[str, Any]:
        state = sim.state()
        return {"requests": state["requests"], "throttled": state["throttled"]}

    return sample


def _time_reaching(samples: list[dict[str, Any]], target: int) -> float | None:
    """When the simulator's request count reached *target*, interpolated between samples."""
    prev = None
    for point in samples:
        if "requests" not in point:
            continue
        if point["requests"] >= target:
            if prev is None or point["requests"] == prev["requests"]:
                return float(point["t"])
            share = (target - prev["requests"]) / (point["requests"] - prev["requests"])
            return float(prev["t"] + share * (point["t"] - prev["t"]))
        prev = point
    return None


def _paced_run(
    ctx: Context,
    name: str,
    csv_path: Path,
    rate: int,
    sim_args: Sequence[str],
    *,
    jitter_ms: int = 0,
    subaccount: str | None = SUB,
    sample_cpu: bool = False,
) -> dict[str, Any]:
    """One ``--rate RATE`` run against a simulator answering in 100 ms (to 100 + *jitter_ms*);
    what the simulator saw, and with *sample_cpu* the CPU bulk-cancel used while sending."""
    latency = ["--latency-ms", "100", "--latency-jitter-ms", str(jitter_ms)]
    with procs.simulator(*sim_args, *latency) as sim:
        ran, summary, _ = _run_bulk_cancel(
            ctx,
            name,
            csv_path,
            sim.url,
            ["--rate", str(rate)],
            timeout_s=120,
            subaccount=subaccount,
            sample=_sim_sampler(sim),
            sample_every_s=0.05,
            sample_cpu=sample_cpu,
        )
        state = sim.state()
    events = procs.log_events(ran.stderr_path)
    start = procs.event_time(events.get("run.started"))
    requests = int(state["requests"])
    n = int(summary["unique"])
    # The simulator stamps each arrival itself: exact, where polling its counter every 50 ms
    # added up to 50 ms to the send phase (0.5 % of a 10 s run).
    last = state["last_request_at"]
    t10, t90 = _time_reaching(ran.samples, n // 10), _time_reaching(ran.samples, n * 9 // 10)
    if start is None or last is None or t10 is None or t90 is None:
        raise RuntimeError(f"{name}: could not time the send phase (log events or samples missing)")
    throttled_at = []
    seen = 0
    for point in ran.samples:
        if point.get("throttled", 0) > seen:
            seen = point["throttled"]
            throttled_at.append(round(point["t"] - start, 2))
    by_sub = {k: int(v) for k, v in state["max_per_s_by_subaccount"].items()}
    result = {
        "umids": n,
        "requests": requests,
        "send_s": last - start,
        "first_request_after_s": state["first_request_at"] - start,
        # The goal's rate counts from run.started (the ledger ready), so the start-up before the
        # first request counts against it (0.16 s, 1.5 % of this 10 s run, while aiohttp was
        # imported after run.started). Beside it, the rate the simulator saw from its first
        # request to its last: how fast the tool sends once it sends.
        "achieved_per_s": requests / (last - start),
        "sending_per_s": (requests - 1) / (last - state["first_request_at"]),
        "steady_per_s": (n * 9 // 10 - n // 10) / (t90 - t10),
        "max_in_1s": by_sub.get(SUB, 0),
        "max_in_1s_by_subaccount": by_sub,
        "max_ip_in_1s": int(state["max_ip_per_s"]),
        "throttled": int(state["throttled"]),
        "throttled_at_s": throttled_at,
        "exit_code": ran.code,
        "counts": summary["counts"],
    }
    if sample_cpu:
        result.update(_cpu_while_sending(ran, start, last))
    return result


def _cpu_while_sending(ran: procs.Ran, start: float, last: float) -> dict[str, Any]:
    """Cores bulk-cancel used while sending at full rate, from its ``/proc`` CPU samples: the
    first half second (workers starting, the first answers) and the last 0.2 s are left out."""
    points = [
        p for p in ran.samples if p.get("cpu_s") is not None and start + 0.5 <= p["t"] <= last - 0.2
    ]
    if len(points) < 2 or points[-1]["t"] - points[0]["t"] < 1.0:
        raise RuntimeError("too few CPU samples while sending")
    first, final = points[0], points[-1]
    return {
        "cores_while_sending": (final["cpu_s"] - first["cpu_s"]) / (final["t"] - first["t"]),
        "cpu_sampled_s": final["t"] - first["t"],
        # The whole process, start-up, ingest and results included, over the send phase.
        "cores_whole_over_send": ran.cpu_s / (last - start),
    }


def rate_accuracy(ctx: Context) -> None:
    """--rate 1800, 100 ms latency: against a server enforcing 1800/s, and one counting only."""
    rate = 1800
    n = rate * (4 if ctx.quick else 10)
    csv_path = inputs.write_csv(ctx.tmp / "rate.csv", n, seed=12)
    # The goal as the issue states it: a server enforcing 1,800/s answers no 429, and the rate
    # achieved (send phase: run.started to the last request) is at least 98 % of 1,800/s.
    enforced = _paced_run(
        ctx, "rate-enforced", csv_path, rate, ["--rate", str(rate), "--ip-rate", "0"]
    )
    # The same run against a server that refuses nothing: its sliding window counts every request
    # the client sent (an enforcing server counts only those it accepted, so never above 1,800).
    counted = _paced_run(ctx, "rate-counted", csv_path, rate, ["--rate", "0", "--ip-rate", "0"])
    achieved = enforced["achieved_per_s"]
    ctx.report(
        Figure("rate", "2. achieved rate, server enforcing 1,800/s",
               f"{achieved:,.0f}/s ({achieved / rate:.1%})", f">= {0.98 * rate:,.0f}/s (98 %)",
               achieved >= 0.98 * rate, {"enforced": enforced, "counted": counted})
    )  # fmt: skip
    ctx.report(
        Figure("rate", "2. 429 answers, server enforcing 1,800/s",
               f"{enforced['throttled']}" + (f" (at {enforced['throttled_at_s']} s)" if enforced["throttled"] else ""),
               "0", enforced["throttled"] == 0)
    )  # fmt: skip
    window = counted["max_in_1s"]
    ctx.report(
        Figure("rate", "2. most sent in any 1 s (server not enforcing)", f"{window:,}",
               f"<= {rate:,}", window <= rate)
    )  # fmt: skip
    ctx.report(
        Figure("rate", "   first request after run.started; rate from first to last request",
               f"{enforced['first_request_after_s']:.2f} s; {enforced['sending_per_s']:,.0f}/s",
               "-", None)
    )  # fmt: skip
    ctx.report(
        Figure("rate", "   achieved / steady rate (server not enforcing)",
               f"{counted['achieved_per_s']:,.0f}/s / {counted['steady_per_s']:,.0f}/s", "-", None)
    )  # fmt: skip
    # Beyond the goal: a real API's answers vary, and the gate reads part of that as lateness.
    spread = _paced_run(
        ctx, "rate-spread", csv_path, rate, ["--rate", str(rate), "--ip-rate", "0"], jitter_ms=50
    )
    ctx.report(
        Figure("rate", "   answers in 100-150 ms (enforcing): achieved, 429s",
               f"{spread['achieved_per_s']:,.0f}/s ({spread['achieved_per_s'] / rate:.1%}), "
               f"{spread['throttled']}", "-", None, {"spread": spread})
    )  # fmt: skip


# ------------------------------------------------------------------------------- 3. one pool on 429


def one_pool(ctx: Context) -> None:
    """--rate 1500 against a server allowing 150/s: few 429s, every row cancelled."""
    allowed = 150
    n = allowed * (6 if ctx.quick else 13)
    csv_path = inputs.write_csv(ctx.tmp / "pool.csv", n, seed=13)
    with procs.simulator("--rate", str(allowed), "--ip-rate", "0") as sim:
        ran, summary, _ = _run_bulk_cancel(
            ctx, "pool", csv_path, sim.url, ["--rate", "1500"], timeout_s=180
        )
        state = sim.state()
    requests, throttled = int(state["requests"]), int(state["throttled"])
    share = throttled / requests if requests else 1.0
    cancelled = int(summary["counts"].get("cancelled", 0))
    raw = {
        "umids": n,
        "requests": requests,
        "throttled": throttled,
        "wall_s": ran.wall_s,
        "exit_code": ran.code,
        "counts": summary["counts"],
        "sim_cancelled": state["cancelled_count"],
    }
    ctx.report(
        Figure(
            "pool",
            "3. share of requests answered 429",
            f"{share:.1%} ({throttled} of {requests})",
            "<= 10 %",
            share <= 0.10,
            raw,
        )
    )
    ok = cancelled == n and ran.code == 0 and state["cancelled_count"] == n
    ctx.report(
        Figure(
            "pool",
            "3. rows ending cancelled",
            f"{cancelled:,} of {n:,} (exit {ran.code}, {ran.wall_s:.0f} s)",
            "all",
            ok,
        )
    )


# ------------------------------------------------------------------------------- 4. memory


def _dry_run(ctx: Context, name: str, path: Path) -> procs.Ran:
    ran = procs.run(
        [*bulk_cancel_cmd(), "run", "--input", str(path), "--subaccount", SUB,
         "--output", str(ctx.tmp / f"{name}-results.csv"), "--dry-run", "--log-format", "json"],
        timeout_s=900,
        stderr_path=ctx.tmp / f"{name}.stderr.log",
    )  # fmt: skip
    if ran.timed_out or ran.code != 0:
        tail = (ctx.tmp / f"{name}.stderr.log").read_text()[-2000:]
        raise RuntimeError(f"{name}: dry run exit {ran.code} timed out={ran.timed_out}: {tail}")
    return ran


def memory(ctx: Context) -> None:
    """Peak RSS of --dry-run on 10 M umids (CSV, Parquet) and of a full run of 500 k.

    The CSVs are shaped like a real export (umid, campaign, phone, scheduled_at): the ledger
    stores the extra columns per row, and they once tripled the peak (issue 14).
    """
    import threading

    big = 1_000_000 if ctx.quick else 10_000_000
    limit_mb = 300
    paths = {
        "csv": inputs.write_csv(ctx.tmp / "big.csv", big, seed=14, export=True),
        "parquet": inputs.write_parquet(ctx.tmp / "big.parquet", big, seed=14),
    }
    # Both at once, one per core: memory is per process (wait4), and each takes minutes.
    done: dict[str, procs.Ran | BaseException] = {}

    def dry(fmt: str) -> None:
        try:
            done[fmt] = _dry_run(ctx, f"dry-{fmt}", paths[fmt])
        except BaseException as exc:
            done[fmt] = exc

    threads = [threading.Thread(target=dry, args=(fmt,)) for fmt in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for path in paths.values():
        path.unlink()
    for fmt in paths:
        ran = done[fmt]
        if isinstance(ran, BaseException):
            raise ran
        plan = json.loads(ran.stdout) if ran.stdout.strip().startswith("{") else {}
        if plan and plan.get("to_send") != big:
            raise RuntimeError(f"dry run {fmt}: plan says {plan.get('to_send')} to send, not {big}")
        ctx.report(
            Figure(
                "memory",
                f"4. peak RSS, --dry-run, {big / 1e6:g} M umids {fmt.upper()}"
                + (" + 3 columns" if fmt == "csv" else ""),
                f"{ran.peak_rss_mb:,.0f} MB ({ran.wall_s:.0f} s)",
                f"<= {limit_mb} MB",
                ran.peak_rss_mb <= limit_mb,
                {"umids": big, "peak_rss_mb": ran.peak_rss_mb, "wall_s": ran.wall_s},
            )
        )
    # 500 k: with aiohttp's client a run with the limits lifted sends 3-5 k umids/s on these two
    # cores, so a million took longer than the section's budget (issue 14 asked for 200 k).
    n = 200_000 if ctx.quick else 500_000
    path = inputs.write_csv(ctx.tmp / "full.csv", n, seed=15, export=True)
    with procs.simulator("--rate", "0", "--ip-rate", "0") as sim:
        ran, summary, _ = _run_bulk_cancel(
            ctx,
            "memory-full",
            path,
            sim.url,
            ["--rate", "1000000", "--ip-rate", "1000000", "--concurrency", "64"],
            timeout_s=300,
            sample=_sim_sampler(sim),
            sample_every_s=1.0,
            rss_every_s=1.0,
        )
    path.unlink()
    sending = [
        p["rss_mb"]
        for p in ran.samples
        if p.get("rss_mb") is not None and 0 < p.get("requests", 0) < n
    ]
    raw = {
        "umids": n,
        "peak_rss_mb": ran.peak_rss_mb,
        "wall_s": ran.wall_s,
        "rss_while_sending_mb": sending,
        "counts": summary["counts"],
    }
    flat = f"{min(sending):,.0f} -> {max(sending):,.0f} MB while sending, " if sending else ""
    ctx.report(
        Figure(
            "memory",
            f"4. peak RSS, full run, {n / 1e6:g} M umids CSV + 3 columns",
            f"{flat}peak {ran.peak_rss_mb:,.0f} MB",
            f"<= {limit_mb} MB",
            ran.peak_rss_mb <= limit_mb and ran.code == 0,
            raw,
        )
    )


# ------------------------------------------------------------------------- 15. first request


def first_request_figures(ctx: Context) -> None:
    """Time to the first request, off a terminal, on millions of rows (issue 15)."""
    for f in first_request.section(ctx.tmp, quick=ctx.quick):
        ctx.report(Figure("first_request", f["name"], f["value"], f["goal"], f["passed"], f["raw"]))


# ------------------------------------------------------------------------------- 5. start-up


def startup(ctx: Context) -> None:
    """``bulk-cancel --help``, median of five."""
    times = []
    for _ in range(5):
        ran = procs.run([*bulk_cancel_cmd(), "--help"], timeout_s=30)
        if ran.code != 0:
            raise RuntimeError(f"bulk-cancel --help exited {ran.code}")
        times.append(ran.wall_s)
    median = _median(times)
    ctx.report(
        Figure("startup", "5. bulk-cancel --help, median of 5", f"{median:.3f} s", "<= 0.5 s",
               median <= 0.5, {"runs_s": times})
    )  # fmt: skip


# ------------------------------------------------------------------------------- 6. per-IP, 7. CPU


def per_ip(ctx: Context) -> None:
    """Two subaccounts at --rate 1800 under the default --ip-rate 3000, 100 ms answers: against a
    server refusing the 3,001st request in any second, and one counting only; the CPU meanwhile."""
    subs = ["bench_a", "bench_b"]
    rate, ip_rate = 1800, 3000
    n = ip_rate * (4 if ctx.quick else 10)
    csv_path = inputs.write_csv(ctx.tmp / "ip.csv", n, seed=16, subaccounts=subs)
    enforced = _paced_run(
        ctx, "ip-enforced", csv_path, rate, ["--rate", str(rate), "--ip-rate", str(ip_rate)],
        subaccount=None, sample_cpu=True,
    )  # fmt: skip
    counted = _paced_run(
        ctx, "ip-counted", csv_path, rate, ["--rate", "0", "--ip-rate", "0"], subaccount=None
    )
    achieved = enforced["achieved_per_s"]
    ctx.report(
        Figure("ip", "6. per-IP: 2 × --rate 1800, server enforcing 3,000/s",
               f"{achieved:,.0f}/s ({achieved / ip_rate:.1%})", f">= {0.98 * ip_rate:,.0f}/s (98 %)",
               achieved >= 0.98 * ip_rate and enforced["exit_code"] == 0,
               {"enforced": enforced, "counted": counted})
    )  # fmt: skip
    ctx.report(
        Figure("ip", "   first request after run.started; rate from first to last request",
               f"{enforced['first_request_after_s']:.2f} s; {enforced['sending_per_s']:,.0f}/s",
               "-", None)
    )  # fmt: skip
    ctx.report(
        Figure("ip", "6. per-IP: 429 answers, server enforcing 3,000/s",
               f"{enforced['throttled']}" + (f" (at {enforced['throttled_at_s']} s)" if enforced["throttled"] else ""),
               "0", enforced["throttled"] == 0)
    )  # fmt: skip
    most, by_sub = counted["max_ip_in_1s"], counted["max_in_1s_by_subaccount"]
    worst = max((by_sub.get(s, 0) for s in subs), default=0)
    ctx.report(
        Figure("ip", "6. most in any 1 s, all / each (not enforcing)",
               f"{most:,} / " + ", ".join(f"{by_sub.get(s, 0):,}" for s in subs),
               f"<= {ip_rate:,} / {rate:,}", most <= ip_rate and worst <= rate)
    )  # fmt: skip
    cores = enforced["cores_while_sending"]
    ctx.report(
        Figure("cpu", "7. CPU at the ceiling, sampled while sending",
               f"{cores:.2f} core ({cores / achieved * 1e6:.0f} µs/request)", "<= 0.6 core",
               cores <= 0.6)
    )  # fmt: skip
    # The same requests from a bare aiohttp loop on a plain slot clock at 2,990/s, now, on this
    # machine: the floor the figure above stands on (its speed drifts by 10-20 % from hour to
    # hour here), so what is ours can be read apart from it.
    with procs.simulator("--rate", "0", "--ip-rate", "0", "--latency-ms", "100") as sim:
        bare = procs.run(
            [sys.executable, str(Path(__file__).with_name("bare_loop.py")), sim.url,
             str(csv_path), subs[0], KEY, "--workers", "400", "--rate", "2990"],
            timeout_s=120, cpu=CLIENT_CPU,
        )  # fmt: skip
    floor = json.loads(bare.stdout) if bare.code == 0 else None
    if floor is not None:
        floor_us = floor["cpu_s"] / floor["requests"] * 1e6
        ours_us = cores / achieved * 1e6 - floor_us
        ctx.report(
            Figure("cpu", "   bare aiohttp loop at 2,990/s, now; bulk-cancel's own share",
                   f"{floor['cpu_s'] / floor['send_s']:.2f} core ({floor_us:.0f} µs/request); "
                   f"{ours_us:.0f} µs/request", "-", None, {"bare": floor})
        )  # fmt: skip
    whole = enforced["cores_whole_over_send"]
    ctx.report(
        Figure("cpu", "   whole process (start-up, ingest) / send phase", f"{whole:.2f} core",
               "-", None)
    )  # fmt: skip


# ------------------------------------------------------------------------------- pipeline CPU


def pipeline_cpu(ctx: Context) -> None:
    """The pipeline's own CPU per request at 3,000/s, no network, against a bare slot clock."""
    script = str(Path(__file__).with_name("pipeline_cpu.py"))
    rows = "6000" if ctx.quick else "12000"
    runs = 1 if ctx.quick else 3
    ours: list[dict[str, Any]] = []
    floors: list[dict[str, Any]] = []
    for _ in range(runs):  # alternating, so drift hits both alike
        for cmd, into in (([script, rows], ours), ([script, rows, "--floor"], floors)):
            ran = procs.run([sys.executable, *cmd], timeout_s=60, cpu=CLIENT_CPU)
            if ran.code != 0:
                raise RuntimeError(f"pipeline_cpu.py {' '.join(cmd[1:])}: exit {ran.code}")
            into.append(json.loads(ran.stdout))
    us = _median([r["cpu_us_per_request"] for r in ours])
    floor_us = _median([r["cpu_us_per_request"] for r in floors])
    ctx.report(
        Figure("pipeline", "pipeline at 3,000/s, sleeping canceller: CPU/request",
               f"{us:.1f} µs ({_median([r['cores'] for r in ours]):.2f} core)", "-", None,
               {"pipeline": ours, "floor": floors})
    )  # fmt: skip
    ctx.report(
        Figure("pipeline", "   the same requests, slot clock + sleep only",
               f"{floor_us:.1f} µs", "-", None)
    )  # fmt: skip
    ctx.report(
        Figure("pipeline", "   the pipeline's own share", f"{us - floor_us:.1f} µs/request",
               "-", None)
    )  # fmt: skip


# ------------------------------------------------------------------------------- ledger cost


def ledger_cost(ctx: Context) -> None:
    """Issue 3: the pipeline's rows/s with the SQLite ledger and with an in-memory stand-in."""
    import ledger_cost as lc

    rows = 20_000 if ctx.quick else 100_000
    result = lc.measure(rows, repeats=1 if ctx.quick else 3)
    ratio = result["sqlite_rows_per_s"] / result["memory_rows_per_s"]
    ctx.report(
        Figure("ledger", "pipeline, no network, in-memory ledger",
               f"{result['memory_rows_per_s']:,} rows/s", "-", None, result)
    )  # fmt: skip
    ctx.report(
        Figure("ledger", "pipeline, no network, SQLite ledger (WAL)",
               f"{result['sqlite_rows_per_s']:,} rows/s ({ratio:.0%})", "-", None)
    )  # fmt: skip
    ctx.report(
        Figure("ledger", "   ledger's cost per row", f"{result['ledger_us_per_row']} µs", "-", None)
    )  # fmt: skip


# ------------------------------------------------------------------------------- main

SECTIONS: dict[str, tuple[Callable[[Context], None], float]] = {
    # name: (function, seconds it needs at most, to decide whether the budget still allows it)
    "startup": (startup, 15),
    "ledger": (ledger_cost, 60),
    "pipeline": (pipeline_cpu, 60),
    "overhead": (overhead, 150),
    "rate": (rate_accuracy, 60),
    "ip": (per_ip, 50),
    "pool": (one_pool, 60),
    "memory": (memory, 420),
    "first_request": (first_request_figures, 240),
}


def _machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "client_cpu": CLIENT_CPU,
        "server_cpu": procs.SERVER_CPU,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated sections: " + ",".join(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="smaller inputs, one run each")
    ns = parser.parse_args(argv)
    chosen = ns.only.split(",") if ns.only else list(SECTIONS)
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through every finally: children stopped

    signal.signal(signal.SIGTERM, on_term)
    machine = _machine()
    print(
        f"bulk-cancel benchmark — {machine['cpus']} CPUs ({machine['cpu_model']}), Python "
        f"{machine['python']}, {machine['date']}; client on CPU {CLIENT_CPU}, simulator on CPU "
        f"{procs.SERVER_CPU}",
        flush=True,
    )
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="bulk-cancel-bench-"))
    ctx = Context(tmp=tmp, quick=ns.quick)
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    try:
        for name in chosen:
            func, needs_s = SECTIONS[name]
            left = BUDGET_S - (time.monotonic() - started)
            if left < needs_s:
                errors[name] = f"skipped: {left:.0f} s of the time budget left, needs {needs_s:.0f}"
                print(f"  FAIL  {name}: {errors[name]}", flush=True)
                continue
            print(f"[{name}] {func.__doc__.splitlines()[0] if func.__doc__ else ''}", flush=True)
            t0 = time.monotonic()
            try:
                func(ctx)
            except Exception as exc:  # one broken section must not hide the others' figures
                errors[name] = f"{type(exc).__name__}: {exc}"
                print(f"  FAIL  {name}: {errors[name]}", flush=True)
            timings[name] = time.monotonic() - t0
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    total_s = time.monotonic() - started
    print(f"\nbulk-cancel benchmark: {total_s:.0f} s")
    for figure in ctx.figures:
        print(figure.line())
    for name, error in errors.items():
        print(f"  FAIL  {name}: {error}")
    goals = [f for f in ctx.figures if f.passed is not None]
    failed = [f for f in goals if not f.passed]
    print(
        f"{len(goals) - len(failed)} of {len(goals)} goals met"
        + (f"; {len(errors)} section(s) did not complete" if errors else "")
    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "total_s": total_s,
                "section_s": timings,
                "figures": [asdict(f) for f in ctx.figures],
                "errors": errors,
            },
            indent=2,
        )
    )
    print(f"raw figures: {(OUT / 'results.json').relative_to(ROOT)}")
    return 0 if not failed and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
