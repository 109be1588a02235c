"""One DELETE to 8x8's cancel endpoint, turned into one typed :class:`Exchange`.

The client owns the HTTP connections and knows nothing of files, retries or outcomes: judging an
answer is :mod:`bulk_cancel.policy`'s job. It never raises for one request's failure; transport
errors come back as an ``Exchange`` with ``transport_error`` set.

It speaks HTTP/1.1 itself, over asyncio's transports, with `httptools`_ (the llhttp parser that
Node.js uses) reading the answers. Every request is the same DELETE with the same headers and no
body, so a request is one ``bytes`` join and one write, and an answer is parsed in C. aiohttp's
general client machinery (URL objects, header multidicts, request and response objects, the
connector, timers, middlewares) cost about 100 µs of CPU per request on these machines, three
times everything else bulk-cancel does per row; this path costs about 35 µs (BENCHMARKS.md,
figure 1). It also sends each request exactly once: aiohttp re-sends an idempotent request by
itself when a connection drops, so a DELETE could reach the API twice and a "not found" could
be our own first send. Here a lost answer comes back as a lost answer, and the policy decides.

.. _httptools: https://github.com/MagicStack/httptools
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast
from urllib.parse import quote, urlsplit

import httptools
import orjson

from .model import Kind, Target

#: The path template of the documented endpoints; each id is percent-encoded as ONE segment.
_MESSAGE_PATH: Final = "/api/v1/subaccounts/{sub}/messages/{id}"
_BATCH_PATH: Final = "/api/v1/subaccounts/{sub}/messages/batch/{id}"

#: Longest error message kept from a body (HTML error pages from proxies can be large).
_MAX_MESSAGE_CHARS: Final = 300

#: Most body bytes kept from one answer; the rest is read and dropped (8x8's answers are < 200 B).
_MAX_BODY_BYTES: Final = 64 * 1024

#: How long a resolved address list is reused before the host name is resolved again.
_DNS_TTL_S: Final = 10.0

#: Characters ``quote(safe="")`` never encodes, less ``.``: a value made only of these (every
#: canonical umid and most subaccount ids) is its own encoding, found in a quarter of the time.
_PLAIN_SEGMENT: Final = re.compile(r"[A-Za-z0-9_~-]+")

#: What may appear in a header value we send: visible ASCII and spaces, no CR, LF or controls.
_HEADER_VALUE: Final = re.compile(r"[\x20-\x7e]+")


def header_safe(value: str) -> bool:
    """Whether *value* can go into a request header as it is (a line break would add headers)."""
    return _HEADER_VALUE.fullmatch(value) is not None


def segment(value: str) -> str:
    """Percent-encode *value* as a single URL path segment: ``/``, ``..``, ``?``, ``#`` cannot escape.

    ``quote`` with ``safe=""`` encodes every reserved character, so the value can never add a
    segment or a query; a lone ``.`` or ``..`` is encoded too, because it would be a dot-segment
    that URL normalisation removes (RFC 3986 §5.2.4). The result is plain ASCII with no spaces
    or controls, so it cannot break the request line either.
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
    """The kind of transport failure, e.g. ``timeout`` or ``connection closed before the answer``."""
    request_sent: bool = True
    """False only when the request certainly never left (no connection could be made)."""


#: Awaited by the client once per request, with the connection in hand, just before the request
#: is written: the pipeline's rate slot. ``None`` sends at once.
Ready = Callable[[], Awaitable[None]] | None


class Canceller(Protocol):
    """What the pipeline needs of a client; a scripted fake satisfies it in tests.

    *ready* is awaited once per request, as late as possible: once a connection is open, so the
    time spent opening one falls before the rate slot and requests leave when their slots say,
    not bunched behind a slow connect.
    """

    async def cancel(self, target: Target, ready: Ready = None) -> Exchange: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSettings:
    """How the client talks to the API."""

    base_url: str
    timeout_s: float = 30.0
    """The longest silence while waiting for an answer, after the request is written."""
    connect_timeout_s: float = 10.0
    max_connections: int = 64
    user_agent: str = "bulk-cancel"


class _Lost(Exception):
    """The connection closed before the whole answer arrived."""


