"""What the simulated account is (:class:`SimulatorConfig`, :func:`message_fate`) and what the
simulator saw (:class:`SimulatorState`: counts, cancelled ids, sliding rate windows)."""

from __future__ import annotations

import enum
import hashlib
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any, Final, Literal

from .faults import Faults

#: How many recent stray paths the state keeps.
_STRAY_PATHS_KEPT: Final = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatorConfig:
    """How the simulator behaves. Build it once; it never changes while serving."""

    api_keys: frozenset[str] | None = None
    """Keys accepted as ``Authorization: Bearer <key>``; None accepts any non-empty key."""
    forbidden_keys: frozenset[str] = frozenset()
    """Keys answered 403 / 1201."""
    rejected_subaccounts: frozenset[str] = frozenset()
    """Subaccounts answered 400 / 1001, as if they belonged to another account."""
    not_found_ratio: float = 0.0
    """Share of umids that are unknown (404 / 1300), chosen by a stable hash of the umid."""
    already_sent_ratio: float = 0.0
    """Share of umids already sent (200 with 0), the hash band after ``not_found_ratio``."""
    unknown_umids: frozenset[str] = frozenset()
    """umids that are unknown whatever the hash says."""
    sent_umids: frozenset[str] = frozenset()
    """umids already sent whatever the hash says."""
    repeat_cancel: Literal["zero", "not_found"] = "zero"
    """A second cancel of a cancelled umid: 200 with 0, or 404 / 1300 (8x8 does not say which)."""
    batch_size: int = 3
    """Messages a batchId cancels the first time; later cancels of it answer 0."""
    rate_per_s: int | None = 1800
    """Requests accepted per subaccount in any 1 s window (8x8's documented default); None: no limit."""
    ip_rate_per_s: int | None = 3000
    """Requests accepted from all clients together in any 1 s window; None: no limit."""
    latency_s: float = 0.0
    """Wait before answering; concurrent requests overlap."""
    latency_jitter_s: float = 0.0
    """Up to this much longer, drawn evenly for each request: a real API's answers vary."""
    faults: Faults = field(default_factory=Faults)
    seed: int = 0
    """Seed of the fault draws, so a run with faults can be replayed."""
    hang_s: float = 30.0
    """How long a ``hang`` fault holds its answer."""

    def __post_init__(self) -> None:
        for name in ("not_found_ratio", "already_sent_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value}: must be between 0 and 1")
        if self.not_found_ratio + self.already_sent_ratio > 1.0 + 1e-9:
            raise ValueError("not_found_ratio + already_sent_ratio must be 1 or less")
        if self.repeat_cancel not in ("zero", "not_found"):
            raise ValueError(f"repeat_cancel={self.repeat_cancel!r}: 'zero' or 'not_found'")
        for name in ("rate_per_s", "ip_rate_per_s"):
            rate = getattr(self, name)
            if rate is not None and rate < 1:
                raise ValueError(f"{name}={rate}: at least 1, or None for no limit")
        if min(self.batch_size, self.latency_s, self.latency_jitter_s, self.hang_s) < 0:
            raise ValueError(
                "batch_size, latency_s, latency_jitter_s and hang_s cannot be negative"
            )
        # umids compare in lowercase, like the UUIDs they are.
        object.__setattr__(self, "unknown_umids", frozenset(u.lower() for u in self.unknown_umids))
        object.__setattr__(self, "sent_umids", frozenset(u.lower() for u in self.sent_umids))


class Fate(enum.StrEnum):
    """What the simulated account knows of a umid before anyone cancels it."""

    UNKNOWN = "unknown"
    """Never existed: 404 / 1300."""
    SENT = "sent"
    """Already sent: 200 with ``cancelledCount`` 0."""
    SCHEDULED = "scheduled"
    """Waiting to be sent: the first cancel answers 200 with 1."""


def message_fate(config: SimulatorConfig, umid: str) -> Fate:
    """The fate of *umid* under *config*: stable across runs and processes, so tests can predict it.

    The first 32 bits of SHA-256 of the lowercase umid, as a fraction of 2**32, fall in the
    ``not_found_ratio`` band, then the ``already_sent_ratio`` band, or neither.
    """
    u = umid.lower()
    if u in config.unknown_umids:
        return Fate.UNKNOWN
    if u in config.sent_umids:
        return Fate.SENT
    if config.not_found_ratio or config.already_sent_ratio:
        h = int.from_bytes(hashlib.sha256(u.encode()).digest()[:4], "big") / 2**32
        if h < config.not_found_ratio:
            return Fate.UNKNOWN
        if h < config.not_found_ratio + config.already_sent_ratio:
            return Fate.SENT
    return Fate.SCHEDULED


# --------------------------------------------------------------------------------------------
# State


