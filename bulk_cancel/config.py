"""Every run setting in one table, and where each value comes from.

:data:`SETTINGS` is the registry: one :class:`Setting` per name, with its type, default, help,
flag (``--max-rows``), file key (``max_rows``) and environment variable
(``BULK_CANCEL_MAX_ROWS``). The ``run`` command's flags are built from it, and
:func:`resolve` merges the layers, highest first::

    flag > environment > job file > config file > default

remembering the :class:`Source` of each value, so ``bulk-cancel config show`` can say where a
value came from. :func:`to_run_settings` then builds the frozen
:class:`~bulk_cancel.settings.RunSettings` the runner uses.

Files are TOML with flat keys (no tables). An unknown key, a value of the wrong type and an API
key are each a :class:`~bulk_cancel.errors.ConfigError` naming the file and the key: a typo must
never fall back to a default silently. The API key is never a setting: it comes from
``EIGHTX8_API_KEY`` only. Relative paths in a file are read from that file's own folder.

Importing this module is cheap (no HTTP client, no pandas): ``bulk-cancel --help`` builds its flags
from it.
"""

from __future__ import annotations

import difflib
import enum
import math
import os
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .errors import ConfigError
from .normalize import valid_subaccount

if TYPE_CHECKING:
    from .settings import RunSettings

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "INPUT_GROUP",
    "OUTPUT_PLACEHOLDERS",
    "SETTINGS",
    "TARGET_GROUP",
    "Kind",
    "Layer",
    "ResolvedSettings",
    "Setting",
    "Source",
    "command_flags",
    "default_config_file",
    "has_placeholders",
    "load_file",
    "mask_key",
    "read_env",
    "render_output",
    "resolve",
    "setting",
    "show_data",
    "show_rows",
    "to_run_settings",
]

#: Prefix of every setting's environment variable: ``BULK_CANCEL_<NAME>``.
ENV_PREFIX: Final = "BULK_CANCEL_"
#: Names the config file (``--config`` wins over it); not a setting itself.
CONFIG_ENV: Final = "BULK_CANCEL_CONFIG"
#: What ``output`` may hold: filled in per input file when the job runs.
OUTPUT_PLACEHOLDERS: Final = ("job", "date", "time", "input_stem")

#: Words that mark a key as a credential: refused in files and BULK_CANCEL_* variables.
_SECRET_WORDS: Final = ("key", "token", "secret", "password", "passwd", "auth", "bearer")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


class Layer(enum.IntEnum):
    """Where a value came from, ordered by precedence (a higher layer wins)."""

    DEFAULT = 0
    CONFIG = 1
    JOB = 2
    ENV = 3
    FLAG = 4

    @property
    def label(self) -> str:
        return self.name.lower()


class Kind(enum.Enum):
    """How a setting's value is checked, and how text (a flag, a variable) becomes a value."""

    TEXT = "text"
    INPUT = "input"
    """A path, a glob, or ``-`` for stdin; relative to the file that names it."""
    OUTPUT = "output"
    """A path that may hold ``{job}``, ``{date}``, ``{time}``, ``{input_stem}``."""
    PATH = "path"
    COUNT = "count"
    """A whole number, at least 1."""
    POSITIVE = "positive"
    """A finite number above 0."""
    SECONDS = "seconds"
    """A finite number, 0 or more."""
    SHARE = "share"
    """A number above 0, at most 1."""
    BOOL = "bool"
    CHOICE = "choice"


