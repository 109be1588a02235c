"""The settings registry: one :class:`Setting` per name, with its kind, default, help, group,
flag (``--max-rows``), file key (``max_rows``) and environment variable
(``BULK_CANCEL_MAX_ROWS``), and how text and TOML values are checked.

The ``run`` command's flags are built from :data:`SETTINGS`; :mod:`~bulk_cancel.config.layers`
merges the values.
"""

from __future__ import annotations

import enum
import math
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..normalize import valid_subaccount

#: Prefix of every setting's environment variable: ``BULK_CANCEL_<NAME>``.
ENV_PREFIX: Final = "BULK_CANCEL_"

#: What ``output`` may hold: filled in per input file when the job runs.
OUTPUT_PLACEHOLDERS: Final = ("job", "date", "time", "input_stem")

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


class ValueKind(enum.Enum):
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


_PATH_KINDS: Final = frozenset({ValueKind.INPUT, ValueKind.OUTPUT, ValueKind.PATH})


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """One run setting: its name is the file key; the flag and the variable derive from it."""

    name: str
    kind: ValueKind
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
        if self.kind is ValueKind.BOOL:
            word = text.strip().lower()
            if word in _TRUE | _FALSE:
                return word in _TRUE
            raise ValueError("must be true or false (1/0, yes/no, on/off)")
        if self.kind is ValueKind.COUNT:
            try:
                return self.check(int(text.strip()))
            except ValueError:
                raise ValueError("must be a whole number, at least 1") from None
        if self.kind in (ValueKind.POSITIVE, ValueKind.SECONDS, ValueKind.SHARE):
            try:
                number = float(text.strip())
            except ValueError:
                raise ValueError(f"must be a number{self._range()}") from None
            return self.check(number)
        return self.check(text)

    def check(self, value: object) -> Any:
        """A value from a TOML file (or parsed text), checked; ValueError says what is wrong."""
        kind = self.kind
        if kind is ValueKind.BOOL:
            if isinstance(value, bool) or (
                self.optional_value is not None and value == self.optional_value
            ):
                return value
            raise ValueError("must be true or false")
        if kind is ValueKind.COUNT:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError("must be a whole number, at least 1")
            if value < 1:
                raise ValueError("must be at least 1")
            return value
        if kind in (ValueKind.POSITIVE, ValueKind.SECONDS, ValueKind.SHARE):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"must be a number{self._range()}")
            number = float(value)
            low_ok = number >= 0 if kind is ValueKind.SECONDS else number > 0
            if not (
                math.isfinite(number) and low_ok and (kind is not ValueKind.SHARE or number <= 1)
            ):
                raise ValueError(f"must be a number{self._range()}")
            return number
        if not isinstance(value, str):
            raise ValueError("must be a string (in quotes)")
        if not value.strip():
            raise ValueError("must not be empty")
        if kind is ValueKind.CHOICE and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}")
        if kind is ValueKind.OUTPUT:
            _check_template(value)
        if self.name == "shard":
            from ..shard import parse_shard

            return str(parse_shard(value))
        if self.name == "subaccount" and not valid_subaccount(value):
            raise ValueError(
                "is not a subaccount id: 3-50 characters of letters, digits and - . _ &"
            )
        if kind in (ValueKind.OUTPUT, ValueKind.PATH):
            return Path(value).expanduser()
        return value

    def _range(self) -> str:
        return {
            ValueKind.POSITIVE: " above 0",
            ValueKind.SECONDS: ", 0 or more",
            ValueKind.SHARE: " above 0 and at most 1, e.g. 0.5",
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
        kind=ValueKind.INPUT,
        group=TARGET_GROUP,
        metavar="PATH",
        help=".csv .tsv .parquet .xlsx .txt, or - for CSV on stdin; in a job, a glob "
        "(incoming/*.csv) takes every matching file",
    ),
    Setting(
        name="output",
        kind=ValueKind.OUTPUT,
        group=TARGET_GROUP,
        metavar="PATH",
        help="results file (.csv .parquet .xlsx); the summary goes to <name>.summary.json and "
        "the ledger to <name>.ledger.sqlite. May hold {job} {date} {time} {input_stem}",
    ),
    Setting(
        name="subaccount",
        in_commands=True,
        kind=ValueKind.TEXT,
        group=INPUT_GROUP,
        metavar="ID",
        help="subaccount for rows without their own subaccount_id column",
    ),
    Setting(
        name="column",
        in_commands=True,
        kind=ValueKind.TEXT,
        group=INPUT_GROUP,
        metavar="NAME",
        shown_default="umid, else message_id / messageId, else batch_id",
        help="the id column",
    ),
    Setting(
        name="subaccount_column",
        in_commands=True,
        kind=ValueKind.TEXT,
        group=INPUT_GROUP,
        metavar="NAME",
        shown_default="subaccount_id / subAccountId",
        help="the per-row subaccount column",
    ),
    Setting(
        name="sheet",
        in_commands=True,
        kind=ValueKind.TEXT,
        group=INPUT_GROUP,
        metavar="NAME",
        shown_default="the first with an id column",
        help="Excel sheet",
    ),
    Setting(
        name="header_row",
        in_commands=True,
        kind=ValueKind.COUNT,
        group=INPUT_GROUP,
        metavar="N",
        shown_default="the first of the first 20 rows that names the id column",
        help="the header's row (CSV/TSV line, sheet row), for a file where the search cannot "
        "tell; rows above it (a title) are skipped",
    ),
    Setting(
        name="encoding",
        in_commands=True,
        kind=ValueKind.TEXT,
        group=INPUT_GROUP,
        metavar="NAME",
        shown_default="UTF-8, UTF-16 by its BOM",
        help="text encoding of CSV/TSV/TXT input",
    ),
    Setting(
        name="max_rows",
        in_commands=True,
        kind=ValueKind.COUNT,
        group=INPUT_GROUP,
        metavar="N",
        shown_default="no limit",
        help="refuse inputs with more rows than this (a guard for destructive jobs)",
    ),
    Setting(
        name="batch_id",
        in_commands=True,
        kind=ValueKind.TEXT,
        group=TARGET_GROUP,
        metavar="UUID",
        help="cancel one whole batch (DELETE .../messages/batch/{batchId}) instead of reading a file",
    ),
    Setting(
        name="product",
        kind=ValueKind.CHOICE,
        group=_API,
        default="chatapps",
        choices=("chatapps", "sms"),
        help="8x8 product; with --region it picks the documented host",
    ),
    Setting(
        name="region",
        kind=ValueKind.CHOICE,
        group=_API,
        default="asia",
        choices=("asia", "us", "eu", "id"),
        help="the region your account is provisioned in; with --product it picks the host",
    ),
    Setting(
        name="base_url",
        in_commands=True,
        kind=ValueKind.TEXT,
        group=_API,
        metavar="URL",
        shown_default="the host of --product in --region: https://chatapps.8x8.com",
        help="the API host, instead of --product and --region (a gateway, the simulator)",
    ),
    Setting(
        name="rate",
        in_commands=True,
        kind=ValueKind.POSITIVE,
        group=_API,
        default=1500.0,
        metavar="N",
        help="requests per second per subaccount, never exceeded in any second "
        "(8x8 allows 1800 unless raised)",
    ),
    Setting(
        name="ip_rate",
        in_commands=True,
        kind=ValueKind.POSITIVE,
        group=_API,
        default=3000.0,
        metavar="N",
        help="requests per second over all subaccounts (8x8's per-IP limit)",
    ),
    Setting(
        name="concurrency",
        in_commands=True,
        kind=ValueKind.COUNT,
        group=_API,
        metavar="N",
        shown_default="sized from rate x latency",
        help="most requests in flight per subaccount",
    ),
    Setting(
        name="timeout",
        in_commands=True,
        kind=ValueKind.POSITIVE,
        group=_API,
        default=30.0,
        metavar="S",
        help="seconds an answer may take once the request is sent; then it counts as lost",
    ),
    Setting(
        name="max_attempts",
        in_commands=True,
        kind=ValueKind.COUNT,
        group=_API,
        default=6,
        metavar="N",
        help="attempts per row on transient failures (429, 5xx, timeouts)",
    ),
    Setting(
        name="max_retry_time",
        in_commands=True,
        kind=ValueKind.POSITIVE,
        group=_API,
        default=120.0,
        metavar="S",
        help="seconds of retrying per row before it is reported failed",
    ),
    Setting(
        name="allow_insecure_http",
        in_commands=True,
        kind=ValueKind.BOOL,
        group=_API,
        default=False,
        help="allow http:// to a non-loopback host (the key would travel unencrypted)",
    ),
    Setting(
        name="proxy",
        kind=ValueKind.TEXT,
        group=_NETWORK,
        metavar="URL",
        shown_default="HTTPS_PROXY / HTTP_PROXY / ALL_PROXY unless NO_PROXY covers the host",
        help="forward proxy, http://[user:password@]host:port; overrides the environment's. "
        "The password is masked wherever the proxy is shown",
        in_commands=True,
    ),
    Setting(
        name="ca_bundle",
        kind=ValueKind.PATH,
        group=_NETWORK,
        metavar="PEM",
        shown_default="the system's CAs, or SSL_CERT_FILE",
        help="CA certificates to trust instead of the system's (a TLS-inspecting proxy's CA); "
        "verification is always on",
        in_commands=True,
    ),
    Setting(
        name="resume",
        kind=ValueKind.BOOL,
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
        kind=ValueKind.BOOL,
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
        kind=ValueKind.SHARE,
        group=_SAFETY,
        default=0.5,
        metavar="SHARE",
        help="stop when more than this share of the first --failure-window answered rows failed",
    ),
    Setting(
        name="failure_window",
        in_commands=True,
        kind=ValueKind.COUNT,
        group=_SAFETY,
        default=1000,
        metavar="N",
        help="how many first answers the failure threshold looks at",
    ),
    Setting(
        name="dry_run",
        kind=ValueKind.BOOL,
        group=_SAFETY,
        default=False,
        help="read, validate and de-duplicate, print the plan, send nothing",
    ),
    Setting(
        name="yes",
        kind=ValueKind.BOOL,
        group=_SAFETY,
        default=False,
        in_files=False,
        help="do not ask for confirmation on a terminal (off a terminal nobody is asked)",
    ),
    Setting(
        name="split",
        kind=ValueKind.BOOL,
        group=_OUTPUT,
        default=False,
        help="also write <name>.errors.csv with the rows worth another look, original columns included",
    ),
    Setting(
        name="metrics_file",
        kind=ValueKind.PATH,
        group=_OUTPUT,
        metavar="PATH",
        help="write Prometheus textfile-collector metrics here",
    ),
    Setting(
        name="job_name",
        kind=ValueKind.TEXT,
        group=_OUTPUT,
        metavar="NAME",
        shown_default="the job file's name, else bulk-cancel",
        help="job label for metrics, logs and {job}",
    ),
    Setting(
        name="log_format",
        kind=ValueKind.CHOICE,
        group=_OUTPUT,
        default="auto",
        choices=("auto", "json", "console"),
        help="log lines on stderr: auto is JSON when stderr is not a terminal",
    ),
    Setting(
        name="archive_dir",
        kind=ValueKind.PATH,
        group=_JOB,
        metavar="DIR",
        help="with a glob input (a drop folder): where each processed file is moved; claimed "
        "files wait in processing/ beside it",
    ),
    Setting(
        name="settle_time",
        kind=ValueKind.SECONDS,
        group=_JOB,
        default=30.0,
        metavar="S",
        help="a dropped file is taken only once unchanged this many seconds (still being copied?)",
    ),
    Setting(
        name="shard",
        in_commands=True,
        kind=ValueKind.TEXT,
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
