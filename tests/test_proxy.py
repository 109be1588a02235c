"""Forward proxies and CA bundles on real parts: proxy.py (from PyPI) with basic auth on
127.0.0.1, tunnelling CONNECT to the simulator serving TLS with a trustme CA."""

from __future__ import annotations

import asyncio
import csv
import json
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from helpers import API_KEY, PROXY_VARIABLES, umids

from bulk_cancel.client import CancelClient, ClientSettings
from bulk_cancel.errors import ExitCode
from bulk_cancel.model import Target
from bulk_cancel.simulator import SimulatorConfig, SimulatorState, build_app

USER, PASSWORD = "bulk", "s3cret-proxy-pass"
SUB = "acme_hq"


@dataclass
class Proxy:
    """A proxy.py process: its address, and its log (one access line per tunnel, at its end)."""

    port: int
    log: Path

    def url(self, user: str = USER, password: str = PASSWORD) -> str:
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    def lines(self, pattern: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if re.search(pattern, line)]

    def wait_for(self, pattern: str, at_least: int = 1, within_s: float = 10) -> list[str]:
        """The log lines matching *pattern*, once there are *at_least* (tunnels log on close)."""
        deadline = time.monotonic() + within_s
        while len(found := self.lines(pattern)) < at_least and time.monotonic() < deadline:
            time.sleep(0.05)
        return found


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """proxy.py on a free port of 127.0.0.1, with basic auth; stopped by its PID afterwards."""
    folder = tmp_path_factory.mktemp("proxy")
    port_file, log = folder / "port", folder / "proxy.log"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", "0",
            "--port-file", str(port_file), "--basic-auth", f"{USER}:{PASSWORD}",
            "--num-workers", "1", "--num-acceptors", "1", "--log-level", "INFO",
            "--log-file", str(log),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        port = 0
        while not port:
            assert process.poll() is None, "proxy.py exited at start"
            assert time.monotonic() < deadline, "proxy.py never wrote its port"
            text = port_file.read_text().strip() if port_file.exists() else ""
            port = int(text) if text else 0
            time.sleep(0.05)
        while True:  # the port is written before the acceptor listens: wait until it accepts
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "proxy.py never accepted a connection"
                time.sleep(0.05)
        yield Proxy(port, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class TlsSimulator:
    """The simulator serving HTTPS on 127.0.0.1 from a thread of its own, so that both the
    tests' event loops and a ``bulk-cancel`` child process can reach it."""

    url: str
    port: int
    state: SimulatorState
    ca_bundle: Path


@pytest.fixture
def tls_simulator(tmp_path: Path) -> Iterator[TlsSimulator]:
    """A TLS simulator whose certificate (for 127.0.0.1) a trustme CA signed; the CA's PEM
    is in ``ca_bundle``, trusted by nothing unless a test says so."""
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    state = SimulatorState()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, object] = {}

    async def serve() -> None:
        runner = web.AppRunner(build_app(SimulatorConfig(), state), shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        holder["runner"] = runner
        holder["port"] = runner.addresses[0][1]
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop).result(timeout=10)
    assert started.is_set()
    port = int(holder["port"])  # type: ignore[call-overload]
    try:
        yield TlsSimulator(f"https://127.0.0.1:{port}", port, state, bundle)
    finally:
        runner = holder["runner"]
        assert isinstance(runner, web.AppRunner)
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def dead_port() -> int:
    """A port of 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def one_cancel(sim: TlsSimulator, proxy_url: str | None) -> tuple[object, int]:
    settings = ClientSettings(base_url=sim.url, proxy=proxy_url, ca_bundle=sim.ca_bundle)
    async with CancelClient(settings, API_KEY) as client:
        exchange = await client.cancel(Target(subaccount=SUB, id=umids(1)[0]))
    return exchange, sim.state.requests


# ------------------------------------------------------------------------------ the client


async def test_https_goes_through_the_proxys_connect_tunnel(
    proxy: Proxy, tls_simulator: TlsSimulator
) -> None:
    """With a proxy, the request reaches the TLS simulator through a CONNECT tunnel the proxy
    opened with our credentials, and the certificate is checked against the CA bundle."""
    before = len(proxy.lines(rf"CONNECT 127\.0\.0\.1:{tls_simulator.port}\b"))
    exchange, requests = await one_cancel(tls_simulator, proxy.url())
    assert exchange.status == 200 and exchange.cancelled_count == 1  # type: ignore[attr-defined]
    assert requests == 1
    tunnels = proxy.wait_for(rf"CONNECT 127\.0\.0\.1:{tls_simulator.port}\b", before + 1)
    assert len(tunnels) == before + 1


async def test_wrong_proxy_credentials_block_the_way_and_send_nothing(
    proxy: Proxy, tls_simulator: TlsSimulator
) -> None:
    """A 407 from the proxy is a refused way, not a lost answer: nothing sent, the proxy named
    with its password masked."""
    wrong = proxy.url(password="not-the-password")
    exchange, requests = await one_cancel(tls_simulator, wrong)
    assert requests == 0
    blocked = exchange.blocked_by  # type: ignore[attr-defined]
    assert blocked is not None and "407" in blocked and "refused the credentials" in blocked
    assert f"http://{USER}:****@127.0.0.1:{proxy.port}" in blocked
    assert "not-the-password" not in repr(exchange)
    assert not exchange.request_sent  # type: ignore[attr-defined]


async def test_a_dead_proxy_blocks_the_way_and_sends_nothing(tls_simulator: TlsSimulator) -> None:
    """A proxy nobody listens on: nothing reaches the API, and the Exchange says the proxy
    cannot be reached."""
    port = dead_port()
    exchange, requests = await one_cancel(tls_simulator, f"http://u:pw-xyz@127.0.0.1:{port}")
    assert requests == 0
    blocked = exchange.blocked_by  # type: ignore[attr-defined]
    assert blocked is not None and f"u:****@127.0.0.1:{port}" in blocked
    assert "cannot be reached" in blocked and "pw-xyz" not in blocked


async def test_an_untrusted_certificate_blocks_the_way(tls_simulator: TlsSimulator) -> None:
    """Without the CA bundle the simulator's certificate is refused before anything is sent,
    and the Exchange says how to fix it (--ca-bundle)."""
    settings = ClientSettings(base_url=tls_simulator.url)
    async with CancelClient(settings, API_KEY) as client:
        exchange = await client.cancel(Target(subaccount=SUB, id=umids(1)[0]))
    assert tls_simulator.state.requests == 0 and not exchange.request_sent
    assert exchange.blocked_by is not None and "--ca-bundle" in exchange.blocked_by


# ------------------------------------------------------------------------------ the command


@dataclass
class Ran:
    code: int
    stderr: str
    elapsed_s: float
    output: Path


def run_command(
    tmp_path: Path, sim: TlsSimulator, env: dict[str, str], *args: str, rows: int = 20
) -> Ran:
    """``bulk-cancel run`` in a child process, as cron would: *env* on top of a clean one."""
    import os

    ids = tmp_path / "ids.csv"
    ids.write_text("umid\n" + "\n".join(umids(rows, seed=5)) + "\n")
    output = tmp_path / "out" / "results.csv"
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EIGHTX8_", "BULK_CANCEL_")) and k.lower() not in PROXY_VARIABLES
    }
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable, "-m", "bulk_cancel", "run", "--input", str(ids), "--subaccount", SUB,
            "--output", str(output), "--base-url", sim.url, *args,
        ],
        env={**base, "EIGHTX8_API_KEY": API_KEY, "SSL_CERT_FILE": str(sim.ca_bundle), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    return Ran(done.returncode, done.stderr, time.monotonic() - started, output)


def outcomes(output: Path) -> set[str]:
    with output.open(newline="") as f:
        return {row["outcome"] for row in csv.DictReader(f)}


def test_https_proxy_from_the_environment_is_used(
    tmp_path: Path, proxy: Proxy, tls_simulator: TlsSimulator
) -> None:
    """HTTPS_PROXY with credentials routes the run through the proxy's CONNECT tunnels; the
    password appears in neither the logs nor the summary."""
    pattern = rf"CONNECT 127\.0\.0\.1:{tls_simulator.port}\b"
    before = len(proxy.lines(pattern))
    ran = run_command(tmp_path, tls_simulator, {"HTTPS_PROXY": proxy.url()})
    assert ran.code == ExitCode.OK, ran.stderr
    assert outcomes(ran.output) == {"cancelled"} and tls_simulator.state.requests == 20
    assert len(proxy.wait_for(pattern, before + 1)) > before
    summary = (tmp_path / "out" / "results.summary.json").read_text()
    assert PASSWORD not in ran.stderr and PASSWORD not in summary
    shown = json.loads(summary)["settings"]
    assert shown["proxy"] == f"http://{USER}:****@127.0.0.1:{proxy.port}"
    assert shown["proxy_source"] == "env HTTPS_PROXY"


def test_no_proxy_goes_direct(tmp_path: Path, proxy: Proxy, tls_simulator: TlsSimulator) -> None:
    """NO_PROXY naming the host sends directly: the proxy opens no tunnel to it."""
    pattern = rf"CONNECT 127\.0\.0\.1:{tls_simulator.port}\b"
    ran = run_command(
        tmp_path, tls_simulator, {"https_proxy": proxy.url(), "NO_PROXY": "localhost,127.0.0.1"}
    )
    assert ran.code == ExitCode.OK, ran.stderr
    assert tls_simulator.state.requests == 20
    time.sleep(0.5)  # a tunnel would have been logged when the run closed it
    assert proxy.lines(pattern) == []


def test_a_dead_proxy_stops_the_run_and_sends_nothing(
    tmp_path: Path, tls_simulator: TlsSimulator
) -> None:
    """HTTPS_PROXY at a dead port: nothing is sent, every row stays not_attempted, exit 4, and
    one line names the proxy (password masked) and the problem."""
    port = dead_port()
    ran = run_command(
        tmp_path, tls_simulator, {"HTTPS_PROXY": f"http://ops:{PASSWORD}@127.0.0.1:{port}"}
    )
    assert ran.code == ExitCode.NETWORK, ran.stderr
    assert tls_simulator.state.requests == 0
    assert outcomes(ran.output) == {"not_attempted"}
    assert ran.elapsed_s < 30
    lines = [line for line in ran.stderr.splitlines() if "cannot be reached" in line]
    assert len(lines) == 1 and f"http://ops:****@127.0.0.1:{port}" in lines[0], ran.stderr
    assert PASSWORD not in ran.stderr


def test_wrong_proxy_credentials_stop_the_run(
    tmp_path: Path, proxy: Proxy, tls_simulator: TlsSimulator
) -> None:
    """A 407 stops the run at once, nothing sent, exit 4; --resume with the right proxy
    (a flag, which overrides the environment) then finishes every row."""
    wrong = proxy.url(password="wrong-password")
    ran = run_command(tmp_path, tls_simulator, {"HTTPS_PROXY": wrong})
    assert ran.code == ExitCode.NETWORK, ran.stderr
    assert tls_simulator.state.requests == 0 and outcomes(ran.output) == {"not_attempted"}
    assert "refused the credentials (HTTP 407" in ran.stderr
    assert "wrong-password" not in ran.stderr
    again = run_command(
        tmp_path, tls_simulator, {"HTTPS_PROXY": wrong}, "--proxy", proxy.url(), "--resume"
    )
    assert again.code == ExitCode.OK, again.stderr
    assert outcomes(again.output) == {"cancelled"} and tls_simulator.state.requests == 20


async def test_plain_http_goes_through_the_proxy_and_its_407_blocks(proxy: Proxy) -> None:
    """An http:// host (the simulator) is sent through the proxy in absolute form, no tunnel;
    with wrong credentials the proxy's own 407 is a blocked way, not the API's answer."""
    from bulk_cancel.simulator import running_simulator

    target = Target(subaccount=SUB, id=umids(1)[0])
    async with running_simulator() as sim:
        settings = ClientSettings(base_url=sim.url, proxy=proxy.url())
        async with CancelClient(settings, API_KEY) as client:
            ok = await client.cancel(target)
        wrong = ClientSettings(base_url=sim.url, proxy=proxy.url(password="nope-nope"))
        async with CancelClient(wrong, API_KEY) as client:
            refused = await client.cancel(target)
        requests = sim.state.requests
    assert (ok.status, ok.cancelled_count) == (200, 1)
    assert requests == 1  # the refused one never reached the simulator
    assert refused.blocked_by is not None and "HTTP 407" in refused.blocked_by
    assert not refused.request_sent and "nope-nope" not in refused.blocked_by
    port = sim.url.rsplit(":", 1)[1]
    assert (
        len(proxy.wait_for(rf"DELETE 127\.0\.0\.1:{port}\b|DELETE http://127\.0\.0\.1:{port}")) >= 1
    )


async def test_a_silent_proxy_blocks_the_way_within_the_connect_timeout(
    tls_simulator: TlsSimulator,
) -> None:
    """A proxy that accepts connections but never answers CONNECT: blocked once the connect
    timeout passes (nothing had worked through it yet), nothing sent."""
    held: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read nothing, answer nothing, keep it open

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = ClientSettings(
        base_url=tls_simulator.url,
        proxy=f"http://127.0.0.1:{port}",
        ca_bundle=tls_simulator.ca_bundle,
        connect_timeout_s=0.3,
    )
    try:
        async with CancelClient(settings, API_KEY) as client:
            exchange = await asyncio.wait_for(
                client.cancel(Target(subaccount=SUB, id=umids(1)[0])), 10
            )
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert held, "the client never reached the silent proxy: the test proves nothing"
    assert exchange.blocked_by is not None and "within 0.3 s" in exchange.blocked_by
    assert not exchange.request_sent and tls_simulator.state.requests == 0


def test_a_proxy_password_given_as_a_flag_is_in_no_output(
    tmp_path: Path, tls_simulator: TlsSimulator
) -> None:
    """--proxy with a password: stderr, the summary (its settings and the printed resume and
    retry commands) and the results never show the password."""
    port = dead_port()
    ran = run_command(
        tmp_path, tls_simulator, {}, "--proxy", f"http://ops:{PASSWORD}@127.0.0.1:{port}"
    )
    assert ran.code == ExitCode.NETWORK, ran.stderr
    summary = (tmp_path / "out" / "results.summary.json").read_text()
    assert json.loads(summary)["resume_command"]  # printed, and checked below
    for text in (ran.stderr, summary, ran.output.read_text()):
        assert PASSWORD not in text