_PATH_KINDS: Final = frozenset({Kind.INPUT, Kind.OUTPUT, Kind.PATH})


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """One run setting: its name is the file key; the flag and the variable derive from it."""

    name: str
    kind: Kind
    help: str
    group: str
    default: Any = None
    shown_default: str | None = None
    """The default as help and config.example.toml say it, when ``default`` is None."""
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    in_files: bool = True
    """False: it describes one invocation (``--resume``), so files may not set it."""
    in_env: bool = True
    in_commands: bool = False
    """It shapes the traffic or decides what is read and where it is sent: the commands a stopped
    run prints (resume, re-send the failures) repeat it whenever a layer set it, so that the next
    shell's environment or config cannot change it (:func:`command_flags`)."""
    optional_value: str | None = None
    """A boolean flag that may also be given this one word (``--resume=auto``)."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def parse(self, text: str) -> Any:
        """A flag's or a variable's text as a value; ValueError says what is wrong."""
        if self.kind is Kind.BOOL:
            word = text.strip().lower()
            if word in _TRUE | _FALSE:
                return word in _TRUE
            raise ValueError("must be true or false (1/0, yes/no, on/off)")
        if self.kind is Kind.COUNT:
            try:
                return self.check(int(text.strip()))
            except ValueError:
                raise ValueError("must be a whole number, at least 1") from None
        if self.kind in (Kind.POSITIVE, Kind.SECONDS, Kind.SHARE):
            try:
                number = float(text.strip())
            except ValueError:
                raise ValueError(f"must be a number{self._range()}") from None
            return self.check(number)
        return self.check(text)

    def check(self, value: object) -> Any:
        """A value from a TOML file (or parsed text), checked; ValueError says what is wrong."""
        kind = self.kind
        if kind is Kind.BOOL:
            if isinstance(value, bool) or (
                self.optional_value is not None and value == self.optional_value
            ):
                return value
            raise ValueError("must be true or false")
        if kind is Kind.COUNT:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError("must be a whole number, at least 1")
            if value < 1:
                raise ValueError("must be at least 1")
            return value
        if kind in (Kind.POSITIVE, Kind.SECONDS, Kind.SHARE):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"must be a number{self._range()}")
            number = float(value)
            low_ok = number >= 0 if kind is Kind.SECONDS else number > 0
            if not (math.isfinite(number) and low_ok and (kind is not Kind.SHARE or number <= 1)):
                raise ValueError(f"must be a number{self._range()}")
            return number
        if not isinstance(value, str):
            raise ValueError("must be a string (in quotes)")
        if not value.strip():
            raise ValueError("must not be empty")
        if kind is Kind.CHOICE and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}")
        if kind is Kind.OUTPUT:
            _check_template(value)
        if self.name == "shard":
            from .shard import parse_shard

            return str(parse_shard(value))
        if self.name == "subaccount" and not valid_subaccount(value):
            raise ValueError(
                "is not a subaccount id: 3-50 characters of letters, digits and - . _ &"
            )
        if kind in (Kind.OUTPUT, Kind.PATH):
            return Path(value).expanduser()
        return value

    def _range(self) -> str:
        return {
            Kind.POSITIVE: " above 0",
            Kind.SECONDS: ", 0 or more",
            Kind.SHARE: " above 0 and at most 1, e.g. 0.5",
        }.get(self.kind, "")

    def default_text(self) -> str | None:
        """The default as a person reads it (help, config show), or None if there is none."""
        if self.shown_default is not None:
            return self.shown_default
        if self.default is None:
            return None
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)


#: Flags shown first, outside any group: what to cancel and where the results go.
TARGET_GROUP: Final = "what to cancel"
#: How to read the input; ``validate`` has these flags too.
INPUT_GROUP: Final = "input"
_API: Final = "API"
_NETWORK: Final = "network"
_SAFETY: Final = "safety and resuming"
_OUTPUT: Final = "output"
_JOB: Final = "jobs and drop folders"
_SCALE: Final = "scaling out"

#: The registry: every setting of ``bulk-cancel run``, in the order help shows them.
SETTINGS: Final[tuple[Setting, ...]] = (
    Setting(
        name="input",
        kind=Kind.INPUT,
        group=TARGET_GROUP,
        metavar="PATH",
        help=".csv .tsv .parquet .xlsx .txt, or - for CSV on stdin; in a job, a glob "
        "(incoming/*.csv) takes every matching file",
    ),
    Setting(
        name="output",
        kind=Kind.OUTPUT,
        group=TARGET_GROUP,
        metavar="PATH",
        help="results file (.csv .parquet .xlsx); the summary goes to <name>.summary.json and "
        "the ledger to <name>.ledger.sqlite. May hold {job} {date} {time} {input_stem}",
    ),
    Setting(
        name="subaccount",
        in_commands=True,
        kind=Kind.TEXT,
        group=INPUT_GROUP,
        metavar="ID",
        help="subaccount for rows without their own subaccount_id column",
    ),
    Setting(
        name="column",
        in_commands=True,
        kind=Kind.TEXT,
        group=INPUT_GROUP,
        metavar="NAME",
        shown_default="umid, else message_id / messageId, else batch_id",
        help="the id column",
    ),
    Setting(
        name="subaccount_column",
        in_commands=True,
        kind=Kind.TEXT,
        group=INPUT_GROUP,
        metavar="NAME",
        shown_default="subaccount_id / subAccountId",
        help="the per-row subaccount column",
    ),
    Setting(
        name="sheet",
        in_commands=True,
        kind=Kind.TEXT,
        group=INPUT_GROUP,
        metavar="NAME",
        shown_default="the first with an id column",
        help="Excel sheet",
    ),
    Setting(
        name="header_row",
        in_commands=True,
        kind=Kind.COUNT,
        group=INPUT_GROUP,
        metavar="N",
        shown_default="the first of the first 20 rows that names the id column",
        help="the header's row (CSV/TSV line, sheet row), for a file where the search cannot "
        "tell; rows above it (a title) are skipped",
    ),
    Setting(
        name="encoding",
        in_commands=True,
        kind=Kind.TEXT,
        group=INPUT_GROUP,
        metavar="NAME",
        shown_default="UTF-8, UTF-16 by its BOM",
        help="text encoding of CSV/TSV/TXT input",
    ),
    Setting(
        name="max_rows",
        in_commands=True,
        kind=Kind.COUNT,
        group=INPUT_GROUP,
        metavar="N",
        shown_default="no limit",
        help="refuse inputs with more rows than this (a guard for destructive jobs)",
    ),
    Setting(
        name="batch_id",
        in_commands=True,
        kind=Kind.TEXT,
        group=TARGET_GROUP,
        metavar="UUID",
        help="cancel one whole batch (DELETE .../messages/batch/{batchId}) instead of reading a file",
    ),
    Setting(
        name="product",
        kind=Kind.CHOICE,
        group=_API,
        default="chatapps",
        choices=("chatapps", "sms"),
        help="8x8 product; with --region it picks the documented host",
    ),
    Setting(
        name="region",
        kind=Kind.CHOICE,
        group=_API,
        default="asia",
        choices=("asia", "us", "eu", "id"),
        help="the region your account is provisioned in; with --product it picks the host",
    ),
    Setting(
        name="base_url",
        in_commands=True,
        kind=Kind.TEXT,
        group=_API,
        metavar="URL",
        shown_default="the host of --product in --region: https://chatapps.8x8.com",
        help="the API host, instead of --product and --region (a gateway, the simulator)",
    ),
    Setting(
        name="rate",
        in_commands=True,
        kind=Kind.POSITIVE,
        group=_API,
        default=1500.0,
        metavar="N",
        help="requests per second per subaccount, never exceeded in any second "
        "(8x8 allows 1800 unless raised)",
    ),
    Setting(
        name="ip_rate",
        in_commands=True,
        kind=Kind.POSITIVE,
        group=_API,
        default=3000.0,
        metavar="N",
        help="requests per second over all subaccounts (8x8's per-IP limit)",
    ),
    Setting(
        name="concurrency",
        in_commands=True,
        kind=Kind.COUNT,
        group=_API,
        metavar="N",
        shown_default="sized from rate x latency",
        help="most requests in flight per subaccount",
    ),
    Setting(
        name="timeout",
        in_commands=True,
        kind=Kind.POSITIVE,
        group=_API,
        default=30.0,
        metavar="S",
        help="seconds an answer may go without data once sent; then it counts as lost",
    ),
    Setting(
        name="max_attempts",
        in_commands=True,
        kind=Kind.COUNT,
        group=_API,
        default=6,
        metavar="N",
        help="attempts per row on transient failures (429, 5xx, timeouts)",
    ),
    Setting(
        name="max_retry_time",
        in_commands=True,
        kind=Kind.POSITIVE,
        group=_API,
        default=120.0,
        metavar="S",
        help="seconds of retrying per row before it is reported failed",
    ),
    Setting(
        name="allow_insecure_http",
        in_commands=True,
        kind=Kind.BOOL,
        group=_API,
        default=False,
        help="allow http:// to a non-loopback host (the key would travel unencrypted)",
    ),
    Setting(
        name="proxy",
        kind=Kind.TEXT,
        group=_NETWORK,
        metavar="URL",
        shown_default="HTTPS_PROXY / HTTP_PROXY / ALL_PROXY unless NO_PROXY covers the host",
        help="forward proxy, http://[user:password@]host:port; overrides the environment's. "
        "The password is masked wherever the proxy is shown",
        in_commands=True,
    ),
    Setting(
        name="ca_bundle",
        kind=Kind.PATH,
        group=_NETWORK,
        metavar="PEM",
        shown_default="the system's CAs, or SSL_CERT_FILE",
        help="CA certificates to trust instead of the system's (a TLS-inspecting proxy's CA); "
        "verification is always on",
        in_commands=True,
    ),
    Setting(
        name="resume",
        kind=Kind.BOOL,
        group=_SAFETY,
        default=False,
        in_files=False,
        in_env=False,
        optional_value="auto",
        help="finish an interrupted run: same input and output; rows already answered are "
        "skipped, refused ones (auth_failed, code 1001) sent again. A stopped run prints this "
        "command with its rate and every setting that shapes what is sent. --resume=auto "
        "resumes if the output's ledger exists, else starts afresh (one command line for a pod "
        "that may be restarted)",
    ),
    Setting(
        name="retry_failed",
        kind=Kind.BOOL,
        group=_SAFETY,
        default=False,
        in_files=False,
        in_env=False,
        help="re-send only the rows a finished run could still cancel: failed, not_attempted, "
        "auth_failed, and subaccount_rejected by the API (code 1001)",
    ),
    Setting(
        name="failure_threshold",
        in_commands=True,
        kind=Kind.SHARE,
        group=_SAFETY,
        default=0.5,
        metavar="SHARE",
        help="stop when more than this share of the first --failure-window answered rows failed",
    ),
    Setting(
        name="failure_window",
        in_commands=True,
        kind=Kind.COUNT,
        group=_SAFETY,
        default=1000,
        metavar="N",
        help="how many first answers the failure threshold looks at",
    ),
    Setting(
        name="dry_run",
        kind=Kind.BOOL,
        group=_SAFETY,
        default=False,
        help="read, validate and de-duplicate, print the plan, send nothing",
    ),
    Setting(
        name="yes",
        kind=Kind.BOOL,
        group=_SAFETY,
        default=False,
        in_files=False,
        help="do not ask for confirmation on a terminal (off a terminal nobody is asked)",
    ),
    Setting(
        name="split",
        kind=Kind.BOOL,
        group=_OUTPUT,
        default=False,
        help="also write <name>.errors.csv with the rows worth another look, original columns included",
    ),
    Setting(
        name="metrics_file",
        kind=Kind.PATH,
        group=_OUTPUT,
        metavar="PATH",
        help="write Prometheus textfile-collector metrics here",
    ),
    Setting(
        name="job_name",
        kind=Kind.TEXT,
        group=_OUTPUT,
        metavar="NAME",
        shown_default="the job file's name, else bulk-cancel",
        help="job label for metrics, logs and {job}",
    ),
    Setting(
        name="log_format",
        kind=Kind.CHOICE,
        group=_OUTPUT,
        default="auto",
        choices=("auto", "json", "console"),
        help="log lines on stderr: auto is JSON when stderr is not a terminal",
    ),
    Setting(
        name="archive_dir",
        kind=Kind.PATH,
        group=_JOB,
        metavar="DIR",
        help="with a glob input (a drop folder): where each processed file is moved; claimed "
        "files wait in processing/ beside it",
    ),
    Setting(
        name="settle_time",
        kind=Kind.SECONDS,
        group=_JOB,
        default=30.0,
        metavar="S",
        help="a dropped file is taken only once unchanged this many seconds (still being copied?)",
    ),
    Setting(
        name="shard",
        in_commands=True,
        kind=Kind.TEXT,
        group=_SCALE,
        metavar="K/N",
        shown_default="the whole input",
        help="take only shard K of N (0 <= K < N) of the input, by a stable hash of "
        "(subaccount, umid), pacing each subaccount at rate/N; one process per shard, e.g. "
        "a Kubernetes Indexed Job with --shard $(JOB_COMPLETION_INDEX)/N",
    ),
)

_BY_NAME: Final = {s.name: s for s in SETTINGS}


def setting(name: str) -> Setting:
    """The registry entry called *name*."""
    return _BY_NAME[name]


# ------------------------------------------------------------------------------ sources


@dataclass(frozen=True, slots=True)
class Source:
    """Where one value came from: the layer, and the file, variable or flag that set it."""

    layer: Layer
    origin: str | None = None
    note: str | None = None

    def __str__(self) -> str:
        text = self.layer.label + (f" {self.origin}" if self.origin else "")
        return text + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True, slots=True)
class ResolvedSettings:
    """The effective value of every setting, and the :class:`Source` of each."""

    values: Mapping[str, Any]
    sources: Mapping[str, Source]
    job_file: Path | None = None
    config_file: Path | None = None

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


# ------------------------------------------------------------------------------ layers


def load_file(path: Path, layer: Layer) -> dict[str, Any]:
    """The settings in a TOML config or job file, checked; relative paths made absolute."""
    what = "job" if layer is Layer.JOB else "config"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what} file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read this {what} file ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    folder = path.resolve().parent
    values: dict[str, Any] = {}
    for key, value in data.items():
        if _is_secret(key) or (
            isinstance(value, dict) and any(_is_secret(k) for k in _keys(value))
        ):
            raise ConfigError(
                f"{path}: {key}: the API key never goes in a file; "
                "export EIGHTX8_API_KEY in the environment that runs bulk-cancel"
            )
        if isinstance(value, dict):
            raise ConfigError(
                f"{path}: [{key}]: tables are not used; write the settings as top-level keys "
                "(see config.example.toml)"
            )
        entry = _BY_NAME.get(key)
        if entry is None:
            raise ConfigError(f"{path}: unknown key {key!r}{_did_you_mean(key)}")
        if not entry.in_files:
            raise ConfigError(
                f"{path}: {key}: cannot be set in a file, it describes one run: use {entry.flag}"
            )
        try:
            checked = entry.check(value)
        except ValueError as exc:
            raise ConfigError(f"{path}: {key} = {_show(value)}: {exc}") from None
        if entry.kind in _PATH_KINDS and not (entry.kind is Kind.INPUT and checked == "-"):
            checked = _relative_to(folder, checked)
        values[key] = checked
    return values


def read_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The settings in ``BULK_CANCEL_<NAME>`` variables; an unknown or bad one is an error."""
    values: dict[str, Any] = {}
    for var, text in sorted(env.items()):
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
            continue
        name = var.removeprefix(ENV_PREFIX).lower()
        if _is_secret(name):
            raise ConfigError(f"{var}: the API key is read from EIGHTX8_API_KEY only; unset {var}")
        entry = _BY_NAME.get(name)
        if entry is None:
            close = difflib.get_close_matches(name, _BY_NAME, n=1)
            hint = f"; did you mean {ENV_PREFIX}{close[0].upper()}?" if close else ""
            raise ConfigError(f"{var}: not a bulk-cancel setting{hint}")
        if not entry.in_env:
            raise ConfigError(f"{var}: cannot be set in the environment: use {entry.flag}")
        if text == "":
            continue  # VAR= means unset, as for most tools
        try:
            values[name] = entry.parse(text)
        except ValueError as exc:
            raise ConfigError(f"{var}={_show(text)}: {exc}") from None
    return values


