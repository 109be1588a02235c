"""Settings: the registry, precedence of flag > env > job > config > default, files, config show."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import API_KEY

from bulk_cancel import cli, config
from bulk_cancel.config import SETTINGS, Layer, load_file, read_env, render_output, resolve
from bulk_cancel.errors import ConfigError
from bulk_cancel.policy import RetryPolicy
from bulk_cancel.settings import RunSettings

ROOT = Path(__file__).resolve().parent.parent


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def flags(*argv: str) -> dict[str, Any]:
    """The flags `bulk-cancel run ARGV` gives, exactly as the command collects them."""
    ns = cli.build_parser().parse_args(["run", *argv])
    return {s.name: getattr(ns, s.name) for s in SETTINGS if hasattr(ns, s.name)}


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command in-process, with no BULK_CANCEL_* or key variables but those a test sets."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the developer's environment or ~/.config."""
    import os

    for var in list(os.environ):
        if var.startswith(("BULK_CANCEL_", "EIGHTX8_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


# ------------------------------------------------------------------------------ the registry


def test_every_existing_flag_keeps_its_name() -> None:
    """The flags users and scripts already type still exist, spelled the same."""
    parser = cli.build_parser()
    run = parser._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    known = {opt for action in run._actions for opt in action.option_strings}
    existing = """--input --output --subaccount --column --subaccount-column --sheet --encoding
        --max-rows --batch-id --base-url --rate --ip-rate --concurrency --timeout --max-attempts
        --max-retry-time --allow-insecure-http --resume --retry-failed --failure-threshold
        --failure-window --dry-run --split --metrics-file --job-name --log-format"""
    for flag in [*existing.split(), "--product", "--region", "--config", "--yes"]:
        assert flag in known, flag


def test_registry_defaults_are_run_settings_defaults() -> None:
    """The defaults the registry documents are the ones RunSettings and RetryPolicy use."""
    run = {f.name: f.default for f in dataclasses.fields(RunSettings)}
    retry = RetryPolicy()
    registry = {s.name: s.default for s in SETTINGS}
    assert registry["rate"] == run["rate_per_s"]
    assert registry["ip_rate"] == run["ip_rate_per_s"]
    assert registry["timeout"] == run["timeout_s"]
    assert registry["failure_threshold"] == run["failure_threshold"]
    assert registry["failure_window"] == run["failure_window"]
    assert registry["max_attempts"] == retry.max_attempts
    assert registry["max_retry_time"] == retry.max_elapsed_s
    assert registry["job_name"] is None and run["job"] == "bulk-cancel"


def test_flags_not_given_are_not_flags() -> None:
    """A flag left out is absent (argparse.SUPPRESS), so it cannot mask a job file's value."""
    assert flags() == {}
    assert flags("--rate", "5", "--split", "--no-dry-run") == {
        "rate": 5.0,
        "split": True,
        "dry_run": False,
    }


def test_flag_values_are_checked_by_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad flag value is a usage error (exit 2) saying what is wrong."""
    with pytest.raises(cli.BadUsage, match="must be a number above 0"):
        flags("--rate", "-3")
    code, _, err = run_main(capsys, "run", "--rate", "-3", "--log-format", "console")
    assert code == 2 and "must be a number above 0" in err.splitlines()[-1]


# ------------------------------------------------------------------------------ precedence


@pytest.fixture
def layers(tmp_path: Path) -> tuple[Path, Path]:
    """A config file and a job file that both set rate, timeout, max_attempts and split."""
    cfg = write(
        tmp_path / "cfg" / "config.toml",
        "rate = 100\ntimeout = 11\nmax_attempts = 3\nfailure_window = 50\n",
    )
    job = write(tmp_path / "jobs" / "nightly.toml", "rate = 200\ntimeout = 12\nmax_attempts = 4\n")
    return cfg, job


def test_each_layer_overrides_the_one_below(layers: tuple[Path, Path]) -> None:
    """flag > environment > job file > config file > default, each value with its source."""
    cfg, job = layers
    env = {"BULK_CANCEL_RATE": "300", "BULK_CANCEL_TIMEOUT": "13", "PATH": "/bin"}
    got = resolve(flags("--rate", "400"), env, job, cfg)
    assert got["rate"] == 400.0 and str(got.sources["rate"]) == "flag --rate"
    assert got["timeout"] == 13.0 and str(got.sources["timeout"]) == "env BULK_CANCEL_TIMEOUT"
    assert got["max_attempts"] == 4 and got.sources["max_attempts"].layer is Layer.JOB
    assert got["failure_window"] == 50 and str(got.sources["failure_window"]) == f"config {cfg}"
    assert got["ip_rate"] == 3000.0 and str(got.sources["ip_rate"]) == "default"
    assert got["job_name"] == "nightly"  # a job is named after its file unless it says otherwise


@pytest.mark.parametrize(
    ("top", "expected"),
    [(Layer.DEFAULT, 1500.0), (Layer.CONFIG, 100.0), (Layer.JOB, 200.0), (Layer.ENV, 300.0)],
)
def test_each_layer_wins_over_all_below_it(
    layers: tuple[Path, Path], top: Layer, expected: float
) -> None:
    """With the layers above it absent, each layer's value is the one used."""
    cfg, job = layers
    env = {"BULK_CANCEL_RATE": "300"} if top >= Layer.ENV else {}
    got = resolve({}, env, job if top >= Layer.JOB else None, cfg if top >= Layer.CONFIG else None)
    assert got["rate"] == expected and got.sources["rate"].layer is top


def test_product_and_region_pick_the_documented_host(tmp_path: Path) -> None:
    """product + region → 8x8's host; base_url wins when set in the same or a higher layer."""
    job = write(tmp_path / "j.toml", 'product = "sms"\nregion = "eu"\n')
    got = resolve({}, {}, job, None)
    assert got["base_url"] == "https://sms.8x8.uk"
    assert "product sms, region eu" in str(got.sources["base_url"])
    assert resolve({}, {}, None, None)["base_url"] == "https://chatapps.8x8.com"
    pinned = write(tmp_path / "p.toml", 'region = "us"\nbase_url = "https://proxy.example"\n')
    assert resolve({}, {}, pinned, None)["base_url"] == "https://proxy.example"
    flagged = resolve(flags("--base-url", "http://127.0.0.1:9"), {}, job, None)
    assert flagged["base_url"] == "http://127.0.0.1:9"
    # A config file's proxy does not outrank a region chosen on the command line.
    cfg = write(tmp_path / "c.toml", 'base_url = "https://proxy.example"\n')
    assert resolve(flags("--region", "id"), {}, None, cfg)["base_url"] == "https://chatapps.8x8.id"


def test_environment_values_are_parsed_and_checked() -> None:
    """BULK_CANCEL_<NAME> takes the flag's spelling of a value; a bad one names the variable."""
    got = read_env(
        {"BULK_CANCEL_SPLIT": "yes", "BULK_CANCEL_MAX_ROWS": "10", "BULK_CANCEL_SHEET": ""}
    )
    assert got == {"split": True, "max_rows": 10}
    with pytest.raises(ConfigError, match=r"BULK_CANCEL_FAILURE_THRESHOLD='2': .*at most 1"):
        read_env({"BULK_CANCEL_FAILURE_THRESHOLD": "2"})
    with pytest.raises(ConfigError, match="did you mean BULK_CANCEL_RATE"):
        read_env({"BULK_CANCEL_RAET": "5"})
    with pytest.raises(ConfigError, match="use --resume"):
        read_env({"BULK_CANCEL_RESUME": "1"})


def test_the_key_is_never_a_setting_in_the_environment() -> None:
    """BULK_CANCEL_API_KEY is refused: the key comes from EIGHTX8_API_KEY only."""
    with pytest.raises(ConfigError, match="EIGHTX8_API_KEY only") as err:
        read_env({"BULK_CANCEL_API_KEY": API_KEY})
    assert API_KEY not in str(err.value)


def test_the_config_file_is_found(tmp_path: Path) -> None:
    """$BULK_CANCEL_CONFIG names it; else $XDG_CONFIG_HOME/bulk-cancel/config.toml if present."""
    xdg = tmp_path / "xdg"
    assert config.default_config_file({"XDG_CONFIG_HOME": str(xdg)}) is None
    found = write(xdg / "bulk-cancel" / "config.toml", "rate = 5\n")
    assert config.default_config_file({"XDG_CONFIG_HOME": str(xdg)}) == found
    named = {"XDG_CONFIG_HOME": str(xdg), "BULK_CANCEL_CONFIG": str(tmp_path / "other.toml")}
    assert config.default_config_file(named) == tmp_path / "other.toml"


# ------------------------------------------------------------------------------ files


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rate = 10\nrtae = 5\n", "unknown key 'rtae'; did you mean 'rate'?"),
        ('rate = "fast"\n', "rate = 'fast': must be a number above 0"),
        ("rate = -5\n", "rate = -5: must be a number above 0"),
        ("max_rows = 2.5\n", "max_rows = 2.5: must be a whole number"),
        ("failure_threshold = 1.5\n", "failure_threshold = 1.5: must be a number above 0 and at"),
        ('log_format = "xml"\n', "log_format = 'xml': must be one of auto, json, console"),
        ('split = "yes"\n', "split = 'yes': must be true or false"),
        ('subaccount = "acme/hq"\n', "subaccount = 'acme/hq': is not a subaccount id"),
        ('output = "out/{when}.csv"\n', "output = 'out/{when}.csv': unknown placeholder {when}"),
        ("rate = [1, 2]\n", "rate = [1, 2]: must be a number"),
        ("resume = true\n", "resume: cannot be set in a file"),
        ("[api]\nrate = 5\n", "[api]: tables are not used"),
        ("rate = \n", "not valid TOML"),
    ],
)
def test_bad_files_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    """A typo, a bad value, a table or broken TOML is one error naming the file and the key."""
    job = write(tmp_path / "job.toml", text)
    with pytest.raises(ConfigError) as err:
        load_file(job, Layer.JOB)
    assert str(err.value).startswith(f"{job}: ")
    assert message in str(err.value)


