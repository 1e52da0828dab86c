"""Choosing an upstream: priority, weight, retries with back-off, and health.

Upstreams are tried by ``priority`` (lower first); among equal priorities a weighted random
order (``weight``) spreads the traffic. Upstreams out of rotation (:mod:`.health`) are skipped,
except for the one trial request that probes them after their cool-down.

A connect error, 429 or 5xx moves on to the next upstream at once. When every upstream of a
round has failed, those with ``retries`` left are tried again after an exponential back-off with
jitter, or after the ``Retry-After`` they sent when it is at most :data:`MAX_RETRY_WAIT` (a
longer one drops that upstream for this request). A 401 or 403 means our own credentials are
wrong: it is logged at error level (without the key) and that upstream is not retried. A 400,
404, 413 or 422 means the request itself is wrong: the client gets a 400 at once.

An attempt counts as failed only before the provider's :class:`Started` event; after it the
answer belongs to the client and failures end the stream instead. Each request gives each
upstream it tried one outcome for its health window, however many attempts it made there.

When nothing answers: 503 ``service_unavailable_error`` if any upstream was skipped as out of
rotation (nothing could serve), else the last upstream's error (502 ``upstream_error``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from relaygate.errors import (
    InvalidRequest,
    ServiceUnavailable,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatus,
    UpstreamUnreachable,
)
from relaygate.providers.base import Batch, Provider, ProviderRequest, Started
from relaygate.routing.catalog import CatalogModel
from relaygate.routing.health import UpstreamHealth

log = logging.getLogger("relaygate.routing")

MAX_BACKOFF = 2.0
"""Longest back-off between two rounds of attempts, in seconds."""
MAX_RETRY_WAIT = 2.0
"""Longest ``Retry-After`` honoured by waiting; an upstream asking for more is not retried."""
_FIRST_BACKOFF = 0.1
_random = random.Random()
# Upstream answers that mean the request itself is wrong: the client gets a 400, not a 502.
_CLIENT_FAULT = {400, 404, 413, 422}


@dataclass(slots=True)
class Opened:
    """An upstream that accepted the request, and the rest of its answer."""

    provider: Provider
    upstream_model: str
    events: AsyncIterator[Batch]


Sleep = Callable[[float], Awaitable[None]]


def _backoff(round_: int, rng: random.Random) -> float:
    """Exponential back-off with jitter: 0.05-0.1 s, then 0.1-0.2 s, ... up to MAX_BACKOFF."""
    return float(min(MAX_BACKOFF, _FIRST_BACKOFF * 2**round_) * rng.uniform(0.5, 1.0))


def route_order(model: CatalogModel, rng: random.Random) -> list[int]:
    """Indices of ``model.upstreams`` in the order to try them: by priority, then a weighted
    random order among equal priorities (Efraimidis-Spirakis: sort by ``u ** (1 / w)``)."""
    keyed = [
        (p.settings.priority, -(rng.random() ** (1.0 / p.settings.weight)), i)
        for i, p in enumerate(model.upstreams)
    ]
    return [i for _, _, i in sorted(keyed)]


@dataclass(slots=True)
class _Candidate:
    """One upstream within one request: its attempts so far and its last error."""

    provider: Provider
    health: UpstreamHealth
    tries: int = 0
    error: UpstreamError | None = None
    recorded: bool = False

    def record(self, ok: bool) -> None:
        if not self.recorded:
            self.recorded = True
            self.health.record(ok, "" if ok or self.error is None else _summary(self.error))

    def may_retry(self) -> bool:
        error = self.error
        if error is None or not error.retryable:
            return False
        if error.retry_after is not None and error.retry_after > MAX_RETRY_WAIT:
            return False
        return self.tries <= self.provider.settings.retries


def _summary(error: UpstreamError) -> str:
    """A failure as ``GET /health`` (unauthenticated) may show it: no upstream message."""
    if isinstance(error, UpstreamStatus):
        return f"HTTP {error.upstream_status}"
    return {
        UpstreamUnreachable: "unreachable or timed out",
        UpstreamProtocolError: "unreadable answer",
    }.get(type(error), "failed")


def no_upstream(model: CatalogModel) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"Model {model.name!r} has no upstream configured: set OPENAI_API_KEY, or add an"
        f" upstream under models.{model.name}.upstreams in the config file",
        fallback_suggestion="configure an upstream for this model, or use another model",
    )


async def open_upstream(
    model: CatalogModel,
    request: ProviderRequest,
    *,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
) -> Opened:
    """Start the request on the first upstream that accepts it (see the module docstring)."""
    if not model.upstreams:
        raise no_upstream(model)
    rng = rng or _random
    queue = [_Candidate(model.upstreams[i], model.health[i]) for i in route_order(model, rng)]
    tried: list[_Candidate] = []
    skipped: list[_Candidate] = []
    last: UpstreamError | None = None
    try:
        for round_ in range(1 + max(p.settings.retries for p in model.upstreams)):
            retry: list[_Candidate] = []
            for candidate in queue:
                if candidate.tries == 0:
                    if not candidate.health.acquire():
                        skipped.append(candidate)
                        continue
                    tried.append(candidate)
                opened = await _attempt(candidate, model, request)
                if opened is not None:
                    return opened
                last = candidate.error
                if candidate.may_retry():
                    retry.append(candidate)
            if not retry:
                break
            await sleep(_round_wait(round_, retry, rng))
            queue = retry
    finally:
        for candidate in tried:
            if candidate.error is not None:
                candidate.record(False)
    raise _nothing_answered(model, skipped, last)


def _round_wait(round_: int, retry: list[_Candidate], rng: random.Random) -> float:
    asked = [c.error.retry_after for c in retry if c.error and c.error.retry_after is not None]
    return max([_backoff(round_, rng), *asked])


async def _attempt(
    candidate: _Candidate, model: CatalogModel, request: ProviderRequest
) -> Opened | None:
    """One attempt on one upstream: the opened answer, or ``None`` with ``candidate.error``."""
    provider = candidate.provider
    candidate.tries += 1
    candidate.error = None
    upstream_model = provider.settings.model or model.name
    request.upstream_model = upstream_model
    events = provider.events(request.for_provider(provider))
    try:
        first = await anext(events)
    except UpstreamError as exc:
        candidate.error = exc
        _log_failure(provider, exc)
        if isinstance(exc, UpstreamStatus) and exc.upstream_status in _CLIENT_FAULT:
            candidate.error = None
            candidate.record(True)  # the upstream is well; the request is not
            raise InvalidRequest(f"The upstream rejected the request: {exc.message}") from None
        return None
    except StopAsyncIteration:
        candidate.error = UpstreamProtocolError(
            f"Upstream {provider.label} answered nothing", upstream=provider.label
        )
        return None
    if len(first) != 1 or not isinstance(first[0], Started):
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
        candidate.error = UpstreamProtocolError(
            f"Upstream {provider.label} did not start its answer", upstream=provider.label
        )
        return None
    candidate.record(True)
    return Opened(provider, upstream_model, events)


def _nothing_answered(
    model: CatalogModel, skipped: list[_Candidate], last: UpstreamError | None
) -> ServiceUnavailable | UpstreamError:
    if last is not None and not skipped:
        return last
    wait = max(1, math.ceil(min(c.health.retry_in() for c in skipped)))
    out = ", ".join(c.provider.label for c in skipped)
    message = (
        f"No upstream of model {model.name!r} can serve right now: out of rotation after"
        f" repeated failures ({out})"
    )
    if last is not None:
        message += f"; the others failed: {last.message}"
    return ServiceUnavailable(message, fallback_suggestion=f"retry after {wait} seconds")


def _log_failure(provider: Provider, error: UpstreamError) -> None:
    if isinstance(error, UpstreamStatus) and error.upstream_status in (401, 403):
        log.error(
            "upstream %s rejects the gateway's credentials (HTTP %s): check its api_key: %s",
            provider.label,
            error.upstream_status,
            error.message,
        )
    else:
        log.warning("upstream %s failed: %s", provider.label, error)
