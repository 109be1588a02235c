"""A local stand-in for 8x8's cancel endpoints, with rate limits and faults.

The demo, the test-suite, the benchmark and users' own rehearsals run against it, so it is
product code: ``bulk-cancel simulate`` serves it, :func:`running_simulator` starts it in-process.

It answers exactly the two documented routes (``/work/shared/api/REFERENCE.md``)::

    DELETE /api/v1/subaccounts/{subAccountId}/messages/{umid}
    DELETE /api/v1/subaccounts/{subAccountId}/messages/batch/{batchId}

The path is split on ``/`` *before* percent-decoding, so an encoded ``%2F`` stays inside its
segment. Anything else that reaches it (another method, a query string, a dot-segment, an extra
or empty segment) is a *stray* request: counted in :class:`SimulatorState`, answered 404. Tests
use that count to prove that hostile ids never steer a request elsewhere.

Checks run in this order, like a gateway in front of an application:

1. route (stray → 404, code 1404);
2. rate limits, per subaccount and global, as a sliding 1-second window (→ 429, ``Retry-After: 1``);
3. a fault drawn for this request, if any (:class:`Faults`), then ``latency_s`` (plus up to
   ``latency_jitter_s``, drawn evenly per request);
4. ``Authorization: Bearer`` (→ 401 / 1200, or 403 / 1201), subaccount (→ 400 / 1001),
   umid or batchId (→ 400 / 1000);
5. the message: unknown (→ 404 / 1300), already sent (→ 200 ``{"cancelledCount":0}``) or
   scheduled (→ 200 ``{"cancelledCount":1}``, and it is now cancelled). Which one is a stable
   function of the umid: :func:`message_fate`. A second cancel answers per
   ``SimulatorConfig.repeat_cancel``, because 8x8 does not document it. A batchId cancels
   ``batch_size`` messages the first time, then 0.

Codes 1404 (stray) and 1429 (rate limit) are the simulator's own: 8x8 documents no code for
either, so a client can only classify them by status, as it would have to with the real API.

aiohttp is imported only when a server is built, so that ``bulk-cancel --help`` stays quick.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import gc
import hashlib
import os
import random
import re
import signal
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import unquote

import orjson

from .errors import ConfigError

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "Fate",
    "Faults",
    "RunningSimulator",
    "SimulatorConfig",
    "SimulatorState",
    "add_arguments",
    "build_app",
    "config_from_args",
    "message_fate",
    "parse_faults",
    "running_simulator",
    "serve",
]

#: The documented subaccount pattern (REFERENCE.md, "Identifiers").
_SUBACCOUNT_RE: Final = re.compile(r"[A-Za-z0-9\-._&]{3,50}")
#: A UUID in 8-4-4-4-12 hex, either case (the API answers 400 / 1000 otherwise).
_UUID_RE: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)

_CANCELLED_0: Final = b'{"cancelledCount":0}'
_CANCELLED_1: Final = b'{"cancelledCount":1}'
_JSON: Final = "application/json"
_HTML: Final = "text/html"

#: How many recent stray paths the state keeps, and how much of each.
_STRAY_PATHS_KEPT: Final = 20
_STRAY_PATH_CHARS: Final = 200

#: How long teardown waits for in-flight handlers (a ``hang`` sleeps far longer) before cancelling.
_SHUTDOWN_TIMEOUT_S: Final = 0.25

_HTML_500: Final = (
    b"<html><head><title>500 Internal Server Error</title></head>"
    b"<body><h1>500 Internal Server Error</h1></body></html>"
)
_HTML_502: Final = (
    b"<html><head><title>502 Bad Gateway</title></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    """How often each kind of failure happens: a probability per request, all 0 by default.

    One draw per request picks at most one fault, so the probabilities must add up to 1 or less.
    "Applied" faults cancel the message first and then lose or garble the answer: the cases a
    client cannot tell apart from a failure that changed nothing.
    """

    http_500: float = 0.0
    """500 with an HTML body; nothing applied."""
    http_502: float = 0.0
    """502 with an HTML body (a proxy's); nothing applied."""
    http_503: float = 0.0
    """503 with an empty body; nothing applied."""
    http_500_applied: float = 0.0
    """The cancel IS applied, then 500 JSON code 2000: an answer that lies about failure."""
    drop_before: float = 0.0
    """The connection closes without an answer; nothing applied."""
    drop_after: float = 0.0
    """The cancel is applied, then the connection closes without an answer."""
    hang: float = 0.0
    """The cancel is applied, then the answer waits ``SimulatorConfig.hang_s``."""
    bad_json: float = 0.0
    """The cancel is applied, then the body is cut short (``{"cancelledCo``)."""
    burst_429: float = 0.0
    """429 with ``Retry-After: 1`` whatever the rate; nothing applied."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0.0 <= value <= 1.0:  # also refuses NaN
                raise ValueError(f"fault {f.name}={value}: a probability must be between 0 and 1")
        if self.total > 1.0 + 1e-9:
            raise ValueError(
                f"fault probabilities add up to {self.total:g}; one draw per request needs 1 or less"
            )

    @property
    def total(self) -> float:
        """The probability that a request meets some fault."""
        return float(sum(getattr(self, f.name) for f in fields(self)))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every fault kind, in declaration order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def mix(cls, p: float, *, exclude: Iterable[str] = ()) -> Faults:
        """Every fault kind (less *exclude*) in equal shares, adding up to probability *p*."""
        skip = set(exclude)
        unknown = skip - set(cls.names())
        if unknown:
            raise ValueError(f"unknown fault(s) {', '.join(sorted(unknown))}")
        kinds = [name for name in cls.names() if name not in skip]
        if not kinds:
            return cls()
        share = p / len(kinds)
        return cls(**dict.fromkeys(kinds, share))

    def spec(self) -> str:
        """The ``--faults`` text that :func:`parse_faults` turns back into these faults."""
        parts = [
            f"{f.name}={getattr(self, f.name):g}" for f in fields(self) if getattr(self, f.name)
        ]
        return ",".join(parts) or "none"


#: Faults that replace the answer before anything is applied.
_FAULTS_BEFORE: Final = frozenset({"http_500", "http_502", "http_503", "drop_before", "burst_429"})


def parse_faults(spec: str) -> Faults:
    """``"http_500=0.05,drop_after=0.01"`` → :class:`Faults`. ``""`` or ``"none"`` means no faults.

    Raises ValueError naming the problem: an unknown fault, a missing ``=``, a value that is not
    a number in [0, 1], a fault given twice, or probabilities adding up to more than 1.
    """
    text = spec.strip()
    if text.lower() in {"", "none"}:
        return Faults()
    known = Faults.names()
    values: dict[str, float] = {}
    for item in text.split(","):
        name, sep, raw = (part.strip() for part in item.partition("="))
        if not sep or not name:
            raise ValueError(f"expected NAME=PROBABILITY, got {item.strip()!r}")
        if name not in known:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(known)}")
        if name in values:
            raise ValueError(f"fault {name} is given twice")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"fault {name}: {raw!r} is not a number") from None
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"fault {name}={raw}: a probability must be between 0 and 1")
        values[name] = value
    return Faults(**values)


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


# --------------------------------------------------------------------------------------------
# The server


def _parse_route(raw_path: str) -> tuple[str, str, bool] | None:
    """``(subaccount, id, is_batch)`` when *raw_path* is exactly a documented route, else None.

    Split first, then percent-decode each segment: ``a%2Fb`` is one segment holding ``a/b``.
    Literal segments must match byte for byte; an empty segment, a raw ``.`` or ``..`` (which a
    proxy would normalise away), a query or a fragment makes the request stray.
    """
    if "?" in raw_path or "#" in raw_path:
        return None
    parts = raw_path.split("/")
    n = len(parts)
    if n == 7:
        is_batch = False
    elif n == 8 and parts[6] == "batch":
        is_batch = True
    else:
        return None
    if parts[0] or parts[1] != "api" or parts[2] != "v1" or parts[3] != "subaccounts":
        return None
    if parts[5] != "messages":
        return None
    sub, ident = parts[4], parts[-1]
    if sub in {"", ".", ".."} or ident in {"", ".", ".."}:
        return None
    return unquote(sub), unquote(ident), is_batch


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _envelope(code: int, message: str) -> bytes:
    """8x8's error body; a fresh ``errorId`` each time, as the real API does."""
    return orjson.dumps(
        {"code": code, "message": message, "errorId": str(uuid.uuid4()), "timestamp": _now_iso()}
    )


class _Simulator:
    """The request handler: one per application, sharing a :class:`SimulatorState`."""

    def __init__(
        self, config: SimulatorConfig, state: SimulatorState, response: type[web.Response]
    ) -> None:
        self.config = config
        self.state = state
        self._response = response
        self._seed_draws()
        # Cumulative bands for the single fault draw: [(upper bound, fault), ...].
        bands: list[tuple[float, str]] = []
        total = 0.0
        for name in Faults.names():
            p = getattr(config.faults, name)
            if p > 0:
                total += p
                bands.append((total, name))
        self._fault_bands = bands

    def reset(self) -> None:
        """Forget the state and replay the same fault draws from the start."""
        self.state.reset()
        self._seed_draws()

    def _seed_draws(self) -> None:
        seed = self.config.seed
        self._rng = random.Random(seed)
        # Its own draws: a jittered latency leaves a seeded run's faults as they were.
        self._latency_rng = random.Random(f"{seed}:latency")

    def _answer(
        self,
        status: int,
        body: bytes,
        content_type: str | None = _JSON,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        by_status = self.state.by_status
        by_status[status] = by_status.get(status, 0) + 1
        return self._response(status=status, body=body, content_type=content_type, headers=headers)

    def _latency(self) -> float:
        """How long this answer waits: ``latency_s`` plus an even draw of ``latency_jitter_s``."""
        jitter = self.config.latency_jitter_s
        return self.config.latency_s + (self._latency_rng.random() * jitter if jitter else 0.0)

    def _draw_fault(self) -> str | None:
        u = self._rng.random()
        for upper, name in self._fault_bands:
            if u < upper:
                return name
        return None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        raw_path = request.raw_path
        method = request.method
        if raw_path.startswith("/_sim/"):
            admin = self._admin(method, raw_path, request)
            if admin is not None:
                return admin
        state = self.state
        state.requests += 1
        state.last_request_at = arrived = time.time()
        if state.first_request_at is None:
            state.first_request_at = arrived
        route = _parse_route(raw_path) if method == "DELETE" else None
        if route is None:
            state.stray += 1
            state.stray_paths.append(f"{method} {raw_path}"[:_STRAY_PATH_CHARS])
            return self._answer(
                404, _envelope(1404, "No such endpoint: the simulator counted a stray request.")
            )
        sub, ident, is_batch = route
        config = self.config
        valid_sub = _SUBACCOUNT_RE.fullmatch(sub) is not None
        if not state.admit(
            sub if valid_sub else None,
            time.monotonic(),
            rate_per_s=config.rate_per_s,
            ip_rate_per_s=config.ip_rate_per_s,
        ):
            return self._too_many()

        fault = self._draw_fault() if self._fault_bands else None
        if fault is not None:
            state.faults[fault] = state.faults.get(fault, 0) + 1
        latency = self._latency()
        if latency:
            await asyncio.sleep(latency)
        if fault in _FAULTS_BEFORE:
            return self._fault_before(fault, request)

        status, body = self._decide(request, sub, valid_sub, ident, is_batch)
        if fault is None:
            return self._answer(status, body)
        if fault == "http_500_applied":
            return self._answer(500, _envelope(2000, "Internal server error"))
        if fault == "drop_after":
            return self._drop(request)
        if fault == "bad_json":
            return self._answer(status, body[: max(1, len(body) * 2 // 3)])
        # hang: the cancel is applied; the answer comes long after the client gave up.
        await asyncio.sleep(config.hang_s)
        return self._answer(status, body)

    def _too_many(self) -> web.Response:
        self.state.throttled += 1
        # 8x8 sends Retry-After in whole seconds; with a 1-second window, 1 is always enough.
        return self._answer(
            429, _envelope(1429, "Too many requests."), headers={"Retry-After": "1"}
        )

    def _fault_before(self, fault: str | None, request: web.BaseRequest) -> web.Response:
        if fault == "http_500":
            return self._answer(500, _HTML_500, _HTML)
        if fault == "http_502":
            return self._answer(502, _HTML_502, _HTML)
        if fault == "http_503":
            return self._answer(503, b"", None)
        if fault == "burst_429":
            return self._too_many()
        return self._drop(request)

    def _drop(self, request: web.BaseRequest) -> web.Response:
        """Close the connection without an answer; the client sees the connection close.

        A plain close (FIN, not RST) with no byte of a response written. The response returned
        here is never sent: aiohttp's ``finish_response`` fails to write it to the closing
        transport, takes that as a client disconnect, and ends the connection quietly.
        """
        if request.transport is not None:
            request.transport.close()
        return self._response(status=204)

    def _decide(
        self, request: web.BaseRequest, sub: str, valid_sub: bool, ident: str, is_batch: bool
    ) -> tuple[int, bytes]:
        """Auth, ids, then the message store: the answer the API would give."""
        config = self.config
        auth = request.headers.get("Authorization", "")
        scheme, _, key = auth.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return 401, _envelope(1200, "Request was not authenticated properly")
        if key in config.forbidden_keys:
            return 403, _envelope(1201, "Access forbidden.")
        if config.api_keys is not None and key not in config.api_keys:
            return 401, _envelope(1200, "Request was not authenticated properly")
        if not valid_sub or sub in config.rejected_subaccounts:
            return 400, _envelope(1001, "Provided subAccountId doesn't belongs to your account")
        if _UUID_RE.fullmatch(ident) is None:
            return 400, _envelope(1000, "Invalid batchId." if is_batch else "Invalid umid.")
        ident = ident.lower()

        state = self.state
        key_id = f"{sub}/batch/{ident}" if is_batch else f"{sub}/{ident}"
        times = state.requests_per_id.get(key_id, 0) + 1
        state.requests_per_id[key_id] = times
        if times == 2:
            state.applied_twice += 1

        if is_batch:
            batch = f"{sub}/{ident}"
            if batch in state.cancelled_batches:
                return 200, _CANCELLED_0
            state.cancelled_batches.add(batch)
            return 200, orjson.dumps({"cancelledCount": config.batch_size})

        if key_id in state.cancelled:
            if config.repeat_cancel == "zero":
                return 200, _CANCELLED_0
            return 404, _envelope(1300, "Message not found.")
        fate = message_fate(config, ident)
        if fate is Fate.UNKNOWN:
            return 404, _envelope(1300, "Message not found.")
        if fate is Fate.SENT:
            return 200, _CANCELLED_0
        state.cancelled.add(key_id)
        return 200, _CANCELLED_1

    def _admin(self, method: str, raw_path: str, request: web.BaseRequest) -> web.Response | None:
        """``GET /_sim/state[?ids=1]`` and ``POST /_sim/reset``; None for anything else."""
        path, _, _ = raw_path.partition("?")
        if method == "GET" and path == "/_sim/state":
            ids = request.query.get("ids", "") in {"1", "true", "yes"}
            body = orjson.dumps(self.state.snapshot(include_ids=ids))
            return self._response(status=200, body=body, content_type=_JSON)
        if method == "POST" and raw_path == "/_sim/reset":
            self.reset()
            return self._response(status=200, body=b'{"reset":true}', content_type=_JSON)
        return None


def build_app(config: SimulatorConfig, state: SimulatorState | None = None) -> web.Application:
    """The simulator as an aiohttp application, to mount or serve your own way.

    *state* records what it does (a new one if None). :func:`running_simulator` serves the same
    handler through aiohttp's low-level server instead, which skips routing and middlewares.
    """
    from aiohttp import web

    sim = _Simulator(config, state if state is not None else SimulatorState(), web.Response)
    app = web.Application()
    # One catch-all route: the handler parses the raw path itself. [\s\S], not '.', so that a
    # decoded newline still reaches it and is counted as stray instead of aiohttp's own 404.
    app.router.add_route("*", r"/{path:[\s\S]*}", sim.handle)
    return app


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningSimulator:
    """A simulator serving on a real socket."""

    url: str
    """``http://HOST:PORT``, the base URL to give the client."""
    state: SimulatorState
    config: SimulatorConfig


@contextlib.asynccontextmanager
async def running_simulator(
    config: SimulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    state: SimulatorState | None = None,
) -> AsyncIterator[RunningSimulator]:
    """Serve the simulator on *host*:*port* (0: any free port) for the duration of the block.

    Teardown closes every connection; handlers still running (a ``hang``) are cancelled after
    a quarter of a second.

    Raises :class:`~bulk_cancel.errors.ConfigError` when the address cannot be bound.
    """
    from aiohttp import web

    config = config if config is not None else SimulatorConfig()
    state = state if state is not None else SimulatorState()
    sim = _Simulator(config, state, web.Response)
    # aiohttp's low-level server: the handler parses raw paths itself, so routing and the
    # application's middleware chain would only cost time (about 15% of the server's CPU).
    # No access log: this is the benchmark's server too.
    server = web.Server(sim.handle, access_log=None)
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"the simulator cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        bound_port = runner.addresses[0][1]
        shown_host = f"[{host}]" if ":" in host else host
        yield RunningSimulator(url=f"http://{shown_host}:{bound_port}", state=state, config=config)
    finally:
        await runner.cleanup()


def _print_flushed(line: str) -> None:
    print(line, flush=True)


async def serve(
    config: SimulatorConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8088,
    announce: Callable[[str], object] = _print_flushed,
    state_file: Path | None = None,
) -> None:
    """Serve until cancelled, SIGINT or SIGTERM; then write *state_file* if given.

    Announces exactly one line, ``bulk-cancel simulator listening on http://HOST:PORT`` (the
    real port when *port* is 0), so that a parent process can read the URL from stdout. The
    state file holds ``snapshot(include_ids=True)`` and is written even when cancelled.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[tuple[signal.Signals, Any]] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
            continue
        installed.append((sig, previous))
    state = SimulatorState()
    try:
        async with running_simulator(config, host=host, port=port, state=state) as sim:
            announce(f"bulk-cancel simulator listening on {sim.url}")
            # A full garbage collection walks every object alive, imports included, and stalls
            # the loop for tens of milliseconds: requests arriving meanwhile are counted together,
            # as a burst the clients never sent. Freezing what exists now keeps collections small.
            gc.freeze()
            await stop.wait()
    finally:
        gc.unfreeze()
        for sig, previous in installed:
            loop.remove_signal_handler(sig)
            if previous is not None:
                signal.signal(sig, previous)
        if state_file is not None:
            _write_atomically(state_file, orjson.dumps(state.snapshot(include_ids=True)))


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Command line (``bulk-cancel simulate``; the cli module owns the parser and the event loop)

_EXAMPLE: Final = """\
example:
  bulk-cancel simulate --port 8088 --rate 400 --latency-ms 20 --faults http_503=0.02,drop_after=0.01
"""

_FAULTS_HELP: Final = (
    "faults as NAME=PROBABILITY,... (one draw per request, total at most 1): "
    "http_500, http_502 (HTML bodies), http_503 (empty body), drop_before (connection closed, "
    "nothing cancelled), burst_429 (429 whatever the rate); and, after the cancel IS applied: "
    "http_500_applied (500 code 2000), drop_after (connection closed), hang (answer held "
    "--hang-s), bad_json (200 body cut short)"
)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _rate(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _port(text: str) -> int:
    value = _rate(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port")
    return value


def _faults(text: str) -> Faults:
    try:
        return parse_faults(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` flags to *parser*; :func:`config_from_args` reads them back."""
    if parser.description is None:
        parser.description = (
            "Serve a local stand-in of 8x8's cancel endpoints, with rate limits and faults."
        )
    if parser.epilog is None:
        parser.epilog = _EXAMPLE
    server = parser.add_argument_group("server")
    server.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (keep it loopback)"
    )
    server.add_argument(
        "--port", type=_port, default=8088, help="TCP port to listen on; 0 picks a free one"
    )
    server.add_argument(
        "--latency-ms",
        type=_non_negative,
        default=0.0,
        metavar="MS",
        help="wait this long before each answer; concurrent requests overlap",
    )
    server.add_argument(
        "--latency-jitter-ms",
        type=_non_negative,
        default=0.0,
        metavar="MS",
        help="and up to this much longer, drawn evenly per answer (a real API's answers vary)",
    )
    server.add_argument(
        "--state-file",
        type=Path,
        metavar="PATH",
        help="on exit, write what the simulator saw (counts, cancelled ids) to this JSON file",
    )

    answers = parser.add_argument_group("answers")
    answers.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help="accept only this key (repeatable); without it any non-empty key is accepted",
    )
    answers.add_argument(
        "--rejected-subaccount",
        action="append",
        metavar="ID",
        help="answer 400 / 1001 for this subaccount (repeatable)",
    )
    answers.add_argument(
        "--not-found-ratio",
        type=_fraction,
        default=0.0,
        metavar="P",
        help="share of umids that are unknown (404 / 1300), fixed per umid by a hash",
    )
    answers.add_argument(
        "--already-sent-ratio",
        type=_fraction,
        default=0.0,
        metavar="P",
        help="share of umids already sent (200 with cancelledCount 0), fixed per umid by a hash",
    )
    answers.add_argument(
        "--repeat-cancel",
        choices=("zero", "not_found"),
        default="zero",
        help="answer to a second cancel of the same umid: 200 with 0, or 404 / 1300 "
        "(8x8 does not document which)",
    )
    answers.add_argument(
        "--batch-size",
        type=_rate,
        default=3,
        metavar="N",
        help="messages a batchId cancels the first time",
    )

    limits = parser.add_argument_group("rate limits and faults")
    limits.add_argument(
        "--rate",
        type=_rate,
        default=1800,
        metavar="N",
        help="requests per second per subaccount before 429 (8x8's default); 0: no limit",
    )
    limits.add_argument(
        "--ip-rate",
        type=_rate,
        default=3000,
        metavar="N",
        help="requests per second from all clients before 429 (8x8's per-IP default); 0: no limit",
    )
    limits.add_argument("--faults", type=_faults, default="none", metavar="SPEC", help=_FAULTS_HELP)
    limits.add_argument(
        "--seed", type=int, default=0, help="seed of the fault draws (same seed, same faults)"
    )
    limits.add_argument(
        "--hang-s",
        type=_non_negative,
        default=30.0,
        metavar="S",
        help="how long a hang fault holds its answer; make it longer than the client's timeout",
    )


def config_from_args(ns: argparse.Namespace) -> SimulatorConfig:
    """The :class:`SimulatorConfig` the ``simulate`` flags describe.

    Raises :class:`~bulk_cancel.errors.ConfigError` for settings that clash (ratios adding up to
    more than 1).
    """
    try:
        return SimulatorConfig(
            api_keys=frozenset(ns.api_key) if ns.api_key else None,
            rejected_subaccounts=frozenset(ns.rejected_subaccount or ()),
            not_found_ratio=ns.not_found_ratio,
            already_sent_ratio=ns.already_sent_ratio,
            repeat_cancel=ns.repeat_cancel,
            batch_size=ns.batch_size,
            rate_per_s=ns.rate or None,
            ip_rate_per_s=ns.ip_rate or None,
            latency_s=ns.latency_ms / 1000,
            latency_jitter_s=ns.latency_jitter_ms / 1000,
            faults=ns.faults,
            seed=ns.seed,
            hang_s=ns.hang_s,
        )
    except ValueError as exc:
        raise ConfigError(f"simulate: {exc}") from None
