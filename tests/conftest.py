"""Fixtures every test module gets: no proxy from the environment, structlog's defaults after
each test, and a ledger path. Shared helpers (the key, umids, a scripted canceller) are in
helpers.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from helpers import PROXY_VARIABLES


@pytest.fixture(autouse=True)
def _structlog_defaults_after_each_test() -> Iterator[None]:
    """A test that configures logging (through the CLI, or `logs.configure` itself) leaves no
    configuration behind: the next test starts from structlog's defaults. Tests that check
    events use `structlog.testing.capture_logs`."""
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests talk to 127.0.0.1 directly unless they set a proxy themselves."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "results.ledger.sqlite"
