"""Helpers for end-to-end tests: the real ``bulk-cancel`` command against a simulator process."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import API_KEY


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
    *args: str | Path, key: str | None = API_KEY, stdin: str | None = None, timeout: float = 120
) -> Ran:
    """Run the real command in a child process, the way a user or cron would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EIGHTX8_", "BULK_CANCEL_"))}
    if key is not None:
        env["EIGHTX8_API_KEY"] = key
    done = subprocess.run(
        [sys.executable, "-m", "bulk_cancel", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    return Ran(done.returncode, done.stdout, done.stderr)


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
