"""One DELETE to 8x8's cancel endpoint, turned into one typed :class:`Exchange`.

The client owns the aiohttp session and knows nothing of files, retries or outcomes: judging an
answer is :mod:`bulk_cancel.policy`'s job. It never raises for one request's failure; transport
errors come back as an ``Exchange`` with ``transport_error`` set.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from .model import Kind, Target

#: The path template of the documented endpoints; each id is percent-encoded as ONE segment.
_MESSAGE_PATH: Final = "/api/v1/subaccounts/{sub}/messages/{id}"
_BATCH_PATH: Final = "/api/v1/subaccounts/{sub}/messages/batch/{id}"

#: Longest error message kept from a body (HTML error pages from proxies can be large).
_MAX_MESSAGE_CHARS: Final = 300


#: Characters ``quote(safe="")`` never encodes, less ``.``: a value made only of these (every
#: canonical umid and most subaccount ids) is its own encoding, found in a quarter of the time.
_PLAIN_SEGMENT: Final = re.compile(r"[A-Za-z0-9_~-]+")


def segment(value: str) -> str:
    """Percent-encode *value* as a single URL path segment: ``/``, ``..``, ``?``, ``#`` cannot escape.

    ``quote`` with ``safe=""`` encodes every reserved character, so the value can never add a
    segment or a query; a lone ``.`` or ``..`` is encoded too, because it would be a dot-segment
    that URL normalisation removes (RFC 3986 §5.2.4).
    """
    if _PLAIN_SEGMENT.fullmatch(value):
        return value
    encoded = quote(value, safe="")
    if encoded in {".", ".."}:
        encoded = encoded.replace(".", "%2E")
    return encoded


def target_path(target: Target) -> str:
    """The request path for *target*, each id encoded as exactly one segment."""
    template = _BATCH_PATH if target.kind is Kind.BATCH else _MESSAGE_PATH
    return template.format(sub=segment(target.subaccount), id=segment(target.id))


@dataclass(frozen=True, slots=True, kw_only=True)
class Exchange:
    """What one HTTP exchange produced, before any judgement."""

    status: int | None = None
    """HTTP status, or ``None`` when no answer arrived."""
    code: int | None = None
    message: str | None = None
    error_id: str | None = None
    cancelled_count: int | None = None
    body_ok: bool = True
    """False when a 200 body could not be read as ``{"cancelledCount": n}``."""
    retry_after: str | None = None
    """The raw ``Retry-After`` header, if any."""
    transport_error: str | None = None
    """The kind of transport failure, e.g. ``timeout`` or ``ServerDisconnectedError``."""
    request_sent: bool = True
    """False only when the request certainly never left (the connection could not be made)."""
    resent: bool = False
    """aiohttp silently sent the DELETE again on a fresh connection: the first may have been applied."""


#: Awaited by the client once per send, with the connection in hand, just before the request is
#: written: the pipeline's rate slot. ``None`` sends at once.
Ready = Callable[[], Awaitable[None]] | None


class Canceller(Protocol):
    """What the pipeline needs of a client; a scripted fake satisfies it in tests.

    *ready* is awaited before each send, aiohttp's silent re-send included, as late as possible:
    once the connection is open, so the time spent opening one falls before the rate slot and
    requests leave when their slots say, not bunched behind a slow connect.
    """

    async def cancel(self, target: Target, ready: Ready = None) -> Exchange: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSettings:
    """How the client talks to the API."""

    base_url: str
    timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    max_connections: int = 64
    user_agent: str = "bulk-cancel"


class _Sends:
    """A per-request client middleware that counts how many times the request was sent.

    aiohttp re-sends an idempotent request (DELETE is one) once, silently, when the connection
    drops before the answer (``ServerDisconnectedError`` / ``ClientOSError``; see
    ``ClientSession._request``, "retry_persistent_connection"; in aiohttp 3.14 this happens on a
    fresh connection too, not only a reused keep-alive one). The first send may have been applied.
    aiohttp calls the middleware chain once per send, so a count above 1 means it was re-sent.

    A middleware rather than ``TraceConfig`` hooks: tracing makes aiohttp build and await a
    signal for every step of every request, which cost 12-35 µs per request on these machines
    (15 % of the whole per-request cost); this costs about 1 µs.
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        self.count += 1
        return await handler(request)


#: The current request's *ready*, for the connector (set per call of :meth:`CancelClient.cancel`).
_READY: ContextVar[Ready] = ContextVar("bulk_cancel_ready", default=None)


