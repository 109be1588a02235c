"""bulk-cancel: cancel scheduled 8x8 messages in bulk.

The library face, for notebooks and scripts (the ``bulk-cancel`` command runs on the same)::

    import bulk_cancel
    results = bulk_cancel.cancel(df, subaccount="acme_hq")               # blocking
    results = await bulk_cancel.cancel_async(ids, subaccount="acme_hq")  # in a running loop

Names load on first use, so ``import bulk_cancel`` (and ``bulk-cancel --help``) imports neither
pandas nor aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BulkCancelError",
    "ConfigError",
    "InputError",
    "Interrupted",
    "LedgerError",
    "NetworkError",
    "Outcome",
    "RunStopped",
    "StopReason",
    "Summary",
    "UsageError",
    "__version__",
    "cancel",
    "cancel_async",
]

if TYPE_CHECKING:
    from .api import cancel, cancel_async
    from .errors import (
        AuthError,
        BulkCancelError,
        ConfigError,
        InputError,
        Interrupted,
        LedgerError,
        NetworkError,
        RunStopped,
        UsageError,
    )
    from .model import Outcome, Summary
    from .pipeline import StopReason

_WHERE = {
    "cancel": "api",
    "cancel_async": "api",
    "Outcome": "model",
    "Summary": "model",
    "StopReason": "pipeline",
    **dict.fromkeys(
        (
            "AuthError",
            "BulkCancelError",
            "ConfigError",
            "InputError",
            "Interrupted",
            "LedgerError",
            "NetworkError",
            "RunStopped",
            "UsageError",
        ),
        "errors",
    ),
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'bulk_cancel' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
