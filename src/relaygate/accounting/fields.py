"""Request fields that change the price: each is priced, allowed by the operator, or refused.

relaygate bills the tokens an upstream reports. Some request fields make an upstream charge more
than that (:data:`relaygate.settings.PRICE_CHANGING_FIELDS`; the README's "Price-changing fields"
says why each is on the list). A request using one gets 400 naming it, before admission and any
upstream call, unless its model prices it (a ``service_tier`` listed in
``pricing.service_tiers``) or lets it through (``allow_fields``). Values that change nothing
pass: ``service_tier`` ``auto``/``default``, ``store: false``, ``modalities: ["text"]`` and
explicit nulls.
"""

from __future__ import annotations

from relaygate.errors import InvalidRequest, excerpt
from relaygate.protocol.types import ChatRequest
from relaygate.settings import ModelSettings

NEUTRAL_TIERS = ("auto", "default")
"""``service_tier`` values billed at the standard price."""


def price_changing(request: ChatRequest) -> list[str]:
    """The price-changing fields ``request`` uses with a value that can change the price."""
    used: list[str] = []
    if request.service_tier is not None and request.service_tier not in NEUTRAL_TIERS:
        used.append("service_tier")
    if request.web_search_options is not None:
        used.append("web_search_options")
    if request.audio is not None:
        used.append("audio")
    if request.modalities is not None and any(m != "text" for m in request.modalities):
        used.append("modalities")
    if request.prediction is not None:
        used.append("prediction")
    if request.store:
        used.append("store")
    return used


def refused_field(request: ChatRequest, settings: ModelSettings) -> str | None:
    """The first price-changing field the model neither prices nor allows, if any."""
    if (
        request.service_tier is None
        and request.web_search_options is None
        and request.audio is None
        and request.modalities is None
        and request.prediction is None
        and not request.store
    ):
        return None  # most requests: none of the fields (one pass, no list)
    for field in price_changing(request):
        if field in settings.allow_fields:
            continue
        if field == "service_tier" and request.service_tier in settings.pricing.service_tiers:
            continue
        return field
    return None


def check_price_fields(request: ChatRequest, model: str, settings: ModelSettings) -> None:
    """400 naming the first price-changing field ``model`` neither prices nor allows."""
    field = refused_field(request, settings)
    if field is None:
        return
    if field == "service_tier":
        tiers = ", ".join([*NEUTRAL_TIERS, *settings.pricing.service_tiers])
        raise InvalidRequest(
            f"service_tier {excerpt(request.service_tier or '')} is not available for model"
            f" {excerpt(model)}: use one of {tiers}",
            param=field,
        )
    raise InvalidRequest(
        f"{field} is not available for model {excerpt(model)}: it changes what the upstream"
        " charges beyond the tokens relaygate bills; leave it out (or ask the operator to allow"
        " it)",
        param=field,
    )
