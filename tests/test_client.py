"""The HTTP client against real servers on 127.0.0.1: an aiohttp app, and raw sockets for odd answers."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import aiohttp
import pytest
import trustme
from aiohttp import web
from helpers import API_KEY, make_ledger, umids

from bulk_cancel.client import CancelClient, ClientSettings, segment, target_path
from bulk_cancel.model import Exchange, Kind, Target
from bulk_cancel.pipeline import Pipeline, PipelineSettings
from bulk_cancel.policy import RetryPolicy
from bulk_cancel.simulator import Faults, SimulatorConfig, running_simulator

HOSTILE = [
    "../../admin",
    "..",
    ".",
    "a/b",
    "%2F..%2Fadmin",
    "x?limit=1",
    "x#frag",
    "with space",
    "ünïcödé-✓",
    "ctl\x00\x1f\x7f",
    "\r\nX-Injected: 1",
    "x" * 10_000,
]


@dataclass
class Server:
    """A scriptable stand-in that records what reached it."""

    url: str = ""
    raw_paths: list[str] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    peers: list[object] = field(default_factory=list)
    in_flight: int = 0
    most_at_once: int = 0


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()

    async def handler(request: web.Request) -> web.StreamResponse:
        state.raw_paths.append(request.raw_path)
        assert request.transport is not None
        state.peers.append(request.transport.get_extra_info("peername"))
        state.auth.append(request.headers.get("Authorization", ""))
        last = unquote(request.raw_path.rsplit("/", 1)[-1])
        n = state.seen[last] = state.seen.get(last, 0) + 1
        if last == "drop-first" and n == 1:
            assert request.transport is not None
            request.transport.close()  # applied, but the answer is lost
            raise asyncio.CancelledError
        if last == "html-502":
            return web.Response(
                status=502,
                text="<html><body><h1>502 Bad Gateway</h1></body></html>",
                content_type="text/html",
            )
        if last == "slow":
            await asyncio.sleep(5)
        if last.startswith("par-"):
            state.in_flight += 1
            state.most_at_once = max(state.most_at_once, state.in_flight)
            await asyncio.sleep(0.01)
            state.in_flight -= 1
        if last == "throttled":
            return web.json_response(
                {"code": 0, "message": "slow down"}, status=429, headers={"Retry-After": "2"}
            )
        if last == "gone":
            return web.json_response(
                {
                    "code": 1300,
                    "message": "Message not found.",
                    "errorId": "e-1",
                    "timestamp": "2026-11-28T00:00:00Z",
                },
                status=404,
            )
        if last == "garbled":
            return web.Response(status=200, body=b'{"cancelledCo', content_type="application/json")
        return web.json_response({"cancelledCount": 1 if n == 1 else 0})

    app = web.Application()
    app.router.add_route(
        "*", r"/{tail:[\s\S]*}", handler
    )  # [\s\S]: decoded paths may hold newlines
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


async def until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    """Wait, a loop turn at a time, until *condition* holds; fail after *within_s*."""
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110 - socket and server states have no event to await
            await asyncio.sleep(0.005)


def client(server: Server, **kw: float) -> CancelClient:
    return CancelClient(ClientSettings(base_url=server.url, **kw), API_KEY)  # type: ignore[arg-type]


def test_segment_cannot_escape() -> None:
    """Every reserved character and dot-segment is encoded: one value, one path segment."""
    for value in HOSTILE:
        enc = segment(value)
        assert "/" not in enc and "?" not in enc and "#" not in enc
        assert enc not in {".", ".."}
        assert unquote(enc) == value
    assert (
        target_path(Target(subaccount="s_1", id="b", kind=Kind.BATCH))
        == "/api/v1/subaccounts/s_1/messages/batch/b"
    )


async def test_hostile_ids_stay_in_their_segment(server: Server) -> None:
    """Hostile umids and subaccounts reach the server as exactly one segment each, on the documented path."""
    values = [
        v for v in HOSTILE if len(v) < 2000
    ]  # aiohttp's server refuses request lines over 8 kB
    async with client(server) as c:
        for value in values:
            await c.cancel(Target(subaccount=value, id=value))
    assert len(server.raw_paths) == len(values)
    for raw, value in zip(server.raw_paths, values, strict=True):
        parts = raw.split("/")
        assert parts[:4] == ["", "api", "v1", "subaccounts"] and parts[5] == "messages"
        assert len(parts) == 7
        assert unquote(parts[4]) == value and unquote(parts[6]) == value


async def test_sends_the_key_as_bearer_and_never_echoes_it(server: Server) -> None:
    """The key goes in the Authorization header and appears in no Exchange."""
    async with client(server) as c:
        ex = await c.cancel(Target(subaccount="sub_1", id="gone"))
    assert server.auth == [f"Bearer {API_KEY}"]
    assert API_KEY not in repr(ex)
    assert (ex.status, ex.code, ex.error_id, ex.message) == (404, 1300, "e-1", "Message not found.")


async def test_a_dropped_answer_is_lost_and_never_resent(server: Server) -> None:
    """A reused connection dropped after the cancel applied comes back as a lost answer; nothing
    is sent twice (aiohttp alone re-sends the DELETE here: see the next test)."""
    async with client(server) as c:
        first = await c.cancel(Target(subaccount="sub_1", id="warm-up"))  # a keep-alive connection
        lost = await c.cancel(Target(subaccount="sub_1", id="drop-first"))
        again = await c.cancel(Target(subaccount="sub_1", id="drop-first"))
    assert first.cancelled_count == 1
    assert lost.status is None and lost.request_sent
    assert lost.transport_error == "connection closed before the answer"
    assert again.status == 200  # the next request took a fresh connection
    assert server.seen["drop-first"] == 2  # once per cancel() call, never more


async def test_aiohttp_alone_would_send_that_dropped_request_twice(server: Server) -> None:
    """The control for the test above: a bare aiohttp session re-sends the DELETE by itself
    when the reused connection drops, so the same server really does meet the re-send."""
    async with aiohttp.ClientSession() as session:
        async with session.delete(f"{server.url}/api/v1/subaccounts/sub_1/messages/warm-up"):
            pass
        async with session.delete(
            f"{server.url}/api/v1/subaccounts/sub_1/messages/drop-first"
        ) as r:
            assert r.status == 200  # the second send's answer: the first send's is lost
    assert server.seen["drop-first"] == 2


async def test_every_send_the_simulator_saw_is_a_counted_attempt(tmp_path: Path) -> None:
    """The simulator applies cancels and then drops the (reused) connection half the time:
    each send it saw is one attempt the pipeline counted, and no row it cancelled is reported
    as anything but cancelled or unconfirmed."""
    ids = umids(40, seed=31)
    ledger = make_ledger(tmp_path / "r.ledger.sqlite", [("acme_hq", u) for u in ids])
    config = SimulatorConfig(faults=Faults(drop_after=0.5), seed=3)
    retry = RetryPolicy(
        max_attempts=20, max_elapsed_s=60, initial_backoff_s=0.01, max_backoff_s=0.02
    )
    async with running_simulator(config) as sim:
        # Two connections for 40 rows: nearly every request rides a reused connection.
        settings = ClientSettings(base_url=sim.url, max_connections=2)
        async with CancelClient(settings, API_KEY) as client:
            pipeline = Pipeline(
                ledger,
                client,
                PipelineSettings(
                    rate_per_s=5000, concurrency=2, retry=retry, failure_threshold=1.0
                ),
            )
            await pipeline.run()
        state = sim.state.snapshot(include_ids=True)
    assert state["faults"]["drop_after"] >= 10  # the fault really happened, many times
    assert state["requests"] == pipeline.progress.requests
    assert sum(state["requests_per_id"].values()) == pipeline.progress.requests
    got = {row[0]: row[3] for chunk in ledger.iter_results() for row in chunk}
    assert set(got.values()) <= {"cancelled", "unconfirmed"}
    assert "unconfirmed" in got.values()  # a dropped answer, then "nothing to cancel"
    ledger.close()


async def test_keep_alive_connections_are_reused(server: Server) -> None:
    """Sequential requests share one connection; the pool never opens more than its limit."""
    async with client(server) as c:
        for i in range(20):
            await c.cancel(Target(subaccount="sub_1", id=f"seq-{i}"))
    assert len(set(server.peers)) == 1
    server.peers.clear()
    async with CancelClient(ClientSettings(base_url=server.url, max_connections=3), API_KEY) as c:
        answers = await asyncio.gather(
            *(c.cancel(Target(subaccount="sub_1", id=f"par-{i}")) for i in range(30))
        )
    assert all(a.cancelled_count == 1 for a in answers)
    assert server.most_at_once <= 3 and len(set(server.peers)) <= 3


async def test_a_request_abandoned_mid_flight_never_lends_its_connection(server: Server) -> None:
    """Cancelled while awaiting its answer (Ctrl-C), a request's connection is dropped, not reused:
    its late answer must never be read as the next request's."""
    async with client(server) as c:
        slow = asyncio.create_task(c.cancel(Target(subaccount="sub_1", id="slow")))
        await until(lambda: "slow" in server.seen)  # the request is out, its answer pending
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        after = await c.cancel(Target(subaccount="sub_1", id="after"))
    assert after.cancelled_count == 1
    assert len(set(server.peers)) == 2  # a fresh connection for the next request


