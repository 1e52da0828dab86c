"""Prices and costs in integer money: costs in micro-USD, prices in pico-USD per token."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from fractions import Fraction

from relaygate.providers.base import TokenUsage
from relaygate.settings import Pricing

MICROS_PER_USD = 1_000_000
_PICO_PER_MICRO = 1_000_000


def usd_to_micros(usd: Decimal) -> int:
    """Exact conversion; more than six decimal places is an error, never a rounding."""
    micros = usd * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise ValueError(f"{usd} USD is finer than one micro-dollar")
    return int(micros)


def micros_to_usd(micros: int) -> Decimal:
    return Decimal(micros).scaleb(-6)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


_ONE = Fraction(1)
"""The default multiplier: compared by identity, the standard price skips the Fraction
arithmetic (``Fraction.numerator`` is a Python-level property)."""


@dataclass(frozen=True, slots=True)
class Price:
    """A model's prices in pico-USD per token (USD per 1M tokens times 10^6)."""

    input: int
    cached_input: int
    output: int
    multiplier: Fraction = _ONE
    """Applied to every cost and bound (a ``service_tier``'s, see :meth:`for_tier`)."""
    tiers: Mapping[str, Fraction] = field(default_factory=dict, compare=False)
    """The model's ``service_tier`` multipliers, exact."""
    cache_write: int | None = None
    """Prompt-cache writes (5 minutes); ``None``: 1.25 times ``input``."""
    cache_write_1h: int | None = None
    """Prompt-cache writes (1 hour); ``None``: 2 times ``input``."""

    @classmethod
    def from_settings(cls, pricing: Pricing) -> Price:
        cached = pricing.cached_input if pricing.cached_input is not None else pricing.input
        write = pricing.cache_write
        write_1h = pricing.cache_write_1h
        return cls(
            input=usd_to_micros(pricing.input),
            cached_input=usd_to_micros(cached),
            output=usd_to_micros(pricing.output),
            tiers={tier: Fraction(m) for tier, m in pricing.service_tiers.items()},
            cache_write=usd_to_micros(write) if write is not None else None,
            cache_write_1h=usd_to_micros(write_1h) if write_1h is not None else None,
        )

    @property
    def write_prices(self) -> tuple[int, int]:
        """The prices of 5-minute and 1-hour cache writes (pico-USD per token)."""
        five = self.cache_write if self.cache_write is not None else -(-self.input * 5 // 4)
        hour = self.cache_write_1h if self.cache_write_1h is not None else self.input * 2
        return five, hour

    def _writes(self, usage: TokenUsage) -> tuple[int, int]:
        """The tokens written to the cache, and their cost above the input price (pico-USD):
        they are counted in the prompt tokens at ``input``, and cost their own price."""
        five, hour = usage.cache_write_tokens, usage.cache_write_1h_tokens
        if not (five or hour):
            return 0, 0
        write, write_1h = self.write_prices
        return five + hour, five * (write - self.input) + hour * (write_1h - self.input)

    def for_tier(self, tier: str | None) -> Price:
        """This price for a request asking for ``tier`` (``service_tier``): multiplied by the
        tier's configured multiplier, unchanged for an unlisted tier or none."""
        if tier is None or not self.tiers:
            return self
        multiplier = self.tiers.get(tier)
        return self if multiplier is None else replace(self, multiplier=multiplier)

    def _micros(self, pico: int) -> int:
        """``pico`` times the multiplier in micro-USD, rounded up (exact integer arithmetic)."""
        m = self.multiplier
        if m is _ONE:
            return -(-pico // _PICO_PER_MICRO)
        return _ceil_div(pico * m.numerator, _PICO_PER_MICRO * m.denominator)

    def cost(self, usage: TokenUsage) -> int:
        """What ``usage`` costs in micro-USD, rounded up to the micro-dollar.

        Cached input is charged at its price; reasoning tokens are part of the completion
        tokens and charged as output.
        """
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        pico = (
            (usage.prompt_tokens - cached) * self.input
            + cached * self.cached_input
            + usage.completion_tokens * self.output
        )
        if usage.cache_write_tokens or usage.cache_write_1h_tokens:
            pico += self._writes(usage)[1]
        return self._micros(pico)

    def cost_parts(self, usage: TokenUsage) -> tuple[int, int, int, int]:
        """:meth:`cost` split into uncached input, cached input, output (other than reasoning)
        and reasoning, each at its price, in micro-USD: they sum to :meth:`cost` exactly (each
        part is the rise of the rounded-up running total, so rounding lands once, not four
        times)."""
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        cached = min(usage.cached_tokens, prompt)
        reasoning = min(usage.reasoning_tokens, completion)
        running = (prompt - cached) * self.input
        if usage.cache_write_tokens or usage.cache_write_1h_tokens:
            running += self._writes(usage)[1]  # cache writes are input, at their own prices
        second_running = running + cached * self.cached_input
        third_running = second_running + (completion - reasoning) * self.output
        fourth_running = third_running + reasoning * self.output
        if self.multiplier is _ONE:  # _micros spelled out: no call per part
            first = -(-running // _PICO_PER_MICRO)
            second = -(-second_running // _PICO_PER_MICRO)
            third = -(-third_running // _PICO_PER_MICRO)
            fourth = -(-fourth_running // _PICO_PER_MICRO)
        else:
            first = self._micros(running)
            second = self._micros(second_running)
            third = self._micros(third_running)
            fourth = self._micros(fourth_running)
        return first, second - first, third - second, fourth - third

    def worst_case(self, prompt_tokens: int, output_tokens: int, writes: bool = False) -> int:
        """The most a request with these bounds can cost, in micro-USD; ``writes``: its prompt
        may be written to the upstream's cache (at the dearer of input and the write prices)."""
        prompt_price = max(self.input, *self.write_prices) if writes else self.input
        pico = prompt_tokens * prompt_price + output_tokens * self.output
        if self.multiplier is _ONE:
            return -(-pico // _PICO_PER_MICRO)
        return self._micros(pico)

    def affordable_output_tokens(self, available_micros: int, prompt_tokens: int) -> int:
        """How many output tokens ``available_micros`` covers after the prompt."""
        m = self.multiplier
        if m is _ONE:
            budget = available_micros * _PICO_PER_MICRO
        else:
            budget = available_micros * _PICO_PER_MICRO * m.denominator // m.numerator
        left = budget - prompt_tokens * self.input
        if left <= 0:
            return 0
        return left // self.output if self.output else 1 << 62