class _Malformed(Exception):
    """The bytes that came back are not an HTTP/1.1 answer."""


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes
    retry_after: str | None
    keep_alive: bool


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time, its answer parsed by llhttp.

    The parser calls back ``on_header``, ``on_body`` and ``on_message_complete`` from inside
    ``feed_data``; the answer is handed to the waiting request through a future.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[_Answer] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timeout_s = 0.0
        self._last_data = 0.0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._retry_after: str | None = None
        self._headers_done = False
        self._framed = False  # the answer says where its body ends (length or chunked)

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Bytes nobody asked for: the connection is out of step; never reuse it.
            self.close()
            return
        self._last_data = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(_Malformed("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(_Malformed(f"malformed HTTP answer ({exc})"))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is None:
            return
        if self._headers_done and not self._framed:
            # An answer without Content-Length or chunking ends where the connection does.
            self._finish(self._parser.get_status_code(), keep_alive=False)
        else:
            self._fail(_Lost("connection closed before the answer"))

    # -- llhttp callbacks ------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif lowered in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        if self._body_bytes < _MAX_BODY_BYTES:
            self._body.append(body)
            self._body_bytes += len(body)

    def on_message_complete(self) -> None:
        if self._waiter is None:  # a second answer to one request: out of step
            self.close()
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103): the real one follows
            self._start_answer()
            return
        self._finish(status, keep_alive=self._parser.should_keep_alive())

    # -- used by the pool and the client ---------------------------------------------------
    @property
    def usable(self) -> bool:
        """Open, idle and not closing: a request written now would reach the server."""
        t = self._transport
        return t is not None and not t.is_closing()

    def send(self, request: bytes, timeout_s: float) -> asyncio.Future[_Answer]:
        """Write *request* and return the future of its answer."""
        assert self._transport is not None and self._waiter is None
        self._waiter = waiter = self._loop.create_future()
        self._start_answer()
        self._timeout_s = timeout_s
        self._last_data = self._loop.time()
        self._timer = self._loop.call_at(self._last_data + timeout_s, self._check_silence)
        self._transport.write(request)
        return waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection now (an abandoned request: its answer must never be read)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiter = None
        if self._transport is not None:
            self._transport.abort()

    # -- internals -------------------------------------------------------------------------
    def _start_answer(self) -> None:
        self._body = []
        self._body_bytes = 0
        self._retry_after = None
        self._headers_done = False
        self._framed = False

    def _check_silence(self) -> None:
        self._timer = None
        if self._waiter is None:
            return
        quiet = self._loop.time() - self._last_data
        if quiet >= self._timeout_s:
            self._fail(TimeoutError())  # and closes the connection: the answer may still come
        else:
            self._timer = self._loop.call_at(self._last_data + self._timeout_s, self._check_silence)

    def _finish(self, status: int, *, keep_alive: bool) -> None:
        answer = _Answer(status, b"".join(self._body), self._retry_after, keep_alive)
        self._settle()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def _fail(self, exc: Exception) -> None:
        self._settle()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def _settle(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _Pool:
    """Keep-alive connections to one origin: at most *limit* open, the most recently used first.

    Handing out the warmest connection keeps the number in use near what the traffic needs;
    connections the server closed while idle are dropped when met.
    """

    def __init__(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        limit: int,
        connect_timeout_s: float,
    ) -> None:
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._limit = max(1, limit)
        self._connect_timeout_s = connect_timeout_s
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._opening = 0  # connections being opened: they count against the limit too
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._addresses: list[tuple[int, Any]] = []
        self._addresses_until = 0.0
        self._resolving = asyncio.Lock()  # one lookup at a time: the pool opens many at once

    async def acquire(self) -> _Connection:
        """A connection ready for one request: an idle one, a new one, or the next one freed."""
        while True:
            while self._idle:
                conn = self._idle.pop()
                if conn.usable:
                    return conn
                self._all.discard(conn)
            if len(self._all) + self._opening < self._limit:
                return await self._open()
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if not waiter.done():
                    self._waiters.remove(waiter)
                elif not waiter.cancelled():
                    self._wake_one()  # woken, then cancelled: pass the turn on
                raise

    def release(self, conn: _Connection, *, reuse: bool) -> None:
        """Give *conn* back: to the idle list if it can carry another request, else close it."""
        if reuse and conn.usable:
            self._idle.append(conn)
        else:
            conn.close()
            self._all.discard(conn)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._idle.clear()

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        self._opening += 1
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                conn = await self._connect(loop)
        except BaseException:
            self._wake_one()  # its place is free again: a request waiting for one may open it
            raise
        finally:
            self._opening -= 1
        self._all.add(conn)
        return conn

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        if loop.time() >= self._addresses_until:
            async with self._resolving:
                if loop.time() >= self._addresses_until:  # not already done while we waited
                    infos = await loop.getaddrinfo(
                        self._host, self._port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                    )
                    self._addresses = [(family, address) for family, _, _, _, address in infos]
                    self._addresses_until = loop.time() + _DNS_TTL_S
        error: OSError = OSError(f"{self._host} has no address")
        for family, address in self._addresses:
            try:
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop),
                    host=address[0],
                    port=address[1],
                    family=family,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
            except OSError as exc:
                error = exc
                continue
            return conn  # asyncio and uvloop set TCP_NODELAY on TCP transports themselves
        self._addresses_until = 0.0  # resolve again next time: the addresses may have moved
        raise error


class CancelClient:
    """HTTP/1.1 keep-alive connections to one base URL, with one key. An async context manager."""

    def __init__(self, settings: ClientSettings, api_key: str) -> None:
        if not header_safe(api_key):
            # Never name the key: only that it cannot go into a header as it is.
            raise ValueError("the API key holds characters that cannot be sent in an HTTP header")
        if not header_safe(settings.user_agent):
            raise ValueError("the user agent holds characters that cannot be sent in a header")
        parts = urlsplit(settings.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) base URL: {settings.base_url!r}")
        self._settings = settings
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._tls = parts.scheme == "https"
        prefix = quote(parts.path.rstrip("/"), safe="/%!$&'()*+,;=:@-._~")
        host = parts.hostname.encode("idna").decode("ascii")
        if ":" in host:
            host = f"[{host}]"  # an IPv6 literal
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        self._request_line_start = b"DELETE " + prefix.encode("ascii")
        self._request_rest = (
            " HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            f"Authorization: Bearer {api_key}\r\n"
            "Accept: application/json\r\n"
            f"User-Agent: {settings.user_agent}\r\n"
            "\r\n"
        ).encode("ascii")
        self._pool: _Pool | None = None

    def __repr__(self) -> str:  # the key lives in _request_rest: keep it out of any repr
        return f"CancelClient({self._settings.base_url!r})"

    async def __aenter__(self) -> CancelClient:
        s = self._settings
        # Verification stays on, always: certificates and host names are checked.
        context = ssl.create_default_context() if self._tls else None
        self._pool = _Pool(self._host, self._port, context, s.max_connections, s.connect_timeout_s)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
            await asyncio.sleep(0)  # let the transports report themselves closed

    async def cancel(self, target: Target, ready: Ready = None) -> Exchange:
        """Send one DELETE for *target* and describe what came back. Never raises for I/O.

        *ready* is awaited once, with a connection open (see :class:`Canceller`). The request is
        sent once: a lost answer comes back as one, for the policy to retry or not.
        """
        pool = self._pool
        assert pool is not None, "use CancelClient as an async context manager"
        request = (
            self._request_line_start + target_path(target).encode("ascii") + self._request_rest
        )
        try:
            conn = await _ready_connection(pool, ready)
        except (OSError, TimeoutError) as exc:
            return Exchange(transport_error=_connect_error(exc), request_sent=False)
        reuse = False
        try:
            answer = await conn.send(request, self._settings.timeout_s)
            reuse = answer.keep_alive
        except TimeoutError:
            return Exchange(transport_error="timeout")
        except (_Lost, _Malformed) as exc:
            return Exchange(transport_error=str(exc))
        except BaseException:
            conn.abort()  # abandoned mid-request: its answer must never be read as another's
            raise
        finally:
            pool.release(conn, reuse=reuse)
        return _exchange(answer.status, answer.body, retry_after=answer.retry_after)


async def _ready_connection(pool: _Pool, ready: Ready) -> _Connection:
    """A connection from *pool* once *ready* (the rate slot) has been awaited with it in hand."""
    conn = await pool.acquire()
    if ready is None:
        return conn
    try:
        await ready()
    except BaseException:
        pool.release(conn, reuse=True)  # nothing was written on it
        raise
    if conn.usable:
        return conn
    # The server closed the idle connection while we waited for the slot (a long Retry-After
    # pause): nothing has left yet, so take another rather than write into a closed one.
    pool.release(conn, reuse=False)
    return await pool.acquire()


def _connect_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "connect timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate refused: {exc.verify_message}"
    return f"cannot connect: {type(exc).__name__}"


#: The answers nearly every request gets, built once: an Exchange is immutable.
_COUNTED: Final = {count: Exchange(status=200, cancelled_count=count) for count in (0, 1)}


def _exchange(status: int, body: bytes, *, retry_after: str | None) -> Exchange:
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
            return _COUNTED.get(count) or Exchange(status=status, cancelled_count=count)
        return Exchange(status=status, body_ok=False, message=_snippet(body) or "empty body")
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
        )
    return Exchange(status=status, message=_snippet(body), retry_after=retry_after)


def _snippet(body: bytes) -> str | None:
    """A short, single-line excerpt of a non-JSON body, for the results' error_message."""
    if not body:
        return None
    text = body[: _MAX_MESSAGE_CHARS * 2].decode("utf-8", "replace")
    return " ".join(text.split())[:_MAX_MESSAGE_CHARS] or None