async def test_html_error_bodies_are_not_trusted(server: Server) -> None:
    """A proxy's HTML 502 becomes a status with a short one-line message, no JSON assumed."""
    async with client(server) as c:
        ex = await c.cancel(Target(subaccount="sub_1", id="html-502"))
    assert ex.status == 502 and ex.code is None
    assert ex.message is not None and "502 Bad Gateway" in ex.message and "\n" not in ex.message


async def test_unreadable_200_is_flagged(server: Server) -> None:
    """A truncated JSON body on a 200 is reported as unreadable, not as a count."""
    async with client(server) as c:
        ex = await c.cancel(Target(subaccount="sub_1", id="garbled"))
    assert ex.status == 200 and not ex.body_ok and ex.cancelled_count is None


async def test_retry_after_is_kept(server: Server) -> None:
    """A 429's Retry-After header is passed on for the policy to honour."""
    async with client(server) as c:
        ex = await c.cancel(Target(subaccount="sub_1", id="throttled"))
    assert (ex.status, ex.retry_after) == (429, "2")


async def test_timeout_is_a_lost_answer(server: Server) -> None:
    """An answer slower than the timeout comes back as a transport error that may have applied."""
    async with client(server, timeout_s=0.2) as c:
        ex = await c.cancel(Target(subaccount="sub_1", id="slow"))
    assert ex.status is None and ex.transport_error == "timeout" and ex.request_sent


