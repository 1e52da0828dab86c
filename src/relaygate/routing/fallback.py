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
from relaygate.errors import ApiError, InvalidRequest, ServiceUnavailable, UpstreamError
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
    chain: list[CatalogModel], call: ProviderRequest
) -> tuple[CatalogModel, Opened]:
    """Start the request on the first model of ``chain`` whose upstreams accept it."""
    last: ApiError | None = None
    for model in chain:
        if not model.upstreams:
            last = last or no_upstream(model)
            continue
        try:
            return model, await open_upstream(model, call)
        except InvalidRequest:
            raise
        except (UpstreamError, ServiceUnavailable) as exc:
            last = exc
            if model is not chain[-1]:
                log.warning(
                    "model %s could not answer (%s); falling back", model.name, type(exc).__name__
                )
    assert last is not None
    raise last