def default_config_file(env: Mapping[str, str]) -> Path | None:
    """$BULK_CANCEL_CONFIG, else ``$XDG_CONFIG_HOME/bulk-cancel/config.toml`` if it exists."""
    named = env.get(CONFIG_ENV)
    if named:
        return Path(named).expanduser()
    base = Path(env.get("XDG_CONFIG_HOME") or Path("~/.config").expanduser())
    candidate = base / "bulk-cancel" / "config.toml"
    return candidate if candidate.is_file() else None


def resolve(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    job_file: Path | None,
    config_file: Path | None,
) -> ResolvedSettings:
    """Merge the layers: flag > environment > job file > config file > default.

    *flags* holds only the flags actually given (already parsed); *env* is the environment
    (only ``BULK_CANCEL_*`` variables are read). ``base_url``, when set, wins over ``product``
    and ``region`` set in the same or a lower layer; otherwise they pick the documented host.
    """
    unknown = set(flags) - set(_BY_NAME)
    if unknown:
        raise ConfigError(f"not settings: {', '.join(sorted(unknown))}")
    if job_file is not None and job_file.suffix.lower() != ".toml":
        raise ConfigError(
            f"{job_file}: a job file is TOML (JOB.toml); to cancel the ids in a file, "
            "give it with --input"
        )
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    sources: dict[str, Source] = {s.name: Source(Layer.DEFAULT) for s in SETTINGS}
    layers: list[tuple[Layer, str | None, Mapping[str, Any]]] = []
    if config_file is not None:
        layers.append((Layer.CONFIG, str(config_file), load_file(config_file, Layer.CONFIG)))
    if job_file is not None:
        layers.append((Layer.JOB, str(job_file), load_file(job_file, Layer.JOB)))
    layers.append((Layer.ENV, None, read_env(env)))
    layers.append((Layer.FLAG, None, flags))
    for layer, origin, given in layers:
        for name, value in given.items():
            if value is None:
                continue
            values[name] = value
            where = origin
            if layer is Layer.ENV:
                where = _BY_NAME[name].env
            elif layer is Layer.FLAG:
                where = _BY_NAME[name].flag
            sources[name] = Source(layer, where)
    if values["job_name"] is None:
        values["job_name"] = job_file.stem if job_file is not None else "bulk-cancel"
        note = "the job file's name" if job_file is not None else None
        sources["job_name"] = Source(Layer.DEFAULT, note=note)
    _pick_base_url(values, sources)
    _pick_proxy(values, sources, env)
    return ResolvedSettings(values, sources, job_file=job_file, config_file=config_file)


