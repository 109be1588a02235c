"""Where each value comes from: the layers (defaults, config file, job file, ``BULK_CANCEL_*``,
flags), their precedence and the :class:`Source` of every value; ``output`` templates;
:class:`~bulk_cancel.settings.RunSettings` from it all, and the flags that repeat a run.
"""

from __future__ import annotations

import difflib
import enum
import os
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ..errors import ConfigError
from .registry import (
    _BY_NAME,
    _PATH_KINDS,
    ENV_PREFIX,
    SETTINGS,
    Setting,
    ValueKind,
    _check_template,
)

if TYPE_CHECKING:
    from ..settings import RunSettings

#: Names the config file (``--config`` wins over it); not a setting itself.
CONFIG_ENV: Final = "BULK_CANCEL_CONFIG"

#: Words that mark a key as a credential: refused in files and BULK_CANCEL_* variables.
_SECRET_WORDS: Final = ("key", "token", "secret", "password", "passwd", "auth", "bearer")


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
        if entry.kind in _PATH_KINDS and not (entry.kind is ValueKind.INPUT and checked == "-"):
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
    from ..settings import base_url_for  # only when resolving: --help need not load it

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
    from ..settings import proxy_from_env

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
    from ..policy import RetryPolicy
    from ..settings import RunSettings, check_base_url, check_ca_bundle, check_proxy
    from ..writers import output_format

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
        from ..ledger import ledger_path

        resume = ledger_path(output).exists()
    shard = None
    if v["shard"] is not None:
        from ..shard import parse_shard

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
        if entry.kind is ValueKind.BOOL:
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


def _shown(entry: Setting, value: Any) -> Any:
    """A value as ``config show`` may print it: a proxy's password masked."""
    if entry.name == "proxy" and isinstance(value, str):
        from ..settings import mask_url

        return mask_url(value)
    return value


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
