"""Admission and settlement: the rate limits and the credit reservation as one atomic step,
and the charge, release and ledger row that end every admitted request exactly once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from relaygate import tracing
from relaygate.accounting.estimate import (
    image_parts,
    output_token_bound,
    prompt_token_bound,
    prompt_token_guess,
)
from relaygate.accounting.gate import Gate, Hold, Unaffordable
from relaygate.accounting.journal_format import ROW_FIELDS
from relaygate.accounting.ledger import LedgerWriter
from relaygate.accounting.prices import micros_to_usd
from relaygate.errors import InsufficientQuota
from relaygate.protocol.types import ChatRequest, ImagePart
from relaygate.providers.base import TokenUsage
from relaygate.routing.catalog import CatalogModel
from relaygate.store.records import KeyRecord, LedgerRow

if TYPE_CHECKING:
    from relaygate.access import Access

log = logging.getLogger("relaygate.accounting")


@dataclass(slots=True)
class Ticket:
    """An admitted request: what it holds until :meth:`Admissions.settle`."""

    request_id: str
    key: KeyRecord
    model: CatalogModel
    stream: bool
    hold: Hold
    prompt_guess: int
    started: float
    settled: bool = False
    tier: str | None = None
    """The request's ``service_tier``: its multiplier applies to the charge."""
    output_limit: int | None = None
    """Set when the request asked for no output limit and what the key can spend could not
    cover the model's maximum (``clamp_output_to_balance``): the ``max_completion_tokens``
    the upstream is sent, the most the money affords."""
    api: str = "chat"
    """The API the client called (``chat``, ``messages``, ``responses``): the ledger's
    ``api``."""
    image_tokens: int = 0
    """The prompt tokens of the request's images by their real sizes, with OpenAI's tile
    formula, once the upstream that answers is known to bill by it (else 0): the usage's
    ``image_tokens`` when the upstream does not report them."""
    access: Access | None = None
    """The request log's record of the request: settling fills in its usage and cost."""


NO_BILLING_PAGE = (
    "Add credits to this key's account: ask the operator of this gateway"
    " (relaygate credits add KEY_ID USD)"
)
"""The 402's ``fallback_suggestion`` while no ``billing_url`` is configured."""


