"""Model fallbacks: when every upstream of a model fails, the next model of the chain answers.

The chain is the requested model, then the request's own ``models`` array (as OpenRouter takes
it) or else the model's configured ``fallbacks``. Fallbacks the request cannot use are left out:
those the key may not use (an error when the request named them itself), text-only models for a
request with images, models whose ``max_output_tokens`` is below the request's ``max_tokens``.
The credit reservation covers the dearest model of the chain; the answer is charged at the
prices of the model that gave it, and names it (``model``, ``x-relaygate-model``, the ledger).
"""

from __future__ import annotations

import logging

from relaygate.accounting.fields import refused_field
from relaygate.errors import (
    ApiError,
    InvalidRequest,
    ServiceUnavailable,
    UpstreamError,
    UpstreamsRateLimited,
    UpstreamsUnavailable,
)
from relaygate.metrics import RoutingMetrics
from relaygate.protocol.types import ChatRequest
from relaygate.protocol.validate import images_of
from relaygate.providers.base import ProviderRequest
from relaygate.routing.catalog import Catalog, CatalogModel, may_use
from relaygate.routing.router import Opened, no_upstream, open_upstream
from relaygate.store.records import KeyRecord

log = logging.getLogger("relaygate.routing")


def _fits(model: CatalogModel, request: ChatRequest, has_images: bool) -> bool:
    if has_images and not model.settings.vision:
        return False
    if refused_field(request, model.settings) is not None:
        return False  # it would get an unpriced field through
    asked = request.max_completion_tokens or request.max_tokens
    return asked is None or asked <= model.settings.max_output_tokens


def fallback_chain(
    catalog: Catalog, primary: CatalogModel, request: ChatRequest, key: KeyRecord
) -> list[CatalogModel]:
    """``primary`` and the models to try after it, in order (see the module docstring)."""
    chain = [primary]
    if request.models is None and not primary.settings.fallbacks:
        return chain  # most requests: nothing to choose from
    has_images = bool(images_of(request))
    if request.models is not None:
        for i, name in enumerate(request.models):
            try:
                model = catalog.resolve(name, key)
            except ApiError as exc:
                exc.param = f"models[{i}]"
                raise
            if model not in chain and _fits(model, request, has_images):
                chain.append(model)
        return chain
    for name in primary.settings.fallbacks:
        model = catalog.models[name]
        if model not in chain and may_use(key, name) and _fits(model, request, has_images):
            chain.append(model)
    return chain


async def open_chain(
    chain: list[CatalogModel], call: ProviderRequest, metrics: RoutingMetrics | None = None
) -> tuple[CatalogModel, Opened]:
    """Start the request on the first model of ``chain`` whose upstreams accept it."""
    failures: list[ApiError] = []
    for model in chain:
        if not model.upstreams:
            continue
        try:
            return model, await open_upstream(model, call, metrics=metrics)
        except InvalidRequest:
            raise
        except (UpstreamError, ServiceUnavailable, UpstreamsRateLimited) as exc:
            failures.append(exc)
            if model is not chain[-1]:
                log.warning(
                    "model %s could not answer (%s); falling back", model.name, type(exc).__name__
                )
    raise _chain_failed(chain, failures)


def _chain_failed(chain: list[CatalogModel], failures: list[ApiError]) -> ApiError:
    """One error for a chain where no model answered, by the rule each model's upstreams
    follow (:func:`relaygate.routing.router._nothing_answered`): 429 if every model's
    upstreams refused for rate, 503 with the soonest ``Retry-After`` if any model gave one,
    else the last model's error."""
    if not failures:
        return no_upstream(chain[0])
    if len(failures) == 1:
        return failures[0]
    timed = [f for f in failures if isinstance(f, UpstreamsRateLimited | UpstreamsUnavailable)]
    if not timed:
        return failures[-1]
    wait = min(f.wait_seconds for f in timed)
    names = ", ".join(repr(model.name) for model in chain if model.upstreams)
    if len(timed) == len(failures) and all(isinstance(f, UpstreamsRateLimited) for f in timed):
        return UpstreamsRateLimited(
            f"Every upstream of models {names} is rate-limited right now (their limits, not"
            " this key's)",
            retry_after=wait,
        )
    return UpstreamsUnavailable(
        f"No upstream of models {names} can serve right now: rate-limited, out of rotation"
        f" or failing (last: {failures[-1].message})",
        retry_after=wait,
    )
