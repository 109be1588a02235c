"""The simulator, served for real on 127.0.0.1 and driven by a real aiohttp client (no mocks)."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import API_KEY, umids
from yarl import URL

from bulk_cancel import simulator
from bulk_cancel.errors import ConfigError
from bulk_cancel.simulator import (
    Fate,
    Faults,
    RunningSimulator,
    SimulatorConfig,
    SimulatorState,
    add_arguments,
    build_app,
    config_from_args,
    message_fate,
    parse_faults,
    running_simulator,
    serve,
)
from bulk_cancel.simulator.app import _Simulator

SUB = "acme_hq"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def message_path(umid: str, sub: str = SUB) -> str:
    return f"/api/v1/subaccounts/{sub}/messages/{umid}"


def batch_path(batch_id: str, sub: str = SUB) -> str:
    return f"/api/v1/subaccounts/{sub}/messages/batch/{batch_id}"


async def call(
    session: aiohttp.ClientSession,
    sim: RunningSimulator,
    path: str,
    *,
    method: str = "DELETE",
    headers: dict[str, str] | None = None,
) -> Answer:
    """Send *path* exactly as written (``encoded=True``: yarl must not normalise it)."""
    url = URL(sim.url + path, encoded=True)
    async with session.request(method, url, headers=AUTH if headers is None else headers) as resp:
        return Answer(resp.status, await resp.read(), dict(resp.headers))


def assert_envelope(answer: Answer, status: int, code: int, message: str | None = None) -> None:
    """8x8's error envelope: code, message, a fresh errorId (a UUID) and an ISO 8601 timestamp."""
    assert answer.status == status
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"code", "message", "errorId", "timestamp"}
    assert body["code"] == code
    if message is not None:
        assert body["message"] == message
    uuid.UUID(body["errorId"])
    datetime.fromisoformat(body["timestamp"])


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        yield s


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with running_simulator() as running:
        yield running


# --- documented answers -----------------------------------------------------------------------


