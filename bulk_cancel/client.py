"""One DELETE to 8x8's cancel endpoint, turned into one typed :class:`Exchange`.

The client owns the HTTP connections and knows nothing of files, retries or outcomes: judging an
answer is :mod:`bulk_cancel.policy`'s job. It never raises for one request's failure; transport
errors come back as an ``Exchange`` with ``transport_error`` set.

Every request goes through one aiohttp :class:`~aiohttp.ClientSession` per run, so forward
proxies (``HTTPS_PROXY``, a ``proxy`` setting), CA bundles and keep-alive are aiohttp's job.
Three things are added on top, through aiohttp's connector (its documented extension point):

* **One send per attempt.** aiohttp re-sends an idempotent request (DELETE is one) by itself,
  once, when a reused keep-alive connection turns out closed (``_request`` in
  ``aiohttp/client.py``, the ``retry_persistent_connection`` loop): the API could apply the
  first send and answer the second "not found". The connector refuses a second connection for
  the same attempt, so the re-send never leaves: a lost answer comes back as one, and the
  policy decides.
* **The rate slot once the connection is open.** The connector awaits the request's *ready*
  (see :class:`~bulk_cancel.model.Canceller`) after it has a connection in hand and before a byte is written.
* **One timer for every answer's deadline.** aiohttp's ``sock_read`` timeout re-arms a timer per
  read, two or three event-loop timers per request: 10–13 µs a request at 3,000/s on uvloop, a
  twelfth of aiohttp's own cost (BENCHMARKS.md). Instead, the connector stamps each attempt's
  deadline as it lets the request go, and one task looks for late answers a few times a second
  and cancels those attempts, which then come back as timeouts.
"""

from __future__ import annotations

import asyncio
import math
import re
import ssl
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
from aiohttp import (
    ClientConnectorCertificateError,
    ClientConnectorError,
    ClientHttpProxyError,
    ClientOSError,
    ClientPayloadError,
    ClientProxyConnectionError,
    ClientRequest,
    ClientResponseError,
    ServerDisconnectedError,
)
from aiohttp.tracing import Trace
from yarl import URL

from .model import Exchange, Kind, Ready, Target
from .normalize import header_safe
from .settings import mask_url

#: The paths of the documented endpoints, less the id; each id is percent-encoded as ONE segment.
_MESSAGE_PATH: Final = "/api/v1/subaccounts/{sub}/messages/"
_BATCH_PATH: Final = "/api/v1/subaccounts/{sub}/messages/batch/"

#: Most subaccounts whose request path the client keeps built (a file may name thousands).
_MAX_CACHED_PATHS: Final = 4096

#: Longest error message kept from a body (HTML error pages from proxies can be large).
_MAX_MESSAGE_CHARS: Final = 300

#: How long a resolved address list is reused before the host name is resolved again.
_DNS_TTL_S: Final = 10

#: Characters ``quote(safe="")`` never encodes, less ``.``: a value made only of these (every
#: canonical umid and most subaccount ids) is its own encoding, found in a quarter of the time.
_PLAIN_SEGMENT: Final = re.compile(r"[A-Za-z0-9_~-]+")


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


def path_prefix(subaccount: str, kind: Kind) -> str:
    """The request path for *subaccount*'s targets of *kind*, up to the id (ending in ``/``)."""
    template = _BATCH_PATH if kind is Kind.BATCH else _MESSAGE_PATH
    return template.format(sub=segment(subaccount))