@pytest.mark.parametrize(
    "text",
    [
        f'api_key = "{API_KEY}"\n',
        f'EIGHTX8_API_KEY = "{API_KEY}"\n',
        f'token = "{API_KEY}"\n',
        f'[auth]\nbearer = "{API_KEY}"\n',
    ],
)
def test_a_key_in_a_file_is_refused(tmp_path: Path, text: str) -> None:
    """A file holding the API key is refused, pointing to EIGHTX8_API_KEY, without echoing it."""
    job = write(tmp_path / "job.toml", text)
    with pytest.raises(ConfigError, match="export EIGHTX8_API_KEY") as err:
        load_file(job, Layer.JOB)
    assert str(job) in str(err.value) and API_KEY not in str(err.value)


def test_relative_paths_are_read_from_the_files_folder(tmp_path: Path) -> None:
    """input, output, archive_dir and metrics_file are relative to the file that names them."""
    job = write(
        tmp_path / "jobs" / "j.toml",
        'input = "in/*.csv"\noutput = "../out/{date}/r.csv"\narchive_dir = "arch"\n'
        'metrics_file = "/var/lib/m.prom"\n',
    )
    got = load_file(job, Layer.JOB)
    assert got["input"] == str(tmp_path / "jobs" / "in" / "*.csv")
    assert got["output"] == tmp_path / "out" / "{date}" / "r.csv"
    assert got["archive_dir"] == tmp_path / "jobs" / "arch"
    assert got["metrics_file"] == Path("/var/lib/m.prom")
    assert load_file(write(tmp_path / "s.toml", 'input = "-"\n'), Layer.JOB)["input"] == "-"