async def test_an_answer_that_trickles_past_the_timeout_is_lost() -> None:
    """The timeout bounds the whole answer, not each silence: a server sending a byte every
    0.1 s still ends the attempt at about the timeout, as a lost answer."""
    started = time.monotonic()
    ex, _ = await raw_answer(
        b'HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{"cancelledCount":1}',
        piece=1,
        pause_s=0.1,
        timeout_s=0.5,
    )
    took = time.monotonic() - started
    assert ex.status is None and ex.transport_error == "timeout" and ex.request_sent
    assert 0.5 <= took < 1.5  # the answer alone would take 6 s


async def test_a_cancel_from_outside_is_not_a_timeout(server: Server) -> None:
    """Cancelling the task that waits for an answer cancels it (a run stopping), even when the
    answer is late too: only the client's own deadline turns into a lost answer."""
    async with client(server, timeout_s=0.2) as c:
        task = asyncio.ensure_future(c.cancel(Target(subaccount="sub_1", id="slow")))
        await until(lambda: len(c._watched) == 1 and next(iter(c._watched)).connected)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The deadline's cancel and the run's in the same turn of the loop: the run's wins.
        task = asyncio.ensure_future(c.cancel(Target(subaccount="sub_1", id="slow")))
        await until(lambda: len(c._watched) == 1 and next(iter(c._watched)).connected)
        (attempt,) = c._watched
        attempt.deadline = 0.0
        c._expire_overdue()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The deadline's cancel alone is a lost answer, and the client goes on working.
        task = asyncio.ensure_future(c.cancel(Target(subaccount="sub_1", id="slow")))
        await until(lambda: len(c._watched) == 1 and next(iter(c._watched)).connected)
        next(iter(c._watched)).deadline = 0.0
        c._expire_overdue()
        assert (await task).transport_error == "timeout"
        ex = await c.cancel(Target(subaccount="sub_1", id="u-ok"))
    assert ex.status == 200


async def test_refused_connection_was_never_sent() -> None:
    """When no connection can be made, the request certainly did not reach the server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        async with CancelClient(ClientSettings(base_url=f"http://127.0.0.1:{port}"), API_KEY) as c:
            ex = await c.cancel(Target(subaccount="sub_1", id="x"))
    assert ex.status is None and not ex.request_sent


async def test_a_failed_connect_frees_its_place_for_those_waiting() -> None:
    """With the pool full of connects that fail, requests waiting for a place get one, and fail
    fast too, rather than waiting for a release that never comes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        settings = ClientSettings(base_url=f"http://127.0.0.1:{port}", max_connections=1)
        async with CancelClient(settings, API_KEY) as c:
            answers = await asyncio.wait_for(
                asyncio.gather(*(c.cancel(Target(subaccount="s", id=f"u{i}")) for i in range(3))),
                5,
            )
    assert all(a.status is None and not a.request_sent for a in answers)


