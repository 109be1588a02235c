"""``make demo``: start the simulator, cancel the sample job against it, print the summary.

Runs the real command in real processes, the way a user would: ``bulk-cancel simulate`` in the
background, then ``bulk-cancel run jobs/demo.toml`` pointed at it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "demo"


def _start_simulator() -> tuple[subprocess.Popen[str], str]:
    sim = subprocess.Popen(
        [
            sys.executable, "-m", "bulk_cancel", "simulate", "--port", "0",
            "--rate", "400", "--latency-ms", "20", "--not-found-ratio", "0.05",
            "--already-sent-ratio", "0.05", "--faults", "http_503=0.02,drop_after=0.01",
            "--seed", "7",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert sim.stdout is not None
    line = sim.stdout.readline()
    if "listening on" not in line:
        sim.kill()
        raise SystemExit(f"demo: the simulator did not start: {line!r}")
    return sim, line.rsplit(" ", 1)[-1].strip()


def main() -> int:
    """Run the demo; return the run's exit code."""
    if OUT.exists():
        shutil.rmtree(OUT)
    sim, url = _start_simulator()
    print(f"demo: simulator at {url} (400 req/s per subaccount, 20 ms latency, a few faults)")
    try:
        env = {**os.environ, "EIGHTX8_API_KEY": "demo-key-not-a-secret"}
        args = ["jobs/demo.toml", "--base-url", url, "--yes"]
        cmd = [sys.executable, "-m", "bulk_cancel", "run", *args]
        print("demo: $ bulk-cancel run", " ".join(args))
        code = subprocess.call(cmd, env=env, cwd=ROOT)
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    summary_file = OUT / "results.summary.json"
    if summary_file.exists():
        summary = json.loads(summary_file.read_text())
        print("\ndemo: summary (" + str(summary_file.relative_to(ROOT)) + ")")
        print(
            json.dumps(
                {
                    k: summary[k]
                    for k in (
                        "counts",
                        "cancelled_total",
                        "input_rows",
                        "unique",
                        "duplicates",
                        "requests",
                        "retries",
                        "elapsed_s",
                        "exit_code",
                    )
                },
                indent=2,
            )
        )
        print(f"demo: results in {(OUT / 'results.csv').relative_to(ROOT)}; exit code {code}")
        print("demo: to run bulk-cancel yourself: . .venv/bin/activate (see the README)")
    return 0 if code in (0, 1) else code


if __name__ == "__main__":
    sys.exit(main())
