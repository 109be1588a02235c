"""Logging set-up, done once at the edge (the CLI): JSON lines off a TTY, a console on one.

Event names are stable and dotted (``run.started``, ``ingest.done``, ``run.progress``,
``run.finished``); data goes in keys. A processor redacts the API key from every event, whatever
level or field it hides in.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
import structlog

REDACTED = "[REDACTED]"


class RedactSecrets:
    """A structlog processor replacing each secret, wherever it appears in an event, by ``[REDACTED]``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Short strings would redact innocent text; real keys are long.
        self._secrets = tuple(s for s in secrets if s and len(s) >= 4)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._clean(v) for v in value)
        if isinstance(value, BaseException):
            return self._clean(repr(value))
        return value

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if not self._secrets:
            return event
        return {k: self._clean(v) for k, v in event.items()}


def _orjson_dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def configure(
    *,
    secrets: Iterable[str] = (),
    json: bool | None = None,
    level: str = "info",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for this process. *json* None means: JSON unless *stream* is a TTY."""
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            RedactSecrets(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def json_event(fields: dict[str, Any], *, level: str, stream: TextIO | None = None) -> None:
    """One event as a JSON line, in the shape :func:`configure`'s JSON lines have, without
    structlog (an error can come before logging is configured). No key is in it: callers build
    it from error messages, which never hold the key."""
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    record = {**fields, "level": level, "timestamp": stamp}
    print(_orjson_dumps(record), file=stream or sys.stderr)