async def test_ready_is_awaited_once_per_request_before_it_leaves(server: Server) -> None:
    """The rate slot (*ready*) is taken once per request, before a byte of it leaves."""
    order: list[str] = []

    async def ready() -> None:
        order.append(f"ready, server has seen {len(server.raw_paths)}")
        await asyncio.sleep(0.05)  # a slot in the future: nothing may leave before it

    async with client(server) as c:
        await c.cancel(Target(subaccount="sub_1", id="warm-up"), ready)
        lost = await c.cancel(Target(subaccount="sub_1", id="drop-first"), ready)
    assert lost.transport_error is not None
    assert order == ["ready, server has seen 0", "ready, server has seen 1"]
    assert len(server.raw_paths) == 2


async def test_no_slot_is_spent_when_no_connection_can_be_made() -> None:
    """A refused connection never reaches *ready*: no request left, so no rate slot is used."""
    calls = 0

    async def ready() -> None:
        nonlocal calls
        calls += 1

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        async with CancelClient(ClientSettings(base_url=f"http://127.0.0.1:{port}"), API_KEY) as c:
            ex = await c.cancel(Target(subaccount="sub_1", id="x"), ready)
    assert not ex.request_sent and calls == 0


async def test_a_long_wait_for_the_slot_is_not_a_timeout(server: Server) -> None:
    """Waiting for a rate slot (a Retry-After pause) is not waiting for an answer."""

    async def ready() -> None:
        await asyncio.sleep(0.5)

    async with client(server, timeout_s=0.2) as c:
        ex = await c.cancel(Target(subaccount="sub_1", id="gone"), ready)
    assert ex.status == 404 and ex.transport_error is None


async def test_a_connection_closed_while_waiting_for_the_slot_is_replaced() -> None:
    """A server closing idle connections during a long wait for the slot causes no re-send."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        return web.json_response({"cancelledCount": 1})

    app = web.Application()
    app.router.add_route("DELETE", r"/{tail:.*}", handler)
    runner = web.AppRunner(app, keepalive_timeout=0.1, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def paused() -> None:
        # The slot comes only once the server has dropped the idle keep-alive connection, and
        # our side has read its FIN.
        await until(lambda: not runner.server.connections)  # type: ignore[union-attr]
        session = c._session
        assert session is not None and session.connector is not None
        in_use = session.connector._acquired  # type: ignore[attr-defined]
        await until(lambda: not any(protocol.is_connected() for protocol in in_use))

    try:
        async with CancelClient(ClientSettings(base_url=f"http://127.0.0.1:{port}"), API_KEY) as c:
            first = await c.cancel(Target(subaccount="sub_1", id="a"))
            # The pooled connection is handed out, then the server closes it during the wait.
            second = await c.cancel(Target(subaccount="sub_1", id="b"), paused)
    finally:
        await runner.cleanup()
    assert (first.cancelled_count, second.cancelled_count) == (1, 1)  # not a lost answer
    assert len(seen) == 2


async def raw_answer(
    answer: bytes,
    *,
    close: bool = True,
    piece: int = 7,
    pause_s: float = 0.0,
    timeout_s: float = 0.3,
) -> tuple[Exchange, list[bytes]]:
    """One cancel against a socket server that reads a request and writes *answer*, byte for
    byte, *piece* bytes at a time (*pause_s* apart), with the client's timeout at *timeout_s*."""
    received: list[bytes] = []
    handled = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            received.append(await reader.readuntil(b"\r\n\r\n"))
            for i in range(0, len(answer), piece):  # in small pieces: the parser must join them
                if reader.at_eof():
                    break  # the client hung up (it gave up waiting)
                writer.write(answer[i : i + piece])
                await writer.drain()
                if pause_s:
                    await asyncio.sleep(pause_s)
            if not close:
                await reader.read()  # stall until the client gives up and hangs up
        finally:
            writer.close()
            handled.set()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        settings = ClientSettings(base_url=f"http://127.0.0.1:{port}", timeout_s=timeout_s)
        async with CancelClient(settings, API_KEY) as c:
            ex = await c.cancel(Target(subaccount="sub_1", id="u-1"))
        await asyncio.wait_for(handled.wait(), 5)
    finally:
        srv.close()
        await srv.wait_closed()
    return ex, received


