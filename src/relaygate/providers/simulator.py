"""A simulated upstream: deterministic text with realistic usage and configurable latency.

For trying relaygate without an upstream account, and for tests and benchmarks. Options
(``options:`` under the upstream): ``first_token_ms`` (default 50), ``inter_token_ms``
(default 10), ``output_tokens`` (default 24), ``reasoning_tokens`` (default 0).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import msgspec

from relaygate.accounting.estimate import prompt_token_guess
from relaygate.providers.base import (
    DONE,
    STARTED,
    Batch,
    Event,
    Finish,
    Provider,
    ProviderRequest,
    ReasoningDelta,
    TextDelta,
    TokenUsage,
)
from relaygate.settings import UpstreamSettings

_WORDS = [
    "relaygate",
    "simulates",
    "an",
    "upstream",
    "model",
    "so",
    "you",
    "can",
    "try",
    "streaming",
    "billing",
    "limits",
    "and",
    "errors",
    "without",
    "any",
    "account",
    "the",
    "words",
    "are",
    "deterministic",
    "for",
    "a",
    "given",
    "prompt",
    "and",
    "every",
    "word",
    "is",
    "one",
    "token",
    "in",
    "the",
    "usage",
    "it",
    "reports",
]


class SimulatorOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    first_token_ms: float = 50.0
    inter_token_ms: float = 10.0
    output_tokens: int = 24
    reasoning_tokens: int = 0


def _text_tokens(seed: bytes, count: int) -> list[str]:
    start = int.from_bytes(hashlib.sha256(seed).digest()[:4], "big") % len(_WORDS)
    return [_WORDS[(start + i) % len(_WORDS)] + " " for i in range(count)]


class SimulatorProvider(Provider):
    """Answers every request itself, as a real upstream would over the network."""

    name = "simulator"
    supports_top_k = True

    def __init__(self, settings: UpstreamSettings, session: object = None) -> None:
        super().__init__(settings, session)  # type: ignore[arg-type]
        self.options = msgspec.convert(settings.options, SimulatorOptions)

    @classmethod
    def check_options(cls, settings: UpstreamSettings) -> None:
        try:
            msgspec.convert(settings.options, SimulatorOptions)
        except msgspec.ValidationError as exc:
            raise ValueError(f"options: {exc}") from None

    async def events(self, request: ProviderRequest) -> AsyncIterator[Batch]:
        opts = self.options
        asked = request.request.max_completion_tokens or request.request.max_tokens
        budget = asked if asked is not None else opts.output_tokens + opts.reasoning_tokens
        reasoning = min(opts.reasoning_tokens, budget)
        text = min(opts.output_tokens, budget - reasoning)
        truncated = reasoning + text < opts.reasoning_tokens + opts.output_tokens
        seed = msgspec.json.encode(request.raw.get("messages"))
        yield STARTED
        if opts.first_token_ms:
            await asyncio.sleep(opts.first_token_ms / 1000)
        words = _text_tokens(seed[::-1], reasoning) + _text_tokens(seed, text)
        deltas: list[Event] = [
            ReasoningDelta(w) if i < reasoning else TextDelta(w) for i, w in enumerate(words)
        ]
        if opts.inter_token_ms and request.stream:
            # One token per read, as a real upstream streams them.
            for i, delta in enumerate(deltas):
                if i:
                    await asyncio.sleep(opts.inter_token_ms / 1000)
                yield [delta]
            deltas = []
        usage = TokenUsage(
            prompt_tokens=prompt_token_guess(request.request),
            completion_tokens=reasoning + text,
            reasoning_tokens=reasoning,
        )
        yield [*deltas, Finish("length" if truncated else "stop"), usage, DONE]