class Admissions:
    def __init__(
        self,
        gate: Gate,
        ledger: LedgerWriter,
        *,
        billing_url: str | None = None,
        clamp_min_output_tokens: int | None = None,
    ) -> None:
        """``clamp_min_output_tokens`` set turns ``clamp_output_to_balance`` on."""
        self.gate = gate
        self.ledger = ledger
        self.billing = billing_url or NO_BILLING_PAGE
        self.clamp_min = clamp_min_output_tokens
        self.uncharged_micros = 0
        """Cost that exceeded a reservation plus the balance and could not be charged."""
        self.deadline_passed = False
        """The shutdown grace period is over: a cancelled request was ended by it (the stream
        gets an SSE error event, a non-stream a 503; both are billed as ``cancelled``)."""

    async def admit(
        self,
        key: KeyRecord,
        model: CatalogModel,
        request: ChatRequest,
        body_size: int,
        request_id: str,
        fallbacks: Sequence[CatalogModel] = (),
        *,
        api: str = "chat",
        cache_writes: bool = False,
        images: list[ImagePart] | None = None,
    ) -> Ticket:
        """Take a rate-limit slot and reserve the worst-case cost, or raise 429/402/503 having
        taken neither. ``cache_writes``: the prompt may be written to the upstream's cache,
        so its bound is reserved at the dearer of the input and cache-write prices.

        A request that sets no output limit, whose worst case the key cannot afford, is
        admitted with the output limit the money affords instead (``Ticket.output_limit``) when
        clamping is on and that limit is at least ``clamp_min_output_tokens``. ``images``:
        the request's image parts (:func:`~relaygate.accounting.estimate.image_parts`), when
        the caller has them."""
        self.ledger.check_capacity()
        if images is None:  # the request's image parts, once, for the guess and every bound
            images = image_parts(request)
        estimate = model.settings.image_token_estimate
        guess = prompt_token_guess(request, estimate, model.pixels, images)
        candidates = (model, *fallbacks)
        output_limit: int | None = None
        for attempt in range(3):  # what is available may shrink between tries: try again
            # The reservation covers the dearest model that may answer (fallbacks included).
            if fallbacks:
                worst, dearest, prompt_bound = max(
                    [
                        _worst_case(c, request, body_size, output_limit, cache_writes, images)
                        for c in candidates
                    ],
                    key=_first,
                )
            else:  # most requests: no generator, no key function
                worst, dearest, prompt_bound = _worst_case(
                    model, request, body_size, output_limit, cache_writes, images
                )
            try:
                hold = await self.gate.admit(key, guess, worst, request_id)
                break
            except Unaffordable as exc:
                limit = self._clamp(candidates, request, body_size, exc.available)
                stuck = output_limit is not None and limit is not None and limit >= output_limit
                if limit is None or stuck or attempt == 2:
                    raise self._insufficient(
                        dearest, request.service_tier, exc.available, worst, prompt_bound
                    ) from None
                output_limit = limit
        else:  # pragma: no cover - the last refusal raised above
            raise AssertionError("unreachable")
        return Ticket(
            request_id=request_id,
            key=key,
            model=model,
            stream=request.stream,
            hold=hold,
            prompt_guess=guess,
            started=time.monotonic(),
            tier=request.service_tier,
            output_limit=output_limit,
            api=api,
        )

    def _clamp(
        self,
        candidates: Sequence[CatalogModel],
        request: ChatRequest,
        body_size: int,
        available: int,
    ) -> int | None:
        """The output limit ``available`` affords on every candidate, if clamping applies."""
        if self.clamp_min is None or request.max_tokens or request.max_completion_tokens:
            return None
        choices = request.n or 1
        limit = min(
            c.price.for_tier(request.service_tier).affordable_output_tokens(
                available,
                prompt_token_bound(request, body_size, c.settings.image_token_estimate, c.pixels),
            )
            // choices
            for c in candidates
        )
        return limit if limit >= self.clamp_min else None

    def _insufficient(
        self, model: CatalogModel, tier: str | None, available: int, worst: int, prompt: int
    ) -> InsufficientQuota:
        error = _insufficient(model, tier, available, worst, prompt)
        error.fallback_suggestion = self.billing
        return error

    def going_upstream(self, ticket: Ticket) -> None:
        """The request is about to reach an upstream (its images fetched): journal it. If the
        process dies before it settles, its prompt estimate is charged (status
        ``interrupted``), as a disconnect with nothing received is, at its tier's price."""
        ledger = self.ledger
        if ledger.journal is None:
            return
        model = ticket.model
        price = model.price if ticket.tier is None else model.price.for_tier(ticket.tier)
        guess = ticket.prompt_guess
        created = int(time.time() * 1000)
        cost = price.worst_case(guess, 0)
        request_id, key_id, stream = ticket.request_id, ticket.key.id, ticket.stream
        ledger.admitted_values(
            (request_id, key_id, model.name, created, stream, guess, cost, ticket.api)
        )

    async def cancel(self, ticket: Ticket) -> None:
        """Nothing reached an upstream: undo the admission entirely, write no ledger row."""
        if ticket.settled:
            return
        ticket.settled = True
        self.ledger.cancelled(ticket.request_id)
        await self.gate.cancel(ticket.hold)

    async def settle(
        self,
        ticket: Ticket,
        usage: TokenUsage | None,
        status: str,
        upstream: str,
        upstream_model: str,
    ) -> int:
        """Charge ``usage``, release the rest of the reservation, append the ledger row.

        Idempotent: a ticket is settled once whatever path ends the request. The ledger row is
        appended even when the gate cannot be reached: what the upstream produced is recorded.
        """
        if ticket.settled:
            return 0
        ticket.settled = True
        if tracing.enabled:
            tracing.begin("relaygate.settle")
        if self.deadline_passed and status != "ok" and _cancelling():
            # Ended by the shutdown deadline, whatever path settles it: billed as a disconnect
            # (the prompt estimate plus the tokens received).
            status = "cancelled"
            usage = usage or TokenUsage(prompt_tokens=ticket.prompt_guess)
        usage = usage or TokenUsage()
        price = ticket.model.price
        if ticket.tier is not None:
            price = price.for_tier(ticket.tier)
        parts = price.cost_parts(usage)
        cost = sum(parts)
        tokens = usage.prompt_tokens + usage.completion_tokens
        charged = cost
        try:
            charged = await self.gate.settle(ticket.hold, cost, tokens)
        except Exception:
            log.exception(
                "settling %s with the gate failed; the ledger row keeps its cost", ticket.request_id
            )
        finally:
            # Also when the shutdown deadline cancels the gate call: the row is written.
            self.uncharged_micros += cost - charged
            self._append_row(ticket, usage, status, upstream, upstream_model, charged, cost, parts)
            if ticket.access is not None:
                ticket.access.settled(ticket, usage, charged, status, upstream)
        journal = self.ledger.journal
        if journal is not None and journal.fsync == "always":
            durable = journal.durable()  # on disk before the response ends (a group commit)
            if durable is not None:
                await durable
        if tracing.enabled:
            tracing.settled(ticket, usage, status, charged)
        return charged

    def _append_row(
        self,
        ticket: Ticket,
        usage: TokenUsage,
        status: str,
        upstream: str,
        upstream_model: str,
        charged: int,
        cost: int,
        parts: tuple[int, int, int, int],
    ) -> None:
        if charged < cost:
            parts = _clamp_parts(parts, charged)
        key = ticket.key
        # The row's fields in ROW_FIELDS order (checked at import), built once: the row is made
        # from them and the journal encodes them as they are.
        values = (
            ticket.request_id,
            key.id,
            ticket.model.name,
            upstream,
            upstream_model,
            int(time.time() * 1000),
            status,
            charged,
            int((time.monotonic() - ticket.started) * 1000),
            ticket.stream,
            usage.prompt_tokens,
            usage.cached_tokens,
            usage.completion_tokens,
            usage.reasoning_tokens,
            usage.image_tokens,
            usage.prompt_audio_tokens,
            usage.completion_audio_tokens,
            key.account_id,
            parts[0],
            parts[1],
            parts[2],
            parts[3],
            ticket.api,
            usage.cache_write_tokens + usage.cache_write_1h_tokens,
        )
        self.ledger.append(LedgerRow(*values), values)


