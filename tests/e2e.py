"""Helpers for end-to-end tests: the real ``bulk-cancel`` command against a simulator process."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import pty
import re
import select
import shlex
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import API_KEY, PROXY_VARIABLES


@dataclass
class SimProcess:
    """A ``bulk-cancel simulate`` process on 127.0.0.1."""

    proc: subprocess.Popen[str]
    url: str

    def state(self, *, ids: bool = False) -> dict[str, Any]:
        url = f"{self.url}/_sim/state{'?ids=1' if ids else ''}"
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - our loopback simulator
            data: dict[str, Any] = json.load(resp)
        return data


@contextmanager
def simulator(*args: str) -> Iterator[SimProcess]:
    """Start ``bulk-cancel simulate --port 0 ARGS`` and stop it afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulk_cancel", "simulate", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line, line + (proc.stderr.read() if proc.stderr else "")
        yield SimProcess(proc, line.rsplit(" ", 1)[-1].strip())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@dataclass
class Ran:
    """What one command run produced."""

    code: int
    stdout: str
    stderr: str


def bulk_cancel(
    *args: str | Path,
    key: str | None = API_KEY,
    stdin: str | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
) -> Ran:
    """Run the real command in a child process, the way a user or cron would."""
    env = _environment(key)
    done = subprocess.run(
        [sys.executable, "-m", "bulk_cancel", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )
    return Ran(done.returncode, done.stdout, done.stderr)


def start(
    *args: str | Path, key: str | None = API_KEY, cwd: Path | None = None
) -> subprocess.Popen[str]:
    """Start the real command in the background (to signal it), stderr to a pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "bulk_cancel", *map(str, args)],
        env=_environment(key),
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_printed(command: str, *, cwd: Path | None = None) -> Ran:
    """Run, word for word, a command line bulk-cancel printed (``bulk-cancel`` is this one)."""
    argv = shlex.split(command)
    assert argv[:2] == ["bulk-cancel", "run"], command
    return bulk_cancel(*argv[1:], cwd=cwd)


def wait_for_requests(sim: SimProcess, at_least: int, timeout_s: float = 30) -> None:
    """Block until the simulator has seen *at_least* requests (the run is really sending)."""
    deadline = time.monotonic() + timeout_s
    while sim.state()["requests"] < at_least:
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.02)


def _environment(key: str | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EIGHTX8_", "BULK_CANCEL_")) and k.lower() not in PROXY_VARIABLES
    }
    if key is not None:
        env["EIGHTX8_API_KEY"] = key
    return env


def on_terminal(
    *args: str | Path,
    answer: str | None = None,
    signal_at_prompt: int | None = None,
    key: str | None = API_KEY,
    timeout: float = 60,
) -> Ran:
    """Run the real command as a person would: stdin, stdout and stderr on a pseudo-terminal.

    At the ``[y/N]`` prompt, type *answer* (with Enter), or send *signal_at_prompt* (what Ctrl-C
    or a ``kill`` does). ``Ran.stdout`` is everything the terminal showed, colours removed.
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {**_environment(key), "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulk_cancel", *map(str, args)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    shown = b""
    prompted = False
    resend_at = None
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"the command did not finish; the terminal showed {shown!r}"
            if resend_at is not None and time.monotonic() > resend_at:
                # A signal that lands after input() wrote the prompt but before its read()
                # began is only handled once the read returns (CPython checks signals on EINTR):
                # a person cannot hit that window, a test can. Another signal interrupts the read.
                assert signal_at_prompt is not None
                proc.send_signal(signal_at_prompt)
                resend_at = None
            if not select.select([master], [], [], min(left, 0.2))[0]:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            if not prompted and b"[y/N]" in shown:
                prompted = True
                if signal_at_prompt is not None:
                    time.sleep(0.2)
                    proc.send_signal(signal_at_prompt)
                    resend_at = time.monotonic() + 5
                if answer is not None:
                    os.write(master, answer.encode() + b"\r")
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode(errors="replace"))
    return Ran(code, text, "")


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_results(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def read_summary(results: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(results.with_name(results.stem + ".summary.json").read_text())
    return data