async def test_the_request_is_one_plain_http11_delete() -> None:
    """Request line, Host, the key as Bearer, JSON accepted, an empty body; nothing else
    (no compression: the answers are too small for it; no cookies)."""
    _, received = await raw_answer(
        b'HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{"cancelledCount":1}'
    )
    lines = received[0].decode("ascii").split("\r\n")
    port = lines[1].rsplit(":", 1)[1]
    assert lines == [
        "DELETE /api/v1/subaccounts/sub_1/messages/u-1 HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Authorization: Bearer {API_KEY}",
        "Accept: application/json",
        "User-Agent: bulk-cancel",
        "Accept-Encoding: identity",
        "Content-Length: 0",
        "",
        "",
    ]


@pytest.mark.parametrize(
    ("answer", "count"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"c\r\n{\"cancelledC\r\n8\r\nount\":1}\r\n0\r\n\r\n", 1),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"cancelledCount\":0}", 0),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 20\r\n\r\n{\"cancelledCount\":1}", 1),
        (b"HTTP/1.1 100 Continue\r\n\r\n"
         b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{\"cancelledCount\":1}", 1),
    ],
    ids=["chunked", "until-close", "http-1.0", "interim-100"],
)  # fmt: skip
async def test_every_way_of_framing_an_answer_is_read(answer: bytes, count: int) -> None:
    ex, _ = await raw_answer(answer)
    assert (ex.status, ex.cancelled_count, ex.transport_error) == (200, count, None)


@pytest.mark.parametrize(
    ("answer", "close", "error"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n", True, "malformed HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{\"cance", True,
         "connection closed before the answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{\"cance", False, "timeout"),
        (b"", True, "connection closed before the answer"),
    ],
    ids=["not-http", "cut-short", "stalls", "closed"],
)  # fmt: skip
async def test_a_broken_answer_is_a_lost_answer(answer: bytes, close: bool, error: str) -> None:
    """Garbage, a body cut short, a stall mid-body or a silent close: no status, may have applied."""
    ex, _ = await raw_answer(answer, close=close)
    assert ex.status is None and ex.request_sent
    assert ex.transport_error is not None and ex.transport_error.startswith(error)


def test_a_key_that_would_break_the_header_is_refused_without_showing_it() -> None:
    """A pasted line break in the key could add headers: refused, and the key is not in the error."""
    for key in ("abc\r\nX-Injected: 1", "k\x00ey", "ключ"):
        with pytest.raises(ValueError, match="API key") as info:
            CancelClient(ClientSettings(base_url="http://127.0.0.1:9"), key)
        assert key not in str(info.value)


@pytest.fixture
def trusted_ca(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> trustme.CA:
    """A local CA the client trusts as if it were in the system's store, for one test."""
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))  # what ssl.create_default_context() loads
    return ca


async def cancel_over_tls(cert: trustme.LeafCert) -> Exchange:
    """One cancel against a TLS server on 127.0.0.1 that presents *cert*, reached as localhost."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{"cancelledCount":1}')
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client refused our certificate and hung up
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = srv.sockets[0].getsockname()[1]
    try:
        settings = ClientSettings(base_url=f"https://localhost:{port}", connect_timeout_s=2)
        async with CancelClient(settings, API_KEY) as c:
            return await c.cancel(Target(subaccount="sub_1", id="u-1"))
    finally:
        srv.close()
        await srv.wait_closed()


def assert_refused_before_sending(ex: Exchange) -> None:
    assert ex.status is None and not ex.request_sent  # the request, and its key, never left
    assert ex.transport_error is not None and "TLS certificate refused" in ex.transport_error


async def test_https_verifies_the_certificate_and_the_host_name(trusted_ca: trustme.CA) -> None:
    """A certificate from a trusted CA for the host is accepted; for another host it is refused."""
    ok = await cancel_over_tls(trusted_ca.issue_cert("localhost"))
    assert (ok.status, ok.cancelled_count) == (200, 1)
    assert_refused_before_sending(await cancel_over_tls(trusted_ca.issue_cert("api.example.com")))


async def test_https_refuses_an_untrusted_certificate() -> None:
    """A certificate no trusted CA signed is refused before the request (and its key) is written."""
    assert_refused_before_sending(await cancel_over_tls(trustme.CA().issue_cert("localhost")))


def test_https_under_uvloop(trusted_ca: trustme.CA) -> None:
    """The same checks on uvloop, whose TLS code is its own and which `bulk-cancel run` uses."""
    uvloop = pytest.importorskip("uvloop")
    ok = uvloop.run(cancel_over_tls(trusted_ca.issue_cert("localhost")))
    assert (ok.status, ok.cancelled_count) == (200, 1)
    assert_refused_before_sending(uvloop.run(cancel_over_tls(trusted_ca.issue_cert("example.org"))))