def test_a_job_file_must_be_toml(tmp_path: Path) -> None:
    """`run umids.csv` (an input given as the job) says to use --input."""
    with pytest.raises(ConfigError, match="give it with --input"):
        resolve({}, {}, write(tmp_path / "umids.csv", "umid\n"), None)


def test_config_example_documents_every_setting() -> None:
    """config.example.toml parses, names every setting, and its values are the defaults."""
    path = ROOT / "config.example.toml"
    text = path.read_text()
    values = load_file(path, Layer.CONFIG)
    raw = tomllib.loads(text)
    for entry in SETTINGS:
        if not entry.in_files:
            assert entry.flag in text, entry.name
        elif entry.default is None:
            assert re.search(rf"^# {entry.name} = ", text, re.M), entry.name
        else:
            assert entry.name in raw, entry.name
            assert values[entry.name] == entry.default, entry.name


def test_example_jobs_parse(tmp_path: Path) -> None:
    """Each job in jobs/ loads without an error and names its own input and output."""
    for job in sorted((ROOT / "jobs").glob("*.toml")):
        got = resolve({}, {}, job, None)
        assert got.sources["input"].layer is Layer.JOB, job
        assert got.sources["output"].layer is Layer.JOB, job


# ------------------------------------------------------------------------------ run settings