async def test_scheduled_message_is_cancelled_once(
    session: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    """A scheduled umid: 200 {"cancelledCount":1}, recorded as cancelled under sub/umid."""
    u = umids(1)[0]
    answer = await call(session, sim, message_path(u))
    assert answer.status == 200
    assert answer.json() == {"cancelledCount": 1}
    assert sim.state.cancelled == {f"{SUB}/{u}"}
    assert sim.url.startswith("http://127.0.0.1:")


async def test_uppercase_umid_is_the_same_message(
    session: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    """umids are UUIDs, case-insensitive: an uppercase repeat finds the cancelled message."""
    u = umids(1)[0]
    assert (await call(session, sim, message_path(u.upper()))).json() == {"cancelledCount": 1}
    assert (await call(session, sim, message_path(u))).json() == {"cancelledCount": 0}
    assert sim.state.cancelled == {f"{SUB}/{u}"}


async def test_sent_and_unknown_umids(session: aiohttp.ClientSession) -> None:
    """An already-sent umid answers 200 with 0; an unknown one 404 / 1300 "Message not found."."""
    sent, unknown = umids(2, seed=1)
    config = SimulatorConfig(sent_umids=frozenset({sent}), unknown_umids=frozenset({unknown}))
    async with running_simulator(config) as sim:
        assert (await call(session, sim, message_path(sent))).json() == {"cancelledCount": 0}
        assert_envelope(
            await call(session, sim, message_path(unknown)), 404, 1300, "Message not found."
        )
        assert sim.state.cancelled == set()


async def test_ratios_follow_message_fate(session: aiohttp.ClientSession) -> None:
    """With ratios set, each umid's answer is the one message_fate predicts, and every band occurs."""
    config = SimulatorConfig(not_found_ratio=0.3, already_sent_ratio=0.3)
    ids = umids(60, seed=2)
    fates = {u: message_fate(config, u) for u in ids}
    assert set(fates.values()) == set(Fate)
    expected = {Fate.UNKNOWN: (404, None), Fate.SENT: (200, 0), Fate.SCHEDULED: (200, 1)}
    async with running_simulator(config) as sim:
        for u in ids:
            answer = await call(session, sim, message_path(u))
            status, count = expected[fates[u]]
            assert answer.status == status
            if count is not None:
                assert answer.json() == {"cancelledCount": count}
        assert sim.state.cancelled == {f"{SUB}/{u}" for u in ids if fates[u] is Fate.SCHEDULED}


def test_message_fate_is_stable_and_banded() -> None:
    """The fate is a pure function of the lowercase umid; explicit sets beat the hash."""
    config = SimulatorConfig(not_found_ratio=0.5)
    ids = umids(200, seed=3)
    fates = [message_fate(config, u) for u in ids]
    assert fates == [message_fate(config, u.upper()) for u in ids]
    assert 50 < fates.count(Fate.UNKNOWN) < 150
    assert set(fates) == {Fate.UNKNOWN, Fate.SCHEDULED}
    assert message_fate(SimulatorConfig(), ids[0]) is Fate.SCHEDULED
    pinned = SimulatorConfig(not_found_ratio=1.0, sent_umids=frozenset({ids[0].upper()}))
    assert message_fate(pinned, ids[0]) is Fate.SENT


@pytest.mark.parametrize(
    "bad",
    ["not-a-uuid", "12345678-1234-1234-1234-12345678901", "g" * 8 + "-1234-1234-1234-" + "0" * 12],
)
async def test_invalid_umid_is_400_1000(
    session: aiohttp.ClientSession, sim: RunningSimulator, bad: str
) -> None:
    """An id that is not an 8-4-4-4-12 hex UUID: 400 / 1000 "Invalid umid.", nothing applied."""
    assert_envelope(await call(session, sim, message_path(bad)), 400, 1000, "Invalid umid.")
    assert_envelope(await call(session, sim, batch_path(bad)), 400, 1000)
    assert sim.state.requests_per_id == {}


@pytest.mark.parametrize("sub", ["ab", "x" * 51, "with%20space", "semi%3Bcolon", "rejected_sub"])
async def test_bad_or_rejected_subaccount_is_400_1001(
    session: aiohttp.ClientSession, sub: str
) -> None:
    """A subaccount off the documented pattern, or one configured as rejected: 400 / 1001."""
    config = SimulatorConfig(rejected_subaccounts=frozenset({"rejected_sub"}))
    async with running_simulator(config) as sim:
        answer = await call(session, sim, message_path(umids(1)[0], sub=sub))
        assert_envelope(answer, 400, 1001, "Provided subAccountId doesn't belongs to your account")
        assert sim.state.stray == 0


async def test_subaccount_pattern_allows_its_punctuation(
    session: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    """Letters, digits and - . _ & (here & percent-encoded) are a valid subaccount."""
    answer = await call(session, sim, message_path(umids(1)[0], sub="A-b.c_d%26e"))
    assert answer.json() == {"cancelledCount": 1}
    assert sim.state.cancelled == {f"A-b.c_d&e/{umids(1)[0]}"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": ""},
    ],
)
async def test_missing_or_malformed_key_is_401_1200(
    session: aiohttp.ClientSession, sim: RunningSimulator, headers: dict[str, str]
) -> None:
    """No usable Bearer key: 401 / 1200 "Request was not authenticated properly"."""
    answer = await call(session, sim, message_path(umids(1)[0]), headers=headers)
    assert_envelope(answer, 401, 1200, "Request was not authenticated properly")
    assert sim.state.cancelled == set()


async def test_api_keys_and_forbidden_keys(session: aiohttp.ClientSession) -> None:
    """With api_keys set only those pass (others 401 / 1200); a forbidden key is 403 / 1201."""
    config = SimulatorConfig(api_keys=frozenset({API_KEY}), forbidden_keys=frozenset({"banned"}))
    u = umids(1)[0]
    async with running_simulator(config) as sim:
        wrong = await call(session, sim, message_path(u), headers={"Authorization": "Bearer x"})
        assert_envelope(wrong, 401, 1200)
        banned = await call(
            session, sim, message_path(u), headers={"Authorization": "bearer banned"}
        )
        assert_envelope(banned, 403, 1201)
        assert (await call(session, sim, message_path(u))).json() == {"cancelledCount": 1}


async def test_the_key_is_never_echoed(session: aiohttp.ClientSession) -> None:
    """No answer body, header or state snapshot contains the Authorization key."""
    config = SimulatorConfig(api_keys=frozenset({"other"}), faults=parse_faults("http_500=0.5"))
    async with running_simulator(config) as sim:
        answers = [
            await call(session, sim, path)
            for path in (message_path("bad"), message_path(umids(1)[0]), "/nowhere", "/_sim/state")
        ]
        snapshot = json.dumps(sim.state.snapshot(include_ids=True))
    for answer in answers:
        assert API_KEY.encode() not in answer.body
        assert API_KEY not in json.dumps(answer.headers)
    assert API_KEY not in snapshot


@pytest.mark.parametrize(
    ("repeat", "status", "body"),
    [("zero", 200, {"cancelledCount": 0}), ("not_found", 404, None)],
)
async def test_second_cancel_answers_per_repeat_cancel(
    session: aiohttp.ClientSession, repeat: Any, status: int, body: Any
) -> None:
    """Cancelling a cancelled umid again: 200 with 0, or 404 / 1300, as configured; counted twice."""
    u = umids(1)[0]
    async with running_simulator(SimulatorConfig(repeat_cancel=repeat)) as sim:
        assert (await call(session, sim, message_path(u))).json() == {"cancelledCount": 1}
        again = await call(session, sim, message_path(u))
        if body is None:
            assert_envelope(again, status, 1300)
        else:
            assert (again.status, again.json()) == (status, body)
        assert sim.state.requests_per_id == {f"{SUB}/{u}": 2}
        assert sim.state.applied_twice == 1
        assert sim.state.cancelled == {f"{SUB}/{u}"}


async def test_batch_cancels_batch_size_then_zero(session: aiohttp.ClientSession) -> None:
    """A batchId cancels batch_size messages the first time, then 0; kept apart from umids."""
    b = umids(1, seed=4)[0]
    async with running_simulator(SimulatorConfig(batch_size=5)) as sim:
        assert (await call(session, sim, batch_path(b))).json() == {"cancelledCount": 5}
        assert (await call(session, sim, batch_path(b.upper()))).json() == {"cancelledCount": 0}
        assert sim.state.cancelled_batches == {f"{SUB}/{b}"}
        assert sim.state.cancelled == set()
        assert sim.state.requests_per_id == {f"{SUB}/batch/{b}": 2}


# --- rate limits ------------------------------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after(session: aiohttp.ClientSession) -> None:
    """20 requests at once against 5/s: the excess gets 429, Retry-After: 1, all counted."""
    async with running_simulator(SimulatorConfig(rate_per_s=5)) as sim:
        answers = await asyncio.gather(
            *(call(session, sim, message_path(u)) for u in umids(20, seed=5))
        )
        statuses = Counter(a.status for a in answers)
        assert set(statuses) == {200, 429}
        assert 5 <= statuses[200] <= 10  # 5 unless the burst straddled more than a second
        limited = [a for a in answers if a.status == 429]
        assert all(a.headers["Retry-After"] == "1" for a in limited)
        assert_envelope(limited[0], 429, 1429)
        assert sim.state.throttled == statuses[429]
        assert sim.state.max_per_s == {SUB: 5}
        assert len(sim.state.cancelled) == statuses[200]


async def test_ip_rate_limit_spans_subaccounts(session: aiohttp.ClientSession) -> None:
    """The global limit counts every subaccount together; the per-subaccount one can be off."""
    config = SimulatorConfig(rate_per_s=None, ip_rate_per_s=4)
    async with running_simulator(config) as sim:
        answers = await asyncio.gather(
            *(
                call(session, sim, message_path(u, sub=f"sub_{i % 4}"))
                for i, u in enumerate(umids(12))
            )
        )
        assert Counter(a.status for a in answers)[429] >= 4
        assert sim.state.max_ip_per_s == 4
        assert sum(sim.state.max_per_s.values()) == 4


def test_admit_is_a_sliding_one_second_window() -> None:
    """No 1-second window ever holds more than the limit; a slot frees exactly 1 s after its use."""
    state = SimulatorState()

    def admit(now: float) -> bool:
        return state.admit(SUB, now, rate_per_s=3, ip_rate_per_s=None)

    assert [admit(t) for t in (0.0, 0.1, 0.2, 0.5, 0.99)] == [True, True, True, False, False]
    assert admit(1.0)  # 0.0 left the window (now - 1, now]
    assert not admit(1.05)
    assert admit(1.1)
    assert state.max_per_s == {SUB: 3}
    assert state.max_ip_per_s == 3  # refused requests take no slot
    assert state.admit(None, 1.2, rate_per_s=3, ip_rate_per_s=None)  # bad subaccounts: IP only


def test_max_per_s_is_measured_without_a_limit() -> None:
    """With no limit the state still measures the busiest 1-second window per subaccount."""
    state = SimulatorState()
    for i in range(50):
        assert state.admit(SUB, i * 0.01, rate_per_s=None, ip_rate_per_s=None)
    for i in range(10):
        state.admit(SUB, 5 + i * 0.2, rate_per_s=None, ip_rate_per_s=None)
    assert state.snapshot()["max_per_s"] == 50


# --- faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "applied"),
    [
        ("http_500", 500, False),
        ("http_502", 502, False),
        ("http_503", 503, False),
        ("http_500_applied", 500, True),
        ("burst_429", 429, False),
        ("bad_json", 200, True),
    ],
)
async def test_answered_faults(
    session: aiohttp.ClientSession, fault: str, status: int, applied: bool
) -> None:
    """Each answered fault has its status and body, and applies the cancel only when documented."""
    u = umids(1, seed=6)[0]
    async with running_simulator(SimulatorConfig(faults=parse_faults(f"{fault}=1.0"))) as sim:
        answer = await call(session, sim, message_path(u))
        assert answer.status == status
        assert (sim.state.cancelled == {f"{SUB}/{u}"}) is applied
        assert sim.state.faults == {fault: 1}
        assert sim.state.by_status == {status: 1}
    if fault in ("http_500", "http_502"):
        assert answer.headers["Content-Type"].startswith("text/html")
        assert answer.body.startswith(b"<html>")
    elif fault == "http_503":
        assert answer.body == b""
    elif fault == "http_500_applied":
        assert_envelope(answer, 500, 2000, "Internal server error")
    elif fault == "burst_429":
        assert answer.headers["Retry-After"] == "1"
        assert sim.state.throttled == 1
    else:
        assert answer.body == b'{"cancelledCo'
        with pytest.raises(json.JSONDecodeError):
            answer.json()


@pytest.mark.parametrize(("fault", "applied"), [("drop_before", False), ("drop_after", True)])
async def test_dropped_connections(
    session: aiohttp.ClientSession, fault: str, applied: bool
) -> None:
    """A drop closes the connection without a byte of answer: aiohttp raises ServerDisconnectedError."""
    u = umids(1, seed=7)[0]
    async with running_simulator(SimulatorConfig(faults=parse_faults(f"{fault}=1"))) as sim:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await call(session, sim, message_path(u))
        state = sim.state
        # aiohttp re-sends an idempotent DELETE once after a disconnect: 1 or 2 requests.
        assert state.requests in (1, 2)
        assert state.faults == {fault: state.requests}
        assert state.by_status == {}
        assert (state.cancelled == {f"{SUB}/{u}"}) is applied
        assert (f"{SUB}/{u}" in state.requests_per_id) is applied


async def test_hang_applies_then_outlasts_the_client(session: aiohttp.ClientSession) -> None:
    """hang: the cancel is applied, the answer waits hang_s; the client times out, teardown is quick."""
    u = umids(1, seed=8)[0]
    config = SimulatorConfig(faults=parse_faults("hang=1"), hang_s=30)
    started = time.monotonic()
    async with running_simulator(config) as sim:
        with pytest.raises(TimeoutError):
            async with session.delete(
                sim.url + message_path(u), headers=AUTH, timeout=aiohttp.ClientTimeout(total=0.3)
            ):
                pass
        assert sim.state.cancelled == {f"{SUB}/{u}"}
        assert sim.state.faults == {"hang": 1}
    assert time.monotonic() - started < 10  # the hung handler did not hold teardown for 30 s


async def test_fault_draws_replay_with_the_seed(session: aiohttp.ClientSession) -> None:
    """The same seed gives the same fault sequence; POST /_sim/reset replays it from the start."""
    faults = Faults.mix(0.6, exclude=("hang", "drop_before", "drop_after"))
    ids = umids(40, seed=9)

    async def statuses(sim: RunningSimulator) -> list[int]:
        return [(await call(session, sim, message_path(u))).status for u in ids]

    async with running_simulator(SimulatorConfig(faults=faults, seed=7)) as sim:
        first = await statuses(sim)
        await call(session, sim, "/_sim/reset", method="POST")
        replay = await statuses(sim)
    async with running_simulator(SimulatorConfig(faults=faults, seed=8)) as other:
        different = await statuses(other)
    assert first == replay
    assert first != different
    assert 200 in first and len(set(first)) >= 3


def test_faults_mix_shares_the_probability() -> None:
    """Faults.mix(p) spreads p evenly over the kinds it includes."""
    mix = Faults.mix(0.9)
    assert mix.total == pytest.approx(0.9)
    assert mix.hang == pytest.approx(0.1)
    no_hang = Faults.mix(0.4, exclude=["hang"])
    assert no_hang.hang == 0 and no_hang.total == pytest.approx(0.4)
    with pytest.raises(ValueError, match="unknown fault"):
        Faults.mix(0.1, exclude=["nope"])


# --- parse_faults and config ------------------------------------------------------------------


def test_parse_faults_reads_a_spec() -> None:
    """NAME=P pairs, spaces tolerated; "" and "none" mean no faults; spec() round-trips."""
    faults = parse_faults(" http_500=0.05, drop_after = 0.01 ,burst_429=1e-3")
    assert faults == Faults(http_500=0.05, drop_after=0.01, burst_429=0.001)
    assert parse_faults(faults.spec()) == faults
    assert parse_faults("") == parse_faults("none") == Faults()
    assert Faults().spec() == "none"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("http_404=0.1", "unknown fault 'http_404'"),
        ("http_500", "expected NAME=PROBABILITY"),
        ("=0.1", "expected NAME=PROBABILITY"),
        ("http_500=lots", "'lots' is not a number"),
        ("http_500=1.5", "between 0 and 1"),
        ("http_500=-0.1", "between 0 and 1"),
        ("http_500=nan", "between 0 and 1"),
        ("http_500=0.1,http_500=0.2", "given twice"),
        ("http_500=0.6,http_503=0.6", "add up to 1.2"),
    ],
)
def test_parse_faults_rejects_bad_specs(spec: str, message: str) -> None:
    """A bad --faults spec raises ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_faults(spec)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"not_found_ratio": 1.5}, "between 0 and 1"),
        ({"not_found_ratio": 0.6, "already_sent_ratio": 0.6}, "1 or less"),
        ({"rate_per_s": 0}, "at least 1"),
        ({"latency_s": -1}, "cannot be negative"),
        ({"repeat_cancel": "maybe"}, "'zero' or 'not_found'"),
    ],
)
def test_config_rejects_impossible_settings(kwargs: dict[str, Any], message: str) -> None:
    """SimulatorConfig refuses ratios outside [0, 1], zero rates, negative times, unknown readings."""
    with pytest.raises(ValueError, match=re.escape(message)):
        SimulatorConfig(**kwargs)


# --- stray requests and admin -----------------------------------------------------------------


async def test_encoded_slash_stays_inside_its_segment(
    session: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    """%2F and %2E%2E in a umid or subaccount stay one segment: a 400, never a stray request."""
    u = umids(1)[0]
    assert_envelope(await call(session, sim, message_path("a%2F..%2Fb")), 400, 1000)
    assert_envelope(await call(session, sim, message_path("%2E%2E")), 400, 1000)
    assert_envelope(await call(session, sim, message_path(u, sub="acme%2Fhq")), 400, 1001)
    assert sim.state.stray == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", message_path("a/b")),
        ("DELETE", message_path(umids(1)[0]) + "/extra"),
        ("DELETE", message_path(umids(1)[0]) + "/"),
        ("DELETE", message_path("..")),
        ("DELETE", message_path(umids(1)[0], sub="..")),
        ("DELETE", f"/api/v1/subaccounts/{SUB}/x/../messages/{umids(1)[0]}"),
        ("DELETE", message_path(umids(1)[0]) + "?limit=1"),
        ("DELETE", message_path(umids(1)[0], sub="")),
        ("DELETE", message_path("")),
        ("DELETE", f"/api/v1/subaccounts/{SUB}/messages/%62atch/{umids(1)[0]}"),
        ("DELETE", f"/api/v2/subaccounts/{SUB}/messages/{umids(1)[0]}"),
        ("DELETE", f"/API/v1/subaccounts/{SUB}/messages/{umids(1)[0]}"),
        ("DELETE", "/admin"),
        ("DELETE", "/_sim/reset"),
        ("GET", message_path(umids(1)[0])),
        ("POST", batch_path(umids(1)[0])),
    ],
)
async def test_stray_requests_are_counted_and_404(
    session: aiohttp.ClientSession, sim: RunningSimulator, method: str, path: str
) -> None:
    """Anything but the two documented DELETE shapes is stray: 404, counted, its path kept."""
    answer = await call(session, sim, path, method=method)
    assert_envelope(answer, 404, 1404)
    state = sim.state
    assert (state.stray, state.requests, state.by_status) == (1, 1, {404: 1})
    assert list(state.stray_paths) == [f"{method} {path}"]
    assert state.requests_per_id == {}


async def test_stray_paths_keep_only_recent_short_entries(
    session: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    """The state keeps the last 20 stray paths, each cut to 200 characters."""
    for i in range(25):
        await call(session, sim, f"/stray/{i}/" + "x" * 300)
    assert sim.state.stray == 25
    assert len(sim.state.stray_paths) == 20
    assert sim.state.stray_paths[-1].startswith("DELETE /stray/24/")
    assert max(len(p) for p in sim.state.stray_paths) == 200


async def test_admin_state_and_reset(session: aiohttp.ClientSession, sim: RunningSimulator) -> None:
    """GET /_sim/state gives the snapshot (ids with ?ids=1); POST /_sim/reset forgets; neither counts."""
    ids = umids(3, seed=10)
    for u in ids:
        await call(session, sim, message_path(u))
    await call(session, sim, message_path(ids[0]))
    await call(session, sim, message_path("nope"))
    brief = (await call(session, sim, "/_sim/state", method="GET")).json()
    assert brief["requests"] == 5
    assert brief["by_status"] == {"200": 4, "400": 1}
    assert brief["cancelled_count"] == 3 and brief["applied_twice"] == 1
    assert brief["max_per_s"] == 5 and brief["max_per_s_by_subaccount"] == {SUB: 5}
    assert (brief["stray"], brief["throttled"], brief["faults"]) == (0, 0, {})
    assert "cancelled" not in brief and "requests_per_id" not in brief
    full = (await call(session, sim, "/_sim/state?ids=1", method="GET")).json()
    assert full["cancelled"] == sorted(f"{SUB}/{u}" for u in ids)
    assert full["requests_per_id"] == {
        f"{SUB}/{ids[0]}": 2,
        f"{SUB}/{ids[1]}": 1,
        f"{SUB}/{ids[2]}": 1,
    }
    assert full["cancelled_batches"] == []
    assert (await call(session, sim, "/_sim/reset", method="POST")).json() == {"reset": True}
    assert sim.state.snapshot() == SimulatorState().snapshot()
    assert (await call(session, sim, message_path(ids[0]))).json() == {"cancelledCount": 1}


def test_latency_jitter_draws_evenly_and_leaves_the_faults_be() -> None:
    """Each answer waits latency_s plus an even draw of up to latency_jitter_s; the draws are
    seeded (a reset replays them) and apart from the fault draws, which stay as without jitter."""
    faults = Faults(http_503=0.3)
    plain = _Simulator(SimulatorConfig(faults=faults, seed=4), SimulatorState(), web.Response)
    config = SimulatorConfig(latency_s=0.1, latency_jitter_s=0.05, faults=faults, seed=4)
    jittered = _Simulator(config, SimulatorState(), web.Response)
    waits = []
    for _ in range(2000):
        waits.append(jittered._latency())
        assert jittered._draw_fault() == plain._draw_fault()
    assert all(0.1 <= w < 0.15 for w in waits)
    assert min(waits) < 0.101 and max(waits) > 0.149
    assert sum(waits) / len(waits) == pytest.approx(0.125, abs=0.002)
    jittered.reset()
    assert [jittered._latency() for _ in range(5)] == waits[:5]
    assert plain._latency() == 0.0


async def test_latency_overlaps_concurrent_requests(session: aiohttp.ClientSession) -> None:
    """latency_s delays each answer; concurrent requests all arrive before the first is answered."""
    async with running_simulator(SimulatorConfig(latency_s=0.5)) as sim:
        started = time.monotonic()
        calls = [asyncio.create_task(call(session, sim, message_path(u))) for u in umids(5)]
        for _ in range(500):  # plain counters, nothing to wait on: poll, for 5 s at most
            if sim.state.requests == 5:
                break
            await asyncio.sleep(0.01)
        assert sim.state.by_status == {}  # five in flight at once, none answered yet
        answers = await asyncio.gather(*calls)
        assert time.monotonic() - started >= 0.5
        assert [a.status for a in answers] == [200] * 5


async def test_build_app_serves_the_same_api(session: aiohttp.ClientSession) -> None:
    """build_app's application answers like running_simulator, stray newline paths included."""
    state = SimulatorState()
    runner = web.AppRunner(build_app(SimulatorConfig(), state), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        sim = RunningSimulator(
            url=f"http://127.0.0.1:{runner.addresses[0][1]}", state=state, config=SimulatorConfig()
        )
        u = umids(1)[0]
        assert (await call(session, sim, message_path(u))).json() == {"cancelledCount": 1}
        assert (await call(session, sim, "/new%0Aline")).status == 404
        assert (await call(session, sim, "/_sim/state", method="GET")).json()["requests"] == 2
    finally:
        await runner.cleanup()
    assert state.cancelled == {f"{SUB}/{u}"} and state.stray == 1


async def test_port_in_use_is_a_config_error() -> None:
    """Asking for a port that is taken raises ConfigError naming the address."""
    async with running_simulator() as sim:
        port = int(sim.url.rsplit(":", 1)[1])
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
            async with running_simulator(port=port):
                pass


# --- serve and the command line ---------------------------------------------------------------


async def test_serve_announces_its_url_and_saves_state(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """serve() announces one line with the real port, serves, and writes the state file when cancelled."""
    lines: list[str] = []
    announced = asyncio.Event()

    def announce(line: str) -> None:
        lines.append(line)
        announced.set()

    state_file = tmp_path / "state.json"
    task = asyncio.create_task(
        serve(SimulatorConfig(), host="127.0.0.1", port=0, announce=announce, state_file=state_file)
    )
    await asyncio.wait_for(announced.wait(), 10)
    match = re.fullmatch(
        r"bulk-cancel simulator listening on (http://127\.0\.0\.1:(\d+))", lines[0]
    )
    assert match and int(match[2]) > 0
    sim = RunningSimulator(url=match[1], state=SimulatorState(), config=SimulatorConfig())
    u = umids(1)[0]
    assert (await call(session, sim, message_path(u))).json() == {"cancelledCount": 1}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert lines == [lines[0]]
    saved = json.loads(state_file.read_text())
    assert saved["cancelled"] == [f"{SUB}/{u}"] and saved["requests"] == 1


def test_serve_process_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """In its own process: one flushed stdout line, SIGTERM ends it with exit 0 and a state file."""
    state_file = tmp_path / "state.json"
    code = (
        "import asyncio, sys, pathlib\n"
        "from bulk_cancel.simulator import SimulatorConfig, serve\n"
        "asyncio.run(serve(SimulatorConfig(), port=0, state_file=pathlib.Path(sys.argv[1])))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(state_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("bulk-cancel simulator listening on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[-1].strip()
        u = umids(1)[0]
        request = urllib.request.Request(url + message_path(u), method="DELETE", headers=AUTH)  # noqa: S310 - http://127.0.0.1 from the child
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            assert json.load(resp) == {"cancelledCount": 1}
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out == "" and err == ""
    assert json.loads(state_file.read_text())["cancelled"] == [f"{SUB}/{u}"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bulk-cancel simulate")
    add_arguments(parser)
    return parser


def test_flag_defaults_are_the_config_defaults() -> None:
    """No flags: 127.0.0.1:8088 and exactly SimulatorConfig()'s defaults (8x8's rate limits)."""
    ns = _parser().parse_args([])
    assert (ns.host, ns.port, ns.state_file) == ("127.0.0.1", 8088, None)
    assert config_from_args(ns) == SimulatorConfig()


def test_flags_build_the_config(tmp_path: Path) -> None:
    """Every flag lands in the config; repeatable flags collect; rate 0 means no limit."""
    ns = _parser().parse_args(
        [
            "--host", "127.0.0.2", "--port", "0", "--rate", "0", "--ip-rate", "50",
            "--latency-ms", "25", "--latency-jitter-ms", "40", "--faults", "http_503=0.1,hang=0.01", "--seed", "9",
            "--api-key", "k1", "--api-key", "k2", "--rejected-subaccount", "bad_sub",
            "--not-found-ratio", "0.1", "--already-sent-ratio", "0.2",
            "--repeat-cancel", "not_found", "--state-file", str(tmp_path / "s.json"),
            "--batch-size", "7", "--hang-s", "45",
        ]
    )  # fmt: skip
    assert (ns.host, ns.port, ns.state_file) == ("127.0.0.2", 0, tmp_path / "s.json")
    assert config_from_args(ns) == SimulatorConfig(
        api_keys=frozenset({"k1", "k2"}),
        rejected_subaccounts=frozenset({"bad_sub"}),
        not_found_ratio=0.1,
        already_sent_ratio=0.2,
        repeat_cancel="not_found",
        batch_size=7,
        rate_per_s=None,
        ip_rate_per_s=50,
        latency_s=0.025,
        latency_jitter_s=0.04,
        faults=Faults(http_503=0.1, hang=0.01),
        seed=9,
        hang_s=45.0,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--faults", "bogus=1"], "unknown fault 'bogus'"),
        (["--not-found-ratio", "2"], "not between 0 and 1"),
        (["--rate", "-5"], "is negative"),
        (["--port", "70000"], "not a TCP port"),
        (["--repeat-cancel", "maybe"], "invalid choice"),
    ],
)
def test_bad_flags_are_usage_errors(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """A bad flag value exits 2 with argparse's one-line error saying what is wrong."""
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_clashing_flags_are_a_config_error() -> None:
    """Ratios that each pass but add up to more than 1 raise ConfigError."""
    ns = _parser().parse_args(["--not-found-ratio", "0.7", "--already-sent-ratio", "0.7"])
    with pytest.raises(ConfigError, match="1 or less"):
        config_from_args(ns)


def test_help_ends_with_a_runnable_example() -> None:
    """--help describes every flag and ends with a bulk-cancel simulate example."""
    parser = _parser()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    text = parser.format_help()
    for flag in ("--rate", "--ip-rate", "--latency-ms", "--faults", "--seed", "--api-key",
                 "--rejected-subaccount", "--not-found-ratio", "--already-sent-ratio",
                 "--repeat-cancel", "--state-file", "--host", "--port"):  # fmt: skip
        assert flag in text
    assert text.rstrip().splitlines()[-1].strip().startswith("bulk-cancel simulate --port")


def test_public_names_and_a_light_import() -> None:
    """__all__ names exist, and importing the module leaves aiohttp unimported (quick --help)."""
    assert all(hasattr(simulator, name) for name in simulator.__all__)
    probe = "import sys, bulk_cancel.simulator; print('aiohttp' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=30
    )
    assert done.stdout.strip() == "False"