def _pick_base_url(values: dict[str, Any], sources: dict[str, Source]) -> None:
    from .settings import base_url_for  # settings imports the HTTP side: only when resolving

    host_from = max(sources["product"], sources["region"], key=lambda s: s.layer)
    if values["base_url"] is not None and sources["base_url"].layer >= host_from.layer:
        return
    product, region = values["product"], values["region"]
    values["base_url"] = base_url_for(product, region)
    sources["base_url"] = Source(
        host_from.layer, host_from.origin, note=f"product {product}, region {region}"
    )


def _pick_proxy(values: dict[str, Any], sources: dict[str, Source], env: Mapping[str, str]) -> None:
    """No ``proxy`` setting: the one curl and pip would take from the environment, if any."""
    from .settings import proxy_from_env

    if values["proxy"] is not None:
        return
    found = proxy_from_env(values["base_url"], env)
    if found is not None:
        values["proxy"], variable = found
        sources["proxy"] = Source(Layer.ENV, variable)
    elif any(env.get(name) for name in ("no_proxy", "NO_PROXY")) and proxy_from_env(
        values["base_url"], {k: v for k, v in env.items() if k.lower() != "no_proxy"}
    ):
        sources["proxy"] = Source(Layer.DEFAULT, note="NO_PROXY covers the host: direct")