def test_output_templates_fill_in() -> None:
    """{job}, {date}, {time} and {input_stem} fill in from the job, the clock and the input."""
    now = datetime(2026, 11, 28, 23, 5, 9)
    out = render_output(
        Path("out/{job}/{date}/{input_stem}-{time}.csv"),
        job="nightly",
        input_path="in/drop-1.csv",
        now=now,
    )
    assert out == Path("out/nightly/2026-11-28/drop-1-230509.csv")
    assert render_output(Path("{input_stem}.csv"), job="j", input_path="-", now=now) == Path(
        "stdin.csv"
    )


def test_run_settings_carry_the_resolved_values(tmp_path: Path) -> None:
    """The runner's RunSettings get each resolved value under its own field name."""
    job = write(tmp_path / "j.toml", 'rate = 250\nmax_retry_time = 9\nsubaccount = "acme_hq"\n')
    got = resolve(flags("--max-attempts", "2", "--split"), {}, job, None)
    settings = config.to_run_settings(got, input="in.csv", output=tmp_path / "r.csv", resume=False)
    assert (settings.rate_per_s, settings.subaccount, settings.split) == (250.0, "acme_hq", True)
    assert settings.retry == RetryPolicy(max_attempts=2, max_elapsed_s=9.0)
    assert settings.job == "j" and settings.base_url == "https://chatapps.8x8.com"


def test_an_unsafe_base_url_in_a_file_names_the_file(tmp_path: Path) -> None:
    """Plain http to a real host from a job file: the error names the file and base_url."""
    job = write(tmp_path / "j.toml", 'base_url = "http://api.example.com"\n')
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(job))}: base_url: .*plain http"):
        config.to_run_settings(
            resolve({}, {}, job, None), input="in.csv", output=tmp_path / "r.csv", resume=False
        )


# ------------------------------------------------------------------------------ the command


def test_config_show_prints_values_and_sources(
    tmp_path: Path,
    layers: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """config show lists every setting, its value and where it came from."""
    cfg, job = layers
    monkeypatch.setenv("BULK_CANCEL_CONFIG", str(cfg))
    monkeypatch.setenv("BULK_CANCEL_TIMEOUT", "13")
    code, out, _ = run_main(capsys, "config", "show", str(job), "--rate", "400", "--format", "json")
    assert code == 0
    got = json.loads(out)
    assert set(got) == {s.name for s in SETTINGS} | {"EIGHTX8_API_KEY"}
    assert got["rate"] == {"value": 400.0, "source": "flag --rate"}
    assert got["timeout"] == {"value": 13.0, "source": "env BULK_CANCEL_TIMEOUT"}
    assert got["max_attempts"] == {"value": 4, "source": f"job {job}"}
    assert got["failure_window"] == {"value": 50, "source": f"config {cfg}"}
    code, table, _ = run_main(capsys, "config", "show", str(job))
    assert re.search(rf"^max_attempts +4 +job {re.escape(str(job))}$", table, re.M)


def test_config_show_masks_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The key is shown as set with its last four characters at most, never in full."""
    code, out, _ = run_main(capsys, "config", "show")
    assert code == 0 and re.search(r"^EIGHTX8_API_KEY +not set", out, re.M)
    monkeypatch.setenv("EIGHTX8_API_KEY", API_KEY)
    for fmt in ("table", "json"):
        code, out, err = run_main(capsys, "config", "show", "--format", fmt)
        assert code == 0 and API_KEY not in out + err and API_KEY[:-4] not in out + err
        assert f"set (****{API_KEY[-4:]})" in out


def test_the_masked_key_has_the_shape_the_readme_promises() -> None:
    """`set (****abcd)` for a key of 12 characters or more, `set (****)` below: never more than 4."""
    assert config.mask_key("abcdefgh1234") == "set (****1234)"
    assert config.mask_key("abcdefg1234") == "set (****)"
    assert config.mask_key("") == "not set"
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "`set (****abcd)`" in readme and f"{config.MASK_TAIL_FROM} characters" in readme


def test_a_bad_job_file_exits_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run` with a mistyped job file: exit 2, one line naming the file and the key, no trace."""
    job = write(tmp_path / "j.toml", 'input = "x.csv"\nmax_row = 5\n')
    code, out, err = run_main(capsys, "run", str(job), "--log-format", "console")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"bulk-cancel: error: {job}: unknown key 'max_row'; did you mean 'max_rows'? "
        "(every setting is in config.example.toml)"
    ]


