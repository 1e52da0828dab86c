"""Upstream health with an injected clock: ejection on a failure rate over a sliding window
(never after one error), a cool-down, one probe, automatic recovery."""

from __future__ import annotations

import pytest

from relaygate.routing.health import BUCKETS, HealthPolicy, State, UpstreamHealth
from relaygate.settings import UpstreamSettings
from tests.routing.support import Clock

POLICY = HealthPolicy(window_seconds=60, min_requests=4, failure_rate=0.5, cooldown_seconds=30)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def health(clock: Clock) -> UpstreamHealth:
    return UpstreamHealth("primary", POLICY, clock)


def record(health: UpstreamHealth, outcomes: str) -> None:
    """``outcomes`` as a string: ``o`` for a success, ``x`` for a failure."""
    for outcome in outcomes:
        health.record(outcome == "o", "" if outcome == "o" else "HTTP 500")


def test_one_error_does_not_eject(health: UpstreamHealth) -> None:
    record(health, "x")
    assert health.state is State.HEALTHY
    assert health.acquire()


def test_too_few_requests_never_eject_however_bad(health: UpstreamHealth) -> None:
    record(health, "xxx")  # 100% failures, but only 3 of the 4 needed
    assert health.state is State.HEALTHY


def test_a_failure_rate_at_the_threshold_ejects(health: UpstreamHealth) -> None:
    record(health, "oxox")
    assert health.state is State.EJECTED
    assert not health.acquire()
    assert health.retry_in() == 30


def test_a_failure_rate_below_the_threshold_does_not(health: UpstreamHealth) -> None:
    record(health, "oooxoox")  # 2 of 7
    assert health.state is State.HEALTHY


def test_old_outcomes_slide_out_of_the_window(health: UpstreamHealth, clock: Clock) -> None:
    record(health, "xxx")
    clock.advance(61)  # those three are now outside the 60 s window
    record(health, "oox")
    assert health.state is State.HEALTHY
    assert health.snapshot()["window_requests"] == 3


def test_cool_down_then_exactly_one_probe(health: UpstreamHealth, clock: Clock) -> None:
    record(health, "xxxx")
    clock.advance(29.9)
    assert not health.acquire()
    clock.advance(0.1)
    assert health.acquire()  # the trial
    assert health.state is State.PROBING
    assert not health.acquire()  # everyone else waits for its outcome


def test_a_successful_probe_puts_it_back(health: UpstreamHealth, clock: Clock) -> None:
    record(health, "xxxx")
    clock.advance(30)
    assert health.acquire()
    health.record(True)
    assert health.state is State.HEALTHY
    assert health.acquire()
    record(health, "x")  # the window starts afresh: one error does not eject again
    assert health.state is State.HEALTHY


def test_a_failed_probe_ejects_again_for_a_new_cool_down(
    health: UpstreamHealth, clock: Clock
) -> None:
    record(health, "xxxx")
    clock.advance(30)
    assert health.acquire()
    health.record(False, "connect error")
    assert health.state is State.EJECTED
    assert health.ejections == 2
    clock.advance(29)
    assert not health.acquire()
    clock.advance(1)
    assert health.acquire()


def test_a_probe_that_never_reports_back_is_replaced(health: UpstreamHealth, clock: Clock) -> None:
    record(health, "xxxx")
    clock.advance(30)
    assert health.acquire()  # its request is cancelled and never records an outcome
    clock.advance(30)
    assert health.acquire()


def test_a_probe_that_says_nothing_gives_its_slot_back(
    health: UpstreamHealth, clock: Clock
) -> None:
    """A trial that got a 429, or was cancelled, is no evidence the upstream works again."""
    record(health, "xxxx")
    clock.advance(30)
    assert health.acquire()  # the trial
    assert not health.acquire()  # others keep away while it runs
    health.release()
    assert health.state is State.EJECTED  # not back in rotation on no evidence ...
    assert health.acquire()  # ... and the next request is the trial, without a new cool-down
    assert health.state is State.PROBING
    health.record(True)
    assert health.state is State.HEALTHY


def test_released_outcomes_are_not_counted(health: UpstreamHealth) -> None:
    record(health, "xx")
    for _ in range(10):
        health.release()
    record(health, "o")
    assert (health.state, health.snapshot()["window_requests"]) == (State.HEALTHY, 3)
    record(health, "x")  # 3 failures of 4: out
    assert health.state is State.EJECTED


def test_late_outcomes_of_an_ejected_upstream_are_ignored(
    health: UpstreamHealth, clock: Clock
) -> None:
    record(health, "xxxx")
    record(health, "oooo")  # requests that started before the ejection
    assert health.state is State.EJECTED
    clock.advance(30)
    assert health.acquire()


def test_snapshot(health: UpstreamHealth, clock: Clock) -> None:
    record(health, "ox")
    assert health.snapshot() == {
        "upstream": "primary",
        "state": "healthy",
        "window_requests": 2,
        "window_failure_rate": 0.5,
        "ejections": 0,
        "last_error": "HTTP 500",
    }
    record(health, "xx")
    clock.advance(10)
    snapshot = health.snapshot()
    assert (snapshot["state"], snapshot["retry_in_seconds"]) == ("ejected", 20)


def test_policy_from_settings() -> None:
    settings = UpstreamSettings(
        provider="openai",
        health_window_seconds=10,
        health_min_requests=3,
        health_failure_rate=0.25,
        health_cooldown_seconds=5,
    )
    assert HealthPolicy.from_settings(settings) == HealthPolicy(10, 3, 0.25, 5)


def test_memory_does_not_grow_with_traffic(health: UpstreamHealth, clock: Clock) -> None:
    for _ in range(20_000):
        clock.advance(0.01)
        health.record(True)
    assert len(health._buckets) <= BUCKETS + 1  # counted in buckets, not kept one by one
    assert health.snapshot()["window_requests"] == pytest.approx(6000, abs=100)
