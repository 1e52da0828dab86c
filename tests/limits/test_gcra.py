"""GCRA and the in-process limiter, driven by an injected clock."""

from __future__ import annotations

import pytest

from relaygate.errors import RateLimited
from relaygate.limits.gcra import Gcra
from relaygate.limits.memory import MemoryLimiter, Permit
from relaygate.store.records import KeyRecord

T0 = 1000.0


def take(gcra: Gcra, now: float, cost: int = 1) -> tuple[bool, float]:
    """Ask for ``cost`` units at ``now`` and keep them when allowed (as the limiter does)."""
    allowed, tat, retry_after = gcra.peek(now, cost)
    if allowed:
        assert retry_after == 0.0
        gcra.tat = tat
    return allowed, retry_after


def key(
    rpm: int | None = None, tpm: int | None = None, concurrency: int | None = None
) -> KeyRecord:
    return KeyRecord(
        id="key_1", name="", key_hash="h", prefix="rg-", created_at=0,
        rpm=rpm, tpm=tpm, max_concurrency=concurrency,
    )


def snapshot(limiter: MemoryLimiter, key_id: str) -> tuple[float | None, float | None, int]:
    state = limiter._keys[key_id]
    return (
        state.rpm.tat if state.rpm else None,
        state.tpm.tat if state.tpm else None,
        state.inflight,
    )


# --- Gcra -----------------------------------------------------------------------------------------


def test_burst_of_exactly_the_limit() -> None:
    gcra = Gcra(10, period=60)
    assert [take(gcra, T0)[0] for _ in range(10)] == [True] * 10
    allowed, retry_after = take(gcra, T0)
    assert not allowed
    # one unit every 6 s: the next one is due 6 s from now
    assert retry_after == pytest.approx(6.0)


def test_a_refusal_takes_nothing() -> None:
    gcra = Gcra(2, period=60)
    take(gcra, T0)
    take(gcra, T0)
    tat = gcra.tat
    for _ in range(5):
        allowed, new_tat, _ = gcra.peek(T0, 1)
        assert not allowed
        assert new_tat == tat
    assert gcra.tat == tat


def test_peek_takes_nothing_by_itself() -> None:
    gcra = Gcra(1, period=60)
    for _ in range(3):
        assert gcra.peek(T0, 1)[0]
    assert gcra.tat == 0.0


def test_steady_rate_after_the_burst() -> None:
    gcra = Gcra(10, period=60)
    for _ in range(10):
        take(gcra, T0)
    for step in range(1, 6):
        now = T0 + 6 * step
        assert take(gcra, now - 0.01) == (False, pytest.approx(0.01))
        assert take(gcra, now)[0]
        assert not take(gcra, now)[0]


def test_retry_after_is_when_the_request_would_pass() -> None:
    gcra = Gcra(4, period=60)  # one every 15 s
    for _ in range(4):
        take(gcra, T0)
    allowed, retry_after = take(gcra, T0 + 5)
    assert not allowed
    assert retry_after == pytest.approx(10.0)
    assert not take(gcra, T0 + 5 + retry_after - 0.001)[0]
    assert take(gcra, T0 + 5 + retry_after)[0]


def test_an_idle_key_gets_its_whole_burst_back_and_no_more() -> None:
    gcra = Gcra(3, period=60)
    for _ in range(3):
        take(gcra, T0)
    later = T0 + 3600
    assert [take(gcra, later)[0] for _ in range(4)] == [True, True, True, False]


def test_cost_above_the_limit_counts_as_the_whole_limit() -> None:
    gcra = Gcra(100, period=60)
    assert take(gcra, T0, 5000)[0]
    assert gcra.tat == pytest.approx(T0 + 60)
    assert not take(gcra, T0, 1)[0]


def test_multi_unit_costs() -> None:
    gcra = Gcra(100, period=60)
    assert take(gcra, T0, 60)[0]
    assert take(gcra, T0, 40)[0]
    allowed, retry_after = take(gcra, T0, 30)
    assert not allowed
    assert retry_after == pytest.approx(30 * 0.6)


def test_adjust_debt_delays_later_requests() -> None:
    gcra = Gcra(60, period=60)  # one unit a second
    assert take(gcra, T0, 10)[0]  # estimated 10
    gcra.adjust(50)  # actually used 60: the allowance is spent
    allowed, retry_after = take(gcra, T0, 1)
    assert not allowed
    assert retry_after == pytest.approx(1.0)
    gcra.adjust(40)  # more debt than the burst: paid off at the steady rate
    allowed, retry_after = take(gcra, T0, 1)
    assert not allowed
    assert retry_after == pytest.approx(41.0)
    assert take(gcra, T0 + 41)[0]


def test_adjust_refund_frees_the_allowance() -> None:
    gcra = Gcra(60, period=60)
    assert take(gcra, T0, 60)[0]
    assert not take(gcra, T0, 1)[0]
    gcra.adjust(-20)  # estimated 60, used 40
    assert take(gcra, T0, 20)[0]
    assert not take(gcra, T0, 1)[0]


# --- MemoryLimiter ------------------------------------------------------------------------------


