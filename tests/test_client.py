"""The aiohttp client against a real aiohttp server on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import unquote

import pytest
from aiohttp import web
from conftest import API_KEY

from bulk_cancel.client import CancelClient, ClientSettings, segment, target_path
from bulk_cancel.model import Kind, Target

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


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()

    async def handler(request: web.Request) -> web.StreamResponse:
        state.raw_paths.append(request.raw_path)
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


async def test_silent_resend_is_detected(server: Server) -> None:
    """aiohttp's automatic re-send of a DELETE on a dropped keep-alive connection is flagged."""
    async with client(server) as c:
        first = await c.cancel(
            Target(subaccount="sub_1", id="warm-up")
        )  # makes a keep-alive connection
        again = await c.cancel(Target(subaccount="sub_1", id="drop-first"))
    assert not first.resent
    assert server.seen["drop-first"] == 2  # the server saw the DELETE twice
    assert again.resent and again.status == 200 and again.cancelled_count == 0


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


async def test_refused_connection_was_never_sent() -> None:
    """When no connection can be made, the request certainly did not reach the server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        async with CancelClient(ClientSettings(base_url=f"http://127.0.0.1:{port}"), API_KEY) as c:
            ex = await c.cancel(Target(subaccount="sub_1", id="x"))
    assert ex.status is None and not ex.request_sent


async def test_ready_is_awaited_once_per_send_before_the_request_leaves(server: Server) -> None:
    """The rate slot (*ready*) is taken for every send, aiohttp's silent re-send included."""
    order: list[str] = []

    async def ready() -> None:
        order.append(f"ready, server has seen {len(server.raw_paths)}")
        await asyncio.sleep(0.05)  # a slot in the future: nothing may leave before it

    async with client(server) as c:
        await c.cancel(Target(subaccount="sub_1", id="warm-up"), ready)
        again = await c.cancel(Target(subaccount="sub_1", id="drop-first"), ready)
    assert again.resent
    assert order == [
        "ready, server has seen 0",
        "ready, server has seen 1",
        "ready, server has seen 2",  # the re-send of drop-first waited for a slot of its own
    ]
    assert len(server.raw_paths) == 3


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


async def test_a_connection_closed_while_waiting_for_the_slot_is_replaced_not_resent() -> None:
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
        await asyncio.sleep(0.4)  # the server drops the idle keep-alive connection meanwhile

    try:
        async with CancelClient(ClientSettings(base_url=f"http://127.0.0.1:{port}"), API_KEY) as c:
            first = await c.cancel(Target(subaccount="sub_1", id="a"))
            # The pooled connection is handed out, then the server closes it during the wait.
            second = await c.cancel(Target(subaccount="sub_1", id="b"), paused)
    finally:
        await runner.cleanup()
    assert (first.cancelled_count, second.cancelled_count) == (1, 1)
    assert not second.resent  # not flagged as possibly sent twice
    assert len(seen) == 2
