"""The model catalog: public names, prices, limits, upstreams, and who may use what."""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass, field

import aiohttp

from relaygate.accounting.prices import Price
from relaygate.errors import NotFound, PermissionDenied
from relaygate.providers.base import Provider
from relaygate.providers.registry import provider_class
from relaygate.routing.health import Clock, HealthPolicy, UpstreamHealth
from relaygate.settings import ModelSettings, Settings
from relaygate.store.records import KeyRecord


@dataclass(slots=True)
class CatalogModel:
    name: str
    settings: ModelSettings
    price: Price
    upstreams: list[Provider]
    health: list[UpstreamHealth] = field(default_factory=list)
    """One tracker per upstream, in the same order (built with default policies if omitted)."""

    def __post_init__(self) -> None:
        for provider in self.upstreams[len(self.health) :]:
            policy = HealthPolicy.from_settings(provider.settings)
            self.health.append(UpstreamHealth(provider.label, policy))


def may_use(key: KeyRecord, model: str) -> bool:
    return key.models is None or model in key.models


class Catalog:
    """Public models by name, each with its providers built on the shared session."""

    def __init__(
        self, settings: Settings, session: aiohttp.ClientSession, clock: Clock = time.monotonic
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
            allowed = self.allowed(key)
            close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.0)
            raise NotFound(
                f"Specified model not found: {name!r}",
                param="model",
                fallback_suggestion=close[0] if close else None,
            )
        if not may_use(key, name):
            raise PermissionDenied(
                f"Access denied for this model: this key may not use {name!r}", param="model"
            )
        return model

    def secrets(self) -> list[str]:
        return [s for model in self.models.values() for p in model.upstreams for s in p.secrets()]