def test_concurrency_counter() -> None:
    limiter = MemoryLimiter()
    k = key(concurrency=2)
    first = limiter.acquire(k, 10, now=T0)
    second = limiter.acquire(k, 10, now=T0)
    with pytest.raises(RateLimited) as refused:
        limiter.acquire(k, 10, now=T0)
    assert refused.value.retry_after >= 1
    assert refused.value.status == 429
    assert refused.value.type == "rate_limit_error"
    assert ("retry-after", str(refused.value.retry_after)) in [
        (n.decode(), v.decode()) for n, v in refused.value.headers()
    ]
    limiter.release(first, 10)
    third = limiter.acquire(k, 10, now=T0)
    limiter.release(second, 10)
    limiter.release(third, 10)
    assert snapshot(limiter, k.id)[2] == 0
    # releasing twice frees nothing twice
    limiter.release(third, 10)
    limiter.cancel(third)
    assert snapshot(limiter, k.id)[2] == 0
    a, b = limiter.acquire(k, 1, now=T0), limiter.acquire(k, 1, now=T0)
    with pytest.raises(RateLimited):
        limiter.acquire(k, 1, now=T0)
    limiter.cancel(a)
    limiter.cancel(b)


def test_rpm_burst_then_refusal_with_retry_after() -> None:
    limiter = MemoryLimiter()
    k = key(rpm=3)
    permits = [limiter.acquire(k, 1, now=T0) for _ in range(3)]
    with pytest.raises(RateLimited) as refused:
        limiter.acquire(k, 1, now=T0 + 1)
    assert refused.value.retry_after == 19  # 20 s per request, 1 s already passed
    assert "3 requests per minute" in refused.value.message
    for permit in permits:
        limiter.release(permit, 1)
    # releasing does not give the rate back: the requests happened
    with pytest.raises(RateLimited):
        limiter.acquire(k, 1, now=T0 + 1)
    limiter.release(limiter.acquire(k, 1, now=T0 + 20), 1)


def test_cancel_restores_the_state_exactly() -> None:
    limiter = MemoryLimiter()
    k = key(rpm=5, tpm=1000, concurrency=3)
    kept = limiter.acquire(k, 100, now=T0)
    before = snapshot(limiter, k.id)
    permit = limiter.acquire(k, 250, now=T0 + 2)
    assert snapshot(limiter, k.id) != before
    limiter.cancel(permit)
    assert snapshot(limiter, k.id) == before
    # and it can be done any number of times without drift
    for i in range(50):
        limiter.cancel(limiter.acquire(k, 300, now=T0 + 3 + i))
        assert snapshot(limiter, k.id) == before
    limiter.cancel(permit)  # a second cancel changes nothing
    assert snapshot(limiter, k.id) == before
    # the cancelled requests hold no slot: two more fit beside the kept one, a fourth does not
    more = [limiter.acquire(k, 1, now=T0 + 2) for _ in range(2)]
    with pytest.raises(RateLimited):
        limiter.acquire(k, 1, now=T0 + 2)  # concurrency 3 reached
    for permit_ in [*more, kept]:
        limiter.release(permit_, 1)
    assert snapshot(limiter, k.id)[2] == 0


def test_cancel_of_a_fresh_key_restores_the_initial_state() -> None:
    limiter = MemoryLimiter()
    k = key(rpm=1, tpm=10)
    permit = limiter.acquire(k, 5, now=T0)
    limiter.cancel(permit)
    assert snapshot(limiter, k.id) == (0.0, 0.0, 0)
    # the one request a minute is still available
    limiter.release(limiter.acquire(k, 5, now=T0), 5)
    with pytest.raises(RateLimited):
        limiter.acquire(k, 1, now=T0)


def test_release_charges_actual_tokens() -> None:
    limiter = MemoryLimiter()
    k = key(tpm=60)  # one token a second
    permit = limiter.acquire(k, 10, now=T0)
    limiter.release(permit, 70)  # used 70 tokens, 60 more than estimated
    with pytest.raises(RateLimited) as refused:
        limiter.acquire(k, 1, now=T0)
    assert "tokens per minute" in refused.value.message
    assert refused.value.retry_after == 11  # 70 s of debt minus the 60 s period, plus 1
    limiter.release(limiter.acquire(k, 1, now=T0 + 11), 1)


def test_release_refunds_an_overestimate() -> None:
    limiter = MemoryLimiter()
    k = key(tpm=60)
    permit = limiter.acquire(k, 60, now=T0)
    with pytest.raises(RateLimited):
        limiter.acquire(k, 1, now=T0)
    limiter.release(permit, 20)
    second: Permit = limiter.acquire(k, 40, now=T0)
    limiter.release(second, 40)
    with pytest.raises(RateLimited):
        limiter.acquire(k, 1, now=T0)


def test_new_limits_apply_to_a_known_key() -> None:
    limiter = MemoryLimiter()
    limiter.release(limiter.acquire(key(rpm=1), 1, now=T0), 1)
    with pytest.raises(RateLimited):
        limiter.acquire(key(rpm=1), 1, now=T0)
    # an administrator raises the limit: the new figure takes effect
    limiter.release(limiter.acquire(key(rpm=100), 1, now=T0), 1)


def test_a_concurrency_refusal_retries_after_the_keys_mean_request_time() -> None:
    limiter = MemoryLimiter()
    k = key(concurrency=1)
    limiter.release(limiter.acquire(k, 1, now=T0), 1, now=T0 + 7)  # requests take 7 s
    limiter.acquire(k, 1, now=T0 + 10)
    with pytest.raises(RateLimited) as refused:
        limiter.acquire(k, 1, now=T0 + 10)
    assert refused.value.retry_after == 7
