"""Choosing an upstream: each configured upstream in order, a retry on transient failures.

An attempt counts as failed only before the provider's :class:`Started` event; after it the
answer belongs to the client and failures end the stream instead.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

from relaygate.errors import (
    InvalidRequest,
    ServiceUnavailable,
    UpstreamError,
    UpstreamStatus,
)
from relaygate.providers.base import Event, Provider, ProviderRequest, Started
from relaygate.routing.catalog import CatalogModel

log = logging.getLogger("relaygate.routing")

ATTEMPTS_PER_UPSTREAM = 2
MAX_BACKOFF = 2.0
# Upstream answers that mean the request itself is wrong: the client gets a 400, not a 502.
_CLIENT_FAULT = {400, 404, 413, 422}


@dataclass(slots=True)
class Opened:
    """An upstream that accepted the request, and the rest of its events."""

    provider: Provider
    upstream_model: str
    events: AsyncIterator[Event]


def _backoff(attempt: int, error: UpstreamError) -> float:
    if error.retry_after is not None:
        return min(error.retry_after, MAX_BACKOFF)
    return float(min(MAX_BACKOFF, 0.1 * 2**attempt) * random.uniform(0.5, 1.0))


def no_upstream(model: CatalogModel) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"Model {model.name!r} has no upstream configured: set OPENAI_API_KEY, or add an"
        f" upstream under models.{model.name}.upstreams in the config file",
    )


async def open_upstream(model: CatalogModel, request: ProviderRequest) -> Opened:
    """Start the request on the first upstream that accepts it."""
    if not model.upstreams:
        raise no_upstream(model)
    last: UpstreamError | None = None
    for provider in model.upstreams:
        upstream_model = provider.settings.model or model.name
        request.upstream_model = upstream_model
        for attempt in range(ATTEMPTS_PER_UPSTREAM):
            events = provider.events(request)
            try:
                first = await anext(events)
            except UpstreamError as exc:
                last = exc
                _log_failure(provider, exc)
                if isinstance(exc, UpstreamStatus) and exc.upstream_status in _CLIENT_FAULT:
                    raise InvalidRequest(
                        f"The upstream rejected the request: {exc.message}"
                    ) from None
                if not exc.retryable:
                    break
                if attempt + 1 < ATTEMPTS_PER_UPSTREAM:
                    await asyncio.sleep(_backoff(attempt, exc))
                continue
            except StopAsyncIteration:
                raise UpstreamError(f"Upstream {provider.label} answered nothing") from None
            if not isinstance(first, Started):
                raise UpstreamError(f"Upstream {provider.label} did not start its answer")
            return Opened(provider, upstream_model, events)
    assert last is not None
    raise last


def _log_failure(provider: Provider, error: UpstreamError) -> None:
    if isinstance(error, UpstreamStatus) and error.upstream_status in (401, 403):
        log.error("upstream %s rejects the gateway's credentials: %s", provider.label, error)
    else:
        log.warning("upstream %s failed: %s", provider.label, error)
