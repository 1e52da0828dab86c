"""Admission and settlement: the rate limits and the credit reservation as one atomic step,
and the charge, release and ledger row that end every admitted request exactly once."""

from __future__ import annotations

import time
from dataclasses import dataclass

from relaygate.accounting.credits import CreditBook, Reservation
from relaygate.accounting.estimate import (
    output_token_bound,
    prompt_token_bound,
    prompt_token_guess,
)
from relaygate.accounting.ledger import LedgerWriter
from relaygate.accounting.prices import micros_to_usd
from relaygate.errors import InsufficientQuota
from relaygate.limits.memory import MemoryLimiter, Permit
from relaygate.protocol.types import ChatRequest
from relaygate.providers.base import TokenUsage
from relaygate.routing.catalog import CatalogModel
from relaygate.store.records import KeyRecord, LedgerRow


@dataclass(slots=True)
class Ticket:
    """An admitted request: what it holds until :meth:`Admissions.settle`."""

    request_id: str
    key: KeyRecord
    model: CatalogModel
    stream: bool
    permit: Permit
    reservation: Reservation
    prompt_guess: int
    started: float
    settled: bool = False


class Admissions:
    def __init__(self, credits: CreditBook, limiter: MemoryLimiter, ledger: LedgerWriter) -> None:
        self.credits = credits
        self.limiter = limiter
        self.ledger = ledger

    def admit(
        self,
        key: KeyRecord,
        model: CatalogModel,
        request: ChatRequest,
        body_size: int,
        request_id: str,
    ) -> Ticket:
        """Take a rate-limit slot and reserve the worst-case cost, or raise 429/402 having
        taken neither."""
        image_tokens = model.settings.image_token_estimate
        guess = prompt_token_guess(request, image_tokens)
        prompt_bound = prompt_token_bound(request, body_size, image_tokens)
        output_bound = output_token_bound(request, model.settings.max_output_tokens)
        worst = model.price.worst_case(prompt_bound, output_bound)
        permit = self.limiter.acquire(key, guess)
        reservation = self.credits.reserve(key.id, worst)
        if not isinstance(reservation, Reservation):
            self.limiter.cancel(permit)
            raise _insufficient(model, reservation, worst, prompt_bound)
        return Ticket(
            request_id=request_id,
            key=key,
            model=model,
            stream=request.stream,
            permit=permit,
            reservation=reservation,
            prompt_guess=guess,
            started=time.monotonic(),
        )

    def cancel(self, ticket: Ticket) -> None:
        """Nothing reached an upstream: undo the admission entirely, write no ledger row."""
        if ticket.settled:
            return
        ticket.settled = True
        self.limiter.cancel(ticket.permit)
        self.credits.settle(ticket.reservation, 0)

    def settle(
        self,
        ticket: Ticket,
        usage: TokenUsage | None,
        status: str,
        upstream: str,
        upstream_model: str,
    ) -> int:
        """Charge ``usage``, release the rest of the reservation, append the ledger row.

        Idempotent: a ticket is settled once whatever path ends the request.
        """
        if ticket.settled:
            return 0
        ticket.settled = True
        usage = usage or TokenUsage()
        charged = self.credits.settle(ticket.reservation, ticket.model.price.cost(usage))
        self.limiter.release(ticket.permit, usage.prompt_tokens + usage.completion_tokens)
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
        return charged


def _insufficient(
    model: CatalogModel, available: int, worst: int, prompt_bound: int
) -> InsufficientQuota:
    affordable = model.price.affordable_output_tokens(available, prompt_bound)
    message = (
        f"Insufficient quota: this request may cost up to ${micros_to_usd(worst)} but the key"
        f" has ${micros_to_usd(available)} available"
    )
    if affordable > 0:
        message += f"; it can afford at most {affordable} output tokens (lower max_tokens)"
    else:
        message += "; it cannot afford the prompt"
    return InsufficientQuota(message)