def _deque_of_paths() -> deque[str]:
    return deque(maxlen=_STRAY_PATHS_KEPT)


@dataclass(slots=True, kw_only=True, eq=False)
class SimulatorState:
    """What the simulator saw and did since it started or was reset. Lives in memory.

    Ids are keyed ``"{subaccount}/{umid}"`` and ``"{subaccount}/batch/{batchId}"``, the umid or
    batchId in lowercase: ``key.rsplit("/", 1)[-1]`` is always the id.
    """

    requests: int = 0
    """API requests, stray ones included; ``/_sim/`` admin requests are not counted."""
    first_request_at: float | None = None
    last_request_at: float | None = None
    """Wall-clock times (``time.time()``) of the first and the latest API request's arrival."""
    by_status: dict[int, int] = field(default_factory=dict)
    """Answers sent, by HTTP status (dropped connections are in ``faults``)."""
    faults: dict[str, int] = field(default_factory=dict)
    """Faults served, by kind."""
    throttled: int = 0
    """429 answers: rate limits and ``burst_429`` faults."""
    stray: int = 0
    """Requests that did not match a documented route exactly."""
    stray_paths: deque[str] = field(default_factory=_deque_of_paths)
    """The last few stray requests as ``"METHOD raw-path"``, cut to 200 characters."""
    cancelled: set[str] = field(default_factory=set)
    """Messages cancelled by umid, as ``"sub/umid"``."""
    cancelled_batches: set[str] = field(default_factory=set)
    """Batches cancelled, as ``"sub/batchId"``."""
    requests_per_id: dict[str, int] = field(default_factory=dict)
    """How many times a cancel for each id was applied (reached the message store): above 1
    means the client sent the same cancel again and the API acted on it again."""
    applied_twice: int = 0
    """How many ids had a cancel applied more than once."""
    max_per_s: dict[str, int] = field(default_factory=dict)
    """Per subaccount, the most requests accepted in any sliding 1-second window."""
    max_ip_per_s: int = 0
    """The most requests accepted from all clients in any sliding 1-second window."""
    _windows: dict[str, deque[float]] = field(default_factory=dict, repr=False)
    _ip_window: deque[float] = field(default_factory=deque, repr=False)

    def reset(self) -> None:
        """Forget everything: counters, cancelled messages, rate windows."""
        fresh = SimulatorState()
        for f in fields(self):
            setattr(self, f.name, getattr(fresh, f.name))

    def admit(
        self,
        subaccount: str | None,
        now: float,
        *,
        rate_per_s: int | None,
        ip_rate_per_s: int | None,
    ) -> bool:
        """Whether a request at monotonic time *now* fits the rate limits; if so, count it.

        A sliding log: each window keeps the times of the requests it accepted in the last
        second, so no 1-second window ever holds more than the limit (a fixed window would let
        twice the limit through across a boundary). Refused requests are not logged. The
        longest a log gets is the limit, or the real request rate when there is no limit.
        """
        cutoff = now - 1.0
        ip_window = self._ip_window
        while ip_window and ip_window[0] <= cutoff:
            ip_window.popleft()
        if ip_rate_per_s is not None and len(ip_window) >= ip_rate_per_s:
            return False
        window = None
        if subaccount is not None:
            window = self._windows.get(subaccount)
            if window is None:
                window = self._windows[subaccount] = deque()
            while window and window[0] <= cutoff:
                window.popleft()
            if rate_per_s is not None and len(window) >= rate_per_s:
                return False
            window.append(now)
            if len(window) > self.max_per_s.get(subaccount, 0):
                self.max_per_s[subaccount] = len(window)
        ip_window.append(now)
        if len(ip_window) > self.max_ip_per_s:
            self.max_ip_per_s = len(ip_window)
        return True

    def snapshot(self, *, include_ids: bool = False) -> dict[str, Any]:
        """A JSON-serialisable copy; *include_ids* adds the cancelled ids and per-id counts."""
        snap: dict[str, Any] = {
            "requests": self.requests,
            "first_request_at": self.first_request_at,
            "last_request_at": self.last_request_at,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "faults": dict(sorted(self.faults.items())),
            "throttled": self.throttled,
            "stray": self.stray,
            "stray_paths": list(self.stray_paths),
            "cancelled_count": len(self.cancelled),
            "cancelled_batches_count": len(self.cancelled_batches),
            "applied_twice": self.applied_twice,
            "max_per_s": max(self.max_per_s.values(), default=0),
            "max_per_s_by_subaccount": dict(sorted(self.max_per_s.items())),
            "max_ip_per_s": self.max_ip_per_s,
        }
        if include_ids:
            snap["cancelled"] = sorted(self.cancelled)
            snap["cancelled_batches"] = sorted(self.cancelled_batches)
            snap["requests_per_id"] = dict(self.requests_per_id)
        return snap