# ------------------------------------------------------------------------------ run settings


def render_output(template: Path, *, job: str, input_path: str | None, now: datetime) -> Path:
    """Fill ``{job}``, ``{date}`` (YYYY-MM-DD), ``{time}`` (HHMMSS) and ``{input_stem}``."""
    if input_path is None:
        stem = "batch"
    elif input_path == "-":
        stem = "stdin"
    else:
        stem = Path(input_path).stem
    text = str(template)
    _check_template(text)
    return Path(
        text.format(
            job=job, date=now.strftime("%Y-%m-%d"), time=now.strftime("%H%M%S"), input_stem=stem
        )
    )


def has_placeholders(template: Path) -> bool:
    """Whether an output path holds any ``{…}`` placeholder."""
    return any(field for _, field, _, _ in string.Formatter().parse(str(template)) if field)


def to_run_settings(
    resolved: ResolvedSettings, *, input: str | None, output: Path | None, resume: bool | str
) -> RunSettings:
    """The frozen :class:`RunSettings` of one run: *input* and a rendered *output* per file.

    *resume* ``"auto"`` resumes when the output's ledger exists and starts afresh otherwise.
    """
    from .policy import RetryPolicy
    from .settings import RunSettings, check_base_url, check_ca_bundle, check_proxy
    from .writers import output_format

    v, src = resolved.values, resolved.sources
    if input is None and v["batch_id"] is None and not v["retry_failed"]:
        raise ConfigError(
            "nothing to cancel: give --input FILE (or --batch-id UUID), or a job file with input"
        )
    if v["batch_id"] is not None and v["subaccount"] is None:
        raise ConfigError(f"batch_id ({src['batch_id']}) needs a subaccount (--subaccount)")
    if output is None:
        raise ConfigError(
            "--output PATH is required: where the results go (.csv, .parquet or .xlsx)"
        )
    output_format(output)
    if resume == "auto":
        from .ledger import ledger_path

        resume = ledger_path(output).exists()
    shard = None
    if v["shard"] is not None:
        from .shard import parse_shard

        shard = parse_shard(v["shard"])
        if v["archive_dir"] is not None:
            raise ConfigError(
                "shard and archive_dir do not mix: a drop folder hands each file to one run; "
                "give the shards one input file (or a glob without archive_dir)"
            )
    try:
        base_url = check_base_url(v["base_url"], allow_insecure_http=v["allow_insecure_http"])
    except ConfigError as exc:
        origin = src["base_url"]
        where = f"{origin.origin}: base_url" if origin.layer in (Layer.JOB, Layer.CONFIG) else None
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None
    proxy = v["proxy"]
    if proxy is not None:
        proxy = check_proxy(proxy, where=_where(src["proxy"], "proxy"))
    ca_bundle = v["ca_bundle"]
    if ca_bundle is not None:
        ca_bundle = check_ca_bundle(ca_bundle, where=_where(src["ca_bundle"], "ca_bundle"))
    return RunSettings(
        input=input,
        output=output,
        subaccount=v["subaccount"],
        column=v["column"],
        subaccount_column=v["subaccount_column"],
        sheet=v["sheet"],
        header_row=v["header_row"],
        encoding=v["encoding"],
        batch_id=v["batch_id"],
        base_url=base_url,
        rate_per_s=v["rate"],
        ip_rate_per_s=v["ip_rate"],
        concurrency=v["concurrency"],
        timeout_s=v["timeout"],
        retry=RetryPolicy(max_attempts=v["max_attempts"], max_elapsed_s=v["max_retry_time"]),
        failure_threshold=v["failure_threshold"],
        failure_window=v["failure_window"],
        max_rows=v["max_rows"],
        resume=bool(resume),
        retry_failed=v["retry_failed"],
        dry_run=v["dry_run"],
        split=v["split"],
        metrics_file=v["metrics_file"],
        job=v["job_name"],
        allow_insecure_http=v["allow_insecure_http"],
        job_file=resolved.job_file,
        archive_dir=v["archive_dir"],
        command_flags=command_flags(resolved),
        proxy=proxy,
        proxy_source=None if proxy is None else str(src["proxy"]),
        ca_bundle=ca_bundle,
        shard=shard,
    )


