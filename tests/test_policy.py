"""Judging answers, retry budgets and Retry-After."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from bulk_cancel.model import Exchange, Outcome
from bulk_cancel.policy import RetryPolicy, Stop, judge, parse_retry_after


@pytest.mark.parametrize(
    ("exchange", "outcome", "stop"),
    [
        (Exchange(status=200, cancelled_count=1), Outcome.CANCELLED, None),
        (Exchange(status=200, cancelled_count=7), Outcome.CANCELLED, None),
        (Exchange(status=200, cancelled_count=0), Outcome.NOT_CANCELLABLE, None),
        (Exchange(status=404, code=1300), Outcome.NOT_FOUND, None),
        (Exchange(status=404), Outcome.NOT_FOUND, None),
        (Exchange(status=400, code=1000), Outcome.INVALID_UMID, None),
        (Exchange(status=400, code=1001), Outcome.SUBACCOUNT_REJECTED, Stop.SUBACCOUNT),
        (Exchange(status=401, code=1001), Outcome.SUBACCOUNT_REJECTED, Stop.SUBACCOUNT),
        (Exchange(status=401, code=1200), Outcome.AUTH_FAILED, Stop.RUN),
        (Exchange(status=401, message="<html>"), Outcome.AUTH_FAILED, Stop.RUN),
        (Exchange(status=403, code=1201), Outcome.AUTH_FAILED, Stop.RUN),
        (Exchange(status=426, code=1014), Outcome.FAILED, Stop.RUN),
        (Exchange(status=418), Outcome.FAILED, None),
    ],
)
def test_final_answers(exchange: Exchange, outcome: Outcome, stop: Stop | None) -> None:
    """Each documented answer maps to its outcome, classified by code before status."""
    verdict = judge(exchange, was_ambiguous=False)
    assert verdict.outcome is outcome
    assert verdict.stop is stop


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(status: int) -> None:
    """429 and 5xx are not final; 5xx may have been applied, 429 was not."""
    verdict = judge(Exchange(status=status, retry_after="3"), was_ambiguous=False)
    assert verdict.outcome is None
    assert verdict.ambiguous is (status != 429)
    assert verdict.throttled is (status == 429)
    assert verdict.retry_after_s == 3.0


def test_unreachable_host_is_not_ambiguous() -> None:
    """A connection that was never made cannot have cancelled anything; a timeout might have."""
    assert not judge(
        Exchange(transport_error="cannot connect: ConnectionRefusedError", request_sent=False),
        was_ambiguous=False,
    ).ambiguous
    assert judge(Exchange(transport_error="timeout"), was_ambiguous=False).ambiguous


@pytest.mark.parametrize(
    "exchange", [Exchange(status=200, cancelled_count=0), Exchange(status=404, code=1300)]
)
def test_nothing_to_cancel_after_a_lost_answer_is_unconfirmed(exchange: Exchange) -> None:
    """After an ambiguous attempt, "nothing to cancel" cannot be told from "we just cancelled it"."""
    assert judge(exchange, was_ambiguous=True).outcome is Outcome.UNCONFIRMED


def test_cancelled_after_a_lost_answer_stays_cancelled() -> None:
    """A 200 with a count proves the cancel, whatever happened before."""
    assert (
        judge(Exchange(status=200, cancelled_count=1), was_ambiguous=True).outcome
        is Outcome.CANCELLED
    )


def test_retry_after_forms() -> None:
    """Retry-After is delta-seconds or an HTTP date; junk is ignored."""
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-4") == 0.0
    now = 1_800_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)


def test_retry_policy_prefers_retry_after_and_caps() -> None:
    """Backoff uses Retry-After when given, otherwise grows exponentially with jitter under the cap."""
    policy = RetryPolicy(max_attempts=5, max_elapsed_s=10, initial_backoff_s=1, max_backoff_s=4)
    rng = random.Random(1)
    assert policy.backoff_s(1, 7.0, rng) == 7.0
    waits = [policy.backoff_s(n, None, rng) for n in range(1, 6)]
    assert 0.5 <= waits[0] <= 1 and 1 <= waits[1] <= 2 and all(2 <= w <= 4 for w in waits[3:])
    assert policy.gives_up(5, 0, 0)
    assert policy.gives_up(2, 9, 2)
    assert not policy.gives_up(2, 1, 2)
