"""Child processes for the benchmark: the simulator, timed commands, and what they used.

Every child is started here and stopped here by its PID; every wait has a timeout.

Peak RSS is the child's ``VmHWM`` from ``/proc/PID/status``, read every 50 ms while it runs (it
only grows, so the last reading holds the peak unless that came in the last 50 ms). Not
``ru_maxrss`` from ``wait4``: Linux folds the memory the child had *before* ``exec`` into it,
and a child forked (or vforked) from this process starts as a copy of it, so after this process
generated a 10-million-row input, every child "peaked" at this process's size (326 MB).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEY = "bench-key-not-a-secret"
TWO_CORES = (os.cpu_count() or 1) >= 2
#: The client (bulk-cancel or the bare loop) on one core, the simulator on the other, as in
#: shared MEASURED.md: on two cores, the two fighting over one core would measure the scheduler.
CLIENT_CPU: int | None = 0 if TWO_CORES else None
SERVER_CPU: int | None = 1 if TWO_CORES else None

_children: dict[int, subprocess.Popen[Any]] = {}


def bulk_cancel_cmd() -> list[str]:
    """The installed ``bulk-cancel`` console script, as a user runs it."""
    script = Path(sys.executable).with_name("bulk-cancel")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "bulk_cancel"]


def _pin(pid: int, cpu: int | None) -> None:
    if cpu is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {cpu})


def stop(proc: subprocess.Popen[Any], *, grace_s: float = 10.0) -> None:
    """Terminate one child by its PID, kill it if it lingers, and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace_s)
    _children.pop(proc.pid, None)


def stop_all() -> None:
    """Stop every child still running (used on the way out, whatever happened)."""
    for proc in list(_children.values()):
        stop(proc, grace_s=5.0)


@dataclass
class Simulator:
    """A ``bulk-cancel simulate`` process on 127.0.0.1."""

    proc: subprocess.Popen[str]
    url: str

    def _call(self, method: str, path: str) -> dict[str, Any]:
        # self.url is the simulator's http://127.0.0.1:PORT, read from its own first line.
        request = urllib.request.Request(self.url + path, method=method)  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            data: dict[str, Any] = json.load(resp)
        return data

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/_sim/state")

    def reset(self) -> None:
        self._call("POST", "/_sim/reset")


@contextlib.contextmanager
def simulator(*args: str, cpu: int | None = SERVER_CPU) -> Iterator[Simulator]:
    """Serve ``bulk-cancel simulate --port 0 ARGS`` for the block, then stop it by PID."""
    proc = subprocess.Popen(
        [*bulk_cancel_cmd(), "simulate", "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    _children[proc.pid] = proc
    try:
        _pin(proc.pid, cpu)
        assert proc.stdout is not None
        ready = threading.Event()
        line: list[str] = []

        def read_line() -> None:
            assert proc.stdout is not None
            line.append(proc.stdout.readline())
            ready.set()

        threading.Thread(target=read_line, daemon=True).start()
        if not ready.wait(30) or "listening on" not in line[0]:
            raise RuntimeError(f"the simulator did not start: {line[:1]!r}")
        yield Simulator(proc, line[0].rsplit(" ", 1)[-1].strip())
    finally:
        stop(proc)
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass
class Ran:
    """One finished command: how it ended, how long it took, what it used."""

    code: int
    wall_s: float
    started_at: float
    """``time.time()`` just before the child was started."""
    peak_rss_mb: float
    stdout: str
    stderr_path: Path | None
    timed_out: bool = False
    samples: list[dict[str, Any]] = field(default_factory=list)
    cpu_s: float = 0.0
    """CPU used, user + system, start to end (``wait4``)."""


def _status_mb(pid: int, field: str) -> float | None:
    """A memory line of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``) in MB, if readable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float | None:
    """The CPU a process has used so far, user + system, all its threads (``/proc/PID/stat``)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name, in parentheses, may hold spaces: count fields after its end.
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(
    cmd: Sequence[str],
    *,
    timeout_s: float,
    cpu: int | None = None,
    env: dict[str, str] | None = None,
    stderr_path: Path | None = None,
    sample: Callable[[], dict[str, Any]] | None = None,
    sample_every_s: float = 0.5,
    rss_every_s: float | None = None,
    sample_cpu: bool = False,
) -> Ran:
    """Run *cmd* to the end (killed after *timeout_s*); time it and take its peak RSS.

    *sample* is called every *sample_every_s* while it runs (e.g. to read the simulator's
    counters); with *rss_every_s*, the child's current RSS is sampled too, and with
    *sample_cpu* the CPU it has used so far (``cpu_s``) at each of *sample*'s points.
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EIGHTX8_")}
    full_env["EIGHTX8_API_KEY"] = KEY
    full_env.update(env or {})
    out = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed below, once the child is reaped
    started_at = time.time()
    t0 = time.perf_counter()
    if stderr_path is not None:
        with stderr_path.open("w") as stderr:
            proc = subprocess.Popen(cmd, stdout=out, stderr=stderr, env=full_env)
    else:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, env=full_env)
    _children[proc.pid] = proc
    _pin(proc.pid, cpu)
    timed_out = threading.Event()
    finished = threading.Event()
    samples: list[dict[str, Any]] = []

    def on_timeout() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)

    def sampler() -> None:
        every = min(x for x in (sample_every_s if sample else None, rss_every_s) if x)
        while not finished.wait(every):
            point: dict[str, Any] = {"t": time.time()}
            if rss_every_s:
                point["rss_mb"] = _status_mb(proc.pid, "VmRSS")
            if sample_cpu:
                point["cpu_s"] = cpu_s(proc.pid)
            if sample is not None:
                with contextlib.suppress(OSError, ValueError):
                    point.update(sample())
            samples.append(point)

    peak_mb = [0.0]

    def watch_peak() -> None:
        while True:
            hwm = _status_mb(proc.pid, "VmHWM")
            if hwm is not None:
                peak_mb[0] = max(peak_mb[0], hwm)
            if finished.wait(0.05):
                return

    timer = threading.Timer(timeout_s, on_timeout)
    timer.start()
    watcher = threading.Thread(target=watch_peak, daemon=True)
    watcher.start()
    thread = None
    if sample is not None or rss_every_s:
        thread = threading.Thread(target=sampler, daemon=True)
        thread.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        wall_s = time.perf_counter() - t0
        timer.cancel()
        finished.set()
        watcher.join(timeout=15)
        if thread is not None:
            thread.join(timeout=15)
    proc.returncode = os.waitstatus_to_exitcode(status)
    _children.pop(proc.pid, None)
    out.seek(0)
    text = out.read()
    out.close()
    return Ran(
        code=proc.returncode,
        wall_s=wall_s,
        started_at=started_at,
        peak_rss_mb=peak_mb[0],
        stdout=text,
        stderr_path=stderr_path,
        timed_out=timed_out.is_set(),
        samples=samples,
        cpu_s=usage.ru_utime + usage.ru_stime,
    )


def log_events(path: Path | None) -> dict[str, dict[str, Any]]:
    """The last JSON log event of each name in a run's stderr."""
    events: dict[str, dict[str, Any]] = {}
    if path is None or not path.exists():
        return events
    with path.open() as f:
        for line in f:
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    events[str(event.get("event"))] = event
    return events


def event_time(event: dict[str, Any] | None) -> float | None:
    """An event's ISO timestamp as ``time.time()`` seconds."""
    if not event or "timestamp" not in event:
        return None
    from datetime import datetime

    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
