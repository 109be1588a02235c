"""The server: route parsing, the checks in order, the answers; served in-process or as a command."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

import orjson

from ..errors import ConfigError
from .faults import FAULTS_BEFORE, Faults
from .state import Fate, SimulatorConfig, SimulatorState, message_fate

if TYPE_CHECKING:
    from aiohttp import web

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

#: How much of each stray request's path the state keeps.
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
        if fault in FAULTS_BEFORE:
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
