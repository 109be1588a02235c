"""Where each run setting comes from: flag > environment > job file > config file > default.

The ``run`` command's argparse parser is the registry of settings: each option's ``dest`` is the
setting's name (the TOML key, and ``BULK_CANCEL_<NAME>`` in the environment), and its ``type``
and ``choices`` validate values from every source alike. The API key is never a setting: it
comes from ``EIGHTX8_API_KEY`` only, and a file that holds one is refused.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from .errors import ConfigError

ENV_PREFIX: Final = "BULK_CANCEL_"
CONFIG_ENV: Final = "BULK_CANCEL_CONFIG"
DEFAULT_CONFIG: Final = Path("~/.config/bulk-cancel/config.toml")

#: Keys a job or config file may hold besides the run settings.
JOB_KEYS: Final = frozenset({"product", "region", "archive_dir"})
#: Settings whose values are paths: relative ones are read from the file's own folder.
PATH_KEYS: Final = frozenset({"input", "output", "metrics_file", "archive_dir"})
#: Not settings: what the command line alone decides.
_NOT_SETTINGS: Final = frozenset({"help", "version", "command", "handler", "job", "config"})
_SECRET_WORDS: Final = ("key", "token", "secret", "password")


@dataclass(frozen=True, slots=True)
class Resolved:
    """The effective settings and where each came from (default, config, job, env, flag)."""

    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)


def setting_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The run settings the parser defines, by name."""
    return {a.dest: a for a in parser._actions if a.dest not in _NOT_SETTINGS and a.option_strings}


def convert(action: argparse.Action, value: object, where: str) -> Any:
    """Check and convert one value from a file or the environment, like argparse would."""
    name = action.dest
    if isinstance(action, argparse._StoreTrueAction):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in {
            "1",
            "true",
            "yes",
            "0",
            "false",
            "no",
        }:
            return value.strip().lower() in {"1", "true", "yes"}
        raise ConfigError(f"{where}: {name} must be true or false, not {value!r}")
    if isinstance(value, bool | dict | list):
        raise ConfigError(f"{where}: {name} must be a single value, not {value!r}")
    text = str(value)
    try:
        converted = action.type(text) if callable(action.type) else text
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {name} = {value!r}: {exc}") from None
    if action.choices is not None and converted not in action.choices:
        raise ConfigError(
            f"{where}: {name} = {value!r}: choose one of {', '.join(map(str, action.choices))}"
        )
    return converted


def read_toml(path: Path, actions: Mapping[str, argparse.Action], *, kind: str) -> dict[str, Any]:
    """A config or job file's settings, checked and converted; paths made absolute."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {kind} file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read this {kind} file ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); see config.example.toml") from None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        # Tables only group settings for people ([api], [safety]...): their keys are flat.
        if isinstance(value, dict):
            flat.update({k: v for k, v in value.items()})
        else:
            flat[key] = value
    values: dict[str, Any] = {}
    for key, value in flat.items():
        where = f"{path}: {key}"
        if any(word in key.lower() for word in _SECRET_WORDS) and key not in actions:
            raise ConfigError(
                f"{path}: {key}: the API key never goes in a file; export EIGHTX8_API_KEY instead"
            )
        if key in JOB_KEYS:
            values[key] = value if key != "archive_dir" else _path(path, value, where)
            continue
        action = actions.get(key)
        if action is None:
            raise ConfigError(
                f"{path}: unknown setting {key!r}; the settings are listed in config.example.toml"
            )
        converted = convert(action, value, str(path))
        if key in PATH_KEYS and key != "input":
            converted = _path(path, converted, where)
        elif key == "input" and converted != "-":
            converted = str(path.parent / str(converted))
        values[key] = converted
    return values


def _path(file: Path, value: object, where: str) -> Path:
    if not isinstance(value, str | Path):
        raise ConfigError(f"{where} must be a path")
    p = Path(value).expanduser()
    return p if p.is_absolute() else file.parent / p


def from_environment(
    env: Mapping[str, str], actions: Mapping[str, argparse.Action]
) -> dict[str, Any]:
    """``BULK_CANCEL_<NAME>`` variables, checked like flags."""
    values: dict[str, Any] = {}
    for name, action in actions.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = convert(action, raw, f"environment {ENV_PREFIX}{name.upper()}")
    return values


def config_file(flag: Path | None, env: Mapping[str, str]) -> Path | None:
    """The config file to read: --config, else $BULK_CANCEL_CONFIG, else the default if present."""
    if flag is not None:
        return flag
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    default = DEFAULT_CONFIG.expanduser()
    return default if default.is_file() else None


def resolve(
    *,
    defaults: Mapping[str, Any],
    flags: Mapping[str, Any],
    env: Mapping[str, Any],
    job: Mapping[str, Any],
    config: Mapping[str, Any],
) -> Resolved:
    """Merge the layers: flag > environment > job file > config file > default."""
    values = dict(defaults)
    sources = dict.fromkeys(defaults, "default")
    for name, layer in (("config", config), ("job", job), ("env", env), ("flag", flags)):
        for key, value in layer.items():
            values[key] = value
            sources[key] = name
    return Resolved(values, sources)


def render_output(template: Path, *, job: str, input_path: str | None, now: datetime) -> Path:
    """Fill ``{job}``, ``{date}``, ``{time}`` and ``{input_stem}`` in an output path."""
    stem = Path(input_path).stem if input_path and input_path != "-" else "stdin"
    try:
        return Path(
            str(template).format(
                job=job, date=now.strftime("%Y-%m-%d"), time=now.strftime("%H%M%S"), input_stem=stem
            )
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"output {template}: unknown placeholder {exc}; use {{job}}, {{date}}, {{time}}, {{input_stem}}"
        ) from None


def environment() -> dict[str, str]:
    """The process environment (the one place config reads it from)."""
    return dict(os.environ)
