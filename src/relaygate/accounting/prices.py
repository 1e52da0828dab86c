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

    @classmethod
    def from_settings(cls, pricing: Pricing) -> Price:
        cached = pricing.cached_input if pricing.cached_input is not None else pricing.input
        return cls(
            input=usd_to_micros(pricing.input),
            cached_input=usd_to_micros(cached),
            output=usd_to_micros(pricing.output),
            tiers={tier: Fraction(m) for tier, m in pricing.service_tiers.items()},
        )

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
        return self._micros(pico)

    def cost_parts(self, usage: TokenUsage) -> tuple[int, int, int, int]:
        """:meth:`cost` split into uncached input, cached input, output (other than reasoning)
        and reasoning, each at its price, in micro-USD: they sum to :meth:`cost` exactly (each
        part is the rise of the rounded-up running total, so rounding lands once, not four
        times)."""
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        reasoning = min(usage.reasoning_tokens, usage.completion_tokens)
        running = (usage.prompt_tokens - cached) * self.input
        first = self._micros(running)
        running += cached * self.cached_input
        second = self._micros(running)
        running += (usage.completion_tokens - reasoning) * self.output
        third = self._micros(running)
        fourth = self._micros(running + reasoning * self.output)
        return first, second - first, third - second, fourth - third

    def worst_case(self, prompt_tokens: int, output_tokens: int) -> int:
        """The most a request with these bounds can cost, in micro-USD."""
        pico = prompt_tokens * self.input + output_tokens * self.output
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