#: Keys at least this long are shown with their last four characters (a third at most).
MASK_TAIL_FROM: Final = 12


def command_flags(
    resolved: ResolvedSettings, registry: tuple[Setting, ...] = SETTINGS
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The flags that make a printed command send as this run did, and notes to go with them.

    Every setting marked ``in_commands`` that any layer set (flag, environment, job file, config
    file) is repeated as a flag, in registry order. ``product`` and ``region`` are not marked:
    their effect is ``base_url``, which is. A value holding a password (a URL's
    ``user:password@``) is never printed: set by a flag, it is shown with ``****`` and a note says
    to put the password back (or to export the variable instead); set by the environment or a
    file, it is left out, and a note says where it is read again from.
    """
    flags: list[str] = []
    notes: list[str] = []
    for entry in registry:
        value = resolved.values[entry.name]
        source = resolved.sources[entry.name]
        if not entry.in_commands or value is None or source.layer is Layer.DEFAULT:
            continue
        if entry.kind is Kind.BOOL:
            if value:
                flags.append(entry.flag)
            elif entry.in_files:  # a file may have set it true: --no-… overrides that
                flags.append("--no-" + entry.flag.removeprefix("--"))
            continue
        plain = _plain(value)
        if isinstance(value, float) and float(plain) != value:
            plain = repr(value)  # %g keeps six digits: the command must give the exact value
        text, secret = _without_password(plain)
        if not secret:
            flags += [entry.flag, text]
        elif source.layer is Layer.FLAG:
            flags += [entry.flag, text]
            notes.append(
                f"{entry.flag} is shown with its password as ****: put it back before running "
                f"the command, or export {entry.env} and leave the flag out"
            )
        else:
            notes.append(
                f"{entry.flag} is left out (it holds a password): it is read again from "
                f"{source.origin or source.layer.label}, so keep that as it is"
                + (" and add --config with it" if source.layer is Layer.CONFIG else "")
            )
    return tuple(flags), tuple(notes)


def _without_password(text: str) -> tuple[str, bool]:
    """*text* with a URL's password replaced by ``****``, and whether it held one."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return text, False
    if not password:
        return text, False
    user, _, host = parts.netloc.rpartition("@")
    name = user.split(":", 1)[0]
    return parts._replace(netloc=f"{name}:****@{host}").geturl(), True


def _where(source: Source, key: str) -> str:
    """How an error names a setting: ``PATH: key`` for files, the flag or variable otherwise."""
    if source.layer in (Layer.JOB, Layer.CONFIG):
        return f"{source.origin}: {key}"
    return source.origin or key


def mask_key(key: str | None) -> str:
    """How ``config show`` tells of the API key: ``set (****abcd)``, never more than its last 4
    characters, and those only for a key of :data:`MASK_TAIL_FROM` characters or more (a
    shorter key would be too much given away by its tail): ``set (****)``."""
    if not key:
        return "not set"
    return f"set (****{key[-4:]})" if len(key) >= MASK_TAIL_FROM else "set (****)"


def show_data(resolved: ResolvedSettings) -> dict[str, dict[str, Any]]:
    """``config show --format json``: each setting's value (JSON types, null if unset) and source."""
    data = {}
    for entry in SETTINGS:
        value = _shown(entry, resolved.values[entry.name])
        data[entry.name] = {
            "value": str(value) if isinstance(value, Path) else value,
            "source": str(resolved.sources[entry.name]),
        }
    return data


def show_rows(resolved: ResolvedSettings) -> list[tuple[str, str, str]]:
    """(name, value, source) for every setting, in registry order, for ``config show``."""
    rows = []
    for entry in SETTINGS:
        value = _shown(entry, resolved.values[entry.name])
        shown = "(not set)" if value is None else _plain(value)
        if value is None and entry.shown_default:
            shown = f"({entry.shown_default})"
        rows.append((entry.name, shown, str(resolved.sources[entry.name])))
    return rows


# ------------------------------------------------------------------------------ helpers


def _shown(entry: Setting, value: Any) -> Any:
    """A value as ``config show`` may print it: a proxy's password masked."""
    if entry.name == "proxy" and isinstance(value, str):
        from .settings import mask_url

        return mask_url(value)
    return value


def _check_template(text: str) -> None:
    try:
        fields = [f for _, f, spec, conv in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc}); write {{{{ and }}}} for braces") from None
    bad = [f for f in fields if f not in OUTPUT_PLACEHOLDERS]
    if bad:
        raise ValueError(
            f"unknown placeholder {{{bad[0]}}}; use "
            + ", ".join(f"{{{p}}}" for p in OUTPUT_PLACEHOLDERS)
        )


def _relative_to(folder: Path, value: object) -> Any:
    if isinstance(value, Path):
        return value if value.is_absolute() else Path(os.path.normpath(folder / value))
    assert isinstance(value, str)
    expanded = os.path.expanduser(value)
    return expanded if os.path.isabs(expanded) else os.path.normpath(folder / expanded)


def _is_secret(key: str) -> bool:
    words = key.lower().replace("-", "_")
    return any(word in words for word in _SECRET_WORDS)


def _keys(table: Mapping[str, Any]) -> list[str]:
    keys = []
    for key, value in table.items():
        keys.append(key)
        if isinstance(value, Mapping):
            keys.extend(_keys(value))
    return keys


def _did_you_mean(key: str) -> str:
    close = difflib.get_close_matches(key.lower().replace("-", "_"), _BY_NAME, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return hint + " (every setting is in config.example.toml)"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _plain(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
