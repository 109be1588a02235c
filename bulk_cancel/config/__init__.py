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

Importing this package is cheap (no HTTP client, no pandas): ``bulk-cancel --help`` builds its
flags from it. Two rooms: :mod:`~bulk_cancel.config.registry` (the settings and how their values
are checked) and :mod:`~bulk_cancel.config.layers` (files, environment, precedence, sources, and
what is built from them); this package exports the names listed in ``__all__``.
"""

from __future__ import annotations

from .layers import (
    CONFIG_ENV,
    MASK_TAIL_FROM,
    Layer,
    ResolvedSettings,
    Source,
    command_flags,
    default_config_file,
    has_placeholders,
    load_file,
    mask_key,
    read_env,
    render_output,
    resolve,
    show_data,
    show_rows,
    to_run_settings,
)
from .registry import (
    ENV_PREFIX,
    INPUT_GROUP,
    OUTPUT_PLACEHOLDERS,
    SETTINGS,
    TARGET_GROUP,
    Setting,
    ValueKind,
    setting,
)

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "INPUT_GROUP",
    "MASK_TAIL_FROM",
    "OUTPUT_PLACEHOLDERS",
    "SETTINGS",
    "TARGET_GROUP",
    "Layer",
    "ResolvedSettings",
    "Setting",
    "Source",
    "ValueKind",
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
