"""Logging: JSON lines off a TTY, stable event names, and the key redacted everywhere."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
import structlog
from helpers import API_KEY

from bulk_cancel import logs

Capture = Callable[..., io.StringIO]


@pytest.fixture
def capture() -> Capture:
    """`logs.configure` (the key as its secret) into a fresh stream, which it returns.

    These tests are about that configuration itself, so they render real lines; conftest puts
    structlog's defaults back after each test.
    """

    def configure(**kw: Any) -> io.StringIO:
        stream = io.StringIO()
        logs.configure(secrets=[API_KEY], stream=stream, **kw)
        return stream

    return configure


def test_json_lines_when_not_a_tty(capture: Capture) -> None:
    """Off a terminal every event is one JSON object with its dotted name and level."""
    stream = capture()
    structlog.get_logger().info("run.started", rate_per_s=1500)
    event = json.loads(stream.getvalue())
    assert (
        event["event"] == "run.started" and event["level"] == "info" and event["rate_per_s"] == 1500
    )
    assert "timestamp" in event


def test_key_is_redacted_in_values_nested_values_and_exceptions(capture: Capture) -> None:
    """The key never reaches a log line, wherever it hides in an event."""
    stream = capture(level="debug")
    log = structlog.get_logger()
    log.debug("x.debug", header=f"Bearer {API_KEY}")
    log.info("x.nested", data={"list": [API_KEY, ("a", API_KEY)]})
    try:
        raise RuntimeError(f"failed with {API_KEY}")
    except RuntimeError:
        log.exception("x.failed")
    text = stream.getvalue()
    assert API_KEY not in text
    assert text.count(logs.REDACTED) >= 4


def test_console_renderer_on_request(capture: Capture) -> None:
    """json=False renders for people (no JSON), still without the key."""
    stream = capture(json=False)
    structlog.get_logger().warning("settings.warning", message=f"key {API_KEY}")
    assert "settings.warning" in stream.getvalue()
    assert API_KEY not in stream.getvalue()
    assert not stream.getvalue().startswith("{")


def test_a_json_event_without_structlog_has_the_shape_of_its_lines() -> None:
    """`json_event` (errors before logging is set up) writes one line like the JSON renderer's."""
    stream = io.StringIO()
    logs.json_event(
        {"event": "run.error", "message": "bad", "exit_code": 2}, level="error", stream=stream
    )
    (line,) = stream.getvalue().splitlines()
    event = json.loads(line)
    assert (event["event"], event["level"], event["exit_code"]) == ("run.error", "error", 2)
    assert event["timestamp"].endswith("Z")
