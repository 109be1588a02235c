"""What several test modules share: the test key, reproducible umids, a scripted canceller and a
ready-made ledger. Imported as a module (``from helpers import umids``); fixtures live in
conftest.py."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from bulk_cancel.ledger import Ledger
from bulk_cancel.model import Exchange, Kind, Ready, Target

API_KEY = "sk_test_7f3c9a1e5b2d4c6e8a0b"

#: The variables that route traffic through a proxy (either case): the suite runs without them.
PROXY_VARIABLES = frozenset({"https_proxy", "http_proxy", "all_proxy", "no_proxy"})


def umids(n: int, *, seed: int = 0) -> list[str]:
    """*n* distinct, reproducible, lowercase UUIDs."""
    return [str(uuid.UUID(int=(seed << 64) + i + 1, version=4)) for i in range(n)]


class ScriptedCanceller:
    """A Canceller that answers from a script: a function of (target, attempt number)."""

    def __init__(self, answer: Callable[[Target, int], Exchange]) -> None:
        self.answer = answer
        self.calls: list[Target] = []
        self._attempts: dict[Target, int] = {}

    async def cancel(self, target: Target, ready: Ready = None) -> Exchange:
        if ready is not None:
            await ready()
        self.calls.append(target)
        n = self._attempts.get(target, 0) + 1
        self._attempts[target] = n
        return self.answer(target, n)


def make_ledger(path: Path, rows: Sequence[tuple[str, str]]) -> Ledger:
    """A ledger holding (subaccount, umid) rows, ingest finished."""
    ledger = Ledger.create(path, {"settings": {}})
    ledger.add(
        [(i + 2, sub, u, Kind.MESSAGE, None, None, None) for i, (sub, u) in enumerate(rows)],
        "2026-01-01T00:00:00Z",
    )
    ledger.set_meta({"ingest_complete": True})
    ledger.finish_ingest()
    return ledger