class _PacedConnector(aiohttp.TCPConnector):
    """A connector that holds each request, connection in hand, until its rate slot.

    Pacing *before* the request leaves the time to get a connection between the slot and the
    write: when the pool grows (a lane's first second, 180 connections at 1,800/s and 100 ms)
    requests wait 50-100 ms for their connections and then go out together, and a server counting
    arrivals sees more than the limit in one second (measured: up to 1,947 at a 1,791/s pace).
    ``connect`` is aiohttp's documented hook for getting a connection, awaited inline in the
    request's task, so the context variable set by :meth:`CancelClient.cancel` reaches it.
    """

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Any],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature)
    ) -> aiohttp.connector.Connection:
        conn = await super().connect(req, traces, timeout)
        ready = _READY.get()
        if ready is not None:
            try:
                await ready()
            except BaseException:
                conn.release()
                raise
            proto = conn.protocol
            if proto is None or not proto.is_connected():
                # The server closed the idle connection while we waited for the slot (a long
                # Retry-After pause): nothing left yet, so take another rather than write into a
                # closed one, which aiohttp would answer with its silent re-send.
                conn.close()
                conn = await super().connect(req, traces, timeout)
        return conn


class CancelClient:
    """An aiohttp session bound to one base URL and key. Use as an async context manager."""

    def __init__(self, settings: ClientSettings, api_key: str) -> None:
        self._settings = settings
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": settings.user_agent,
        }
        self._base = settings.base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> CancelClient:
        s = self._settings
        connector = _PacedConnector(
            limit=s.max_connections,
            limit_per_host=s.max_connections,
            ssl=ssl.create_default_context(),  # verification stays on, always
            enable_cleanup_closed=False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # No total timeout: it would run while a request waits for its rate slot (up to a
            # Retry-After pause) and end it as if its answer were lost. Getting a connection is
            # bounded by `connect`, the answer by `sock_read`.
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=s.connect_timeout_s,
                sock_connect=s.connect_timeout_s,
                sock_read=s.timeout_s,
            ),
            headers=self._headers,
            cookie_jar=aiohttp.DummyCookieJar(),  # an API client: no cookies to keep or send
            raise_for_status=False,
            auto_decompress=True,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def cancel(self, target: Target, ready: Ready = None) -> Exchange:
        """Send one DELETE for *target* and describe what came back. Never raises for I/O.

        *ready* is awaited before each send with the connection open (see :class:`Canceller`).
        """
        assert self._session is not None, "use CancelClient as an async context manager"
        sends = _Sends()
        token = _READY.set(ready)
        # encoded=True: yarl must not re-quote the path (it would decode %2E back into '.').
        url = URL(self._base + target_path(target), encoded=True)
        try:
            async with self._session.delete(
                url, middlewares=(sends,), allow_redirects=False
            ) as resp:
                body = await resp.read()
                return _exchange(
                    resp.status,
                    body,
                    retry_after=resp.headers.get("Retry-After"),
                    resent=sends.count > 1,
                )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # The connection was never made: the DELETE certainly did not reach the server.
            return Exchange(transport_error=type(exc).__name__, request_sent=False)
        except TimeoutError:
            return Exchange(transport_error="timeout", resent=sends.count > 1)
        except (aiohttp.ClientError, OSError) as exc:
            return Exchange(transport_error=type(exc).__name__, resent=sends.count > 1)
        finally:
            _READY.reset(token)


#: The answers nearly every request gets, built once: an Exchange is immutable, and building
#: one costs about 2 µs, about 1 % of the whole per-request cost.
_COUNTED: Final = {
    (count, resent): Exchange(status=200, cancelled_count=count, resent=resent)
    for count in (0, 1)
    for resent in (False, True)
}


def _exchange(status: int, body: bytes, *, retry_after: str | None, resent: bool) -> Exchange:
    """Read 8x8's answer; never trust a body to be JSON (proxies answer 502 with HTML)."""
    data: Any = None
    if body:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
    if status == 200:
        count = data.get("cancelledCount") if isinstance(data, dict) else None
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            common = _COUNTED.get((count, resent))
            if common is not None:
                return common
            return Exchange(status=status, cancelled_count=count, resent=resent)
        return Exchange(
            status=status,
            body_ok=False,
            message=_snippet(body) or "empty body",
            resent=resent,
        )
    if isinstance(data, dict):
        code = data.get("code")
        message = data.get("message")
        error_id = data.get("errorId")
        return Exchange(
            status=status,
            code=code if isinstance(code, int) and not isinstance(code, bool) else None,
            message=str(message)[:_MAX_MESSAGE_CHARS] if message is not None else None,
            error_id=str(error_id)[:100] if error_id is not None else None,
            retry_after=retry_after,
            resent=resent,
        )
    return Exchange(status=status, message=_snippet(body), retry_after=retry_after, resent=resent)


def _snippet(body: bytes) -> str | None:
    """A short, single-line excerpt of a non-JSON body, for the results' error_message."""
    if not body:
        return None
    text = body[: _MAX_MESSAGE_CHARS * 2].decode("utf-8", "replace")
    return " ".join(text.split())[:_MAX_MESSAGE_CHARS] or None
