"""Provider registration through the ``relaygate.providers`` entry-point group.

Built-in providers register through the same group a third-party package would use; when the
package is run from a source tree without being installed, the built-ins are found directly.
Providers are imported only when a config names them.
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
    "azure": "relaygate.providers.azure:AzureProvider",
    "anthropic": "relaygate.providers.anthropic:AnthropicProvider",
    "gemini": "relaygate.providers.gemini:GeminiProvider",
    "simulator": "relaygate.providers.simulator:SimulatorProvider",
}
_loaded: dict[str, type[Provider]] = {}


def _load(target: str) -> type[Provider]:
    module, _, attr = target.partition(":")
    cls = getattr(import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise TypeError(f"{target} is not a relaygate Provider")
    return cls


def registered() -> dict[str, str]:
    """Every registered provider, by name, as ``module:Class`` (nothing imported yet)."""
    found = dict(_BUILTIN)
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def provider_class(name: str) -> type[Provider]:
    """The provider class registered as ``name``, imported on first use: a broken plugin
    matters only to the configs that name it."""
    cls = _loaded.get(name)
    if cls is None:
        target = registered().get(name)
        if target is None:
            raise KeyError(name)
        cls = _loaded[name] = _load(target)
    return cls


def check_providers(settings: Settings, source: str) -> None:
    """Every upstream names a known provider whose options it accepts (a start-up check)."""
    known = registered()
    for model, config in settings.models.items():
        for i, upstream in enumerate(config.upstreams):
            where = f"{source}: models.{model}.upstreams[{i}]"
            if upstream.provider not in known:
                raise ConfigError(
                    f"{where}.provider: unknown provider {upstream.provider!r}"
                    f" (known: {', '.join(sorted(known))})"
                )
            try:
                cls = provider_class(upstream.provider)
            except (ImportError, AttributeError, TypeError) as exc:
                raise ConfigError(
                    f"{where}.provider: provider {upstream.provider!r} cannot be loaded: {exc}"
                ) from None
            try:
                cls.check_options(upstream)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