def target_path(target: Target) -> str:
    """The request path for *target*, each id encoded as exactly one segment."""
    return path_prefix(target.subaccount, target.kind) + segment(target.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSettings:
    """How the client talks to the API."""

    base_url: str
    timeout_s: float = 30.0
    """The longest wait for the whole answer once the request is written (checked a few times a
    second: an answer is given up on up to a quarter of this, and at most 1 s, later)."""
    connect_timeout_s: float = 10.0
    """The longest wait for a connection: TCP, a proxy's CONNECT tunnel and the TLS handshake."""
    max_connections: int = 64
    user_agent: str = "bulk-cancel"
    proxy: str | None = field(default=None, repr=False)
    """A forward proxy's URL (``http://user:password@host:port``), already chosen from the
    settings and the environment; ``None`` goes direct. Kept out of ``repr``: it may hold a
    password."""
    ca_bundle: Path | None = None
    """A PEM file of the CAs to trust instead of the system's (``SSL_CERT_FILE`` works too)."""


class AnswerLost(aiohttp.ClientError):
    """The request was written but its connection closed before the whole answer came.

    Raised by the connector when aiohttp asks for a second connection to send an attempt again:
    not an ``OSError``, so aiohttp's re-send loop lets it through and the attempt ends.
    """


class _Attempt:
    """One call of :meth:`CancelClient.cancel`, as the connector sees it (through a ContextVar)."""

    __slots__ = ("connected", "deadline", "expired", "ready", "task")

    def __init__(self, ready: Ready, task: asyncio.Task[object]) -> None:
        self.ready = ready
        self.task = task
        self.connected = False
        """A connection was handed to aiohttp for this attempt: from here the request may leave."""
        self.deadline = math.inf
        """When (``time.monotonic()``) the answer is late: set as the request is let go."""
        self.expired = False
        """The answer came too late: the attempt's task was cancelled for it."""


#: The attempt the current task is making; the connector reads it (each worker is its own task).
_ATTEMPT: ContextVar[_Attempt | None] = ContextVar("bulk_cancel_attempt", default=None)


class _SlotConnector(aiohttp.TCPConnector):
    """aiohttp's connector, plus: one connection per attempt, the rate slot once it is open, and
    the answer's deadline from then on."""

    def __init__(self, *, answer_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answer_timeout_s = answer_timeout_s

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's own signature
    ) -> aiohttp.connector.Connection:
        attempt = _ATTEMPT.get()
        if attempt is None:  # not one of ours (nothing else uses this session)
            return await super().connect(req, traces, timeout)
        if attempt.connected:
            # A second connection for one attempt means aiohttp is sending it again: refuse,
            # so the first send's lost answer is reported as lost.
            raise AnswerLost("connection closed before the answer (not re-sent)")
        conn = await super().connect(req, traces, timeout)
        if attempt.ready is not None:
            try:
                await attempt.ready()
            except BaseException:
                conn.release()  # nothing was written on it
                raise
            protocol = conn.protocol
            if protocol is None or not protocol.is_connected():
                # The server closed the idle connection while we waited for the slot (a long
                # Retry-After pause): nothing has left yet, so take another rather than write
                # into a closed one.
                conn.close()
                conn = await super().connect(req, traces, timeout)
        # From here aiohttp writes the request without awaiting anything: no event can close
        # the connection between the check above and the write.
        attempt.connected = True
        attempt.deadline = time.monotonic() + self.answer_timeout_s
        return conn


class CancelClient:
    """One aiohttp session to one base URL, with one key. An async context manager."""

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
        self._proxy = settings.proxy
        self._api_key = api_key
        # The base URL's own path (if any) goes before each request's; both stay as encoded.
        self._origin = URL(f"{parts.scheme}://{parts.netloc}", encoded=True)
        self._prefix = quote(parts.path.rstrip("/"), safe="/%!$&'()*+,;=:@-._~")
        self._host = parts.hostname
        # TLS is only used for an https API or an https proxy: without either, loading the CA
        # certificates (tens of milliseconds before the first request) would buy nothing.
        proxy_scheme = urlsplit(settings.proxy).scheme if settings.proxy else ""
        self._tls = "https" in (parts.scheme, proxy_scheme)
        # Each subaccount's path up to the id, built once: only the id is encoded per request.
        self._paths: dict[tuple[str, Kind], str] = {}
        self._proxy_shown = mask_url(settings.proxy) if settings.proxy else None
        self._proxy_reached = False  # a connection through the proxy has been made
        self._session: aiohttp.ClientSession | None = None
        self._in_flight: asyncio.Semaphore | None = None
        self._watched: set[_Attempt] = set()  # attempts under way, for _expire_late_answers
        self._sweeper: asyncio.Task[None] | None = None

    def __repr__(self) -> str:  # the key and the proxy's password stay out of any repr
        return f"CancelClient({self._settings.base_url!r})"

    async def __aenter__(self) -> CancelClient:
        s = self._settings
        # Verification stays on, always: certificates and host names are checked. With no
        # bundle, OpenSSL's defaults apply, and they honour SSL_CERT_FILE.
        context: ssl.SSLContext | bool = True  # never used: no TLS on the way
        if self._tls:
            context = ssl.create_default_context(
                cafile=str(s.ca_bundle) if s.ca_bundle is not None else None
            )
        limit = max(1, s.max_connections)
        connector = _SlotConnector(
            answer_timeout_s=s.timeout_s,
            limit=limit,
            limit_per_host=0,
            ttl_dns_cache=_DNS_TTL_S,
            ssl=context,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={
                "Authorization": f"Bearer {self._api_key}",
                "Accept": "application/json",
                "User-Agent": s.user_agent,
                # 8x8's answers are under 200 bytes: compressing them would only cost CPU. (Said
                # in a header: skip_auto_headers costs aiohttp 7 µs a request.)
                "Accept-Encoding": "identity",
            },
            cookie_jar=aiohttp.DummyCookieJar(),
            # total=None: the wait for a rate slot happens inside the request and may be long.
            # connect bounds TCP, a proxy's CONNECT answer and TLS; the answer's own deadline is
            # kept by _expire_late_answers, not by a sock_read timer per read.
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=s.connect_timeout_s,
                sock_connect=s.connect_timeout_s,
                sock_read=None,
            ),
        )
        self._sweeper = asyncio.create_task(self._expire_late_answers())
        # At most as many requests in flight as the connector holds connections, so no request
        # ever waits for a pooled connection inside aiohttp, where the connect timeout runs.
        self._in_flight = asyncio.Semaphore(limit)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def cancel(self, target: Target, ready: Ready = None) -> Exchange:
        """Send one DELETE for *target* and describe what came back. Never raises for I/O.

        *ready* is awaited once, with a connection open (see :class:`Canceller`). The request is
        sent at most once: a lost answer comes back as one, for the policy to retry or not.
        """
        session, in_flight = self._session, self._in_flight
        assert session is not None and in_flight is not None, (
            "use CancelClient as an async context manager"
        )
        key = (target.subaccount, target.kind)
        prefix = self._paths.get(key)
        if prefix is None:
            if len(self._paths) >= _MAX_CACHED_PATHS:
                self._paths.clear()
            prefix = self._paths[key] = self._prefix + path_prefix(*key)
        url = self._origin.with_path(prefix + segment(target.id), encoded=True)
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        attempt = _Attempt(ready, task)
        token = _ATTEMPT.set(attempt)
        watched = self._watched
        watched.add(attempt)
        try:
            # acquire/release, not `async with`: two coroutines fewer per request.
            await in_flight.acquire()
            try:
                response = await session.request(
                    "DELETE", url, allow_redirects=False, proxy=self._proxy
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                return self._failed(exc, sent=attempt.connected)
            else:
                try:
                    body = await response.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    return self._failed(exc, sent=True)
                finally:
                    response.close()  # read to the end: back to the pool; else dropped
            finally:
                in_flight.release()
        except asyncio.CancelledError:
            # Cancelled for a late answer (and for nothing else): a lost answer, as asyncio's
            # timeout() would tell it.
            if attempt.expired and task.uncancel() <= cancelling:
                return Exchange(transport_error="timeout")
            raise
        finally:
            watched.discard(attempt)
            _ATTEMPT.reset(token)
        if self._proxy_shown is not None:
            self._proxy_reached = True
            if response.status == 407:  # a plain-http target: the proxy answers for itself
                return self._blocked(
                    f"the proxy {self._proxy_shown} {_refusal(response.status, response.reason)}"
                )
        status = response.status
        if status == 200:
            return _exchange(status, body, retry_after=None)
        return _exchange(status, body, retry_after=response.headers.get("Retry-After"))

    async def _expire_late_answers(self) -> None:
        """A few times a second, cancel the attempts whose answer is overdue: one timer for all
        of them instead of aiohttp's timers per read."""
        every_s = min(1.0, self._settings.timeout_s / 4)
        while True:
            await asyncio.sleep(every_s)
            self._expire_overdue()

    def _expire_overdue(self) -> None:
        """Cancel the attempts past their deadline (each once); they return as timeouts."""
        now = time.monotonic()
        for attempt in [a for a in self._watched if a.deadline <= now]:
            attempt.deadline = math.inf
            attempt.expired = True
            attempt.task.cancel()

    def _failed(self, exc: BaseException, *, sent: bool) -> Exchange:
        """The Exchange for a request that got no answer; *sent*: it may have left."""
        if sent:
            if isinstance(
                exc, AnswerLost | ServerDisconnectedError | ClientOSError | ClientPayloadError
            ):
                return Exchange(transport_error="connection closed before the answer")
            if isinstance(exc, TimeoutError):
                return Exchange(transport_error="timeout")
            if isinstance(exc, ClientResponseError):
                return Exchange(transport_error=f"malformed HTTP answer ({exc.message})")
            return Exchange(transport_error=f"no answer: {type(exc).__name__}")
        proxy = self._proxy_shown
        if isinstance(exc, ClientHttpProxyError):
            what = f"the proxy {proxy} {_refusal(exc.status, exc.message)}"
            if exc.status >= 500:  # the proxy could not reach the API, this time
                return Exchange(transport_error=what, request_sent=False)
            return self._blocked(what)
        if isinstance(exc, ClientProxyConnectionError):
            return self._blocked(f"the proxy {proxy} cannot be reached ({_os_reason(exc)})")
        if isinstance(exc, ClientConnectorCertificateError):
            reason = getattr(exc.certificate_error, "verify_message", None) or str(
                exc.certificate_error
            )
            return self._blocked(
                f"TLS certificate refused: {reason} ({self._host}); if your network inspects "
                "TLS, give its CA with --ca-bundle"
            )
        if isinstance(exc, TimeoutError):
            if proxy is not None and not self._proxy_reached:
                return self._blocked(
                    f"the proxy {proxy} did not open a connection within "
                    f"{self._settings.connect_timeout_s:g} s"
                )
            return Exchange(transport_error="connect timeout", request_sent=False)
        if isinstance(exc, ClientConnectorError):
            return Exchange(
                transport_error=f"cannot connect: {_os_reason(exc)}", request_sent=False
            )
        return Exchange(transport_error=f"cannot connect: {type(exc).__name__}", request_sent=False)

    @staticmethod
    def _blocked(what: str) -> Exchange:
        return Exchange(transport_error=what, request_sent=False, blocked_by=what)


def _refusal(status: int, reason: str | None) -> str:
    if status == 407:
        return f"refused the credentials (HTTP 407 {reason or 'Proxy Authentication Required'})"
    return f"refused the tunnel (HTTP {status} {reason or ''})".replace(" )", ")")


def _os_reason(exc: ClientConnectorError) -> str:
    """Why a connection could not be made, in a few words (the OS's, when it gave some)."""
    error = exc.os_error
    if isinstance(error, ConnectionRefusedError):
        return "connection refused: nothing listens there"
    return (error.strerror if error is not None else None) or type(error or exc).__name__


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
