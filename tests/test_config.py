"""Settings from flags, environment, job files and config files, in that order of precedence."""

from __future__ import annotations

import argparse
import re
from datetime import datetime
from pathlib import Path

import pytest
from conftest import API_KEY
from e2e import bulk_cancel

from bulk_cancel import config
from bulk_cancel.cli import _add_run_arguments
from bulk_cancel.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def actions() -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser(add_help=False)
    _add_run_arguments(parser)
    return config.setting_actions(parser)


def show(*args: str | Path, env: dict[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """`config show` as {name: (value, source)}."""
    import os
    import subprocess
    import sys

    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("EIGHTX8_", "BULK_CANCEL_"))
    }
    environ.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "bulk_cancel", "config", "show", *map(str, args)],
        capture_output=True, text=True, env=environ, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = {}
    for line in done.stdout.splitlines():
        m = re.match(r"(\S+(?: key)?)\s+(.*?)\s+\((.*)\)$", line)
        assert m, line
        out[m.group(1)] = (m.group(2).strip(), m.group(3))
    return out


def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    """flag > environment > job file > config file > default, with the source of each value."""
    cfg = tmp_path / "config.toml"
    cfg.write_text("rate = 100\ntimeout = 11\nmax_attempts = 3\nfailure_window = 50\n")
    job = tmp_path / "job.toml"
    job.write_text("rate = 200\ntimeout = 12\nmax_attempts = 4\n")
    env = {"BULK_CANCEL_CONFIG": str(cfg), "BULK_CANCEL_RATE": "300", "BULK_CANCEL_TIMEOUT": "13"}
    got = show(job, "--rate", "400", env=env)
    assert got["rate"] == ("400.0", "flag")
    assert got["timeout"] == ("13.0", "env")
    assert got["max_attempts"] == ("4", "job")
    assert got["failure_window"] == ("50", "config")
    assert got["ip_rate"] == ("3000.0", "default")
    assert got["job_name"] == ("job", "job")


def test_product_and_region_pick_the_documented_host(tmp_path: Path) -> None:
    """product + region map to 8x8's host unless a base_url is given."""
    job = tmp_path / "job.toml"
    job.write_text('product = "sms"\nregion = "eu"\n')
    assert show(job)["base_url"] == ("https://sms.8x8.uk", "job")
    assert show(job, "--base-url", "http://127.0.0.1:9")["base_url"] == (
        "http://127.0.0.1:9",
        "flag",
    )


def test_the_key_is_never_shown() -> None:
    """config show says whether the key is set, never what it is."""
    got = show(env={"EIGHTX8_API_KEY": API_KEY})
    assert got["api key"][0].startswith("set")
    ran = bulk_cancel("config", "show")
    assert API_KEY not in ran.stdout + ran.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rate = 10\nrtae = 5\n", "unknown setting 'rtae'"),
        ('rate = "fast"\n', "rate"),
        ("rate = -5\n", "rate"),
        ('log_format = "xml"\n', "log_format"),
        ('api_key = "sk_live_123"\n', "EIGHTX8_API_KEY"),
        ('[api]\ntoken = "x"\n', "EIGHTX8_API_KEY"),
        ("rate = [1, 2]\n", "single value"),
        ("rate = \n", "not valid TOML"),
    ],
)
def test_bad_files_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    """A typo, a bad value, a key in a file or broken TOML is one clear error naming the file."""
    job = tmp_path / "job.toml"
    job.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        config.read_toml(job, actions(), kind="job")
    assert str(job) in str(err.value)
    ran = bulk_cancel("run", job)
    assert ran.code == 2 and "Traceback" not in ran.stderr


def test_relative_paths_are_read_from_the_job_files_folder(tmp_path: Path) -> None:
    """input, output, archive_dir and metrics_file are relative to the job file."""
    (tmp_path / "jobs").mkdir()
    job = tmp_path / "jobs" / "j.toml"
    job.write_text(
        'input = "in.csv"\noutput = "../out/r.csv"\narchive_dir = "arch"\nmetrics_file = "/abs/m.prom"\n'
    )
    values = config.read_toml(job, actions(), kind="job")
    assert Path(values["input"]) == tmp_path / "jobs" / "in.csv"
    assert values["output"] == tmp_path / "jobs" / ".." / "out" / "r.csv"
    assert values["archive_dir"] == tmp_path / "jobs" / "arch"
    assert values["metrics_file"] == Path("/abs/m.prom")


def test_output_templates() -> None:
    """{job}, {date}, {time} and {input_stem} fill in; an unknown placeholder is an error."""
    now = datetime(2026, 11, 28, 23, 5, 9)
    out = config.render_output(
        Path("out/{job}/{date}/{input_stem}-{time}.csv"),
        job="nightly",
        input_path="in/drop-1.csv",
        now=now,
    )
    assert out == Path("out/nightly/2026-11-28/drop-1-230509.csv")
    with pytest.raises(ConfigError, match="placeholder"):
        config.render_output(Path("{when}.csv"), job="j", input_path=None, now=now)


def test_config_example_documents_every_setting() -> None:
    """config.example.toml names every setting (set or commented) and parses with its defaults."""
    text = (ROOT / "config.example.toml").read_text()
    named = set(re.findall(r"^#?\s*([a-z_]+) = ", text, flags=re.M))
    assert set(actions()) <= named
    values = config.read_toml(ROOT / "config.example.toml", actions(), kind="config")
    for name, value in values.items():
        if name not in config.PATH_KEYS:
            assert value == actions()[name].default, name