_ROW_ORDER = (
    "request_id",
    "key_id",
    "model",
    "upstream",
    "upstream_model",
    "created_at",
    "status",
    "cost_micros",
    "latency_ms",
    "stream",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "image_tokens",
    "prompt_audio_tokens",
    "completion_audio_tokens",
    "account_id",
    "input_cost_micros",
    "cached_cost_micros",
    "output_cost_micros",
    "reasoning_cost_micros",
    "api",
    "cache_write_tokens",
)
"""The order :meth:`Admissions._append_row` builds a row's values in."""
if _ROW_ORDER != ROW_FIELDS:  # pragma: no cover - a field added to LedgerRow but not here
    raise RuntimeError("Admissions._append_row builds a LedgerRow of other fields than it has")


def _clamp_parts(parts: tuple[int, int, int, int], charged: int) -> tuple[int, int, int, int]:
    """The parts of a charge clamped below the cost: taken in order (input, cached input,
    output, reasoning) until the charge is used up, so they still sum to what was charged."""
    left = charged
    clamped = []
    for part in parts:
        take = min(part, max(left, 0))
        clamped.append(take)
        left -= take
    return clamped[0], clamped[1], clamped[2], clamped[3]


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _first(case: tuple[int, CatalogModel, int]) -> int:
    return case[0]


def _worst_case(
    model: CatalogModel,
    request: ChatRequest,
    body_size: int,
    output_limit: int | None = None,
    cache_writes: bool = False,
    images: list[ImagePart] | None = None,
) -> tuple[int, CatalogModel, int]:
    settings = model.settings
    prompt_bound = prompt_token_bound(
        request, body_size, settings.image_token_estimate, model.pixels, images
    )
    model_max = settings.max_output_tokens
    if output_limit is not None:
        model_max = min(model_max, output_limit)
    output_bound = output_token_bound(request, model_max)
    price = model.price
    if request.service_tier is not None:
        price = price.for_tier(request.service_tier)
    return price.worst_case(prompt_bound, output_bound, cache_writes), model, prompt_bound


def _insufficient(
    model: CatalogModel, tier: str | None, available: int, worst: int, prompt_bound: int
) -> InsufficientQuota:
    affordable = model.price.for_tier(tier).affordable_output_tokens(available, prompt_bound)
    message = (
        f"Insufficient quota: this request may cost up to ${micros_to_usd(worst)} but the key"
        f" can spend ${micros_to_usd(available)} (its account's balance, within the key's"
        " spend cap)"
    )
    if affordable > 0:
        message += f"; it can afford at most {affordable} output tokens (lower max_tokens)"
    else:
        message += "; it cannot afford the prompt"
    return InsufficientQuota(message)
