"""The model catalog: public names, prices, limits, upstreams, and who may use what."""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass, field

from relaygate.accounting.prices import Price
from relaygate.errors import NotFound, PermissionDenied, excerpt
from relaygate.media.tokens import bills_by_pixels
from relaygate.providers.base import Provider
from relaygate.providers.registry import provider_class
from relaygate.routing.health import Clock, HealthPolicy, UpstreamHealth
from relaygate.settings import ModelSettings, Settings
from relaygate.store.records import KeyRecord
from relaygate.upstream_http import UpstreamClient


@dataclass(slots=True)
class CatalogModel:
    name: str
    settings: ModelSettings
    price: Price
    upstreams: list[Provider]
    health: list[UpstreamHealth] = field(default_factory=list)
    """One tracker per upstream, in the same order (built with default policies if omitted)."""
    pixels: bool = field(init=False)
    """An upstream counts images by their pixels, not OpenAI's tiles (the reservation's image
    allowance: :func:`~relaygate.accounting.estimate.image_token_allowance`)."""

    def __post_init__(self) -> None:
        self.pixels = bills_by_pixels(provider.name for provider in self.upstreams)
        for provider in self.upstreams[len(self.health) :]:
            policy = HealthPolicy.from_settings(provider.settings)
            self.health.append(UpstreamHealth(provider.label, policy))


def may_use(key: KeyRecord, model: str) -> bool:
    return key.models is None or model in key.models


SUGGEST_CHARS = 64
"""The most characters of an unknown model name compared when suggesting the closest model."""
SUGGEST_CANDIDATES = 256
"""The most catalog models compared (in catalog order) when suggesting the closest model."""


def closest(name: str, candidates: list[str]) -> str | None:
    """The candidate closest to ``name`` (difflib's ratio), in bounded time: ``name`` and each
    candidate are cut to :data:`SUGGEST_CHARS` and at most :data:`SUGGEST_CANDIDATES` are
    compared, so a client's name costs at most a fixed amount of CPU whatever its length."""
    if not candidates:
        return None
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(name[:SUGGEST_CHARS])
    best: tuple[float, str] | None = None
    for candidate in candidates[:SUGGEST_CANDIDATES]:
        matcher.set_seq1(candidate[:SUGGEST_CHARS])
        # The cheap upper bounds skip candidates that cannot reach the best so far (as
        # difflib.get_close_matches does); an equal bound is still compared, for the ties.
        if best is not None and (
            matcher.real_quick_ratio() < best[0] or matcher.quick_ratio() < best[0]
        ):
            continue
        scored = (matcher.ratio(), candidate)
        if best is None or scored > best:
            best = scored
    assert best is not None
    return best[1]  # ties go as in difflib.get_close_matches


class Catalog:
    """Public models by name, each with its providers built on the shared upstream client."""

    def __init__(
        self, settings: Settings, session: UpstreamClient, clock: Clock = time.monotonic
    ) -> None:
        self.models: dict[str, CatalogModel] = {}
        for name, config in settings.models.items():
            upstreams = [
                provider_class(upstream.provider)(upstream, session)
                for upstream in config.upstreams
            ]
            health = [
                UpstreamHealth(p.label, HealthPolicy.from_settings(p.settings), clock)
                for p in upstreams
            ]
            self.models[name] = CatalogModel(
                name=name,
                settings=config,
                price=Price.from_settings(config.pricing),
                upstreams=upstreams,
                health=health,
            )

    def allowed(self, key: KeyRecord) -> list[str]:
        return [name for name in self.models if may_use(key, name)]

    def resolve(self, name: str, key: KeyRecord) -> CatalogModel:
        """The model ``name`` for ``key``: 404 (with the closest allowed model) or 403."""
        model = self.models.get(name)
        if model is None:
            raise NotFound(
                f"Specified model not found: {excerpt(name)}",
                param="model",
                fallback_suggestion=closest(name, self.allowed(key)),
            )
        if not may_use(key, name):
            raise PermissionDenied(
                f"Access denied for this model: this key may not use {excerpt(name)}",
                param="model",
            )
        return model

    def secrets(self) -> list[str]:
        return [s for model in self.models.values() for p in model.upstreams for s in p.secrets()]
