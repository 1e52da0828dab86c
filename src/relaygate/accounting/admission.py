"""Admission and settlement: the rate limits and the credit reservation as one atomic step,
and the charge, release and ledger row that end every admitted request exactly once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from relaygate.accounting.estimate import (
    output_token_bound,
    prompt_token_bound,
    prompt_token_guess,
)
from relaygate.accounting.gate import Gate, Hold, Unaffordable
from relaygate.accounting.ledger import LedgerWriter
from relaygate.accounting.prices import micros_to_usd
from relaygate.errors import InsufficientQuota
from relaygate.protocol.types import ChatRequest
from relaygate.providers.base import TokenUsage
from relaygate.routing.catalog import CatalogModel
from relaygate.store.records import KeyRecord, LedgerRow

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


class Admissions:
    def __init__(self, gate: Gate, ledger: LedgerWriter) -> None:
        self.gate = gate
        self.ledger = ledger
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
    ) -> Ticket:
        """Take a rate-limit slot and reserve the worst-case cost, or raise 429/402/503 having
        taken neither."""
        primary = model
        self.ledger.check_capacity()
        guess = prompt_token_guess(request, model.settings.image_token_estimate)
        # The reservation covers the dearest model that may answer (fallbacks included).
        worst, model, prompt_bound = max(
            (_worst_case(candidate, request, body_size) for candidate in (model, *fallbacks)),
            key=lambda case: case[0],
        )
        try:
            hold = await self.gate.admit(key, guess, worst, request_id)
        except Unaffordable as exc:
            raise _insufficient(
                model, request.service_tier, exc.available, worst, prompt_bound
            ) from None
        return Ticket(
            request_id=request_id,
            key=key,
            model=primary,
            stream=request.stream,
            hold=hold,
            prompt_guess=guess,
            started=time.monotonic(),
            tier=request.service_tier,
        )

    def going_upstream(self, ticket: Ticket) -> None:
        """The request is about to reach an upstream (its images fetched): journal it. If the
        process dies before it settles, its prompt estimate is charged (status
        ``interrupted``), as a disconnect with nothing received is, at its tier's price."""
        model = ticket.model
        price = model.price if ticket.tier is None else model.price.for_tier(ticket.tier)
        guess = ticket.prompt_guess
        self.ledger.admitted(
            ticket.request_id,
            ticket.key.id,
            model.name,
            ticket.stream,
            guess,
            price.worst_case(guess, 0),
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
        if self.deadline_passed and status != "ok" and _cancelling():
            # Ended by the shutdown deadline, whatever path settles it: billed as a disconnect
            # (the prompt estimate plus the tokens received).
            status = "cancelled"
            usage = usage or TokenUsage(prompt_tokens=ticket.prompt_guess)
        usage = usage or TokenUsage()
        cost = ticket.model.price.for_tier(ticket.tier).cost(usage)
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
            self._append_row(ticket, usage, status, upstream, upstream_model, charged)
        journal = self.ledger.journal
        if journal is not None and journal.fsync == "always":
            durable = journal.durable()  # on disk before the response ends (a group commit)
            if durable is not None:
                await durable
        return charged

    def _append_row(
        self,
        ticket: Ticket,
        usage: TokenUsage,
        status: str,
        upstream: str,
        upstream_model: str,
        charged: int,
    ) -> None:
        self.ledger.append(
            LedgerRow(
                request_id=ticket.request_id,
                key_id=ticket.key.id,
                model=ticket.model.name,
                upstream=upstream,
                upstream_model=upstream_model,
                created_at=int(time.time() * 1000),
                status=status,
                cost_micros=charged,
                latency_ms=int((time.monotonic() - ticket.started) * 1000),
                stream=ticket.stream,
                prompt_tokens=usage.prompt_tokens,
                cached_tokens=usage.cached_tokens,
                completion_tokens=usage.completion_tokens,
                reasoning_tokens=usage.reasoning_tokens,
                image_tokens=usage.image_tokens,
                prompt_audio_tokens=usage.prompt_audio_tokens,
                completion_audio_tokens=usage.completion_audio_tokens,
            )
        )


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _worst_case(
    model: CatalogModel, request: ChatRequest, body_size: int
) -> tuple[int, CatalogModel, int]:
    prompt_bound = prompt_token_bound(request, body_size, model.settings.image_token_estimate)
    output_bound = output_token_bound(request, model.settings.max_output_tokens)
    price = model.price.for_tier(request.service_tier)
    return price.worst_case(prompt_bound, output_bound), model, prompt_bound


def _insufficient(
    model: CatalogModel, tier: str | None, available: int, worst: int, prompt_bound: int
) -> InsufficientQuota:
    affordable = model.price.for_tier(tier).affordable_output_tokens(available, prompt_bound)
    message = (
        f"Insufficient quota: this request may cost up to ${micros_to_usd(worst)} but the key"
        f" has ${micros_to_usd(available)} available"
    )
    if affordable > 0:
        message += f"; it can afford at most {affordable} output tokens (lower max_tokens)"
    else:
        message += "; it cannot afford the prompt"
    return InsufficientQuota(message)
