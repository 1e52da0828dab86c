"""Provider registration through the ``relaygate.providers`` entry-point group.

Built-in providers register through the same group a third-party package would use; when the
package is run from a source tree without being installed, the built-ins are found directly.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points

from relaygate.errors import ConfigError
from relaygate.providers.base import Provider
from relaygate.settings import Settings

GROUP = "relaygate.providers"
_BUILTIN = {
    "openai": "relaygate.providers.openai:OpenAIProvider",
    "simulator": "relaygate.providers.simulator:SimulatorProvider",
}
_cache: dict[str, type[Provider]] | None = None


def _load(target: str) -> type[Provider]:
    module, _, attr = target.partition(":")
    cls = getattr(import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise TypeError(f"{target} is not a relaygate Provider")
    return cls


def providers() -> dict[str, type[Provider]]:
    """Every registered provider class by name."""
    global _cache
    if _cache is None:
        found = {name: _load(target) for name, target in _BUILTIN.items()}
        for ep in entry_points(group=GROUP):
            if ep.name not in found or ep.value != _BUILTIN.get(ep.name):
                found[ep.name] = _load(ep.value)
        _cache = found
    return _cache


def provider_class(name: str) -> type[Provider]:
    try:
        return providers()[name]
    except KeyError:
        raise KeyError(name) from None


def check_providers(settings: Settings, source: str) -> None:
    """Every upstream names a known provider whose options it accepts (a start-up check)."""
    known = providers()
    for model, config in settings.models.items():
        for i, upstream in enumerate(config.upstreams):
            where = f"{source}: models.{model}.upstreams[{i}]"
            cls = known.get(upstream.provider)
            if cls is None:
                raise ConfigError(
                    f"{where}.provider: unknown provider {upstream.provider!r}"
                    f" (known: {', '.join(sorted(known))})"
                )
            try:
                cls.check_options(upstream)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
