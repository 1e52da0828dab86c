"""Prices and costs: integer money, cached input at its price, reasoning as output, rounding up."""

from __future__ import annotations

import itertools
import random
from decimal import ROUND_CEILING, Decimal

import pytest

from relaygate.accounting.prices import Price, micros_to_usd, usd_to_micros
from relaygate.providers.base import TokenUsage
from relaygate.settings import Pricing

GPT52 = Price.from_settings(
    Pricing(input=Decimal("1.75"), cached_input=Decimal("0.175"), output=Decimal("14.0"))
)
MICRO = Decimal("0.000001")


def reference_cost(usage: TokenUsage) -> int:
    """The cost in micro-USD from the USD-per-1M prices, in Decimal, rounded up."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    usd = (
        (usage.prompt_tokens - cached) * Decimal("1.75")
        + cached * Decimal("0.175")
        + usage.completion_tokens * Decimal("14.0")
    ) / 1_000_000
    return int(usd.quantize(MICRO, rounding=ROUND_CEILING) / MICRO)


def test_prices_are_integer_pico_usd_per_token() -> None:
    assert Price(input=1_750_000, cached_input=175_000, output=14_000_000) == GPT52
    assert all(type(v) is int for v in (GPT52.input, GPT52.cached_input, GPT52.output))


def test_cached_input_defaults_to_the_input_price() -> None:
    price = Price.from_settings(Pricing(input=Decimal("5"), output=Decimal("30")))
    assert price.cached_input == price.input == 5_000_000


def test_one_million_tokens_cost_the_listed_price() -> None:
    assert GPT52.cost(TokenUsage(prompt_tokens=1_000_000)) == 1_750_000
    assert GPT52.cost(TokenUsage(prompt_tokens=1_000_000, cached_tokens=1_000_000)) == 175_000
    assert GPT52.cost(TokenUsage(completion_tokens=1_000_000)) == 14_000_000


def test_cached_input_is_charged_at_its_price() -> None:
    # 600 uncached at 1.75 + 400 cached at 0.175 = 1050 + 70 micro-USD
    usage = TokenUsage(prompt_tokens=1000, cached_tokens=400)
    assert GPT52.cost(usage) == 1120
    assert GPT52.cost(usage) < GPT52.cost(TokenUsage(prompt_tokens=1000))


def test_cache_writes_cost_their_own_prices_by_ttl() -> None:
    price = Price.from_settings(
        Pricing(input=Decimal("3"), cached_input=Decimal("0.3"), output=Decimal("15"),
                cache_write=Decimal("3.75"), cache_write_1h=Decimal("6"))
    )  # fmt: skip
    # 100 input at 3 + 1000 read at 0.3 + 300 written (5 min) at 3.75 + 200 (1 h) at 6
    usage = TokenUsage(prompt_tokens=1600, cached_tokens=1000, cache_write_tokens=300,
                       cache_write_1h_tokens=200)  # fmt: skip
    assert price.cost(usage) == 300 + 300 + 1125 + 1200
    parts = price.cost_parts(usage)
    assert sum(parts) == price.cost(usage)
    assert parts[:2] == (300 + 1125 + 1200, 300)  # the writes are input, at their prices
    # unset, the write prices are Anthropic's multiples of the input price
    default = Price.from_settings(Pricing(input=Decimal("3"), output=Decimal("15")))
    assert default.write_prices == (3_750_000, 6_000_000)
    # a request that asks for writes reserves its prompt at the dearest of them
    assert price.worst_case(1000, 10, writes=True) == 6000 + 150
    assert price.worst_case(1000, 10) == 3000 + 150


def test_cached_tokens_never_exceed_the_prompt() -> None:
    # an upstream reporting more cached than prompt tokens is charged for the prompt only
    assert GPT52.cost(TokenUsage(prompt_tokens=1000, cached_tokens=5000)) == 175


def test_reasoning_is_output_and_counted_once() -> None:
    # reasoning tokens are part of completion_tokens: charged as output, not on top of it
    with_reasoning = TokenUsage(prompt_tokens=13, completion_tokens=1891, reasoning_tokens=1480)
    without = TokenUsage(prompt_tokens=13, completion_tokens=1891)
    assert GPT52.cost(with_reasoning) == GPT52.cost(without) == reference_cost(without)
    assert GPT52.cost(TokenUsage(completion_tokens=100, reasoning_tokens=100)) == 1400


@pytest.mark.parametrize(
    ("usage", "micros"),
    [
        (TokenUsage(), 0),
        (TokenUsage(prompt_tokens=1), 2),  # 1.75 -> 2
        (TokenUsage(prompt_tokens=4), 7),  # exactly 7: no rounding
        (TokenUsage(prompt_tokens=1, cached_tokens=1), 1),  # 0.175 -> 1
        (TokenUsage(prompt_tokens=13, completion_tokens=20), 303),  # 302.75 -> 303
        # 1.75 + 2 * 0.175 + 14 = 16.1 -> 17
        (TokenUsage(prompt_tokens=3, cached_tokens=2, completion_tokens=1), 17),
    ],
)
def test_cost_rounds_up_to_the_micro_dollar(usage: TokenUsage, micros: int) -> None:
    assert GPT52.cost(usage) == micros
    assert GPT52.cost(usage) == reference_cost(usage)


def test_cost_matches_the_decimal_reference_everywhere() -> None:
    for prompt, cached, completion in itertools.product(
        (0, 1, 2, 3, 7, 13, 999, 123_457), (0, 1, 5, 64), (0, 1, 3, 20, 4097)
    ):
        usage = TokenUsage(prompt_tokens=prompt, cached_tokens=cached, completion_tokens=completion)
        assert GPT52.cost(usage) == reference_cost(usage), usage


def test_worst_case_bounds_every_usage_within_its_bounds() -> None:
    assert GPT52.worst_case(100, 20) == 175 + 280
    assert GPT52.worst_case(1, 0) == 2  # 1.75 rounded up
    assert GPT52.worst_case(0, 0) == 0
    for prompt, output in itertools.product((1, 3, 100), (0, 1, 20)):
        worst = GPT52.worst_case(prompt, output)
        for p, c, o in itertools.product(range(prompt + 1), (0, 1), range(output + 1)):
            usage = TokenUsage(prompt_tokens=p, cached_tokens=min(c, p), completion_tokens=o)
            assert GPT52.cost(usage) <= worst, (usage, worst)
        assert GPT52.cost(TokenUsage(prompt_tokens=prompt, completion_tokens=output)) == worst


def test_affordable_output_tokens() -> None:
    # 455 micro-USD: 100 prompt tokens (175) leave 280, which is 20 output tokens at 14
    assert GPT52.affordable_output_tokens(455, 100) == 20
    assert GPT52.affordable_output_tokens(454, 100) == 19
    assert GPT52.affordable_output_tokens(175, 100) == 0
    assert GPT52.affordable_output_tokens(100, 100) == 0
    assert GPT52.affordable_output_tokens(0, 0) == 0
    for available, prompt in itertools.product((0, 1, 14, 15, 300, 455, 10_000), (0, 1, 7, 100)):
        n = GPT52.affordable_output_tokens(available, prompt)
        assert n >= 0
        if n:
            assert GPT52.worst_case(prompt, n) <= available
        assert GPT52.worst_case(prompt, n + 1) > available


def test_free_output_is_always_affordable_once_the_prompt_is() -> None:
    price = Price.from_settings(Pricing(input=Decimal("1"), output=Decimal("0")))
    assert price.affordable_output_tokens(10, 1) > 10**9
    assert price.affordable_output_tokens(0, 1) == 0


@pytest.mark.parametrize(
    ("usd", "micros"),
    [
        ("0", 0),
        ("0.000001", 1),
        ("1.75", 1_750_000),
        ("0.175", 175_000),
        ("14.0", 14_000_000),
        ("0.1000000", 100_000),  # more digits, but an exact micro-dollar amount
        ("123456789.123456", 123_456_789_123_456),
    ],
)
def test_usd_to_micros_is_exact(usd: str, micros: int) -> None:
    converted = usd_to_micros(Decimal(usd))
    assert type(converted) is int
    assert converted == micros
    assert micros_to_usd(converted) == Decimal(usd)


@pytest.mark.parametrize("usd", ["0.0000001", "1.2345678", "0.0000005", "10.0000001"])
def test_usd_to_micros_rejects_more_than_six_decimals(usd: str) -> None:
    with pytest.raises(ValueError, match="micro-dollar"):
        usd_to_micros(Decimal(usd))


def test_micros_to_usd_is_decimal() -> None:
    assert micros_to_usd(1) == Decimal("0.000001")
    assert type(micros_to_usd(1)) is Decimal
    assert str(micros_to_usd(1_750_000)) == "1.750000"


def test_money_is_never_float() -> None:
    # amounts far past float's 53-bit mantissa stay exact
    huge = TokenUsage(prompt_tokens=10**18 + 1)
    cost = GPT52.cost(huge)
    assert type(cost) is int
    assert cost == 1_750_000_000_000_000_002  # (10**18 + 1) * 1.75 = ...0001.75, rounded up
    assert cost != int(float(10**18 + 1) * 1.75)
    worst = GPT52.worst_case(10**18, 10**18 + 1)
    assert type(worst) is int
    assert worst == 15_750_000_000_000_000_014
    assert type(GPT52.affordable_output_tokens(10**20, 10**18)) is int


# --- service_tier multipliers (issue 11, item 12) --------------------------------------------

TIERED = Price.from_settings(
    Pricing(
        input=Decimal("5"),
        output=Decimal("30"),
        service_tiers={"flex": Decimal("0.5"), "priority": Decimal("2.0"), "odd": Decimal("1.5")},
    )
)


@pytest.mark.parametrize(
    ("tier", "expected"),
    [
        pytest.param(None, 665, id="none"),
        pytest.param("default", 665, id="default-unlisted"),
        pytest.param("flex", 333, id="flex-rounded-up"),  # 332.5
        pytest.param("priority", 1330, id="priority"),
        pytest.param("odd", 998, id="odd-rounded-up"),  # 997.5
    ],
)
def test_a_tier_multiplies_the_cost_exactly_rounded_up(tier: str | None, expected: int) -> None:
    usage = TokenUsage(prompt_tokens=13, completion_tokens=20)  # 665 micro-USD at 5/30
    price = TIERED.for_tier(tier)
    assert price.cost(usage) == expected
    assert type(price.cost(usage)) is int
    assert price.worst_case(13, 20) == expected


def test_a_tier_multiplier_against_decimal_arithmetic() -> None:
    for prompt, completion, cached in itertools.product((0, 1, 7, 999_983), (0, 3, 65_537), (0, 5)):
        usage = TokenUsage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
        for tier, multiplier in (("flex", Decimal("0.5")), ("odd", Decimal("1.5"))):
            usd = (prompt * Decimal(5) + completion * Decimal(30)) * multiplier / 1_000_000
            reference = int(usd.quantize(MICRO, rounding=ROUND_CEILING) / MICRO)
            assert TIERED.for_tier(tier).cost(usage) == reference


def test_affordable_output_tokens_follow_the_tier() -> None:
    # 1000 micro-USD, no prompt: 33 output tokens at 30 USD/1M, 16 at priority (x2)
    assert TIERED.affordable_output_tokens(1000, 0) == 33
    assert TIERED.for_tier("priority").affordable_output_tokens(1000, 0) == 16
    assert TIERED.for_tier("flex").affordable_output_tokens(1000, 0) == 66


@pytest.mark.parametrize("multiplier", [None, "flex", "priority"])
def test_the_cost_parts_sum_to_the_cost_exactly(multiplier: str | None) -> None:
    price = Price.from_settings(
        Pricing(input=Decimal("1.75"), cached_input=Decimal("0.175"), output=Decimal("14"),
                service_tiers={"flex": Decimal("0.5"), "priority": Decimal("2.3")})
    ).for_tier(multiplier)
    rng = random.Random(12)
    for _ in range(2000):
        prompt, completion = rng.randrange(0, 5000), rng.randrange(0, 5000)
        usage = TokenUsage(prompt_tokens=prompt, cached_tokens=rng.randrange(0, prompt + 2),
                           completion_tokens=completion,
                           reasoning_tokens=rng.randrange(0, completion + 2))
        parts = price.cost_parts(usage)
        assert all(part >= 0 for part in parts)
        assert sum(parts) == price.cost(usage)