# ------------------------------------------------------------------------------ printed commands

#: A valid value, other than the default, for a setting of each kind, as a variable's text.
_SAMPLE = {
    config.ValueKind.TEXT: "abc_sub",
    config.ValueKind.COUNT: "7",
    config.ValueKind.POSITIVE: "7.25",
    config.ValueKind.SECONDS: "7",
    config.ValueKind.SHARE: "0.25",
    config.ValueKind.BOOL: "true",
    config.ValueKind.PATH: "/etc/ssl/corp-ca.pem",
}


def test_printed_commands_repeat_every_marked_setting_from_any_layer(tmp_path: Path) -> None:
    """Each setting marked in_commands (traffic, what is sent), set in the environment, comes
    back as its flag in the command, so a new shell cannot change it; product/region come back
    as the base URL they chose."""
    marked = [s for s in SETTINGS if s.in_commands]
    assert {"rate", "ip_rate", "concurrency", "max_attempts", "max_retry_time", "timeout"} <= {
        s.name for s in marked
    }
    for entry in marked:
        special = {"base_url": "http://127.0.0.1:9", "shard": "1/4"}
        text = special.get(entry.name) or _SAMPLE[entry.kind]
        resolved = resolve({}, {entry.env: text}, None, None)
        flags, notes = config.command_flags(resolved)
        expected = [entry.flag] if entry.kind is config.ValueKind.BOOL else [entry.flag, text]
        assert list(flags) == expected and notes == (), entry.name
    assert config.command_flags(resolve({}, {}, None, None)) == ((), ())
    sms = config.command_flags(resolve({"product": "sms", "region": "eu"}, {}, None, None))
    assert sms == (("--base-url", "https://sms.8x8.uk"), ())
    assert config.command_flags(resolve({"rate": 1234567.5}, {}, None, None))[0] == (
        "--rate",
        "1234567.5",
    )


def test_printed_commands_never_show_a_password(tmp_path: Path) -> None:
    """A marked setting holding a URL with a password (a proxy): from a flag it is printed with
    **** and a note; from the environment it is left out, and the note says where it comes from."""
    proxy = config.Setting(
        name="proxy", kind=config.ValueKind.TEXT, group="API", help="a proxy", in_commands=True
    )
    secret = "http://ops:s3cret-pw@proxy.example:3128"
    for layer, origin in ((Layer.FLAG, "--proxy"), (Layer.ENV, "BULK_CANCEL_PROXY")):
        resolved = config.ResolvedSettings(
            {"proxy": secret}, {"proxy": config.Source(layer, origin)}
        )
        flags, notes = config.command_flags(resolved, (proxy,))
        assert "s3cret-pw" not in " ".join(flags + notes)
        if layer is Layer.FLAG:
            assert flags == ("--proxy", "http://ops:****@proxy.example:3128")
            assert "put it back" in notes[0] and "BULK_CANCEL_PROXY" in notes[0]
        else:
            assert flags == () and "read again from BULK_CANCEL_PROXY" in notes[0]
